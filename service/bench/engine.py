"""The native engine against the XLA engine, side by side, per rule and shape.

For each rule (``oja``, ``sanger``, ``bcm``, ``oja_subspace`` with ``anti_hebbian``
lateral weights) and shape (16 -> 4 up to 1024 -> 256), both engines serve the same model,
built the way the server builds it, and take the same samples in calls of 1 and of 1024
samples; every figure is the median over ``--repeats`` timed runs. Next to each native
figure, the share of two simple bounds it reaches, measured on this machine in the same
run:

- ``%bw``: bytes of weights the per-sample maths must move (kernel and lateral weights
  read once, by the forward pass and the update together, and written once) over the
  bandwidth of rewriting in place, in a compiled loop, an array the size of the model's
  weights, as the updates do (so: of the cache level the weights live in);
- ``%flop``: floating-point operations per sample over a large float32 matmul's rate
  on one thread.

Then the resident memory of fresh processes: ``import tensorflow`` alone, and a warmed
256 -> 64 model on each engine. Progress goes to stderr, the result to stdout (a table,
or JSON with ``--json``); ``--check`` exits 1 when a target is missed.

    python -m service.bench.engine [--json] [--samples N] [--batch1-samples N]
                                   [--repeats R] [--rules oja,bcm] [--shapes 16x4,256x64]
                                   [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

RULES = (("oja", {}), ("sanger", {}), ("bcm", {}), ("oja_subspace", {"lateral": "anti_hebbian"}))
SHAPES = ((16, 4), (64, 16), (256, 64), (1024, 256))
BIG_BATCH = 1024
LEARNING_RATE = 1e-4
SEED = 0

# Targets (issue: native CPU serving engine), medians side by side in one run.
MIN_BATCH1_VS_XLA = 20.0
MIN_BATCH1024_VS_XLA = 1.0
TARGET_MODEL = ("oja", "256->64")
MIN_TARGET_MODEL_RATE = 300_000.0

_RSS = """
import json
def report():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    peak, now = (int(status[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS"))
    print(json.dumps({"peak_mb": peak, "rss_mb": now}))
"""
_IDLE_TF_SCRIPT = _RSS + "import tensorflow\nreport()\n"
_ENGINE_SCRIPT = _RSS + """
import sys
import numpy as np
from service.model import HebbianStack, StackConfig
stack = HebbianStack(StackConfig(256, ({"units": 64, "rule": "oja", "seed": 0},), sys.argv[1]))
stack.engine.warm_up()
x = np.random.default_rng(0).standard_normal((4096, 256), dtype=np.float32) * 0.1
for start in range(0, len(x), 1024):
    stack.engine.process(x[start:start + 1024])
import sys as _s
report()
print(json.dumps({"tensorflow": "tensorflow" in _s.modules}))
"""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _median_rate(run: Callable[[], None], samples: int, repeats: int) -> float:
    """Median samples/s of `run` (which processes `samples` samples) over `repeats` runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(samples / (time.perf_counter() - start))
    return statistics.median(rates)


def make_samples(n: int, input_dim: int) -> np.ndarray:
    """`n` seeded float32 samples of unit total variance (the rates stay stable)."""
    rng = np.random.default_rng(SEED + 1)
    return (rng.standard_normal((n, input_dim)) / np.sqrt(input_dim)).astype(np.float32)


def make_stack(rule: str, extra: dict, input_dim: int, units: int, engine: str):
    """A one-layer model on `engine`, as the server builds it (XLA: buckets 1 and 1024)."""
    from service.model import HebbianStack, StackConfig

    layer = {"units": units, "rule": rule, "learning_rate": LEARNING_RATE, "seed": SEED, **extra}
    stack = HebbianStack(StackConfig(input_dim, (layer,), engine), buckets=(1, BIG_BATCH))
    stack.engine.warm_up()
    return stack


def per_sample_cost(rule: str, extra: dict, d: int, u: int) -> tuple[float, float]:
    """(bytes of weights moved, floating-point operations) per learning sample."""
    lateral = extra.get("lateral") == "anti_hebbian"
    weights = d * u + (u * u if lateral else 0)
    # each weight read once (by the forward pass and the update together) and written once
    moved = 4.0 * 2 * weights
    forward = 2.0 * d * u + (2.0 * u * u if lateral else 0)
    update = {"oja": 5.0, "bcm": 3.0, "sanger": 6.0, "oja_subspace": 7.0}[rule] * d * u
    return moved, forward + update + (3.0 * u * u if lateral else 0)


def rewrite_bandwidth(nbytes: int, repeats: int = 5) -> float:
    """Bytes/s moved (read + written) rewriting a `nbytes` float32 array in place
    (x = x * 1 + 0, as the engine's updates rewrite the live weights), in a compiled loop
    so that even an array of a few KB measures its cache and not a call's overhead."""
    from numba import njit

    @njit(fastmath={"contract"})
    def rewrite(w, loops):
        one, zero = np.float32(1.0), np.float32(0.0)
        for _ in range(loops):
            for i in range(w.shape[0]):
                w[i] = w[i] * one + zero

    n = max(nbytes // 4, 16)
    weights = np.ones(n, np.float32)
    loops = max(1, int(4e8 // (8 * n)))
    rewrite(weights, 1)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        rewrite(weights, loops)
        rates.append(8.0 * n * loops / (time.perf_counter() - start))
    return statistics.median(rates)


def matmul_flops(repeats: int = 5) -> float:
    """FLOP/s of a 1024^3 float32 matmul (the BLAS is limited to one thread by `hebbian`)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    a @ a
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        rates.append(2.0 * 1024**3 / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_model(rule: str, extra: dict, d: int, u: int, samples: int, batch1: int,
                repeats: int, peak_flops: float) -> dict:
    """Median samples/s of both engines at batch 1 and 1024, and the native bounds."""
    xs = make_samples(samples, d)
    rates: dict[str, float] = {}
    for engine in ("native", "xla"):
        _progress(f"[{rule} {d}->{u}] {engine}: build and warm up")
        stack = make_stack(rule, extra, d, u, engine)
        process = stack.engine.process
        ones = xs[:batch1]

        def run_1(ones=ones, process=process):
            for i in range(ones.shape[0]):
                process(ones[i:i + 1])

        def run_big(process=process):
            for start in range(0, xs.shape[0], BIG_BATCH):
                process(xs[start:start + BIG_BATCH])

        rates[f"{engine}_1"] = _median_rate(run_1, batch1, repeats)
        rates[f"{engine}_{BIG_BATCH}"] = _median_rate(run_big, samples, repeats)
    moved, flops = per_sample_cost(rule, extra, d, u)
    bandwidth = rewrite_bandwidth(int(moved / 3))
    best = rates[f"native_{BIG_BATCH}"]
    return {
        "samples_per_s": rates,
        "ratios": {
            "batch_1": rates["native_1"] / rates["xla_1"],
            f"batch_{BIG_BATCH}": best / rates[f"xla_{BIG_BATCH}"],
        },
        "bounds": {
            "bytes_per_sample": moved,
            "flops_per_sample": flops,
            "rewrite_bandwidth_gb_s": bandwidth / 1e9,
            "bandwidth_share": best * moved / bandwidth,
            "flop_share": best * flops / peak_flops,
        },
        "us_per_batch1_call": 1e6 / rates["native_1"],
    }


def _child(script: str, *args: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env=env, check=True)
    merged: dict = {}
    for line in out.stdout.strip().splitlines():
        merged.update(json.loads(line))
    return merged


def bench_memory(repeats: int) -> dict:
    """Median peak RSS (MB) of fresh processes: idle TensorFlow, a model on each engine."""
    runs: dict[str, list[dict]] = {"idle_tf": [], "native": [], "xla": []}
    for r in range(repeats):
        _progress(f"[memory] fresh subprocesses, repeat {r + 1}/{repeats}")
        runs["idle_tf"].append(_child(_IDLE_TF_SCRIPT))
        runs["native"].append(_child(_ENGINE_SCRIPT, "native"))
        runs["xla"].append(_child(_ENGINE_SCRIPT, "xla"))
    out = {f"{kind}_peak_mb": statistics.median(run["peak_mb"] for run in values)
           for kind, values in runs.items()}
    out["native_imports_tensorflow"] = any(run["tensorflow"] for run in runs["native"])
    return out


def evaluate_targets(result: dict) -> dict[str, bool]:
    """Which targets the measured figures meet."""
    models = result["models"]
    rule, shape = TARGET_MODEL
    return {
        f"native@1 >= {MIN_BATCH1_VS_XLA:g}x xla@1, every rule and shape": all(
            m["ratios"]["batch_1"] >= MIN_BATCH1_VS_XLA for m in models.values()),
        f"native@{BIG_BATCH} >= {MIN_BATCH1024_VS_XLA:g}x xla@{BIG_BATCH}, every rule and shape":
            all(m["ratios"][f"batch_{BIG_BATCH}"] >= MIN_BATCH1024_VS_XLA
                for m in models.values()),
        f"{rule} {shape} native@{BIG_BATCH} >= {MIN_TARGET_MODEL_RATE:,.0f} samples/s": (
            f"{rule} {shape}" in models
            and models[f"{rule} {shape}"]["samples_per_s"][f"native_{BIG_BATCH}"]
            >= MIN_TARGET_MODEL_RATE),
        "a native model's process never imports tensorflow": (
            not result["memory"]["native_imports_tensorflow"]),
    }


def format_table(result: dict) -> str:
    """The result as a plain-text table."""
    header = (f"{'model':<24}{'native@1':>11}{'xla@1':>9}{'ratio':>8}{'us/call':>9}"
              f"{'native@1024':>13}{'xla@1024':>10}{'ratio':>8}{'%bw':>6}{'%flop':>7}")
    lines = [
        f"samples/s, median of {result['repeats']} runs ({result['samples']} samples per run "
        f"at batch {BIG_BATCH}, {result['batch1_samples']} at batch 1); learning_rate "
        f"{LEARNING_RATE:g}; float32 matmul peak {result['peak_gflops']:.0f} GFLOP/s; "
        f"load average {result['load_average'][0]:.1f} at the start, "
        f"{result['load_average'][1]:.1f} at the end",
        "",
        header,
    ]
    for name, m in result["models"].items():
        r, b = m["samples_per_s"], m["bounds"]
        lines.append(
            f"{name:<24}{r['native_1']:>11,.0f}{r['xla_1']:>9,.0f}"
            f"{m['ratios']['batch_1']:>7.1f}x{m['us_per_batch1_call']:>9.1f}"
            f"{r[f'native_{BIG_BATCH}']:>13,.0f}{r[f'xla_{BIG_BATCH}']:>10,.0f}"
            f"{m['ratios'][f'batch_{BIG_BATCH}']:>7.1f}x"
            f"{100 * b['bandwidth_share']:>5.0f}%{100 * b['flop_share']:>6.0f}%"
        )
    mem = result["memory"]
    lines += [
        "",
        f"peak RSS of a fresh process with a warmed 256->64 model: native "
        f"{mem['native_peak_mb']:.0f} MB, xla {mem['xla_peak_mb']:.0f} MB "
        f"(import tensorflow alone: {mem['idle_tf_peak_mb']:.0f} MB)",
        "",
        "targets:",
    ]
    for label, ok in result["targets"].items():
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {label}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON). Returns 1 with --check if a target fails."""
    parser = argparse.ArgumentParser(
        prog="hebbian bench engine",
        description="The native engine against the XLA engine, per rule and shape.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--samples", type=int, default=20480,
                        help=f"samples per timed run at batch {BIG_BATCH} (default 20480)")
    parser.add_argument("--batch1-samples", type=int, default=1000,
                        help="samples per timed run at batch 1 (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (default 5)")
    parser.add_argument("--rules", default=",".join(rule for rule, _ in RULES),
                        help="rules to run, comma-separated (default: all four)")
    parser.add_argument("--shapes", default=",".join(f"{d}x{u}" for d, u in SHAPES),
                        help="INPUTxUNITS shapes, comma-separated (default: all four)")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.batch1_samples < 1 or args.repeats < 1:
        parser.error("--samples, --batch1-samples and --repeats must be >= 1")
    known = dict(RULES)
    rules = [(rule, known[rule]) for rule in args.rules.split(",") if rule in known]
    try:
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    except ValueError:
        parser.error(f"--shapes takes INPUTxUNITS,...; got {args.shapes!r}")
    if not rules or any(len(shape) != 2 or min(shape) < 1 for shape in shapes):
        parser.error(f"--rules takes some of {', '.join(known)}; --shapes INPUTxUNITS,...")
    load_start = os.getloadavg()[0]
    _progress("[machine] float32 matmul rate")
    peak = matmul_flops()
    models = {}
    for rule, extra in rules:
        for d, u in shapes:
            name = f"{rule} {d}->{u}" + (" +lateral" if extra else "")
            samples = min(args.samples, max(BIG_BATCH, 8_000_000 // (d * u)))
            models[name] = bench_model(rule, extra, d, u, samples, args.batch1_samples,
                                       args.repeats, peak)
    result: dict[str, Any] = {
        "samples": args.samples,
        "batch1_samples": args.batch1_samples,
        "repeats": args.repeats,
        "peak_gflops": peak / 1e9,
        "models": models,
        "memory": bench_memory(max(1, min(args.repeats, 3))),
        "load_average": [load_start, os.getloadavg()[0]],
    }
    result["targets"] = evaluate_targets(result)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 1 if args.check and not all(result["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
