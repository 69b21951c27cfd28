"""`hebbian serve` configuration: precedence flags > env > file > defaults, clear errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from service.server.config import (
    EMBEDDED_MODELS,
    ConfigError,
    Limits,
    ServerConfig,
    add_arguments,
    load_config,
)

TOML = """
host = "0.0.0.0"
port = 6000
workers = 4

[limits]
max_batch = 256

[models.default]
input_dim = 8
layers = [{ units = 2, rule = "oja" }]

[models.pca]
input_dim = 64
layers = [{ units = 16, rule = "sanger" }, { units = 4, rule = "oja_subspace" }]
"""

YAML = """
port: 6000
metrics_port: 0
default_model: pca
limits:
  max_samples_per_request: 100
models:
  pca:
    input_dim: 4
    layers:
      - {units: 2, rule: sanger, seed: 1}
"""


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_serve_the_embedded_16_to_4_sanger_model_on_localhost():
    config = load_config(flags(), env={})

    assert config == ServerConfig()
    assert (config.host, config.port, config.metrics_port) == ("127.0.0.1", 50051, 9464)
    assert config.default_model == "default"
    assert config.models == EMBEDDED_MODELS
    assert EMBEDDED_MODELS["default"]["input_dim"] == 16
    assert EMBEDDED_MODELS["default"]["layers"][0]["units"] == 4
    assert EMBEDDED_MODELS["default"]["layers"][0]["rule"] == "sanger"


def test_a_toml_file_sets_settings_limits_and_models(tmp_path):
    config = load_config(flags("--config", str(write(tmp_path, "c.toml", TOML))), env={})

    assert (config.host, config.port, config.workers) == ("0.0.0.0", 6000, 4)
    assert config.limits == Limits(max_batch=256)
    assert sorted(config.models) == ["default", "pca"]
    assert config.models["pca"]["layers"][1]["rule"] == "oja_subspace"


def test_a_yaml_file_named_by_the_environment_works_the_same(tmp_path):
    path = write(tmp_path, "c.yaml", YAML)
    config = load_config(flags(), env={"HEBBIAN_CONFIG": str(path)})

    assert (config.port, config.metrics_port, config.default_model) == (6000, 0, "pca")
    assert config.limits.max_samples_per_request == 100
    assert list(config.models) == ["pca"]


def test_flags_beat_environment_beats_file_beats_defaults(tmp_path):
    path = write(tmp_path, "c.toml", 'port = 1\nmetrics_port = 2\nhost = "file"\n')
    env = {"HEBBIAN_CONFIG": str(path), "HEBBIAN_PORT": "10", "HEBBIAN_METRICS_PORT": "20"}

    config = load_config(flags("--port", "100"), env=env)

    assert config.port == 100  # flag
    assert config.metrics_port == 20  # env over file
    assert config.host == "file"  # file over default
    assert config.workers == ServerConfig().workers  # default


def test_environment_sets_limits_and_paths():
    env = {"HEBBIAN_MAX_BATCH": "64", "HEBBIAN_DATA_DIR": "/tmp/x", "HEBBIAN_LOG_LEVEL": "DEBUG"}
    config = load_config(flags(), env=env)

    assert config.limits.max_batch == 64
    assert config.data_dir == Path("/tmp/x")
    assert config.log_level == "debug"


def test_log_format_comes_from_flag_environment_or_file(tmp_path):
    assert ServerConfig().log_format == "text"
    path = write(tmp_path, "c.toml", 'log_format = "json"\n')
    assert load_config(flags("--config", str(path)), env={}).log_format == "json"
    assert load_config(flags(), env={"HEBBIAN_LOG_FORMAT": "JSON"}).log_format == "json"
    env = {"HEBBIAN_LOG_FORMAT": "json"}
    assert load_config(flags("--log-format", "text"), env=env).log_format == "text"


@pytest.mark.parametrize(
    ("argv", "env", "file", "message"),
    [
        ((), {"HEBBIAN_PORT": "http"}, None, "environment variable HEBBIAN_PORT must be a port"),
        (("--port", "70000"), {}, None, "flag --port must be a port in 0..65535; got 70000"),
        (("--workers", "0"), {}, None, "flag --workers must be an integer >= 1"),
        ((), {}, "port = 1.5\n", "port in"),
        ((), {}, "prot = 1\n", "unknown setting 'prot'"),
        ((), {}, "[limits]\nmax_bach = 1\n", "unknown setting 'limits.max_bach'"),
        ((), {}, "port = \n", "is not valid TOML"),
        ((), {}, 'default_model = "pca"\n', "default_model 'pca' is not one of the configured"),
        ((), {}, "[models.Big]\ninput_dim = 1\nlayers = []\n", "invalid model name 'Big'"),
        ((), {}, "[models.a]\ninput_dim = 1\n", "model 'a' in"),
        ((), {"HEBBIAN_LOG_LEVEL": "loud"}, None, "must be one of debug, info"),
        (("--log-format", "xml"), {}, None, "flag --log-format must be one of text, json"),
    ],
)
def test_invalid_configuration_is_one_clear_line(tmp_path, argv, env, file, message):
    if file is not None:
        env = {**env, "HEBBIAN_CONFIG": str(write(tmp_path, "c.toml", file))}
    with pytest.raises(ConfigError) as info:
        load_config(flags(*argv), env=env)

    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_or_unknown_kind_of_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(flags("--config", str(tmp_path / "none.toml")), env={})
    with pytest.raises(ConfigError, match=r"must end in \.toml, \.yaml or \.yml"):
        load_config(flags("--config", str(write(tmp_path, "c.ini", ""))), env={})
