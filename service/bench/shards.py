"""`hebbian bench shards`: three shards against one, through a real HAProxy, in one run.

Starts two setups on 127.0.0.1, each a real HAProxy (`haproxy`, Debian's package; the
config of `service.sharding.haproxy.render_config`, the map rendered from the slot table)
in front of `hebbian serve` shards started with `--slot-table FILE --shard I`, each with
its own data directory, `--fsync no` and free ports:

- `1`: one shard owning every slot (a one-range table), all the models on it;
- `3`: three shards (`SlotTable.even(3)`), the models spread evenly over them.

The same `--streams` models (256 -> 64 `oja` by default) are created in both, through the
router, with names picked by their slot so that each shard of the 3-shard setup owns
`streams / 3` of them. Then `--streams` concurrent StreamProcess calls, each to its own
model with the `x-hebbian-model` header, one sample per message (pre-serialised, as in
`hebbian bench`), run for `--duration` seconds against one setup and then the other,
alternating which goes first, `--repeats` times. The report: per setup the medians of
aggregate samples/s, p50/p99 latency and the CPU seconds of the shards, the router and
the client per run, the models each shard holds at the end, the ratio 3-shard / 1-shard,
and the machine's CPU count and load average. Every process and the temporary directory
are removed at the end, also on failure. Exit 2 when HAProxy is not installed.

    hebbian bench shards [--streams 12] [--duration 3] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from service.bench import load
from service.bench.procs import ServeProcess, _Child, usage
from service.bench.service import (
    INPUT_DIM,
    RULE,
    UNITS,
    cell,
    load_average,
    median_of_runs,
    progress,
)
from service.client import HebbianClient
from service.sharding.haproxy import render_config, render_map
from service.sharding.slot_table import SlotTable
from service.sharding.slots import MODEL_HEADER, slot_of

SETUPS = (1, 3)  # shards per setup
DEBIAN_HAPROXY = "/usr/sbin/haproxy"


def find_haproxy(explicit: str | None = None) -> str | None:
    """The HAProxy binary: `explicit`, else `haproxy` on PATH, else Debian's; None if none."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("haproxy")
    if found:
        return found
    return DEBIAN_HAPROXY if os.access(DEBIAN_HAPROXY, os.X_OK) else None


def model_names(streams: int, shards: int = 3, prefix: str = "bench") -> list[str]:
    """`streams` model names, name k owned by shard k % `shards` of `SlotTable.even(shards)`
    (so each shard owns streams / shards of them); deterministic."""
    table = SlotTable.even(shards)
    pools: dict[int, list[str]] = {shard: [] for shard in range(shards)}
    wanted = {shard: len(range(shard, streams, shards)) for shard in range(shards)}
    index = 0
    while any(len(pools[s]) < wanted[s] for s in pools):
        name = f"{prefix}-{index}"
        owner = table.owner(slot_of(name))
        if len(pools[owner]) < wanted[owner]:
            pools[owner].append(name)
        index += 1
    return [pools[k % shards][k // shards] for k in range(streams)]


class RouterProcess(_Child):
    """`haproxy -db -f WORKDIR/haproxy.cfg` on a free port of 127.0.0.1, checked with
    `haproxy -c` first and started once its frontend accepts a TCP connection."""

    def __init__(self, workdir: Path, binary: str, shards: dict[int, str], table: SlotTable):
        super().__init__(workdir, "haproxy")
        self.binary = binary
        self.workdir.mkdir(parents=True, exist_ok=True)
        map_path = self.workdir / "slots.map"
        map_path.write_text(render_map(table))
        self.config_path = self.workdir / "haproxy.cfg"
        self.config_path.write_text(render_config(
            shards, bind=f"127.0.0.1:{self.port}", map_file=str(map_path)))

    def start(self, timeout: float = 60.0) -> RouterProcess:
        """Check the config, start HAProxy, wait for its port."""
        checked = subprocess.run([self.binary, "-c", "-f", str(self.config_path)],
                                 capture_output=True, text=True, timeout=60, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy -c refused the config:\n{checked.stdout}"
                               f"{checked.stderr}")
        self._spawn([self.binary, "-db", "-f", str(self.config_path)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"haproxy not listening after {timeout:.0f} s:\n{self.log_tail()}")


@dataclass
class Setup:
    """One setup: its shards (ordinal = index) and the router in front of them."""

    shards: int
    servers: list[ServeProcess] = field(default_factory=list)
    router: RouterProcess | None = None

    @property
    def label(self) -> str:
        return f"{self.shards} shard{'s' if self.shards > 1 else ''} via HAProxy"


def start_setup(setup: Setup, workdir: Path, haproxy: str, started: list,
                env: dict[str, str] | None = None) -> None:
    """Start `setup`'s shards (in parallel) and its router; every process is appended to
    `started` before it starts, so the caller can stop it whatever happens."""
    table = SlotTable.even(setup.shards)
    workdir.mkdir(parents=True, exist_ok=True)
    table_path = workdir / "slot-table.yaml"
    table_path.write_text(table.to_yaml())
    for i in range(setup.shards):
        server = ServeProcess(workdir, f"shard-{i}", flags=(
            "--fsync", "no", "--slot-table", str(table_path), "--shard", str(i)), env=env)
        setup.servers.append(server)
        started.append(server)
    with ThreadPoolExecutor(setup.shards) as pool:
        list(pool.map(lambda server: server.start(), setup.servers))
    setup.router = RouterProcess(workdir / "router", haproxy,
                                 {i: s.target for i, s in enumerate(setup.servers)}, table)
    started.append(setup.router)
    setup.router.start()


def create_models(setup: Setup, names: list[str], input_dim: int, units: int) -> None:
    """Create every model through the router and answer one inference call for each (the
    model warmed up, its state untouched)."""
    assert setup.router is not None
    with HebbianClient(setup.router.target, timeout=120) as client:
        for index, name in enumerate(names):
            client.create_model(name, {"input_dim": input_dim, "layers": [
                {"units": units, "rule": RULE, "seed": index}]})
        for name in names:
            client.process(np.zeros((1, input_dim), np.float32), learn=False, model=name)


def models_per_shard(setup: Setup, names: list[str]) -> list[int]:
    """How many of `names` each shard holds (asked of each shard directly)."""
    wanted = set(names)
    counts = []
    for server in setup.servers:
        with HebbianClient(server.target, timeout=30) as client:
            counts.append(len(wanted & {model.name for model in client.list_models()}))
    return counts


def _cpu(pid: int | None) -> float | None:
    used = usage(pid)
    return used.cpu_seconds if used else None


def _delta(before: list[float | None], after: list[float | None]) -> float | None:
    if any(v is None for v in before + after):
        return None
    return sum(after) - sum(before)  # type: ignore[arg-type]


def run_once(setup: Setup, messages: list[list[bytes]], headers: list, args) -> dict:
    """One timed run of every stream against `setup`'s router; figures of the run."""
    assert setup.router is not None
    pids = [server.pid for server in setup.servers]
    servers_before, router_before = [_cpu(p) for p in pids], _cpu(setup.router.pid)
    result = load.stream_run(
        setup.router.target, messages, 1, streams=len(messages), duration=args.duration,
        warmup=args.warmup, window=args.window, metadata=headers,
    )
    servers_after, router_after = [_cpu(p) for p in pids], _cpu(setup.router.pid)
    return {
        "samples_per_s": result.samples_per_s,
        "messages_per_s": result.messages_per_s,
        "p50_ms": result.latency_ms(0.5),
        "p99_ms": result.latency_ms(0.99),
        "servers_cpu_s": _delta(servers_before, servers_after),
        "router_cpu_s": _delta([router_before], [router_after]),
        "client_cpu_s": result.client_cpu_seconds,
    }


def format_table(result: dict) -> str:
    """The result as plain text: settings, one line per setup, the ratio, the notes."""
    s = result["settings"]
    lines = [
        f"hebbian bench shards: {s['streams']} streams, each to its own model ({s['model']}), "
        f"1 sample/msg, at most {s['window']} unanswered per stream, fsync no; median of "
        f"{s['repeats']} runs of {s['duration']:g} s ({s['warmup']:g} s warm-up not counted)",
        "CPU s: seconds (user + system) over one run of the shards together, of HAProxy and "
        "of the client (one Python process, one event loop)",
        f"machine: {s['cpus']} CPUs, load average {cell(s['load_before'], '.2f')} before, "
        f"{cell(s['load_after'], '.2f')} after",
        "",
    ]
    head = (f"{'setup':<22}{'samples/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'shards CPU s':>14}"
            f"{'router CPU s':>14}{'client CPU s':>14}  models per shard")
    lines += [head, "-" * len(head)]
    for setup in result["setups"].values():
        f = setup["median"]
        lines.append(
            f"{setup['label']:<22}{cell(f['samples_per_s'], ',.0f'):>11}"
            f"{cell(f['p50_ms'], '.2f'):>9}{cell(f['p99_ms'], '.2f'):>9}"
            f"{cell(f['servers_cpu_s'], '.2f'):>14}{cell(f['router_cpu_s'], '.2f'):>14}"
            f"{cell(f['client_cpu_s'], '.2f'):>14}  "
            f"{' '.join(str(n) for n in setup['models_per_shard'])}"
        )
    lines.append(f"{'ratio 3 / 1 shard':<22}{cell(result['ratio'], '.2f') + 'x':>11}")
    lines.append("")
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The flags of `hebbian bench shards`."""
    parser = argparse.ArgumentParser(
        prog="hebbian bench shards",
        description="Aggregate samples/s of 3 shards against 1, both behind a real HAProxy, "
        "with N streams each to its own model; the ratio in one run.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--streams", type=int, default=12,
                        help="concurrent streams, each to its own model (default 12)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per setup, alternating (default 3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="seconds at the start of each run not counted (default 0.5)")
    parser.add_argument("--window", type=int, default=64,
                        help="most unanswered messages per stream (default 64)")
    parser.add_argument("--input-dim", type=int, default=INPUT_DIM,
                        help=f"model input width (default {INPUT_DIM})")
    parser.add_argument("--units", type=int, default=UNITS,
                        help=f"model output width (default {UNITS})")
    parser.add_argument("--haproxy", metavar="PATH",
                        help=f"the haproxy binary (default: on PATH, else {DEBIAN_HAPROXY})")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON). 2: bad arguments or no HAProxy."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.streams < 1 or args.window < 1 or args.duration <= args.warmup:
        parser.error("--repeats, --streams and --window must be >= 1 and --duration > --warmup")
    haproxy = find_haproxy(args.haproxy)
    if haproxy is None:
        where = args.haproxy or f"neither haproxy on PATH nor {DEBIAN_HAPROXY}"
        print(f"hebbian bench shards: HAProxy not found ({where}); install it (Debian: "
              "apt-get install haproxy) or name it with --haproxy", file=sys.stderr)
        return 2
    load_before = load_average()
    try:
        with tempfile.TemporaryDirectory(prefix="hebbian-bench-shards-") as tmp:
            result = _run(args, haproxy, Path(tmp))
    except (grpc.RpcError, RuntimeError) as err:
        detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
        print(f"hebbian bench shards: error: {detail}", file=sys.stderr)
        return 1
    result["settings"]["load_before"] = load_before
    result["settings"]["load_after"] = load_average()
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _run(args, haproxy: str, workdir: Path) -> dict:
    names = model_names(args.streams)
    headers = [((MODEL_HEADER, name),) for name in names]
    messages = [load.payloads(args.input_dim, 1, name) for name in names]
    setups = {n: Setup(n) for n in SETUPS}
    runs: dict[int, list[dict]] = {n: [] for n in SETUPS}
    started: list = []
    try:
        for n, setup in setups.items():
            progress(f"starting {setup.label} ({args.streams} models)")
            start_setup(setup, workdir / f"setup-{n}", haproxy, started)
            create_models(setup, names, args.input_dim, args.units)
        for repeat in range(args.repeats):
            order = list(SETUPS) if repeat % 2 == 0 else list(reversed(SETUPS))
            for n in order:
                figures = run_once(setups[n], messages, headers, args)
                if not figures["messages_per_s"]:
                    raise RuntimeError(f"{setups[n].label}: no stream message answered")
                runs[n].append(figures)
                progress(f"[{repeat + 1}/{args.repeats}] {setups[n].label:<22} "
                          f"{figures['samples_per_s']:>9,.0f} samples/s  p50 "
                          f"{figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms")
        held = {n: models_per_shard(setups[n], names) for n in SETUPS}
    finally:
        for process in reversed(started):
            process.stop()
    medians = {n: median_of_runs(runs[n]) for n in SETUPS}
    one, three = medians[1]["samples_per_s"], medians[3]["samples_per_s"]
    cpus = os.cpu_count() or 1
    notes = [
        "both setups run on this machine at once (the idle one costs only HAProxy's health "
        "checks); the shards, HAProxy and the client share its CPUs",
    ]
    if cpus < 2 * max(SETUPS) + 2:
        notes.append(
            f"with {cpus} CPUs this is not scaling out: the shards, HAProxy and the client "
            "compete for the same cores, so the ratio is bounded by the cores, not by the "
            "shards. One `hebbian serve` is held to about one core by Python's GIL (see its "
            "CPU s per run second), so on a machine with spare cores three processes can "
            f"gain, at most about {cpus}x here; what falls short of that is the router's "
            "and the extra processes' overhead. On separate machines each shard brings its "
            "own cores")
    return {
        "settings": {
            "streams": args.streams,
            "model": f"{args.input_dim}->{args.units} {RULE}",
            "repeats": args.repeats,
            "duration": args.duration,
            "warmup": args.warmup,
            "window": args.window,
            "cpus": cpus,
            "haproxy": haproxy,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "models": names,
        "setups": {
            str(n): {"label": setups[n].label, "shards": n, "median": medians[n],
                     "runs": runs[n], "models_per_shard": held[n]}
            for n in SETUPS
        },
        "ratio": three / one if one else None,
        "notes": notes,
    }
