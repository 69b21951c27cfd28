"""How close any design can come to the echo: `hebbian bench floor`.

Runs one stream (`--samples-per-message`, 1 by default; `--unary`: one Process call
after the other instead) against four servers in turn,
`--repeats` times: the bare echo, the two *floor* servers of `service.bench.echo` (the
echo plus one engine call per message; plus validation and one log record before it)
and the service itself (`hebbian serve`, fsync `no`, as `hebbian bench` starts it).
Prints each one's median messages/s, p50 latency, server CPU per message and ratios to
the echo.

The floors use the service's own engine, sample decoding and record encoding, and
nothing else: no model queue, exactly-once ids, accounting or metrics. So the `logged`
ratio is the most the service's 1 sample/message target can reach while gRPC Python
runs a handler per message and every acknowledged message is written before its answer;
the service's own ratio shows how much of the rest it spends.

    hebbian bench floor [--repeats 3] [--duration 2] [--samples-per-message 1] [--unary]
                        [--pin-servers CPUS] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from service.bench import load
from service.bench.procs import (
    EchoProcess,
    ServeProcess,
    cpus_text,
    parse_cpus,
    running_beside,
)
from service.bench.service import INPUT_DIM, RULE, UNITS, Bench, Scenario, model_toml

SERVERS = ("echo", "engine", "logged", "service")


def main(argv: list[str] | None = None) -> int:
    """Run the floor benchmark; print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="hebbian bench floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per server (default 3)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="seconds at the start of each run not counted")
    parser.add_argument("--window", type=int, default=64, help="most unanswered messages")
    parser.add_argument("--samples-per-message", type=int, default=1)
    parser.add_argument("--unary", action="store_true",
                        help="one Process call after the other instead of a stream")
    parser.add_argument("--pin-servers", type=parse_cpus, default=None, metavar="CPUS",
                        help="run the servers on these CPUs and this client on the others")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if min(args.repeats, args.samples_per_message, args.window) < 1 or args.duration <= 0:
        parser.error("--repeats, --samples-per-message and --window must be >= 1, "
                     "--duration > 0")
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def measure(args: argparse.Namespace) -> dict:
    """Start the four servers, run the stream against each in turn; the medians."""
    bench = Bench(args.duration, args.warmup, args.window, INPUT_DIM)
    scenario = Scenario("floor", "floor", samples_per_message=args.samples_per_message,
                        unary=args.unary)
    runs: dict[str, list[dict]] = {name: [] for name in SERVERS}
    started = []
    with tempfile.TemporaryDirectory(prefix="hebbian-bench-floor-") as workdir:
        try:
            servers = {}
            for work in ("echo", "engine", "logged"):
                echo = EchoProcess(Path(workdir), UNITS, work, cpus=args.pin_servers,
                                   work=work, input_dim=INPUT_DIM).start()
                started.append(echo)
                servers[work] = (echo.target, echo.pid)
            service = ServeProcess(Path(workdir), "service", model_toml(INPUT_DIM, UNITS, RULE, 1),
                                   ("--fsync", "no"), cpus=args.pin_servers).start()
            started.append(service)
            servers["service"] = (service.target, service.pid)
            for target, _ in servers.values():
                load.prime(target, INPUT_DIM)
            with running_beside(args.pin_servers):
                for repeat in range(args.repeats):
                    for name in SERVERS:
                        target, pid = servers[name]
                        runs[name].append(bench.run(scenario, target, pid))
                        print(f"[{repeat + 1}/{args.repeats}] {name}: "
                              f"{runs[name][-1]['messages_per_s']:,.0f} msgs/s",
                              file=sys.stderr, flush=True)
        finally:
            for process in reversed(started):
                process.stop()
    medians = {name: _medians(rows) for name, rows in runs.items()}
    echo = medians["echo"]
    for row in medians.values():
        row["vs_echo"] = row["messages_per_s"] / echo["messages_per_s"]
        row["p50_vs_echo"] = row["p50_ms"] / echo["p50_ms"]
    return {
        "settings": {"model": f"{INPUT_DIM}->{UNITS} {RULE}",
                     "samples_per_message": args.samples_per_message,
                     "unary": args.unary,
                     "repeats": args.repeats, "duration_s": args.duration,
                     "pinned": cpus_text(args.pin_servers) if args.pin_servers else None},
        "servers": medians,
        "runs": runs,
    }


def _medians(rows: list[dict]) -> dict:
    cpu = [r["server_cpu_us_per_msg"] for r in rows if r["server_cpu_us_per_msg"] is not None]
    return {"messages_per_s": statistics.median(r["messages_per_s"] for r in rows),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "server_cpu_us_per_msg": statistics.median(cpu) if cpu else None}


_WHAT = {
    "echo": "the bare gRPC echo",
    "engine": "echo + one engine call",
    "logged": "echo + validation + log record + engine call",
    "service": "hebbian serve (fsync no)",
}


def format_table(result: dict) -> str:
    """The medians as a text table."""
    settings = result["settings"]
    calls = "unary calls" if settings["unary"] else "one stream"
    lines = [f"{calls}, {settings['samples_per_message']} sample(s)/message, model "
             f"{settings['model']}, median of {settings['repeats']}"
             + (f", servers pinned to CPUs {settings['pinned']}" if settings["pinned"] else ""),
             f"{'server':<48}{'msgs/s':>10}{'vs echo':>9}{'p50 ms':>8}{'vs echo':>9}"
             f"{'us CPU/msg':>12}"]
    for name, row in result["servers"].items():
        cpu = row["server_cpu_us_per_msg"]
        cpu_text = "-" if cpu is None else f"{cpu:.0f}"
        lines.append(f"{_WHAT[name]:<48}{row['messages_per_s']:>10,.0f}"
                     f"{row['vs_echo']:>8.2f}x{row['p50_ms']:>8.2f}{row['p50_vs_echo']:>8.2f}x"
                     f"{cpu_text:>12}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
