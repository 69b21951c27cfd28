"""`hebbian bench`: the service end to end against a bare gRPC echo server, side by side.

Starts `hebbian serve` (model 256 -> 64 `oja`, a temporary data directory, fsync `no`),
a second one with fsync `always`, and the echo server of `service.bench.echo` (same
transport, same message sizes, no model), then runs every scenario against the service
and the echo in turn, `--repeats` times, and reports the medians:

- `stream_1`: one sample per message on one stream;
- `stream_64`: 64 samples per message (raw float32 bytes) on one stream;
- `streams_8`: one sample per message on 8 concurrent streams;
- `streams_8_fsync_always`: the same against the server with fsync `always`;
- `streams_16_models`: one sample per message on 16 streams, each to its own model;
- `unary`: one Process call after the other, one sample each;
- `offered_500`: one stream sending 500 samples/s on a fixed schedule (latency).

Per scenario: samples/s, messages/s, p50/p99 latency, the server's CPU seconds over the
run and its peak RSS (from /proc), the service's mean samples per micro-batch
and the engine seconds of those batches (from its /metrics: how well adaptive
micro-batching works and what share of the CPU the maths takes), and the ratio
service/echo. Then a server with the
default model is started `--repeats` times for start-to-readiness time and peak RSS.
Progress goes to stderr (with rate and ETA on a terminal); the result to stdout as a table
with PASS/FAIL per target, or JSON (`--json`). With `--target` it measures a running
server instead (no CPU/RSS unless `--server-pid`, no micro-batches unless
`--server-metrics`, no fsync comparison, no start-up figures).

    hebbian bench [--json] [--repeats 3] [--duration 2] [--target HOST:PORT] ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from service.bench import load
from service.bench.models import measure_models
from service.bench.procs import (
    EchoProcess,
    ServeProcess,
    cpus_text,
    micro_batches,
    parse_cpus,
    running_beside,
    serve_flags,
    thread_cpu,
    usage,
)
from service.cli_io import Progress

INPUT_DIM, UNITS, RULE = 256, 64, "oja"
DEFAULT_MODEL_INPUT_DIM = 16  # the embedded default model, 16 -> 4 sanger

# Targets
MIN_STREAM_1_VS_ECHO = 0.8  # messages/s
MIN_STREAM_64_VS_ECHO = 0.6  # samples/s
MAX_UNARY_P50_VS_ECHO = 1.3
MAX_OFFERED_P99_MS = 5.0
MIN_FSYNC_ALWAYS_VS_NO = 0.5  # samples/s, 8 streams
MIN_MODELS_16_VS_ECHO = 0.7  # samples/s, 16 streams on 16 models
MAX_READY_S = 3.0  # warm engine cache
MAX_DEFAULT_RSS_MB = 250.0
MAX_CREATE_P50_MS = 50.0  # CreateModel of a 64 -> 16 model
MAX_MODELS_RSS_MB = 400.0  # 64 models of 64 -> 16
MAX_RESTART_S = 5.0  # restart to readiness SERVING with those 64 models


# A server to measure: gRPC host:port, process id (CPU and RSS) and /metrics URL
# (micro-batches), each None where unknown.
Server = tuple[str, int | None, str | None]


@dataclass(frozen=True)
class Scenario:
    """One load pattern; `server` names the service process it runs against."""

    key: str
    title: str
    samples_per_message: int = 1
    streams: int = 1
    unary: bool = False
    rate: float | None = None  # messages/s per stream, None: as fast as the window allows
    models: int = 1  # streams spread over this many models (the default one when 1)
    server: str = "main"
    min_duration: float = 0.0  # seconds per run at least (enough samples for a p99)


SCENARIOS = (
    Scenario("stream_1", "1 sample/msg, 1 stream"),
    Scenario("stream_64", "64 samples/msg raw, 1 stream", samples_per_message=64),
    Scenario("streams_8", "1 sample/msg, 8 streams", streams=8),
    Scenario("streams_8_fsync_always", "8 streams, fsync always", streams=8, server="fsync"),
    Scenario("streams_16_models", "16 streams, 16 models", streams=16, models=16),
    Scenario("unary", "unary, 1 sample/call", unary=True),
    Scenario("offered_500", "offered 500 samples/s", rate=500.0, min_duration=4.0),
)


MODELS = 16  # models of the many-models scenario: the default one and m1 .. m15


def model_name(index: int) -> str:
    """The name of the many-models scenario's model `index` (0: the default model)."""
    return "" if index == 0 else f"m{index}"


def model_toml(input_dim: int, units: int, rule: str, models: int = MODELS) -> str:
    """A config file whose `models` models are all `input_dim -> units` with `rule`: the
    default one and `m1`, `m2`, ..."""
    return "".join(
        f"[models.{model_name(i) or 'default'}]\n"
        f"input_dim = {input_dim}\n"
        f'layers = [{{units = {units}, rule = "{rule}", seed = {i}}}]\n'
        for i in range(models)
    )


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def load_average() -> float | None:
    """The 1-minute load average, or None where the system has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass
class Bench:
    """Settings of one benchmark run."""

    duration: float
    warmup: float
    window: int
    input_dim: int
    model: str = ""

    def run(
        self, scenario: Scenario, target: str, pid: int | None, metrics_url: str | None = None
    ) -> dict:
        """One timed run of `scenario` against `target`; the server's usage from /proc and
        its micro-batches from `metrics_url`."""
        messages = load.payloads(
            self.input_dim, scenario.samples_per_message, self.model, unary=scenario.unary
        )
        if scenario.models > 1:  # stream i sends to model i % models
            messages = [load.payloads(self.input_dim, scenario.samples_per_message,
                                      model_name(i % scenario.models))
                        for i in range(scenario.streams)]
        duration = max(self.duration, scenario.min_duration)
        before, batches_before = usage(pid), micro_batches(metrics_url)
        threads_before = thread_cpu(pid)
        if scenario.unary:
            result = load.unary_run(
                target, messages, scenario.samples_per_message,
                duration=duration, warmup=self.warmup,
            )
        else:
            result = load.stream_run(
                target, messages, scenario.samples_per_message, streams=scenario.streams,
                duration=duration, warmup=self.warmup, window=self.window,
                rate=scenario.rate,
            )
        after, batches_after = usage(pid), micro_batches(metrics_url)
        threads_after = thread_cpu(pid)
        cpu = after.cpu_seconds - before.cpu_seconds if before and after else None
        batches = engine = None
        if batches_before and batches_after:
            count = batches_after.count - batches_before.count
            batches = (batches_after.samples - batches_before.samples) / count if count else None
            engine = batches_after.engine_seconds - batches_before.engine_seconds
        answered = result.messages_per_s * duration  # over the whole run, warm-up included
        return {
            "samples_per_s": result.samples_per_s,
            "messages_per_s": result.messages_per_s,
            "p50_ms": result.latency_ms(0.5),
            "p99_ms": result.latency_ms(0.99),
            "server_cpu_s": cpu,
            "server_cpu_us_per_msg": cpu / answered * 1e6 if cpu is not None and answered else None,
            "server_peak_rss_mb": after.peak_rss_mb if after else None,
            "samples_per_microbatch": batches,
            "engine_s": engine,
            "client_cpu_s": result.client_cpu_seconds,
            "thread_cpu_us_per_msg": _per_message(threads_before, threads_after, answered),
            "server_cpus": _affinity(pid),
        }


def _affinity(pid: int | None) -> list[int] | None:
    """The CPUs process `pid` may run on (None without a pid, or once it has ended)."""
    try:
        return sorted(os.sched_getaffinity(pid)) if pid else None
    except OSError:
        return None


def _per_message(before: dict[str, float] | None, after: dict[str, float] | None,
                 answered: float) -> dict[str, float] | None:
    """CPU microseconds per message answered, per thread name (threads alive at the end;
    "(ended)": threads that ended during the run, such as the streams' readers)."""
    if before is None or after is None or not answered:
        return None
    return {name: (seconds - before.get(name, 0.0)) / answered * 1e6
            for name, seconds in sorted(after.items())
            if seconds - before.get(name, 0.0) > 0}


def median_of_runs(runs: list[dict]) -> dict:
    """Per key, the median over runs (None if a run has no value; per name for dicts)."""
    out: dict = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        if any(v is None for v in values):
            out[key] = None
        elif isinstance(values[0], dict):  # per thread name: the median of each
            names = sorted({name for value in values for name in value})
            out[key] = {name: statistics.median(v.get(name, 0.0) for v in values)
                        for name in names}
        else:
            out[key] = statistics.median(values)
    return out


def _ratios(service: dict, echo: dict) -> dict:
    keys = ("samples_per_s", "messages_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_msg")
    return {
        k: service[k] / echo[k] if service[k] is not None and echo[k] else None for k in keys
    }


def run_scenarios(
    bench: Bench, scenarios: list[Scenario], servers: dict[str, Server], echo: Server,
    repeats: int,
) -> dict:
    """Every scenario against its service and the echo, interleaved, `repeats` times."""
    runs: dict[str, dict[str, list[dict]]] = {s.key: {"service": [], "echo": []} for s in scenarios}
    total = repeats * len(scenarios) * 2
    # rate and ETA on a terminal; redrawn once a second, so the client's CPU is not its cost
    with Progress(total, unit="runs", refresh_per_second=1) as progress:
        for repeat in range(repeats):
            for scenario in scenarios:
                sides = [("service", servers[scenario.server]), ("echo", echo)]
                if repeat % 2:  # alternate who goes first
                    sides.reverse()
                for side, (target, pid, metrics_url) in sides:
                    progress.update(progress.done, description=f"{scenario.key} {side}")
                    figures = bench.run(scenario, target, pid, metrics_url)
                    runs[scenario.key][side].append(figures)
                    progress.write(
                        f"[{repeat + 1}/{repeats}] {scenario.key:<24} {side:<7} "
                        f"{figures['samples_per_s']:>10,.0f} samples/s "
                        f"{figures['messages_per_s']:>8,.0f} msg/s  p50 "
                        f"{figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms",
                        sys.stderr,
                    )
                    progress.update(progress.done + 1)
    results = {}
    for scenario in scenarios:
        service = median_of_runs(runs[scenario.key]["service"])
        echo_figures = median_of_runs(runs[scenario.key]["echo"])
        results[scenario.key] = {
            "title": scenario.title,
            "samples_per_message": scenario.samples_per_message,
            "streams": scenario.streams,
            "unary": scenario.unary,
            "rate": scenario.rate,
            "service": service,
            "echo": echo_figures,
            "ratio": _ratios(service, echo_figures),
            "runs": runs[scenario.key],
        }
    return results


def measure_startup(workdir: Path, repeats: int, bench: Bench, env: dict[str, str]) -> dict:
    """Start a server with the default model `repeats` times: start-to-SERVING seconds, and
    peak RSS after a short stream of single samples and of 64-sample messages."""
    runs = []
    short = Bench(min(bench.duration, 1.0), min(bench.warmup, 0.2), bench.window,
                  DEFAULT_MODEL_INPUT_DIM)
    for repeat in range(repeats):
        with ServeProcess(workdir, f"default-{repeat}", env=env) as server:
            for scenario in (SCENARIOS[0], SCENARIOS[1]):
                short.run(scenario, server.target, server.pid)
            peak = usage(server.pid)
            runs.append({
                "ready_s": server.ready_seconds,
                "peak_rss_mb": peak.peak_rss_mb if peak else None,
                "anon_rss_mb": peak.anon_rss_mb if peak else None,
            })
        progress(
            f"[{repeat + 1}/{repeats}] startup, default model: ready in "
            f"{runs[-1]['ready_s']:.1f} s, peak RSS {runs[-1]['peak_rss_mb']:.0f} MB"
        )
    return {**median_of_runs(runs), "runs": runs}


def evaluate_targets(result: dict) -> dict[str, dict]:
    """Each target: its label, the measured value and whether it is met (None: not run)."""
    sc = result["scenarios"]
    targets: dict[str, dict] = {}

    def add(key: str, label: str, value: float | None, ok: Callable[[float], bool]) -> None:
        targets[key] = {
            "label": label, "value": value, "pass": None if value is None else bool(ok(value)),
        }

    def ratio(scenario: str, field: str) -> float | None:
        return sc[scenario]["ratio"][field] if scenario in sc else None

    add("stream_1", f"1 sample/msg, 1 stream: messages/s >= {MIN_STREAM_1_VS_ECHO}x echo",
        ratio("stream_1", "messages_per_s"), lambda v: v >= MIN_STREAM_1_VS_ECHO)
    add("stream_64", f"64 samples/msg raw: samples/s >= {MIN_STREAM_64_VS_ECHO}x echo",
        ratio("stream_64", "samples_per_s"), lambda v: v >= MIN_STREAM_64_VS_ECHO)
    add("unary", f"unary: p50 latency <= {MAX_UNARY_P50_VS_ECHO}x echo",
        ratio("unary", "p50_ms"), lambda v: v <= MAX_UNARY_P50_VS_ECHO)
    add("offered_500", f"offered 500 samples/s: p99 latency < {MAX_OFFERED_P99_MS:g} ms",
        sc["offered_500"]["service"]["p99_ms"] if "offered_500" in sc else None,
        lambda v: v < MAX_OFFERED_P99_MS)
    fsync = None
    if "streams_8" in sc and "streams_8_fsync_always" in sc:
        fsync = (sc["streams_8_fsync_always"]["service"]["samples_per_s"]
                 / sc["streams_8"]["service"]["samples_per_s"])
    add("fsync", f"8 streams: fsync always >= {MIN_FSYNC_ALWAYS_VS_NO}x fsync no (samples/s)",
        fsync, lambda v: v >= MIN_FSYNC_ALWAYS_VS_NO)
    add("models_16", f"16 streams on 16 models: samples/s >= {MIN_MODELS_16_VS_ECHO}x echo",
        ratio("streams_16_models", "samples_per_s"), lambda v: v >= MIN_MODELS_16_VS_ECHO)
    startup = result.get("startup") or {}
    add("ready", f"start to readiness SERVING <= {MAX_READY_S:g} s (default model)",
        startup.get("ready_s"), lambda v: v <= MAX_READY_S)
    add("rss", f"peak RSS <= {MAX_DEFAULT_RSS_MB:g} MB (default model)",
        startup.get("peak_rss_mb"), lambda v: v <= MAX_DEFAULT_RSS_MB)
    models = result.get("models") or {}
    add("create", f"CreateModel {models.get('model', '64->16')}: p50 <= "
        f"{MAX_CREATE_P50_MS:g} ms", models.get("create_p50_ms"),
        lambda v: v <= MAX_CREATE_P50_MS)
    add("models_rss", f"{models.get('models', 64)} models: RSS <= {MAX_MODELS_RSS_MB:g} MB",
        models.get("rss_with_models_mb"), lambda v: v <= MAX_MODELS_RSS_MB)
    add("restart", f"restart with {models.get('models', 64)} models to readiness SERVING "
        f"<= {MAX_RESTART_S:g} s", models.get("restart_ready_s"), lambda v: v <= MAX_RESTART_S)
    return targets


def cell(value: float | None, fmt: str) -> str:
    """A table cell: `value` formatted, or "-" when unknown."""
    return "-" if value is None else format(value, fmt)


def format_table(result: dict) -> str:
    """The result as a plain-text table, then the targets."""
    s = result["settings"]
    lines = [
        f"hebbian bench: model {s['model']}, fsync {s['fsync']}; median of {s['repeats']} "
        f"runs of {s['duration']:g} s ({s['warmup']:g} s warm-up not counted), "
        f"at most {s['window']} messages unanswered per stream",
        "CPU s: the server process's CPU seconds (user + system) over one run; us/msg: per "
        "message answered; RSS: the server's peak resident memory",
        "batch: samples per micro-batch (mean); engine s: the seconds of those "
        "engine calls over one run (from the server's /metrics)",
        f"machine: {s['cpus']} CPUs, load average {cell(s['load_before'], '.2f')} before, "
        f"{cell(s['load_after'], '.2f')} after",
        *([f"servers started with {' '.join(f'{k}={v}' for k, v in s['server_env'].items())}"]
          if s.get("server_env") else []),
        *([f"servers pinned to CPU {cpus_text(s['pinned']['servers'])}, this client to CPU "
           f"{cpus_text(s['pinned']['client'])}"] if s.get("pinned") else []),
        "",
    ]
    head = (f"{'scenario':<30}{'server':<9}{'samples/s':>11}{'msgs/s':>9}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'CPU s':>7}{'us/msg':>8}{'RSS MB':>8}{'batch':>7}{'engine s':>9}")
    lines += [head, "-" * len(head)]
    for scenario in result["scenarios"].values():
        for side in ("service", "echo", "ratio"):
            f = scenario[side]
            title = scenario["title"] if side == "service" else ""
            if side == "ratio":
                lines.append(
                    f"{title:<30}{'ratio':<9}{cell(f['samples_per_s'], '.2f') + 'x':>11}"
                    f"{cell(f['messages_per_s'], '.2f') + 'x':>9}"
                    f"{cell(f['p50_ms'], '.2f') + 'x':>9}{cell(f['p99_ms'], '.2f') + 'x':>9}"
                    f"{'':>7}{cell(f['server_cpu_us_per_msg'], '.2f') + 'x':>8}"
                )
                continue
            lines.append(
                f"{title:<30}{side:<9}{cell(f['samples_per_s'], ',.0f'):>11}"
                f"{cell(f['messages_per_s'], ',.0f'):>9}{cell(f['p50_ms'], '.2f'):>9}"
                f"{cell(f['p99_ms'], '.2f'):>9}{cell(f['server_cpu_s'], '.2f'):>7}"
                f"{cell(f['server_cpu_us_per_msg'], '.0f'):>8}"
                f"{cell(f['server_peak_rss_mb'], '.0f'):>8}"
                f"{cell(f.get('samples_per_microbatch'), '.1f'):>7}"
                f"{cell(f.get('engine_s'), '.2f'):>9}"
            )
    lines += _thread_lines(result["scenarios"].values())
    startup = result.get("startup")
    if startup:
        lines += [
            "",
            f"default model (16 -> 4 sanger): start to readiness SERVING "
            f"{startup['ready_s']:.1f} s, peak RSS {cell(startup['peak_rss_mb'], '.0f')} MB "
            f"(anonymous {cell(startup.get('anon_rss_mb'), '.0f')} MB at the end, the rest is "
            "shared-library pages); 256 -> 64 oja: ready in "
            f"{cell(result['ready_s'].get('main'), '.1f')} s",
        ]
    models = result.get("models")
    if models:
        lines += [
            f"engine cache: start to SERVING {models['ready_cold_s']:.1f} s cold (kernels "
            f"compiled), {models['ready_warm_s']:.1f} s warm; {models['models']} models of "
            f"{models['model']}: CreateModel p50 {models['create_p50_ms']:.1f} ms (p99 "
            f"{models['create_p99_ms']:.1f}), RSS {cell(models['rss_with_models_mb'], '.0f')} "
            f"MB, restart to SERVING {models['restart_ready_s']:.1f} s "
            f"(RSS {cell(models['restart_rss_mb'], '.0f')} MB)",
        ]
    lines += ["", "targets:"]
    for target in result["targets"].values():
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[target["pass"]]
        value = "" if target["value"] is None else f"  ({target['value']:.2f})"
        lines.append(f"  [{mark}] {target['label']}{value}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _thread_lines(scenarios) -> list[str]:
    """Server CPU us per message by OS thread name, service and echo, for each scenario."""
    lines = ["", "server CPU us per message by thread (rpc-handler: gRPC's handler threads; "
             "grpc_*, default-executo, resolver-*: gRPC's core; (ended): threads that ended "
             "in the run, e.g. the streams' readers)"]
    any_figures = False
    for scenario in scenarios:
        for side in ("service", "echo"):
            threads = scenario[side].get("thread_cpu_us_per_msg")
            if not threads:
                continue
            any_figures = True
            cells = ", ".join(f"{name} {value:.0f}" for name, value in
                              sorted(threads.items(), key=lambda item: -item[1]) if value >= 1)
            title = scenario["title"] if side == "service" else ""
            lines.append(f"{title:<30}{side:<9}{cells}")
    return lines if any_figures else []


def build_parser() -> argparse.ArgumentParser:
    """The flags of `hebbian bench`."""
    parser = argparse.ArgumentParser(
        prog="hebbian bench",
        description="The service end to end versus a bare gRPC echo server "
        "(`hebbian bench engine` benchmarks the engine alone).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--duration", type=float, default=2.0,
                        help="seconds per run (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="seconds at the start of each run not counted (default 0.5)")
    parser.add_argument("--window", type=int, default=64,
                        help="most unanswered messages per stream (default 64)")
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                        help="comma-separated subset of: " + ", ".join(s.key for s in SCENARIOS))
    parser.add_argument("--input-dim", type=int, default=INPUT_DIM,
                        help=f"model input width (default {INPUT_DIM})")
    parser.add_argument("--units", type=int, default=UNITS,
                        help=f"model output width (default {UNITS})")
    parser.add_argument("--no-startup", dest="startup", action="store_false",
                        help="skip the start-up time and RSS of the default model")
    parser.add_argument("--target", metavar="HOST:PORT",
                        help="measure this running server instead of starting one")
    parser.add_argument("--model", default="",
                        help="with --target: the model to load (default: the default model)")
    parser.add_argument("--server-pid", type=int,
                        help="with --target: the server's pid, for CPU and RSS")
    parser.add_argument("--server-metrics", metavar="URL",
                        help="with --target: the server's /metrics URL, for its micro-batches")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the servers this starts (repeatable), "
                        "e.g. OPENBLAS_NUM_THREADS=1")
    parser.add_argument("--pin-servers", metavar="CPUS", type=_cpu_list,
                        help="run the servers this starts (service and echo, every thread) "
                        "on these CPUs (taskset -c syntax: 1, 0,2, 2-3) and this client on "
                        "the others, so that the scheduler cannot put them together one run "
                        "and apart the next; start-up and model figures are not pinned")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target fails")
    return parser


def _cpu_list(text: str) -> frozenset[int]:
    try:
        cpus = parse_cpus(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not os.sched_getaffinity(0) - cpus:
        raise argparse.ArgumentTypeError(f"CPUs {text!r} leave none for the client")
    return cpus


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON). With --check, 1 if a target fails."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.duration <= args.warmup or args.window < 1:
        parser.error("--repeats and --window must be >= 1 and --duration > --warmup")
    known = {s.key: s for s in SCENARIOS}
    chosen = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in known]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(known)}")
    scenarios = [known[k] for k in chosen]
    bad = [item for item in args.server_env if "=" not in item or item.startswith("=")]
    if bad:
        parser.error(f"--server-env needs NAME=VALUE; got {bad[0]!r}")
    args.server_env = dict(item.split("=", 1) for item in args.server_env)
    if args.pin_servers and args.target:
        parser.error("--pin-servers pins the servers this starts; not with --target")

    notes: list[str] = []
    load_before = load_average()
    try:
        with tempfile.TemporaryDirectory(prefix="hebbian-bench-") as tmp:
            result = _run(args, scenarios, Path(tmp), notes)
    except (grpc.RpcError, RuntimeError) as err:
        detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
        print(f"hebbian bench: error: {detail}", file=sys.stderr)
        return 1
    result["settings"]["load_before"] = load_before
    result["settings"]["load_after"] = load_average()
    result["notes"] = notes
    result["targets"] = evaluate_targets(result)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    failed = any(t["pass"] is False for t in result["targets"].values())
    return 1 if args.check and failed else 0


def _run(args, scenarios: list[Scenario], workdir: Path, notes: list[str]) -> dict:
    bench = Bench(args.duration, args.warmup, args.window, args.input_dim, args.model)
    fsync = "--fsync" in serve_flags() if not args.target else False
    servers: dict[str, Server] = {}
    ready: dict[str, float] = {}
    started: list[Any] = []
    if not fsync and any(s.server == "fsync" for s in scenarios):
        scenarios = [s for s in scenarios if s.server != "fsync"]
        notes.append(
            "fsync comparison skipped: " + (
                "not available with --target" if args.target
                else "this `hebbian serve` has no --fsync flag"
            )
        )
    if args.target and any(s.models > 1 for s in scenarios):
        scenarios = [s for s in scenarios if s.models == 1]
        notes.append("the many-models scenario skipped: not available with --target (it needs "
                     f"models m1 .. m{MODELS - 1} beside the default one)")
    try:
        progress("starting the echo server")
        echo = EchoProcess(workdir, args.units, cpus=args.pin_servers).start()
        started.append(echo)
        if args.target:
            servers["main"] = (args.target, args.server_pid, args.server_metrics)
        else:
            config = model_toml(args.input_dim, args.units, RULE)
            kinds = {"main": ("--fsync", "no") if fsync else ()}
            if any(s.server == "fsync" for s in scenarios):
                kinds["fsync"] = ("--fsync", "always")
            for name, flags in kinds.items():
                progress(f"starting hebbian serve ({name}: {' '.join(flags) or 'defaults'})")
                server = ServeProcess(workdir, name, config, flags, args.server_env,
                                      cpus=args.pin_servers).start()
                started.append(server)
                servers[name] = (server.target, server.pid, server.metrics_url)
                ready[name] = server.ready_seconds
        for target, _, _ in servers.values():
            load.prime(target, args.input_dim, args.model)
        with running_beside(args.pin_servers):
            results = run_scenarios(
                bench, scenarios, servers, (echo.target, echo.pid, None), args.repeats
            )
    finally:
        for process in reversed(started):
            process.stop()
    startup = models = None
    if args.startup and not args.target:
        startup = measure_startup(workdir, args.repeats, bench, args.server_env)
        models = measure_models(workdir, env=args.server_env)
    model = args.model or "default" if args.target else (
        f"{args.input_dim}->{args.units} {RULE}"
    )
    return {
        "settings": {
            "model": model,
            "fsync": "no" if fsync else "n/a",
            "repeats": args.repeats,
            "duration": args.duration,
            "warmup": args.warmup,
            "window": args.window,
            "cpus": os.cpu_count(),
            "target": args.target,
            "server_env": args.server_env,
            "pinned": {"servers": sorted(args.pin_servers),
                       "client": sorted(os.sched_getaffinity(0) - args.pin_servers)}
            if args.pin_servers else None,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "scenarios": results,
        "ready_s": ready,
        "startup": startup,
        "models": models,
    }
