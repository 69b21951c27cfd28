"""The service benchmark's parts without a model: echo server, load generators, /proc, report."""

import os

import grpc
import numpy as np
import prometheus_client
import pytest

from service.api import hebbian_pb2 as pb
from service.bench import load
from service.bench.echo import start_echo
from service.bench.procs import MicroBatches, free_port, micro_batches, usage
from service.bench.service import SCENARIOS, evaluate_targets, format_table
from service.server.observability.metrics import ServerMetrics


@pytest.fixture(scope="module")
def echo_target():
    server, port = start_echo("127.0.0.1", 0, output_dim=4)
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_echo_answers_with_the_size_a_model_would(echo_target):
    with grpc.insecure_channel(echo_target) as channel:
        call = channel.unary_unary(load.UNARY_METHOD)
        answer = pb.ProcessResponse.FromString(call(load.payloads(16, 3, unary=True)[0], timeout=5))
    assert list(answer.activations.shape) == [3, 4]
    assert len(answer.activations.raw) == 3 * 4 * 4
    assert answer.step >= 3 and answer.model == "default"


@pytest.mark.parametrize("streams,rate", [(1, None), (3, None), (1, 200.0)])
def test_stream_runs_count_answers_and_latencies(echo_target, streams, rate):
    messages = load.payloads(16, 2)
    result = load.stream_run(
        echo_target, messages, 2, streams=streams, duration=0.4, warmup=0.1, window=8, rate=rate
    )
    assert result.messages > 0 and result.samples == 2 * result.messages
    assert len(result.latencies) == result.messages
    assert np.all(result.latencies > 0) and result.latency_ms(0.99) >= result.latency_ms(0.5)
    if rate:  # at most the offered rate over the counted 0.3 s
        assert result.messages <= rate * 0.3 + 2


def test_unary_run(echo_target):
    result = load.unary_run(echo_target, load.payloads(16, 1, unary=True), 1,
                            duration=0.3, warmup=0.1)
    assert result.messages > 0 and result.messages_per_s > 0


def test_usage_reads_cpu_and_peak_rss_from_proc():
    mine = usage(os.getpid())
    assert mine is not None and mine.cpu_seconds > 0 and mine.peak_rss_mb > 10
    assert usage(None) is None


def test_micro_batches_adds_up_every_model_from_a_real_metrics_endpoint():
    metrics = ServerMetrics()
    metrics.model("a").observe_batch(8, 8, 0, 0, 0.25)
    metrics.model("a").observe_batch(2, 1, 1, 0, 0.5)
    metrics.model("b").observe_batch(6, 6, 0, 0, 0.25)
    server, thread = prometheus_client.start_http_server(
        0, addr="127.0.0.1", registry=metrics.registry
    )
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert micro_batches(url) == MicroBatches(count=3, samples=16, engine_seconds=1.0)
    finally:
        server.shutdown()
        thread.join(5)
    assert micro_batches(None) is None
    assert micro_batches(f"http://127.0.0.1:{free_port()}/metrics") is None  # nobody there


def _figures(samples: float, p50: float = 1.0, p99: float = 2.0) -> dict:
    return {"samples_per_s": samples, "messages_per_s": samples, "p50_ms": p50, "p99_ms": p99,
            "server_cpu_s": 1.0, "server_cpu_us_per_msg": 100.0, "server_peak_rss_mb": 500.0,
            "client_cpu_s": 1.0, "samples_per_microbatch": 12.5, "engine_s": 0.25}


def test_targets_and_table_from_a_result():
    scenarios = {}
    for s in SCENARIOS:
        service, echo = _figures(900.0, p50=1.2, p99=4.0), _figures(1000.0)
        scenarios[s.key] = {"title": s.title, "service": service, "echo": echo,
                            "ratio": {k: service[k] / echo[k] for k in
                                      ("samples_per_s", "messages_per_s", "p50_ms", "p99_ms",
                                       "server_cpu_us_per_msg")}}
    scenarios["stream_64"]["ratio"]["samples_per_s"] = 0.5
    result = {
        "settings": {"model": "256->64 oja", "fsync": "no", "repeats": 1, "duration": 1.0,
                     "warmup": 0.1, "window": 64, "cpus": 2, "load_before": 0.5,
                     "load_after": None},
        "scenarios": scenarios, "ready_s": {"main": 9.0},
        "startup": {"ready_s": 2.5, "peak_rss_mb": 800.0}, "notes": ["a note"],
        "models": {"ready_cold_s": 20.0, "ready_warm_s": 1.5, "models": 64,
                   "model": "64->16 sanger", "create_p50_ms": 30.0, "create_p99_ms": 60.0,
                   "rss_with_models_mb": 500.0, "restart_ready_s": 4.0, "restart_rss_mb": 450.0},
    }
    targets = evaluate_targets(result)
    assert {k: t["pass"] for k, t in targets.items()} == {
        "stream_1": True, "stream_64": False, "unary": True, "offered_500": True,
        "fsync": True, "models_16": True, "ready": True, "rss": False, "create": True,
        "models_rss": False, "restart": True,
    }
    result["targets"] = targets
    table = format_table(result)
    assert "[FAIL] 64 samples/msg raw" in table and "[PASS] unary" in table
    assert "note: a note" in table and "0.90x" in table
    assert "   12.5     0.25" in table  # micro-batch columns
    assert "20.0 s cold" in table and "CreateModel p50 30.0 ms" in table


@pytest.mark.parametrize("work", ["engine", "logged"])
def test_a_floor_server_answers_with_the_engine_and_the_logged_one_writes_every_message(
        work, tmp_path):
    from service.model.stack import HebbianStack, StackConfig
    from service.state.log_reader import read_segment

    server, port = start_echo("127.0.0.1", 0, output_dim=4, work=work, input_dim=16,
                              log_directory=tmp_path)
    try:
        messages = load.payloads(16, 3)[:2]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(load.STREAM_METHOD)
            answers = [pb.StreamProcessResponse.FromString(raw)
                       for raw in call(iter(messages), timeout=60)]
    finally:
        server.stop(0)
    # the same model (16 -> 4 oja, seed 0) fed the same samples answers the same
    reference = HebbianStack(StackConfig.from_dict(
        {"input_dim": 16, "layers": [{"units": 4, "rule": "oja", "seed": 0}]})).engine
    for message, answer in zip(messages, answers, strict=True):
        samples = np.frombuffer(pb.StreamProcessRequest.FromString(message).samples.raw,
                                np.float32).reshape(3, 16)
        expected = reference.process(samples, True)
        assert answer.step == expected.step
        np.testing.assert_array_equal(
            np.frombuffer(answer.activations.raw, np.float32).reshape(3, 4),
            expected.activations)
    log = tmp_path / "floor.wal"
    if work == "engine":
        assert not log.exists()
        return
    records, torn = read_segment(log, log.read_bytes(), last=True, expected_seq=1)
    assert torn is None and [record.seq for _, record in records] == [1, 2]
    for message, (_, record) in zip(messages, records, strict=True):
        assert record.samples.tobytes() == pb.StreamProcessRequest.FromString(
            message).samples.raw
        assert record.learn.all()
