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
    render.add_argument("--admin-socket", default=None, metavar="ADDRESS",
                        help="HAProxy's runtime API at level admin (a unix socket path or "
                        "ipv4@HOST:PORT), for `shards move --router-socket`")
    add_move_command(actions, client)


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
        stats_bind=args.health_bind, admin_socket=args.admin_socket,
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


def add_move_command(actions: Any, client: argparse.ArgumentParser) -> None:
    """`shards move --slots A-B --to K` (service/sharding/moves.py)."""
    move = actions.add_parser(
        "move", parents=[client], help="move slots and their models to another shard",
        description="Move slots A..B to shard K with their models' full state: each model "
        "is frozen on its shard (writes UNAVAILABLE, clients retry), exported, imported on "
        "K, then the slot table file is switched, the router's map follows, and the old "
        "copies are removed. Nothing acknowledged is lost, nothing is applied twice. "
        "Scaling 3 -> 4 shards: `--quarter-to 3` moves the last quarter of every range.",
    )
    move.add_argument("--targets", required=True, help=TARGETS_HELP)
    move.add_argument("--slot-table", type=Path, metavar="FILE", required=True,
                      help="the slot table file the shards read (rewritten atomically)")
    what = move.add_mutually_exclusive_group(required=True)
    what.add_argument("--slots", metavar="A-B", help="the slots to move (inclusive)")
    what.add_argument("--quarter-to", type=int, metavar="K", default=None,
                      help="a new shard K joins: move it 1/(N+1) of each range (N shards)")
    move.add_argument("--to", type=int, metavar="K", help="the shard the slots move to")
    move.add_argument("--router-socket", metavar="ADDRESS", default=None,
                      help="HAProxy's runtime API (unix socket path or HOST:PORT): its "
                      "map is changed in place with `set map`")
    move.add_argument("--router-map", metavar="PATH", default=None,
                      help="the map file as HAProxy's config names it (rewritten too when "
                      "it exists here)")
    move.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                      help="how long to wait for the shards to reload the table (120)")


def move_shards(args: argparse.Namespace, connect: Callable[[str], Any]) -> int:
    """`shards move`: prints each step; exit status 1 if the move failed (the message says
    what state it left)."""
    from service.sharding import moves
    from service.sharding.slot_table import SlotTable, SlotTableError

    targets = expand_targets(args.targets)
    try:
        if args.quarter_to is not None:
            plan = [(first, last, args.quarter_to) for first, last, _ in
                    moves.quarter_for_new_shard(SlotTable.load(args.slot_table),
                                                args.quarter_to)]
        elif args.to is None:
            raise InputError("--slots needs --to K")
        else:
            plan = [(*moves.parse_slots(args.slots), args.to)]
    except SlotTableError as err:
        raise InputError(str(err)) from None
    for first, last, to in plan:
        try:
            report = moves.move_slots(
                lambda shard: connect(targets[shard]), len(targets), args.slot_table,
                first, last, to, router_socket=args.router_socket, router_map=args.router_map,
                wait_s=args.wait, say=print,
            )
        except moves.MoveError as err:
            print(f"hebbian: slots {first}-{last}: {err}", file=sys.stderr)
            return 1
        print(f"slots {first}-{last} -> shard {to}: {len(report.moved)} model(s) moved")
    return 0
