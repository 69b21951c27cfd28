"""`hebbian bench` end to end with tiny sizes: it runs and reports, nothing is timed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from service.bench.procs import parse_cpus
from tests.server_process import hebbian_command

TINY = ("--repeats", "1", "--duration", "0.4", "--warmup", "0.1", "--input-dim", "16",
        "--units", "4", "--json")


def bench(*args: str, timeout: float = 300) -> dict:
    done = subprocess.run([*hebbian_command(), "bench", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/1]" in done.stderr  # progress on stderr
    return json.loads(done.stdout)


def check_scenario(result: dict, key: str, samples_per_message: int) -> None:
    scenario = result["scenarios"][key]
    for side in ("service", "echo"):
        figures = scenario[side]
        assert figures["messages_per_s"] > 0, (key, side, figures)
        assert figures["samples_per_s"] == figures["messages_per_s"] * samples_per_message
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert scenario["ratio"]["messages_per_s"] > 0


def test_bench_starts_its_own_server_and_echo():
    result = bench("--scenarios", "stream_64", "--no-startup", *TINY)
    check_scenario(result, "stream_64", 64)
    service = result["scenarios"]["stream_64"]["service"]
    assert service["server_cpu_s"] > 0 and service["server_peak_rss_mb"] > 100
    assert service["samples_per_microbatch"] >= 64 and service["engine_s"] > 0  # its /metrics
    echo = result["scenarios"]["stream_64"]["echo"]
    assert echo["samples_per_microbatch"] is None and echo["engine_s"] is None  # no model
    assert result["ready_s"]["main"] > 0
    assert set(result["targets"]) >= {"stream_1", "stream_64", "unary", "offered_500", "ready"}
    assert result["targets"]["stream_64"]["pass"] in (True, False)
    assert result["targets"]["stream_1"]["pass"] is None  # not run


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin apart")
def test_bench_pins_its_servers_on_their_cpus_and_itself_on_the_others():
    last = max(os.sched_getaffinity(0))
    result = bench("--pin-servers", str(last), "--scenarios", "stream_1", "--no-startup", *TINY)
    check_scenario(result, "stream_1", 1)
    pinned = result["settings"]["pinned"]
    assert pinned["servers"] == [last] and pinned["client"]
    assert last not in pinned["client"]
    for side in ("service", "echo"):  # read back from each server process during its run
        runs = result["scenarios"]["stream_1"]["runs"][side]
        assert runs and all(run["server_cpus"] == [last] for run in runs)


def test_cpu_lists_are_read_like_taskset_and_checked():
    allowed = os.sched_getaffinity(0)
    first = min(allowed)
    assert parse_cpus(str(first)) == {first}
    if {0, 1} <= allowed:
        assert parse_cpus("0-1") == parse_cpus("1,0") == {0, 1}
    for bad in ("", "x", "1-", "-1", str(max(allowed) + 1)):
        with pytest.raises(ValueError):
            parse_cpus(bad)


def test_bench_against_a_running_server(hebbian_server):
    target = hebbian_server.target
    created = subprocess.run(
        [*hebbian_command(), "--target", target, "models", "create", "bench-smoke",
         "--input-dim", "16", "--layer", "units=4,rule=oja"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert created.returncode == 0, created.stderr
    try:
        result = bench("--target", target, "--model", "bench-smoke",
                       "--scenarios", "stream_1,streams_8,unary", *TINY)
    finally:
        subprocess.run([*hebbian_command(), "--target", target, "models", "delete",
                        "bench-smoke"], capture_output=True, timeout=60, check=False)
    for key in ("stream_1", "streams_8", "unary"):
        check_scenario(result, key, 1)
    assert result["scenarios"]["unary"]["service"]["server_cpu_s"] is None  # no pid given
    assert result["startup"] is None


def test_bench_pipeline_runs_the_servicer_without_grpc():
    result = bench("pipeline", "--messages", "300", "--samples-per-message", "4",
                   "--repeats", "1", "--json")
    assert result["samples_per_message"] == 4 and len(result["runs"]) == 1
    assert result["messages_per_s"] > 0 and result["cpu_us_per_msg"] > 0
    # every message went through the write-ahead log, like the real server's
    assert result["log_bytes"] > (300 + 300) * 4 * 256 * 4


def test_bench_engine_runs_both_engines_side_by_side():
    done = subprocess.run(
        [*hebbian_command(), "bench", "engine", "--rules", "oja", "--shapes", "16x4",
         "--samples", "2048", "--batch1-samples", "20", "--repeats", "1", "--json"],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    (model,) = result["models"].values()
    assert set(model["samples_per_s"]) == {"native_1", "xla_1", "native_1024", "xla_1024"}
    assert all(rate > 0 for rate in model["samples_per_s"].values())
    assert model["bounds"]["bandwidth_share"] > 0 and model["bounds"]["flop_share"] > 0
    assert result["memory"]["native_imports_tensorflow"] is False
    assert len(result["targets"]) == 4


@pytest.mark.parametrize("calls", [(), ("--unary",)], ids=["stream", "unary"])
def test_bench_floor_runs_the_echo_both_floors_and_the_service(calls):
    result = bench("floor", "--repeats", "1", "--duration", "0.4", "--warmup", "0.1", "--json",
                   *calls)
    assert result["settings"]["unary"] is bool(calls)
    servers = result["servers"]
    assert list(servers) == ["echo", "engine", "logged", "service"]
    assert servers["echo"]["vs_echo"] == 1
    for name, row in servers.items():
        assert row["messages_per_s"] > 0 and row["server_cpu_us_per_msg"] > 0, name
        assert row["p50_ms"] > 0 and row["p50_vs_echo"] > 0, name
        assert len(result["runs"][name]) == 1
