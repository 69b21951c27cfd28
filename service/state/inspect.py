"""Read-only report on a data directory, for `hebbian check-data` (changes nothing)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from service.state import snapshot as snapshots
from service.state.log_reader import CorruptLogError, read_log, segment_paths
from service.state.store import CONFIG


@dataclass
class ModelReport:
    """What one model's files say, and what recovery would do with them."""

    name: str
    input_dim: int | None = None
    layers: int | None = None
    snapshots: list[snapshots.SnapshotInfo] = field(default_factory=list)
    log_segments: int = 0
    log_bytes: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    records_to_replay: int = 0
    torn_tail: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether a server would start on this model."""
        return not self.problems


def inspect_model(directory: Path) -> ModelReport:
    """Verify one model's config, snapshots and log without modifying anything."""
    report = ModelReport(directory.name)
    try:
        config = json.loads((directory / CONFIG).read_text())
        report.input_dim, report.layers = config["input_dim"], len(config["layers"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        report.problems.append(f"config: {err}")
    for path in snapshots.list_snapshots(directory / "snapshots"):
        try:
            report.snapshots.append(snapshots.info(path))
        except (snapshots.CorruptSnapshotError, ValueError, KeyError) as err:
            report.problems.append(str(err))
    covered = report.snapshots[-1].seq if report.snapshots else 0
    paths = segment_paths(directory / "wal")
    report.log_segments = len(paths)
    try:
        for segment in read_log(paths, covered):
            report.log_bytes += segment.size
            for _, record in segment.records:
                if report.first_seq is None:
                    report.first_seq = record.seq
                report.last_seq = record.seq
                report.records_to_replay += record.seq > covered
            torn = segment.torn
            if torn is not None:
                report.torn_tail = (f"{torn.dropped_bytes} bytes at offset {torn.offset} of "
                                    f"{segment.path.name} ({torn.reason}): dropped on start")
    except CorruptLogError as err:
        report.problems.append(str(err))
    return report


def inspect_data_dir(root: Path) -> list[ModelReport]:
    """A report per model under `root/models` (stray temp and half-deleted dirs ignored)."""
    models = Path(root) / "models"
    if not models.is_dir():
        raise FileNotFoundError(f"{root} is not a data directory (no models/ folder)")
    return [inspect_model(p) for p in sorted(models.iterdir())
            if p.is_dir() and not p.name.startswith(".")]
