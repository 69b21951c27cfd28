"""The slot table: which shard owns which slots, as a small file every server reads.

The file is YAML (or JSON, which is YAML too), one entry per range of slots:

    # every slot 0..1023 exactly once; a range is "FIRST-LAST" (inclusive) or one slot
    ranges:
      - {slots: 0-341, shard: 0}
      - {slots: 342-682, shard: 1}
      - {slots: 683-1023, shard: 2}

The same document as JSON: `{"ranges": [{"slots": "0-341", "shard": 0}, ...]}`. A table
that leaves a slot out, names one twice or is not of this form is refused with
`SlotTableError`, whose message says what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from service.sharding.slots import SLOT_COUNT


class SlotTableError(ValueError):
    """A slot table that cannot be used; the message is one line."""


@dataclass(frozen=True)
class SlotRange:
    """Slots `first`..`last` (inclusive), owned by shard `shard`."""

    first: int
    last: int
    shard: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    @property
    def size(self) -> int:
        """How many slots the range holds."""
        return self.last - self.first + 1


@dataclass(frozen=True)
class SlotTable:
    """Slot ranges -> shard ordinals, covering 0..SLOT_COUNT-1 exactly once (checked)."""

    ranges: tuple[SlotRange, ...]

    def __post_init__(self) -> None:
        _check_cover(self.ranges)
        object.__setattr__(self, "ranges", tuple(sorted(self.ranges, key=lambda r: r.first)))

    @classmethod
    def even(cls, shards: int) -> SlotTable:
        """`shards` contiguous ranges of (nearly) equal size, shard 0 first."""
        if shards < 1 or shards > SLOT_COUNT:
            raise SlotTableError(f"a table needs 1..{SLOT_COUNT} shards; got {shards}")
        bounds = [SLOT_COUNT * i // shards for i in range(shards + 1)]
        return cls(tuple(SlotRange(bounds[i], bounds[i + 1] - 1, i) for i in range(shards)))

    @classmethod
    def parse(cls, text: str, source: str = "slot table") -> SlotTable:
        """The table of a YAML/JSON document (see the module docstring).

        Raises:
          SlotTableError: not of that form, or not covering every slot exactly once.
        """
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SlotTableError(f"{source} is not valid YAML/JSON: {' '.join(str(err).split())}"
                                 ) from None
        if not isinstance(document, dict) or not isinstance(document.get("ranges"), list):
            raise SlotTableError(f"{source} must be a mapping with a list 'ranges'")
        ranges = [_range(entry, f"{source}, ranges[{i}]")
                  for i, entry in enumerate(document["ranges"])]
        try:
            return cls(tuple(ranges))
        except SlotTableError as err:
            raise SlotTableError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: Path) -> SlotTable:
        """The table in file `path`. Raises `SlotTableError` (also if it cannot be read)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise SlotTableError(f"cannot read slot table {path}: {err.strerror}") from None
        return cls.parse(text, f"slot table {path}")

    @cached_property
    def _owners(self) -> tuple[int, ...]:
        owners = [0] * SLOT_COUNT
        for slot_range in self.ranges:
            owners[slot_range.first:slot_range.last + 1] = [slot_range.shard] * slot_range.size
        return tuple(owners)

    def owner(self, slot: int) -> int:
        """The shard that owns `slot`."""
        return self._owners[slot]

    def shards(self) -> list[int]:
        """The ordinals that own at least one slot, ascending."""
        return sorted({r.shard for r in self.ranges})

    def ranges_of(self, shard: int) -> list[SlotRange]:
        """The ranges shard `shard` owns (empty if none)."""
        return [r for r in self.ranges if r.shard == shard]

    def slot_count(self, shard: int) -> int:
        """How many slots shard `shard` owns."""
        return sum(r.size for r in self.ranges_of(shard))

    def to_yaml(self) -> str:
        """The table as a document `parse` reads back."""
        lines = ["# slot table: slot ranges -> shard ordinal, every slot "
                 f"0..{SLOT_COUNT - 1} exactly once", "ranges:"]
        lines += [f"  - {{slots: {r}, shard: {r.shard}}}" for r in self.ranges]
        return "\n".join(lines) + "\n"


def format_ranges(ranges: Iterable[SlotRange]) -> str:
    """"0-341,700" for the given ranges; "-" for none."""
    return ",".join(str(r) for r in ranges) or "-"


def _range(entry: object, where: str) -> SlotRange:
    if not isinstance(entry, dict) or set(entry) != {"slots", "shard"}:
        raise SlotTableError(f"{where} must be {{slots: FIRST-LAST, shard: N}}; got {entry!r}")
    shard, slots = entry["shard"], entry["slots"]
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise SlotTableError(f"{where}: shard must be an integer >= 0; got {shard!r}")
    if isinstance(slots, int) and not isinstance(slots, bool):
        first = last = slots
    elif isinstance(slots, str):
        first_text, _, last_text = slots.partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if last_text else first
        except ValueError:
            raise SlotTableError(f"{where}: slots must be FIRST-LAST or one slot; got {slots!r}"
                                 ) from None
    else:
        raise SlotTableError(f"{where}: slots must be FIRST-LAST or one slot; got {slots!r}")
    if not 0 <= first <= last < SLOT_COUNT:
        raise SlotTableError(
            f"{where}: slots {slots!r} must satisfy 0 <= FIRST <= LAST <= {SLOT_COUNT - 1}")
    return SlotRange(first, last, shard)


def _check_cover(ranges: Iterable[SlotRange]) -> None:
    """Every slot in exactly one range, or `SlotTableError` naming the first gap/overlap."""
    expected = 0
    for slot_range in sorted(ranges, key=lambda r: r.first):
        if slot_range.first > expected:
            raise SlotTableError(f"slots {expected}-{slot_range.first - 1} belong to no shard")
        if slot_range.first < expected:
            raise SlotTableError(f"slot {slot_range.first} is in two ranges")
        expected = slot_range.last + 1
    if expected != SLOT_COUNT:
        raise SlotTableError(f"slots {expected}-{SLOT_COUNT - 1} belong to no shard")
