"""`hebbian shards status|render-haproxy` and `hebbian models list --targets`: the commands
of a sharded deployment (service/sharding).

Shards are named by their addresses in ordinal order: `--targets` is a comma-separated
list (`h0:50051,h1:50051,...`, target i = shard i), where `{A..B}` expands like the shell's
brace ranges, so a StatefulSet's pods behind its headless Service are
`--targets 'hebbian-{0..2}.hebbian-headless.hebbian.svc:50051'`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.cli_io import InputError
from service.cli_models import record

_BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
TARGETS_HELP = ("the shards' addresses in ordinal order, comma-separated; {A..B} expands to "
                "A..B (e.g. 'hebbian-{0..2}.hebbian-headless.hebbian.svc:50051')")


def expand_targets(text: str) -> list[str]:
    """The addresses of `--targets`, brace ranges expanded, in order.

    Raises:
      InputError: no address, or a range that runs backwards.
    """
    targets: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _BRACE_RANGE.search(item)
        if match is None:
            targets.append(item)
            continue
        first, last = int(match[1]), int(match[2])
        if last < first:
            raise InputError(f"--targets {item!r}: the range {match[0]} runs backwards")
        targets += [item[:match.start()] + str(i) + item[match.end():]
                    for i in range(first, last + 1)]
    if not targets:
        raise InputError("--targets needs at least one HOST:PORT")
    return targets


def add_shards_command(commands: Any, client: argparse.ArgumentParser) -> None:
    """`shards status|render-haproxy` on the `hebbian` parser (`client`: shared options)."""
    shards = commands.add_parser("shards", help="the shards of a sharded deployment")
    actions = shards.add_subparsers(dest="shards_command", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status", parents=[client], help="per shard: reachable, models, slots owned",
        description="Ask every shard for its models; with --slot-table, show the slots "
        "each one owns and flag models held by a shard that does not own them.",
    )
    status.add_argument("--targets", required=True, help=TARGETS_HELP)
    status.add_argument("--slot-table", type=Path, metavar="FILE", help="the slot table")
    render = actions.add_parser(
        "render-haproxy", help="write the router's haproxy.cfg and slots.map",
        description="Render HAProxy's map (slot -> shard) from a slot table, and a config "
        "that routes gRPC by the x-hebbian-model header to the given shards.",
    )
    render.add_argument("--slot-table", type=Path, metavar="FILE", required=True)
    render.add_argument("--out", type=Path, metavar="DIR", required=True,
                        help="directory to write haproxy.cfg and slots.map into")
    render.add_argument("--servers", required=True, metavar="TARGETS",
                        help="the shards' addresses (as --targets): " + TARGETS_HELP)
    render.add_argument("--default-model", default="default",
                        help="the model a call without the header goes to (default: default)")
    render.add_argument("--bind", default=":50051", help="the gRPC frontend (default :50051)")
    render.add_argument("--health-bind", default=None, metavar="ADDRESS",
                        help="an HTTP frontend answering /healthz, e.g. :8404")
    render.add_argument("--map-file", default=None, metavar="PATH",
                        help="where HAProxy reads slots.map (default: in --out; in an "
                        "image, e.g. /usr/local/etc/haproxy/slots.map)")
    render.add_argument("--dns", action="store_true",
                        help="resolve the servers at run time (pod names that come and go)")


def render_haproxy(args: argparse.Namespace) -> int:
    """`shards render-haproxy`: write haproxy.cfg and slots.map; prints their paths."""
    from service.sharding.haproxy import render_config, render_map
    from service.sharding.slot_table import SlotTable, SlotTableError

    try:
        table = SlotTable.load(args.slot_table)
    except SlotTableError as err:
        raise InputError(str(err)) from None
    servers = dict(enumerate(expand_targets(args.servers)))
    missing = [shard for shard in table.shards() if shard not in servers]
    if missing:
        raise InputError(f"the slot table names shard(s) {missing} but --servers has "
                         f"{len(servers)} address(es)")
    args.out.mkdir(parents=True, exist_ok=True)
    map_path = args.out / "slots.map"
    config = render_config(
        servers, default_model=args.default_model, bind=args.bind,
        map_file=args.map_file or str(map_path.resolve()), dns=args.dns,
        stats_bind=args.health_bind,
    )
    map_path.write_text(render_map(table))
    (args.out / "haproxy.cfg").write_text(config)
    print(args.out / "haproxy.cfg")
    print(map_path)
    return 0


def _ask_shards(args: argparse.Namespace, connect: Callable[[str], Any], ask: Callable) -> list:
    """(shard, target, answer or the error) for each of `args.targets`, in order."""
    from service.client import HebbianError

    answers = []
    for shard, target in enumerate(expand_targets(args.targets)):
        try:
            with connect(target) as client:
                answers.append((shard, target, ask(client)))
        except HebbianError as error:
            answers.append((shard, target, error))
    return answers


def list_models_on_shards(args: argparse.Namespace, connect: Callable[[str], Any]) -> int:
    """`models list --targets ...`: every shard's models, merged, with each one's shard.
    An unreachable shard is reported on stderr (exit status 1) and the others are shown."""
    from service.client import HebbianError

    answers = _ask_shards(args, connect, lambda client: client.list_models())
    rows = sorted(((model.name, shard, model) for shard, _, models in answers
                   if not isinstance(models, HebbianError) for model in models),
                  key=lambda row: (row[0], row[1]))
    if args.json:
        print(json.dumps([{**record(m), "shard": shard} for _, shard, m in rows], indent=2))
    else:
        print(f"{'NAME':<24} {'SHARD':>5} {'STEP':>12}  {'SHAPE':<14} RULES")
        for name, shard, model in rows:
            widths = [model.config.input_dim, *(layer.units for layer in model.config.layers)]
            rules = ",".join(layer.rule or "oja" for layer in model.config.layers)
            shape = "->".join(str(w) for w in widths)
            shown = name + (" *" if model.is_default else "")
            print(f"{shown:<24} {shard:>5} {model.step:>12}  {shape:<14} {rules}")
    failed = [(shard, target, e) for shard, target, e in answers if isinstance(e, HebbianError)]
    for shard, _target, error in failed:
        print(f"hebbian: shard {shard}: {error}", file=sys.stderr)
    return 1 if failed else 0


def shards_status(args: argparse.Namespace, connect: Callable[[str], Any]) -> int:
    """`shards status`: per shard whether it answers, its models and the slots it owns."""
    from service.client import HebbianError
    from service.sharding.slot_table import SlotTable, SlotTableError, format_ranges
    from service.sharding.slots import slot_of

    table = None
    if args.slot_table is not None:
        try:
            table = SlotTable.load(args.slot_table)
        except SlotTableError as err:
            raise InputError(str(err)) from None
    answers = _ask_shards(args, connect, lambda client: client.list_models())
    records = []
    for shard, target, models in answers:
        reachable = not isinstance(models, HebbianError)
        names = [m.name for m in models] if reachable else []
        entry: dict[str, Any] = {"shard": shard, "target": target, "reachable": reachable,
                                 "models": names}
        if not reachable:
            entry["error"] = str(models)
        if table is not None:
            entry["slots"] = format_ranges(table.ranges_of(shard))
            entry["slot_count"] = table.slot_count(shard)
            entry["misplaced"] = [n for n in names if table.owner(slot_of(n)) != shard]
        records.append(entry)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for entry in records:
            state = "up" if entry["reachable"] else f"DOWN ({entry['error']})"
            slots = (f", slots {entry['slots']} ({entry['slot_count']})"
                     if table is not None else "")
            print(f"shard {entry['shard']} {entry['target']}: {state}, "
                  f"{len(entry['models'])} model(s){slots}")
            if entry["models"]:
                print("  models: " + ", ".join(entry["models"]))
            if entry.get("misplaced"):
                print("  NOT OWNED by the table (refused): " + ", ".join(entry["misplaced"]))
    return 0 if all(entry["reachable"] for entry in records) else 1
