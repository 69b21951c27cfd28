"""Moving slots between shards: `hebbian shards move --slots A-B --to K`.

For every model held in slots A..B by a shard other than K (found with ListModels):

1. `ExportModel` on its shard (the source) freezes it: the requests queued before are
   applied and acknowledged, every later write is UNAVAILABLE ("model ... is moving to
   shard K"; the clients retry), reads are served; it returns the model's full state as
   snapshot bytes taken after the freeze (weights, counters, the exactly-once request
   window, seeds, hyper-parameters), so nothing acknowledged is missing and no log tail
   is needed;
2. `ImportModel` on K creates it with that state as its first snapshot (durable before K
   answers). K does not own the slot yet, so this copy takes no writes: a request for it
   on K is UNAVAILABLE (in transit), as on the frozen source.

If any export or import fails, the move is given up before the table changes: the
imports made are released on K, the frozen models are unfrozen on their sources, and
each model has exactly its one writable copy, where it was. Otherwise:

3. the new slot table is written (temp file + rename: the shards, which poll the file,
   see the old table or the new one, never a mix) and the router follows: with
   `router_socket`, `set map` over HAProxy's runtime API for each moved slot (and the map
   file rewritten, when given and present, for HAProxy's next start);
4. once K serves each model (its table reloaded), the source's frozen copy is removed
   (`ReleaseModel`, which a shard accepts only when its own table no longer gives it
   the slot).

From step 3 on the move only goes forward: a failure there (the router, a shard that
does not reload in time) is reported, the new table stays, and running the same command
again finishes the job (the models already on K are skipped, leftover frozen copies are
released).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from service.sharding.haproxy import backend_name, render_map
from service.sharding.slot_table import SlotRange, SlotTable, SlotTableError
from service.sharding.slots import SLOT_COUNT, slot_of
from service.state.atomic import atomic_write

WAIT_S = 120.0  # how long step 4 waits for the shards to reload the table


class MoveError(RuntimeError):
    """A move that could not be done; the message says what state it left."""


def parse_slots(text: str) -> tuple[int, int]:
    """(first, last) of "A-B" or "A" (inclusive). Raises `SlotTableError`."""
    first_text, _, last_text = text.strip().partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if last_text else first
    except ValueError:
        raise SlotTableError(f"--slots must be FIRST-LAST or one slot; got {text!r}") from None
    if not 0 <= first <= last < SLOT_COUNT:
        raise SlotTableError(f"--slots {text!r} must satisfy 0 <= FIRST <= LAST <= "
                             f"{SLOT_COUNT - 1}")
    return first, last


def reassign(table: SlotTable, first: int, last: int, shard: int) -> SlotTable:
    """`table` with slots first..last given to `shard` (ranges merged where they touch)."""
    owners = [shard if first <= slot <= last else table.owner(slot)
              for slot in range(SLOT_COUNT)]
    ranges, start = [], 0
    for slot in range(1, SLOT_COUNT + 1):
        if slot == SLOT_COUNT or owners[slot] != owners[start]:
            ranges.append(SlotRange(start, slot - 1, owners[start]))
            start = slot
    return SlotTable(tuple(ranges))


def quarter_for_new_shard(table: SlotTable, new_shard: int) -> list[tuple[int, int, int]]:
    """The moves (first, last, from_shard) that give a new shard its fair share when a
    table of N shards grows to N+1: from each range, its last 1/(N+1) of slots (for 3 ->
    4 shards, a quarter of each shard's slots, a quarter of all slots in all)."""
    shards = len(table.shards())
    moves = []
    for slot_range in table.ranges:
        count = slot_range.size // (shards + 1)
        if count:
            moves.append((slot_range.last - count + 1, slot_range.last, slot_range.shard))
    return moves


@dataclass
class MoveReport:
    """What a move did: each model moved (name, from shard, step), the table written."""

    moved: list[tuple[str, int, int]] = field(default_factory=list)
    released: list[tuple[str, int]] = field(default_factory=list)
    table: SlotTable | None = None


def move_slots(
    connect: Callable[[int], object],
    shards: int,
    table_path: Path,
    first: int,
    last: int,
    to: int,
    *,
    router_socket: str | None = None,
    router_map: str | None = None,
    wait_s: float = WAIT_S,
    say: Callable[[str], None] = lambda line: None,
) -> MoveReport:
    """Move slots first..last (and their models) to shard `to`; see the module docstring.

    Args:
      connect: shard ordinal -> a client (`HebbianClient`) of that shard, used as a
        context manager.
      shards: how many shards there are (targets 0..shards-1).
      table_path: the slot table file the shards read.
      router_socket: HAProxy's runtime API (a unix socket path or HOST:PORT); None: the
        router is not told (render its map again and reload it).
      router_map: the map's name in HAProxy's config (its file path); with
        `router_socket`, and rewritten when the file exists here.
      say: where progress lines go.

    Raises:
      MoveError: the move was given up (nothing changed) or is unfinished (the message
        says which, and what to run).
    """
    from service.client import HebbianError

    table = SlotTable.load(table_path)
    if not 0 <= to < shards:
        raise MoveError(f"--to {to}: there are shards 0..{shards - 1}")
    new = reassign(table, first, last, to)
    held = _held_models(connect, shards, first, last)
    todo = [(name, shard) for name, shard in held
            if shard != to and table.owner(slot_of(name)) == shard]
    leftovers = [(name, shard) for name, shard in held
                 if shard != to and table.owner(slot_of(name)) != shard]
    report = MoveReport(table=new)
    exports = []
    imported: list[tuple[str, int]] = []
    states: dict[str, tuple] = {}
    try:
        for name, source in todo:
            exports.append((name, source))  # unfrozen if anything fails, even this call
            with connect(source) as client:
                exported = client.export_model(name, to)
            say(f"model {name}: frozen on shard {source} at step {exported.step}")
            with connect(to) as client:
                client.import_model(exported, source)
            imported.append((name, source))
            report.moved.append((name, source, int(exported.step)))
            states[name] = _fingerprint(exported)
            say(f"model {name}: imported on shard {to}")
        for name, source in todo:  # still frozen as exported (a restart would unfreeze)
            with connect(source) as client:
                if _fingerprint(client.export_model(name, to)) != states[name]:
                    raise MoveError(f"model {name!r} changed on shard {source} after its "
                                    "export (did the shard restart?)")
    except (HebbianError, MoveError) as error:
        _give_up(connect, to, exports, imported, say)
        raise MoveError(f"move given up, nothing changed (every model is writable where it "
                        f"was): {error}") from None
    atomic_write(Path(table_path), new.to_yaml().encode())
    say(f"slot table {table_path}: slots {first}-{last} -> shard {to}")
    try:
        if router_socket is not None:
            set_router_map(router_socket, router_map, range(first, last + 1), to)
            say(f"router: slots {first}-{last} -> {backend_name(to)}")
        if router_map is not None and Path(router_map).exists():
            atomic_write(Path(router_map), render_map(new).encode())
        for name, source in todo + leftovers:
            _wait(lambda n=name: _serves(connect, to, n), wait_s,
                  f"shard {to} serves model {name!r} (it has not reloaded the slot table)")
            outcome: list[str] = []
            _wait(lambda n=name, s=source, o=outcome: _release(connect, s, n, o), wait_s,
                  f"shard {source} releases model {name!r} (it has not reloaded the table)")
            if outcome == ["released"]:
                report.released.append((name, source))
                say(f"model {name}: removed from shard {source}")
            else:
                say(f"model {name}: shard {source} holds a copy that is not in transit "
                    f"(not writable there; left alone): {outcome[0]}")
    except (HebbianError, OSError, MoveError) as error:
        raise MoveError(f"the slot table is switched but the move is unfinished: {error}; "
                        "run the same command again to finish it") from None
    return report


def _held_models(connect: Callable[[int], object], shards: int, first: int, last: int
                 ) -> list[tuple[str, int]]:
    """(name, shard) of every model a shard holds in slots first..last."""
    from service.client import HebbianError

    held = []
    for shard in range(shards):
        try:
            with connect(shard) as client:
                models = client.list_models()
        except HebbianError as error:
            raise MoveError(f"shard {shard} does not answer, nothing changed: {error}") from None
        held += [(m.name, shard) for m in models if first <= slot_of(m.name) <= last]
    return held


def _fingerprint(exported) -> tuple:
    """What must not change between an export and the switch: the step, the counters and
    the exactly-once window of the snapshot."""
    from service.state.snapshot import decode_snapshot

    header, _ = decode_snapshot(exported.snapshot, f"the export of {exported.name!r}")
    return (int(exported.step), json.dumps(header["counters"], sort_keys=True),
            tuple(header["window_ids"]))


def _give_up(connect, to: int, exports: list, imported: list, say) -> None:
    """Undo what a move did before the table switch: release the imports, unfreeze."""
    from service.client import HebbianError

    for name, _source in imported:
        try:
            with connect(to) as client:
                client.release_model(name)
        except HebbianError as error:  # not writable there anyway (not owned)
            say(f"model {name}: the copy on shard {to} stays (not writable): {error}")
    for name, source in exports:
        try:
            with connect(source) as client:
                client.unfreeze_model(name)
            say(f"model {name}: writable again on shard {source}")
        except HebbianError as error:
            say(f"model {name}: not unfrozen on shard {source}: {error} (run "
                "UnfreezeModel, or restart that shard: a freeze is not durable)")


def _serves(connect, shard: int, name: str) -> bool:
    """Whether `shard` answers GetModel for `name` (it owns the slot and holds it)."""
    from service.client import HebbianError

    try:
        with connect(shard) as client:
            client.get_model(name)
        return True
    except HebbianError:
        return False


def _release(connect, shard: int, name: str, outcome: list[str]) -> bool:
    """ReleaseModel `name` on `shard`; False while that shard's table still gives it the
    slot. `outcome` gets "released", or why a copy that is not in transit stays."""
    import grpc

    from service.client import HebbianError

    try:
        with connect(shard) as client:
            client.release_model(name)
        outcome.append("released")
        return True
    except HebbianError as error:
        if error.code == grpc.StatusCode.NOT_FOUND:
            outcome.append("released")  # gone already
            return True
        if error.code == grpc.StatusCode.FAILED_PRECONDITION:
            if "ReleaseModel refused" in error.details:
                return False  # the shard's table still gives it the slot
            outcome.append(error.details)  # a copy not in transit (e.g. after a restart)
            return True
        raise


def _wait(condition: Callable[[], bool], wait_s: float, what: str) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        if time.monotonic() > deadline:
            raise MoveError(f"not within {wait_s:g} s: {what}")
        time.sleep(0.2)


def set_router_map(address: str, map_name: str | None, slots: Iterable[int], shard: int,
                   batch: int = 64) -> None:
    """`set map MAP SLOT shard-K` for each slot over HAProxy's runtime API at `address`
    (a unix socket path, or HOST:PORT), `batch` commands per connection.

    Raises:
      MoveError: HAProxy answered something other than nothing (an error).
    """
    if map_name is None:
        raise MoveError("--router-socket needs --router-map (the map file as HAProxy's "
                        "config names it)")
    commands = [f"set map {map_name} {slot} {backend_name(shard)}" for slot in slots]
    for start in range(0, len(commands), batch):
        answer = _runtime_api(address, "; ".join(commands[start:start + batch]))
        if answer.strip():
            raise MoveError(f"HAProxy's runtime API at {address}: {answer.strip()[:300]}")


def _runtime_api(address: str, line: str) -> str:
    """Send one command line to HAProxy's runtime API; its answer."""
    host, _, port = address.rpartition(":")
    if address.startswith("/") or not port.isdigit():
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address
    else:
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    with conn:
        conn.settimeout(10)
        conn.connect(target)
        conn.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
