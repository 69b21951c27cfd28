"""What a model costs a server: start-up with a cold and a warm engine cache, CreateModel
latency, resident memory with many models, and the restart of a server that holds them.

1. `hebbian serve` (default model) with an empty engine cache: start to readiness SERVING
   compiles the native kernels (cold); the next start loads them (warm).
2. On the warm server, `count` CreateModel calls of `input_dim -> units` models, each
   timed, each model then fed a few samples; the server's RSS after.
3. SIGTERM (final snapshots), then a restart on the same data directory: start to
   readiness SERVING with every model recovered, and the RSS then.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from service.bench.procs import ServeProcess, usage


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _rss_mb(pid: int | None) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            status = dict(line.split(":", 1) for line in handle if ":" in line)
    except (OSError, TypeError):
        return None
    return int(status["VmRSS"].split()[0]) / 1024


def measure_models(workdir: Path, count: int = 64, input_dim: int = 64, units: int = 16,
                   env: dict[str, str] | None = None) -> dict:
    """The figures above, as a dict (seconds, milliseconds and MB)."""
    from service.client import HebbianClient

    cache = workdir / "engine-cache-cold"
    flags = ("--engine-cache-dir", str(cache), "--fsync", "no",
             "--max-models", str(count + 1))
    _progress("[models] start with an empty engine cache (cold)")
    with ServeProcess(workdir, "models-cold", flags=flags, env=env) as cold:
        ready_cold = cold.ready_seconds
    _progress(f"[models] cold start {ready_cold:.1f} s; start again (warm cache)")
    server = ServeProcess(workdir, "models", flags=flags, env=env).start()
    try:
        ready_warm = server.ready_seconds
        default_peak = usage(server.pid).peak_rss_mb if usage(server.pid) else None
        client = HebbianClient(server.target, timeout=60)
        x = np.random.default_rng(0).standard_normal((8, input_dim), dtype=np.float32)
        create_ms = []
        for index in range(count):
            started = time.perf_counter()
            client.create_model(f"m{index:03d}", {"input_dim": input_dim, "layers": [
                {"units": units, "rule": "sanger", "seed": index}]})
            create_ms.append(1000 * (time.perf_counter() - started))
            client.process(x, model=f"m{index:03d}")
        rss_models = _rss_mb(server.pid)
        _progress(f"[models] {count} models created, CreateModel p50 "
                  f"{statistics.median(create_ms):.1f} ms, RSS {rss_models:.0f} MB; restart")
        client.close()
    finally:
        server.stop()
    with ServeProcess(workdir, "models", flags=flags, env=env) as restarted:
        ready_restart = restarted.ready_seconds
        rss_restart = _rss_mb(restarted.pid)
    return {
        "ready_cold_s": ready_cold,
        "ready_warm_s": ready_warm,
        "default_peak_rss_mb": default_peak,
        "models": count,
        "model": f"{input_dim}->{units} sanger",
        "create_p50_ms": statistics.median(create_ms),
        "create_p99_ms": float(np.percentile(create_ms, 99)),
        "rss_with_models_mb": rss_models,
        "restart_ready_s": ready_restart,
        "restart_rss_mb": rss_restart,
    }
