"""Prometheus metrics over a real gRPC server and the real HTTP /metrics endpoint.

A tiny generic service (raw bytes, no protobuf) has one method of every arity; the
metrics interceptor is installed, calls go through a real channel on 127.0.0.1, and
every figure is read back by scraping /metrics over HTTP.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.model.quality import LayerStatsValues
from service.server.observability.grpc_metrics import GRPC_CODE_NAMES
from service.server.observability.metrics import ServerMetrics

SERVICE = "test.v1.Probe"
NAN = float("nan")


def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"abort":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "asked to abort")
    if request == b"raise":
        raise RuntimeError("asked to raise")
    if request.startswith(b"sleep"):
        time.sleep(float(request[5:]))
    return request


def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in requests:
        if request == b"abort":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "asked to abort")
        yield request


def ticks(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for _ in range(int(request)):
        yield b"tick"
        time.sleep(0.01)


def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return b"".join(requests)


HANDLERS = {
    "Echo": grpc.unary_unary_rpc_method_handler(echo),
    "Chat": grpc.stream_stream_rpc_method_handler(chat),
    "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
    "Collect": grpc.stream_unary_rpc_method_handler(collect),
}


class Stub:
    """Raw-bytes client callables for the probe service."""

    def __init__(self, channel: grpc.Channel):
        self.echo = channel.unary_unary(f"/{SERVICE}/Echo")
        self.chat = channel.stream_stream(f"/{SERVICE}/Chat")
        self.ticks = channel.unary_stream(f"/{SERVICE}/Ticks")
        self.collect = channel.stream_unary(f"/{SERVICE}/Collect")


@pytest.fixture(scope="module")
def metrics():
    metrics = ServerMetrics()
    metrics.start_http_server("127.0.0.1", 0)
    yield metrics
    metrics.stop_http_server()


@pytest.fixture(scope="module")
def stub(metrics):
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), interceptors=[metrics.interceptor()]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Stub(channel)
    channel.close()
    server.stop(grace=None)


Series = dict[tuple[str, frozenset], float]


def scrape(metrics: ServerMetrics) -> Series:
    """Every sample on the real endpoint, keyed by (sample name, label set)."""
    url = f"http://127.0.0.1:{metrics.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def grpc_labels(rpc_type: str, method: str, **extra: str) -> frozenset:
    return frozenset(
        {"grpc_type": rpc_type, "grpc_service": SERVICE, "grpc_method": method, **extra}.items()
    )


def delta(before: Series, after: Series, name: str, labels: frozenset) -> float:
    return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)


def wait_for(metrics: ServerMetrics, before: Series, name: str, labels: frozenset) -> Series:
    """Scrape until the series moved (server-side bookkeeping after a cancel is async)."""
    deadline = time.monotonic() + 5
    while True:
        after = scrape(metrics)
        if delta(before, after, name, labels) or time.monotonic() > deadline:
            return after
        time.sleep(0.02)


# -- gRPC server metrics ---------------------------------------------------------------


def test_unary_calls_are_counted_with_their_final_codes(metrics, stub):
    before = scrape(metrics)
    assert stub.echo(b"one") == b"one"
    assert stub.echo(b"two") == b"two"
    with pytest.raises(grpc.RpcError) as aborted:
        stub.echo(b"abort")
    assert aborted.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:
        stub.echo(b"raise")
    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    after = scrape(metrics)

    labels = grpc_labels("unary", "Echo")
    assert delta(before, after, "grpc_server_started_total", labels) == 4
    assert delta(before, after, "grpc_server_msg_received_total", labels) == 4
    assert delta(before, after, "grpc_server_msg_sent_total", labels) == 2
    assert delta(before, after, "grpc_server_handling_seconds_count", labels) == 4
    handled = "grpc_server_handled_total"
    assert delta(before, after, handled, grpc_labels("unary", "Echo", grpc_code="OK")) == 2
    invalid = grpc_labels("unary", "Echo", grpc_code="InvalidArgument")
    assert delta(before, after, handled, invalid) == 1
    assert delta(before, after, handled, grpc_labels("unary", "Echo", grpc_code="Unknown")) == 1


def test_bidi_stream_counts_every_message(metrics, stub):
    before = scrape(metrics)
    messages = [f"m{i}".encode() for i in range(5)]
    assert list(stub.chat(iter(messages))) == messages
    after = scrape(metrics)

    labels = grpc_labels("bidi_stream", "Chat")
    assert delta(before, after, "grpc_server_started_total", labels) == 1
    assert delta(before, after, "grpc_server_msg_received_total", labels) == 5
    assert delta(before, after, "grpc_server_msg_sent_total", labels) == 5
    ok = grpc_labels("bidi_stream", "Chat", grpc_code="OK")
    assert delta(before, after, "grpc_server_handled_total", ok) == 1
    assert delta(before, after, "grpc_server_handling_seconds_count", labels) == 1
    assert delta(before, after, "grpc_server_handling_seconds_bucket", labels | {("le", "+Inf")})


def test_aborted_stream_records_the_abort_status(metrics, stub):
    before = scrape(metrics)
    responses = stub.chat(iter([b"a", b"b", b"abort", b"never read"]))
    received = []
    with pytest.raises(grpc.RpcError) as aborted:
        for response in responses:
            received.append(response)
    assert aborted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert received == [b"a", b"b"]
    after = scrape(metrics)

    labels = grpc_labels("bidi_stream", "Chat")
    assert delta(before, after, "grpc_server_msg_received_total", labels) == 3
    assert delta(before, after, "grpc_server_msg_sent_total", labels) == 2
    exhausted = grpc_labels("bidi_stream", "Chat", grpc_code="ResourceExhausted")
    assert delta(before, after, "grpc_server_handled_total", exhausted) == 1
    ok = grpc_labels("bidi_stream", "Chat", grpc_code="OK")
    assert delta(before, after, "grpc_server_handled_total", ok) == 0


def test_server_and_client_streams_are_labelled_by_type(metrics, stub):
    before = scrape(metrics)
    assert list(stub.ticks(b"3")) == [b"tick"] * 3
    assert stub.collect(iter([b"a", b"b", b"c", b"d"])) == b"abcd"
    after = scrape(metrics)

    server_stream = grpc_labels("server_stream", "Ticks")
    assert delta(before, after, "grpc_server_msg_received_total", server_stream) == 1
    assert delta(before, after, "grpc_server_msg_sent_total", server_stream) == 3
    client_stream = grpc_labels("client_stream", "Collect")
    assert delta(before, after, "grpc_server_msg_received_total", client_stream) == 4
    assert delta(before, after, "grpc_server_msg_sent_total", client_stream) == 1
    for rpc_type, method in (("server_stream", "Ticks"), ("client_stream", "Collect")):
        ok = grpc_labels(rpc_type, method, grpc_code="OK")
        assert delta(before, after, "grpc_server_handled_total", ok) == 1


def test_stream_cancelled_by_the_client_is_handled_as_cancelled(metrics, stub):
    before = scrape(metrics)
    responses = stub.ticks(b"1000")
    assert [next(responses) for _ in range(3)] == [b"tick"] * 3
    responses.cancel()
    cancelled = grpc_labels("server_stream", "Ticks", grpc_code="Canceled")
    after = wait_for(metrics, before, "grpc_server_handled_total", cancelled)
    assert delta(before, after, "grpc_server_handled_total", cancelled) == 1
    ok = grpc_labels("server_stream", "Ticks", grpc_code="OK")
    assert delta(before, after, "grpc_server_handled_total", ok) == 0


def test_call_past_its_deadline_is_handled_as_deadline_exceeded(metrics, stub):
    before = scrape(metrics)
    with pytest.raises(grpc.RpcError) as late:
        stub.echo(b"sleep0.5", timeout=0.1)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    exceeded = grpc_labels("unary", "Echo", grpc_code="DeadlineExceeded")
    after = wait_for(metrics, before, "grpc_server_handled_total", exceeded)
    assert delta(before, after, "grpc_server_handled_total", exceeded) == 1


# -- per-model metrics -----------------------------------------------------------------


def model_labels(model: str, **extra: str) -> frozenset:
    return frozenset({"model": model, **extra}.items())


def test_model_series_are_exported_with_the_model_label(metrics):
    model = metrics.model("sensors")
    assert metrics.model("sensors") is model  # created once
    model.observe_batch(size=8, learned=6, inferred=2, skipped=1, compute_seconds=0.003)
    model.observe_batch(size=4, learned=4, inferred=0, skipped=0, compute_seconds=0.001)
    model.read_step(lambda: 10)
    model.read_queue_depth(lambda: 5)
    model.reject("wrong_width", 3)
    model.reject("wrong_width", 2)
    model.reject("empty", 0)
    after = scrape(metrics)

    def value(name: str, **extra: str) -> float:
        return after[(name, model_labels("sensors", **extra))]

    assert value("hebbian_samples_learned_total") == 10
    assert value("hebbian_samples_inferred_total") == 2
    assert value("hebbian_samples_skipped_total") == 1
    assert value("hebbian_model_step") == 10
    assert value("hebbian_queue_depth_samples") == 5
    assert value("hebbian_microbatch_samples_count") == 2
    assert value("hebbian_microbatch_samples_sum") == 12
    assert value("hebbian_microbatch_samples_bucket", le="4.0") == 1
    assert value("hebbian_microbatch_compute_seconds_count") == 2
    assert value("hebbian_microbatch_compute_seconds_sum") == pytest.approx(0.004)
    assert value("hebbian_samples_rejected_total", reason="wrong_width") == 5
    assert value("hebbian_requests_rejected_total", reason="wrong_width") == 2
    assert value("hebbian_samples_rejected_total", reason="empty") == 0
    assert value("hebbian_requests_rejected_total", reason="empty") == 1


def test_layer_statistics_are_read_from_the_stats_source_on_every_scrape(metrics):
    layers = [
        LayerStatsValues(2.0, 0.5, 0.01, 0.002, 0.1, 0.9),
        LayerStatsValues(1.5, 0.0, 0.2, NAN, NAN, NAN),  # not known yet
    ]
    reads = []

    def source() -> list[LayerStatsValues]:
        reads.append(1)
        return layers

    metrics.model("layered").set_stats_source(source)
    after = scrape(metrics)
    assert len(reads) == 1

    def value(name: str, layer: str) -> float | None:
        return after.get((name, model_labels("layered", layer=layer)))

    assert value("hebbian_layer_weight_norm", "0") == 2.0
    assert value("hebbian_layer_lateral_norm", "0") == 0.5
    assert value("hebbian_layer_orthonormality_error", "0") == 0.01
    assert value("hebbian_layer_weight_drift_per_second", "0") == 0.002
    assert value("hebbian_layer_reconstruction_error", "0") == 0.1
    assert value("hebbian_layer_explained_variance", "0") == 0.9
    assert value("hebbian_layer_weight_norm", "1") == 1.5
    assert value("hebbian_layer_orthonormality_error", "1") == 0.2
    # unknown values are left out instead of exported as NaN
    assert value("hebbian_layer_weight_drift_per_second", "1") is None
    assert value("hebbian_layer_explained_variance", "1") is None

    layers[0] = LayerStatsValues(3.0, 0.5, 0.01, 0.002, 0.1, 0.9)
    assert scrape(metrics)[("hebbian_layer_weight_norm", model_labels("layered", layer="0"))] == 3


def test_failing_stats_source_leaves_the_rest_of_the_scrape_intact(metrics):
    def broken() -> list[LayerStatsValues]:
        raise RuntimeError("model is being rebuilt")

    metrics.model("broken").set_stats_source(broken)
    metrics.model("broken").read_step(lambda: 7)
    after = scrape(metrics)
    assert after[("hebbian_model_step", model_labels("broken"))] == 7
    assert not any(labels >= model_labels("broken", layer="0") for _, labels in after)


def test_remove_model_drops_every_series_of_that_model(metrics):
    doomed, kept = metrics.model("doomed"), metrics.model("kept")
    for model in (doomed, kept):
        model.observe_batch(size=1, learned=1, inferred=0, skipped=0, compute_seconds=0.001)
        model.read_step(lambda: 1)
        model.reject("non_finite", 1)
        model.set_stats_source(lambda: [LayerStatsValues(1.0, 0.0, 0.0, 0.0, 0.5, 0.5)])
    assert any(dict(labels).get("model") == "doomed" for _, labels in scrape(metrics))

    metrics.remove_model("doomed")
    doomed.observe_batch(size=1, learned=1, inferred=0, skipped=0, compute_seconds=0.001)
    doomed.reject("non_finite", 1)  # a late call from the old model changes nothing
    doomed.read_step(lambda: 2)
    after = scrape(metrics)
    assert not [key for key in after if dict(key[1]).get("model") == "doomed"]
    assert after[("hebbian_model_step", model_labels("kept"))] == 1
    assert after[("hebbian_layer_weight_norm", model_labels("kept", layer="0"))] == 1.0

    fresh = metrics.model("doomed")  # the same name starts from zero
    assert fresh is not doomed
    assert scrape(metrics)[("hebbian_samples_learned_total", model_labels("doomed"))] == 0


# -- process metrics and the endpoint --------------------------------------------------


def test_standard_process_metrics_are_exposed(metrics):
    after = scrape(metrics)
    rss = after[("process_resident_memory_bytes", frozenset())]
    assert rss > 1_000_000
    assert ("process_cpu_seconds_total", frozenset()) in after
    assert any(name == "python_info" for name, _ in after)


def test_build_info_carries_the_versions_of_the_service_python_and_grpc(metrics):
    info = [(labels, value) for (name, labels), value in scrape(metrics).items()
            if name == "hebbian_build_info"]
    assert len(info) == 1
    labels, value = dict(info[0][0]), info[0][1]
    assert value == 1
    assert labels["version"] == importlib.metadata.version("hebbian-service")
    assert labels["python_version"] == platform.python_version()
    assert labels["grpc_version"] == grpc.__version__


def test_no_created_series_are_exported(metrics, stub):
    stub.echo(b"created?")
    metrics.model("created").observe_batch(
        size=1, learned=1, inferred=0, skipped=0, compute_seconds=0.001
    )
    url = f"http://127.0.0.1:{metrics.http_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert "grpc_server_handled_total{" in text
    assert "hebbian_samples_learned_total{" in text
    assert [line for line in text.splitlines() if "_created" in line] == []


def test_every_grpc_code_is_named_as_go_grpc_prometheus_names_it():
    # Go's codes.Code.String(), which go-grpc-prometheus writes as the grpc_code label
    go_names = [
        "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
        "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
        "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
        "Unauthenticated",
    ]
    by_number = sorted(GRPC_CODE_NAMES.items(), key=lambda item: item[0].value[0])
    assert [name for _, name in by_number] == go_names


def test_http_endpoint_binds_a_free_port_and_releases_it_on_stop():
    metrics = ServerMetrics()
    metrics.start_http_server("127.0.0.1", 0)
    port = metrics.http_port
    assert port > 0
    with pytest.raises(RuntimeError):
        metrics.start_http_server("127.0.0.1", 0)
    assert ("process_resident_memory_bytes", frozenset()) in scrape(metrics)
    metrics.stop_http_server()
    assert metrics.http_port == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    metrics.stop_http_server()  # idempotent
