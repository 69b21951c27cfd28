"""`hebbian check-data`, `export`, `snapshot` and `restore`: the durable side of a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def check_data(directory: Path, as_json: bool = False) -> int:
    """Report on a data directory without starting a server or changing a byte.

    Returns 0 when a server would start on it, 1 otherwise (the problems are listed).
    """
    from service.state.inspect import inspect_data_dir

    try:
        reports = inspect_data_dir(directory)
    except FileNotFoundError as err:
        print(f"hebbian: {err}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps([_report_dict(r) for r in reports], indent=2, default=str))
    else:
        for r in reports:
            newest = r.snapshots[-1] if r.snapshots else None
            print(f"model {r.name}: {'ok' if r.ok else 'DAMAGED'}")
            print(f"  config: input_dim {r.input_dim}, {r.layers} layer(s)")
            print(f"  snapshots: {len(r.snapshots)}" + (
                f", newest {newest.snapshot_id} at step {newest.step}" if newest else ""))
            print(f"  log: {r.log_segments} segment(s), {r.log_bytes} bytes, sequences "
                  f"{r.first_seq}..{r.last_seq}, {r.records_to_replay} record(s) to replay")
            if r.torn_tail:
                print(f"  torn tail: {r.torn_tail}")
            for problem in r.problems:
                print(f"  problem: {problem}")
        if not reports:
            print(f"{directory}: no models")
    return 0 if all(r.ok for r in reports) else 1


def _report_dict(report: Any) -> dict:
    return {
        "name": report.name, "ok": report.ok, "input_dim": report.input_dim,
        "layers": report.layers, "log_segments": report.log_segments,
        "log_bytes": report.log_bytes, "first_seq": report.first_seq,
        "last_seq": report.last_seq, "records_to_replay": report.records_to_replay,
        "torn_tail": report.torn_tail, "problems": report.problems,
        "snapshots": [{"snapshot_id": s.snapshot_id, "seq": s.seq, "step": s.step,
                       "create_time": s.create_time} for s in report.snapshots],
    }


def served_stack(client: Any, name: str) -> tuple[Any, Any, Any]:
    """A served model read back: (its `Model`, its `ModelState`, a `HebbianStack` holding
    its full state). The weights come from GetModelState, which writes nothing."""
    from service.cli_weights import stack_of

    model = client.get_model(name)
    state = client.get_model_state(name)
    return model, state, stack_of(state.config, state.arrays)


def export_model(client: Any, name: str, out: Path, as_json: bool = False) -> int:
    """Write a served model's full state as `.npz` (the portable array format) or as a
    `.keras` file that `keras.saving.load_model` loads and that keeps learning where the
    server was. Nothing is written on the server (no snapshot is taken)."""
    from service.cli_io import Progress
    from service.cli_weights import check_suffix, write_weights

    check_suffix(out)
    with Progress(2, unit="steps", description="reading the model's state") as progress:
        state = client.get_model_state(name)
        progress.update(1, description=f"writing {out}")
        write_weights(state, out)
        progress.update(2)
    if as_json:
        print(json.dumps({"model": state.name, "step": state.step, "path": str(out)}))
    else:
        print(f"model {state.name}: step {state.step} written to {out}")
    return 0


def add_data_commands(commands: Any, client: argparse.ArgumentParser) -> None:
    """Add check-data, export, snapshot, snapshots and restore to the `hebbian` parser."""
    from service.cli_models import add_model_option

    check = commands.add_parser(
        "check-data", help="report on a data directory without starting a server",
        description="Verify the config, snapshots and write-ahead log of every model in a "
        "data directory, read-only, and say what a server would recover. Exit 1 if damaged.",
    )
    check.add_argument("directory", type=Path, help="the server's --data-dir")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    export = commands.add_parser(
        "export", parents=[client], help="save a served model's weights as .npz or .keras",
        description="Write a served model's config and full state (read with GetModelState; "
        "nothing is written on the server) as FILE.npz (the portable array format, numpy "
        "only) or FILE.keras (a Keras model that keeps learning; needs TensorFlow).",
    )
    add_model_option(export, positional=True)
    export.add_argument("--out", type=Path, required=True, metavar="FILE.npz|FILE.keras",
                        help="the file to write; its suffix picks the format")
    snap = commands.add_parser("snapshot", parents=[client], help="persist a model's state now")
    add_model_option(snap, positional=True)
    listing = commands.add_parser("snapshots", parents=[client], help="list a model's snapshots")
    add_model_option(listing, positional=True)
    restore = commands.add_parser(
        "restore", parents=[client], help="return a model to one of its snapshots"
    )
    restore.add_argument("snapshot_id", help="id from `hebbian snapshots`")
    add_model_option(restore, positional=True)


def run_data_command(client: Any, args: argparse.Namespace) -> int:
    """Run export, snapshot, snapshots or restore against a server (`args.model` resolved)."""
    from service.cli_models import record

    if args.command == "export":
        return export_model(client, args.model, args.out, args.json)
    if args.command == "snapshot":
        info = client.snapshot(args.model).snapshot
        if args.json:
            print(json.dumps(record(info), indent=2))
        else:
            print(f"snapshot {info.snapshot_id} at step {info.step}")
    elif args.command == "snapshots":
        snapshots = client.list_snapshots(args.model)
        if args.json:
            print(json.dumps([record(info) for info in snapshots], indent=2))
        else:
            for info in snapshots:
                print(f"{info.snapshot_id}  step {info.step}  {info.create_time.ToJsonString()}")
    elif args.command == "restore":
        model = client.restore(args.snapshot_id, args.model)
        if args.json:
            print(json.dumps(record(model), indent=2))
        else:
            print(f"model {model.name}: restored snapshot {args.snapshot_id}, step {model.step}")
    return 0
