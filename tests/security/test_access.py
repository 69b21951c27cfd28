"""Access: mutual TLS, bearer tokens with two scopes, exempt health checks, the health port.

One in-process server requires client certificates (mutual TLS) and tokens, and serves
plaintext health checks on a second port. Every method of the API is called with
{no token, a wrong token, a process token, an admin token}; refused calls change nothing.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import HebbianClient, tls_credentials
from service.server.config import ServerConfig
from service.server.runtime import HebbianServer
from service.server.security.tokens import Tokens
from service.server.transport.health import API_SERVICE
from tests.e2e.grpcurl import grpcurl_binary
from tests.security.conftest import LogRecords, health, raw, running
from tests.server_process import free_port

ADMIN_TOKEN = "admin-" + "a1b2c3d4" * 4
PROCESS_TOKEN = "process-" + "e5f6a7b8" * 4
WRONG_TOKEN = "process-" + "e5f6a7b9" * 4  # one character off
CREDENTIALS = {
    "none": None,
    "wrong": WRONG_TOKEN,
    "process": PROCESS_TOKEN,
    "admin": ADMIN_TOKEN,
}
SAMPLE = np.linspace(-1, 1, 16, dtype=np.float32)[None]
UNKNOWN = "no-such-model"


def _stream(stub: pb_grpc.HebbianServiceStub, metadata, timeout):
    messages = iter([pb.StreamProcessRequest(samples=raw(SAMPLE))])
    return list(stub.StreamProcess(messages, metadata=metadata, timeout=timeout))


# method -> (scope it needs, call(stub, metadata, timeout), status once let through)
CALLS: dict[str, tuple[str, Callable, grpc.StatusCode]] = {
    "Process": ("process", lambda s, m, t: s.Process(
        pb.ProcessRequest(samples=raw(SAMPLE)), metadata=m, timeout=t), grpc.StatusCode.OK),
    "StreamProcess": ("process", _stream, grpc.StatusCode.OK),
    "GetModel": ("process", lambda s, m, t: s.GetModel(
        pb.GetModelRequest(), metadata=m, timeout=t), grpc.StatusCode.OK),
    "ListModels": ("process", lambda s, m, t: s.ListModels(
        pb.ListModelsRequest(), metadata=m, timeout=t), grpc.StatusCode.OK),
    "ListSnapshots": ("process", lambda s, m, t: s.ListSnapshots(
        pb.ListSnapshotsRequest(name=UNKNOWN), metadata=m, timeout=t),
        grpc.StatusCode.NOT_FOUND),
    "CreateModel": ("admin", lambda s, m, t: s.CreateModel(
        pb.CreateModelRequest(name="auth-probe", config=pb.ModelConfig(input_dim=0)),
        metadata=m, timeout=t), grpc.StatusCode.INVALID_ARGUMENT),
    "DeleteModel": ("admin", lambda s, m, t: s.DeleteModel(
        pb.DeleteModelRequest(name=UNKNOWN), metadata=m, timeout=t), grpc.StatusCode.NOT_FOUND),
    "Snapshot": ("admin", lambda s, m, t: s.Snapshot(
        pb.SnapshotRequest(name=UNKNOWN), metadata=m, timeout=t), grpc.StatusCode.NOT_FOUND),
    "Restore": ("admin", lambda s, m, t: s.Restore(
        pb.RestoreRequest(name=UNKNOWN, snapshot_id="1"), metadata=m, timeout=t),
        grpc.StatusCode.NOT_FOUND),
    "Reset": ("admin", lambda s, m, t: s.Reset(
        pb.ResetRequest(name=UNKNOWN), metadata=m, timeout=t), grpc.StatusCode.NOT_FOUND),
    "GetModelState": ("admin", lambda s, m, t: s.GetModelState(
        pb.GetModelStateRequest(name=UNKNOWN), metadata=m, timeout=t),
        grpc.StatusCode.NOT_FOUND),
    "UpdateModel": ("admin", lambda s, m, t: s.UpdateModel(
        pb.UpdateModelRequest(model=pb.Model(name=UNKNOWN)), metadata=m, timeout=t),
        grpc.StatusCode.NOT_FOUND),
    "ExportModel": ("admin", lambda s, m, t: s.ExportModel(
        pb.ExportModelRequest(name=UNKNOWN, to_shard=1), metadata=m, timeout=t),
        grpc.StatusCode.NOT_FOUND),
    "ImportModel": ("admin", lambda s, m, t: s.ImportModel(
        pb.ImportModelRequest(name="auth-probe", snapshot=b"not a snapshot"), metadata=m,
        timeout=t), grpc.StatusCode.INVALID_ARGUMENT),
    "UnfreezeModel": ("admin", lambda s, m, t: s.UnfreezeModel(
        pb.UnfreezeModelRequest(name=UNKNOWN), metadata=m, timeout=t),
        grpc.StatusCode.NOT_FOUND),
    "ReleaseModel": ("admin", lambda s, m, t: s.ReleaseModel(
        pb.ReleaseModelRequest(name=UNKNOWN), metadata=m, timeout=t),
        grpc.StatusCode.NOT_FOUND),
}
LEARNING = {"Process", "StreamProcess"}  # each call that gets through learns one sample


def metadata(token: str | None):
    return (("authorization", f"Bearer {token}"),) if token else None


def expected(credential: str, method: str) -> grpc.StatusCode:
    scope, _, let_through = CALLS[method]
    if credential in ("none", "wrong"):
        return grpc.StatusCode.UNAUTHENTICATED
    if scope == "admin" and credential != "admin":
        return grpc.StatusCode.PERMISSION_DENIED
    return let_through


def call_code(stub, method: str, token: str | None) -> grpc.StatusCode:
    try:
        CALLS[method][1](stub, metadata(token), 10)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def logs() -> Iterator[LogRecords]:
    with LogRecords().installed() as records:
        yield records


@pytest.fixture(scope="module")
def secure_server(pki, logs) -> Iterator[HebbianServer]:
    """Mutual TLS + tokens on the main port, plaintext health checks on a second port."""
    config = ServerConfig(
        port=0,
        metrics_port=0,
        data_dir=None,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca,
        tokens=Tokens.of([("admin", ADMIN_TOKEN), ("process", PROCESS_TOKEN)]),
        health_port=free_port(),
    )
    with running(config) as server:
        yield server


def mtls_channel(server: HebbianServer, pki, cert=None, key=None) -> grpc.Channel:
    credentials = tls_credentials(pki.ca, cert, key)
    return grpc.secure_channel(server.target, credentials)


@pytest.fixture(scope="module")
def stub(secure_server, pki) -> Iterator[pb_grpc.HebbianServiceStub]:
    """A stub over mutual TLS with a valid client certificate (and no token of its own)."""
    with mtls_channel(secure_server, pki, pki.client_cert, pki.client_key) as channel:
        yield pb_grpc.HebbianServiceStub(channel)


def test_every_api_method_has_a_row_in_the_auth_matrix():
    methods = pb.DESCRIPTOR.services_by_name["HebbianService"].methods_by_name
    assert set(methods) == set(CALLS)


def test_auth_matrix_every_method_with_every_kind_of_credential(secure_server, stub):
    step_before = stub.GetModel(pb.GetModelRequest(), metadata=metadata(ADMIN_TOKEN)).model.step
    seen, learned = {}, 0
    for credential, method in itertools.product(CREDENTIALS, CALLS):
        seen[credential, method] = call_code(stub, method, CREDENTIALS[credential])
        if seen[credential, method] == grpc.StatusCode.OK and method in LEARNING:
            learned += 1

    assert seen == {key: expected(*key) for key in seen}
    # refused Process/StreamProcess calls learned nothing: only the 4 let through did
    assert learned == 4
    step_after = stub.GetModel(pb.GetModelRequest(), metadata=metadata(ADMIN_TOKEN)).model.step
    assert step_after == step_before + learned
    assert "auth-probe" not in secure_server.registry.names()


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {ADMIN_TOKEN}",
        f"Bearer{ADMIN_TOKEN}",
        "Bearer ",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN.upper()}",
        "Bearer " + "x" * 4000,
    ],
)
def test_a_malformed_or_near_miss_header_is_unauthenticated(stub, header):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModel(pb.GetModelRequest(), metadata=(("authorization", header),), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_bearer_scheme_is_case_insensitive(stub):
    response = stub.GetModel(
        pb.GetModelRequest(), metadata=(("authorization", f"bearer {PROCESS_TOKEN}"),), timeout=10
    )
    assert response.model.name == "default"


def test_a_stream_with_a_process_token_learns_and_without_one_is_refused(stub):
    answers = [
        r.request_id
        for r in stub.StreamProcess(
            (pb.StreamProcessRequest(samples=raw(SAMPLE), request_id=str(i)) for i in range(5)),
            metadata=metadata(PROCESS_TOKEN), timeout=10,
        )
    ]
    assert answers == [str(i) for i in range(5)]
    refused = stub.StreamProcess(
        (pb.StreamProcessRequest(samples=raw(SAMPLE)) for _ in range(5)), timeout=10
    )
    with pytest.raises(grpc.RpcError) as info:
        next(refused)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_token_on_the_main_port(secure_server, pki):
    with mtls_channel(secure_server, pki, pki.client_cert, pki.client_key) as channel:
        assert health(channel, "readiness") == "SERVING"
        assert health(channel, "liveness") == "SERVING"
        assert health(channel, "") == "SERVING"


def test_reflection_needs_a_process_token(secure_server, pki):
    with mtls_channel(secure_server, pki, pki.client_cert, pki.client_key) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")

        with pytest.raises(grpc.RpcError) as info:
            list(reflect.ServerReflectionInfo(iter([request]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        (answer,) = reflect.ServerReflectionInfo(
            iter([request]), metadata=metadata(PROCESS_TOKEN), timeout=10
        )
        names = {s.name for s in answer.list_services_response.service}
        assert API_SERVICE in names


@pytest.mark.parametrize("client", ["no certificate", "untrusted certificate", "plaintext"])
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(secure_server, pki, client):
    if client == "plaintext":
        channel = grpc.insecure_channel(secure_server.target)
    elif client == "no certificate":
        channel = mtls_channel(secure_server, pki)
    else:
        channel = mtls_channel(secure_server, pki, pki.rogue_cert, pki.rogue_key)
    with channel:
        stub = pb_grpc.HebbianServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetModel(pb.GetModelRequest(), metadata=metadata(ADMIN_TOKEN), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed
        assert health(channel, "readiness") == "UNAVAILABLE"  # not even health


def test_the_health_port_answers_probes_in_plaintext_and_serves_nothing_else(secure_server):
    target = f"127.0.0.1:{secure_server.config.health_port}"
    with grpc.insecure_channel(target) as channel:
        assert health(channel, "readiness") == "SERVING"
        assert health(channel, "liveness") == "SERVING"
        assert health(channel, "") == "SERVING"
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.HebbianServiceStub(channel).GetModel(
                pb.GetModelRequest(), metadata=metadata(ADMIN_TOKEN), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_python_client_speaks_mutual_tls_with_a_token(secure_server, pki):
    credentials = tls_credentials(pki.ca, pki.client_cert, pki.client_key)
    with HebbianClient(
        secure_server.target, credentials=credentials, token=PROCESS_TOKEN, timeout=10
    ) as client:
        assert client.process(SAMPLE[0], learn=False).shape == (4,)


def test_the_cli_takes_ca_cert_key_and_token(secure_server, pki, capsys):
    from service.cli import main

    common = ["--target", secure_server.target, "--ca", str(pki.ca), "--timeout", "10"]
    mtls = [*common, "--cert", str(pki.client_cert), "--key", str(pki.client_key)]

    assert main(["models", "list", *mtls, "--token", PROCESS_TOKEN]) == 0
    assert "default" in capsys.readouterr().out
    assert main(["models", "delete", UNKNOWN, *mtls, "--token", PROCESS_TOKEN]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main(["models", "list", *mtls]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["models", "list", *common, "--token", PROCESS_TOKEN]) == 1  # no certificate
    assert "cannot reach" in capsys.readouterr().err
    assert main(["models", "list", *common, "--cert", str(pki.client_cert)]) == 2
    assert "--key" in capsys.readouterr().err


def test_start_up_log_states_the_posture_and_never_a_token(secure_server, stub, logs):
    call_code(stub, "GetModel", WRONG_TOKEN)  # a refused call is not logged with its token
    text = "\n".join(logs.lines)
    assert "mutual TLS" in text
    assert "token auth on: 1 admin and 1 process token(s)" in text
    assert "health checks only, plaintext" in text
    for token in (ADMIN_TOKEN, PROCESS_TOKEN, WRONG_TOKEN, ADMIN_TOKEN[:16]):
        assert token not in text
    assert ADMIN_TOKEN not in repr(secure_server.config)


def test_tls_without_a_client_ca_serves_any_client_over_tls(pki):
    config = ServerConfig(
        port=0, metrics_port=0, data_dir=None, tls_cert=pki.server_cert, tls_key=pki.server_key
    )
    with running(config) as server:
        with grpc.secure_channel(server.target, tls_credentials(pki.ca)) as channel:
            assert pb_grpc.HebbianServiceStub(channel).GetModel(
                pb.GetModelRequest(), timeout=10
            ).model.name == "default"
        with grpc.insecure_channel(server.target) as channel:
            assert health(channel, "readiness") == "UNAVAILABLE"  # plaintext is refused



def test_grpcurl_lists_the_services_over_mutual_tls_with_a_token(secure_server, pki):
    """The README's grpcurl line for a secured server works as written."""
    base = [grpcurl_binary(), "-cacert", str(pki.ca), "-cert", str(pki.client_cert),
            "-key", str(pki.client_key)]
    header = ["-H", f"authorization: Bearer {PROCESS_TOKEN}"]

    listed = subprocess.run([*base, *header, secure_server.target, "list"],
                            capture_output=True, text=True, timeout=60)
    refused = subprocess.run([*base, secure_server.target, "list"],
                             capture_output=True, text=True, timeout=60)

    assert listed.returncode == 0, listed.stderr
    assert API_SERVICE in listed.stdout.split()
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
