"""The service as outside tools see it: the real grpcurl binary against `hebbian serve`.

grpcurl uses server reflection for every call (no proto files given), prints one JSON
object per response (int64 fields as strings, proto3 JSON), and on an error status
prints "Code: ..." on stderr and exits with 64 + the status code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

SERVICE = "hebbian.v1.HebbianService"
GRPCURL_STATUS_OFFSET = 64
INVALID_ARGUMENT, NOT_FOUND = 3, 5


def values(n: int = 16, seed: int = 0) -> list[float]:
    """n float values that survive the JSON round trip exactly (short decimals)."""
    return [round(float(v), 3) for v in np.random.default_rng(seed).normal(size=n)]


def process(grpcurl, target: str, body: dict):
    return grpcurl("-d", json.dumps(body), target, f"{SERVICE}/Process")


def current_step(grpcurl, target: str, model: str = "") -> int:
    """The model's step, read with an inference-only Process (which leaves it alone)."""
    result = process(grpcurl, target, {"model": model, "samples": {"values": values()},
                                       "learn": False})
    assert result.returncode == 0, result.stderr
    return int(result.json()[0].get("step", 0))


def test_list_shows_the_hebbian_health_and_reflection_services(grpcurl, hebbian_server):
    result = grpcurl(hebbian_server.target, "list")

    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {SERVICE, "grpc.health.v1.Health"} <= services
    assert any(name.startswith("grpc.reflection.") for name in services), services


def test_describe_shows_every_method_and_the_bidirectional_stream(grpcurl, hebbian_server):
    result = grpcurl(hebbian_server.target, "describe", SERVICE)

    assert result.returncode == 0, result.stderr
    for method in ("Process", "StreamProcess", "CreateModel", "GetModel", "ListModels",
                   "DeleteModel", "Snapshot", "Restore", "Reset"):
        assert f"rpc {method} (" in result.stdout, method
    assert (
        "rpc StreamProcess ( stream .hebbian.v1.StreamProcessRequest ) returns "
        "( stream .hebbian.v1.StreamProcessResponse )"
    ) in result.stdout


def test_describe_process_request_shows_the_field_names_tools_rely_on(grpcurl, hebbian_server):
    result = grpcurl(hebbian_server.target, "describe", "hebbian.v1.ProcessRequest")

    assert result.returncode == 0, result.stderr
    for field in ("string model = 1;", ".hebbian.v1.Tensor samples = 2;",
                  "optional bool learn = 3;", "string request_id = 4;"):
        assert field in result.stdout, field


def test_describe_shows_the_proto_comments(grpcurl, hebbian_server):
    # reflection serves the descriptors with their source info
    # (service/server/transport/reflection.py)
    service = grpcurl(hebbian_server.target, "describe", SERVICE)
    assert service.returncode == 0, service.stderr
    assert "// Serves persistent Hebbian models: online learning, inference and model" in (
        service.stdout)
    assert "// A long-lived sensor stream: one response per request, in request order." in (
        service.stdout)
    request = grpcurl(hebbian_server.target, "describe", "hebbian.v1.ProcessRequest")
    assert request.returncode == 0, request.stderr
    lines = [line.strip() for line in request.stdout.splitlines()]
    model = lines.index("string model = 1;")
    assert lines[model - 1] == "// Model name; empty means the server's default model."
    assert "// Re-initialises the model's weights from a seed; its step goes back to 0." in (
        service.stdout)
    # files without source info (health, well-known types) are still described
    health = grpcurl(hebbian_server.target, "describe", "grpc.health.v1.Health")
    assert health.returncode == 0 and "rpc Check" in health.stdout, health.stderr
    stamp = grpcurl(hebbian_server.target, "describe", "google.protobuf.Timestamp")
    assert stamp.returncode == 0 and "int64 seconds = 1;" in stamp.stdout, stamp.stderr


def test_process_with_16_json_values_returns_4_activations_and_counts_the_step(
    grpcurl, hebbian_server
):
    body = {"samples": {"values": values()}, "request_id": "probe-1"}

    first = process(grpcurl, hebbian_server.target, body)
    second = process(grpcurl, hebbian_server.target, {**body, "request_id": "probe-2"})
    repeat = process(grpcurl, hebbian_server.target, body)  # a retry: exactly once

    assert first.returncode == 0, first.stderr
    (answer,) = first.json()
    assert answer["model"] == "default"
    assert answer["request_id"] == "probe-1"
    assert answer["activations"]["shape"] == ["1", "4"]
    assert len(answer["activations"]["values"]) == 4
    assert int(second.json()[0]["step"]) == int(answer["step"]) + 1
    assert repeat.json() == first.json()


def test_process_with_learn_false_leaves_the_state_untouched(grpcurl, hebbian_server):
    target = hebbian_server.target
    body = {"samples": {"values": values(seed=1)}, "learn": False}

    before = current_step(grpcurl, target)
    first, second = process(grpcurl, target, body), process(grpcurl, target, body)

    assert first.returncode == 0, first.stderr
    assert int(first.json()[0].get("step", 0)) == before
    assert first.json()[0]["activations"] == second.json()[0]["activations"]
    assert current_step(grpcurl, target) == before


def test_process_with_a_shape_sends_several_samples_at_once(grpcurl, hebbian_server):
    body = {"samples": {"shape": [3, 16], "values": values(48, seed=2)}}

    result = process(grpcurl, hebbian_server.target, body)

    assert result.returncode == 0, result.stderr
    assert result.json()[0]["activations"]["shape"] == ["3", "4"]
    assert len(result.json()[0]["activations"]["values"]) == 12


def test_stream_process_reads_json_messages_from_stdin_and_answers_each_in_order(
    grpcurl, hebbian_server
):
    target = hebbian_server.target
    messages = [
        {"samples": {"values": values(seed=3)}, "request_id": "a"},
        {"samples": {"shape": [2, 16], "values": values(32, seed=4)}, "request_id": "b"},
        {"samples": {"values": values(seed=5)}, "request_id": "c"},
    ]
    before = current_step(grpcurl, target)

    result = grpcurl("-d", "@", target, f"{SERVICE}/StreamProcess",
                     stdin="\n".join(json.dumps(m) for m in messages))

    assert result.returncode == 0, result.stderr
    answers = result.json()
    assert [a["request_id"] for a in answers] == ["a", "b", "c"]
    assert [int(a["step"]) for a in answers] == [before + 1, before + 3, before + 4]
    assert [len(a["activations"]["values"]) for a in answers] == [4, 8, 4]


@pytest.mark.parametrize("service", ["", "liveness", "readiness"])
def test_health_check_reports_serving(grpcurl, hebbian_server, service):
    result = grpcurl("-d", json.dumps({"service": service}), hebbian_server.target,
                     "grpc.health.v1.Health/Check")

    assert result.returncode == 0, result.stderr
    assert result.json() == [{"status": "SERVING"}]


def test_unknown_model_is_not_found(grpcurl, hebbian_server):
    result = process(grpcurl, hebbian_server.target,
                     {"model": "no-such-model", "samples": {"values": values()}})

    assert result.returncode == GRPCURL_STATUS_OFFSET + NOT_FOUND, result.stderr
    assert result.error_code == "NotFound"
    assert "no-such-model" in result.stderr


def test_wrong_width_is_invalid_argument_and_changes_nothing(grpcurl, hebbian_server):
    target = hebbian_server.target
    before = current_step(grpcurl, target)

    result = process(grpcurl, target, {"samples": {"shape": [1, 15], "values": values(15)}})

    assert result.returncode == GRPCURL_STATUS_OFFSET + INVALID_ARGUMENT, result.stderr
    assert result.error_code == "InvalidArgument"
    assert "width" in result.stderr
    assert current_step(grpcurl, target) == before


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_invalid_argument_and_change_nothing(grpcurl, hebbian_server, bad):
    target = hebbian_server.target
    before = current_step(grpcurl, target)
    sample: list = values()
    sample[7] = bad

    result = process(grpcurl, target, {"samples": {"values": sample}})

    assert result.returncode == GRPCURL_STATUS_OFFSET + INVALID_ARGUMENT, result.stderr
    assert result.error_code == "InvalidArgument"
    assert current_step(grpcurl, target) == before


def test_a_bad_message_ends_the_stream_with_its_status_after_earlier_answers(
    grpcurl, hebbian_server
):
    target = hebbian_server.target
    before = current_step(grpcurl, target)
    messages = [
        {"samples": {"values": values(seed=6)}, "request_id": "good"},
        {"samples": {"values": values(15)}, "request_id": "bad"},
        {"samples": {"values": values(seed=7)}, "request_id": "never"},
    ]

    result = grpcurl("-d", "@", target, f"{SERVICE}/StreamProcess",
                     stdin="\n".join(json.dumps(m) for m in messages))

    assert result.returncode == GRPCURL_STATUS_OFFSET + INVALID_ARGUMENT, result.stderr
    assert [a["request_id"] for a in result.json()] == ["good"]
    assert current_step(grpcurl, target) == before + 1
