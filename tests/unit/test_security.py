"""Security configuration: tokens (file, environment, constant-time lookup, never shown),
TLS settings, the new limits, and which scope each method needs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from service.server.config import ConfigError, Limits, ServerConfig, add_arguments, load_config
from service.server.security.auth import PROCESS_METHODS, bearer_token, required_scope
from service.server.security.protection import posture, server_credentials
from service.server.security.tokens import TokenError, Tokens, load_tokens
from service.server.transport.limits import keepalive_options

ADMIN = "A" * 24
PROCESS = "p" * 16 + "-1"
OTHER = "p" * 16 + "-2"


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_token_file_gives_scopes_and_admin_implies_process(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# rotated monthly\nadmin {ADMIN}\n\nprocess {PROCESS}\nprocess {OTHER}\n")

    tokens = load_tokens(path, env={})

    assert (tokens.count("admin"), tokens.count("process")) == (1, 2)
    assert tokens.scope_of(ADMIN) == "admin"
    assert tokens.scope_of(PROCESS) == tokens.scope_of(OTHER) == "process"
    assert tokens.scope_of(PROCESS[:-1]) is None
    assert tokens.scope_of("") is None


def test_environment_tokens_add_to_the_file_and_a_shared_token_takes_the_stronger_scope():
    env = {"HEBBIAN_ADMIN_TOKENS": f"{ADMIN}, {PROCESS}", "HEBBIAN_PROCESS_TOKENS": PROCESS}
    tokens = load_tokens(None, env)
    assert tokens.scope_of(PROCESS) == "admin"
    assert not load_tokens(None, {}).enabled  # no tokens: auth off


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"root {ADMIN}\n", "line 1 of token file"),
        ("admin\n", "expected 'admin TOKEN' or 'process TOKEN'"),
        ("admin s3cr3t\n", "must be 16 to 4096 characters"),
        ("admin " + "é" * 20 + "\n", "must be ASCII"),
    ],
)
def test_a_bad_token_file_is_refused_without_showing_the_token(tmp_path, text, message):
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TokenError) as info:
        load_tokens(path, env={})
    assert message in str(info.value)
    assert "s3cr3t" not in str(info.value) and ADMIN not in str(info.value)


def test_tokens_never_appear_in_reprs_or_config_errors(tmp_path):
    tokens = Tokens.of([("admin", ADMIN), ("process", PROCESS)])
    assert ADMIN not in repr(tokens) and PROCESS not in repr(tokens)
    assert ADMIN not in repr(ServerConfig(tokens=tokens))
    assert repr(tokens) == "Tokens(admin=1, process=1)"
    with pytest.raises(ConfigError) as info:
        load_config(flags(), env={"HEBBIAN_PROCESS_TOKENS": "tooshort-secret"})
    assert "tooshort-secret" not in str(info.value)
    assert "HEBBIAN_PROCESS_TOKENS" in str(info.value)


def test_the_token_file_comes_from_flag_env_or_file_like_every_setting(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"admin {ADMIN}\n")
    by_flag = load_config(flags("--token-file", str(path)), env={})
    by_env = load_config(flags(), env={"HEBBIAN_TOKEN_FILE": str(path)})
    assert by_flag.tokens.scope_of(ADMIN) == by_env.tokens.scope_of(ADMIN) == "admin"
    with pytest.raises(ConfigError, match="cannot read token file"):
        load_config(flags("--token-file", str(tmp_path / "missing")), env={})


def test_defaults_are_plaintext_no_auth_no_health_port_and_safe_limits():
    config = load_config(flags(), env={})
    assert (config.tls_cert, config.tls_client_ca, config.health_port) == (None, None, None)
    assert not config.tokens.enabled
    assert config.limits.max_streams < config.workers  # unary calls always find a thread
    assert config.limits == Limits()
    lines = posture(config)
    assert "plaintext" in lines[0] and "token auth off" in lines[1]


def test_tls_settings_resolve_by_precedence_and_must_come_in_pairs(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('tls_cert = "file.pem"\ntls_key = "key.pem"\nhealth_port = 8081\n'
                    "[limits]\nmax_streams = 8\nmax_models = 2\n")
    env = {"HEBBIAN_CONFIG": str(file), "HEBBIAN_TLS_CERT": "env.pem"}
    config = load_config(flags("--tls-client-ca", "ca.pem"), env=env)
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (
        Path("env.pem"), Path("key.pem"), Path("ca.pem")
    )
    assert (config.health_port, config.limits.max_streams, config.limits.max_models) == (
        8081, 8, 2
    )
    with pytest.raises(ConfigError, match="both tls_cert and tls_key"):
        load_config(flags("--tls-cert", "c.pem"), env={})
    with pytest.raises(ConfigError, match="needs tls_cert"):
        load_config(flags("--tls-client-ca", "ca.pem"), env={})


def test_more_configured_models_than_max_models_is_a_config_error(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("limits: {max_models: 1}\nmodels:\n  default: {input_dim: 2, layers: "
                    "[{units: 1}]}\n  other: {input_dim: 2, layers: [{units: 1}]}\n")
    with pytest.raises(ConfigError, match="max_models is 1"):
        load_config(flags("--config", str(file)), env={})


def test_unreadable_or_non_pem_tls_files_are_config_errors(tmp_path):
    missing = ServerConfig(tls_cert=tmp_path / "no.pem", tls_key=tmp_path / "no.key")
    with pytest.raises(ConfigError, match="cannot read tls_cert file"):
        server_credentials(missing)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM file"):
        server_credentials(ServerConfig(tls_cert=junk, tls_key=junk))


def test_every_api_method_needs_a_scope_and_health_is_exempt():
    from service.api import hebbian_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["HebbianService"]
    scopes = {m.name: required_scope(f"/{service.full_name}/{m.name}") for m in service.methods}
    assert scopes == {
        "Process": "process", "StreamProcess": "process", "GetModel": "process",
        "ListModels": "process", "ListSnapshots": "process", "CreateModel": "admin",
        "DeleteModel": "admin", "Snapshot": "admin", "Restore": "admin", "Reset": "admin",
        "GetModelState": "admin", "UpdateModel": "admin",  # the weights; a change
        # moving a model between shards
        "ExportModel": "admin", "ImportModel": "admin", "UnfreezeModel": "admin",
        "ReleaseModel": "admin",
    }
    assert len(PROCESS_METHODS) == 5
    assert required_scope("/grpc.health.v1.Health/Check") is None
    assert required_scope("/grpc.health.v1.Health/Watch") is None
    assert required_scope(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    ) == "process"


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", f"Bearer {ADMIN}"),), ADMIN),
        ((("authorization", f"bearer   {ADMIN} "),), ADMIN),
        ((("authorization", f"Basic {ADMIN}"),), None),
        ((("authorization", "Bearer"),), None),
        ((("x-token", ADMIN),), None),
        ((("authorization-bin", ADMIN.encode()),), None),
        (None, None),
    ],
)
def test_the_bearer_token_is_read_from_the_authorization_metadata(metadata, token):
    assert bearer_token(metadata) == token


def test_keepalive_options_enforce_a_minimum_client_ping_interval():
    options = dict(keepalive_options(60, 20, 10))
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.http2.max_ping_strikes"] == 2


def test_warnings_name_an_empty_token_file_and_streams_that_can_take_every_worker(tmp_path):
    from service.server.security.protection import warnings

    empty = tmp_path / "tokens"
    empty.write_text("# admin <token>\n")
    config = load_config(flags("--token-file", str(empty), "--workers", "8"), env={})
    found = warnings(config)
    assert any("holds no token: authentication is off" in line for line in found)
    assert any("max_streams (32) >= workers (8)" in line for line in found)
    assert warnings(ServerConfig()) == []
