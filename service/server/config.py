"""Server configuration from flags, `HEBBIAN_*` environment variables and a file.

Precedence, highest first: command-line flags > environment variables > config file
(TOML or YAML, chosen by its extension; path from `--config` or `HEBBIAN_CONFIG`) >
built-in defaults. Every setting has one flag, one variable and one file key, e.g.
`max_batch`: `--max-batch`, `HEBBIAN_MAX_BATCH`, `limits.max_batch` (see `SETTINGS`).

Models are defined only in the file (table `models`, one entry per name, each with
`input_dim` and `layers`); without one the server holds the embedded model `default`
(16 inputs -> 4 units, rule `sanger`). Anything invalid raises `ConfigError` with one
line that names the setting and where it came from. This module does not import
TensorFlow, so `hebbian --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.server.core.bounds import DEFAULT_MAX_LAYERS, DEFAULT_MAX_MODEL_COST
from service.server.core.names import DEFAULT_MODEL, name_problem
from service.server.security.tokens import TokenError, Tokens, load_tokens
from service.sharding.ordinal import ordinal_from_pod_name

EMBEDDED_MODELS: dict[str, dict] = {
    DEFAULT_MODEL: {"input_dim": 16, "layers": [{"units": 4, "rule": "sanger", "seed": 0}]}
}
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
FSYNC_POLICIES = ("always", "everysec", "no")
MEMORY_ONLY = ":memory:"  # as in SQLite: no data directory, nothing persists


class ConfigError(ValueError):
    """An invalid configuration; the message is one line for the operator."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of the server."""

    max_samples_per_request: int = 8192
    max_message_bytes: int = 16 * 1024 * 1024
    max_batch: int = 1024
    max_queued_samples: int = 65536
    max_queued_bytes: int = 64 * 1024 * 1024
    max_model_weights: int = 16 * 1024 * 1024
    max_layers: int = DEFAULT_MAX_LAYERS
    max_model_cost: int = DEFAULT_MAX_MODEL_COST
    max_models: int = 64
    max_streams: int = 32
    keepalive_time: float = 60.0
    keepalive_timeout: float = 20.0
    min_ping_interval: float = 10.0


@dataclass(frozen=True)
class ServerConfig:
    """Everything `serve` needs; see the module docstring for where values come from."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9464
    data_dir: Path | None = Path("data")
    engine_cache_dir: Path | None = None  # None: the user's cache directory
    engine_prebuilt_cache: Path | None = None  # compiled kernels to start from (an image's)
    fsync: str = "always"
    snapshot_every_samples: int = 100_000
    snapshot_every_seconds: float = 300.0
    snapshot_keep: int = 3
    wal_segment_bytes: int = 64 * 1024 * 1024
    workers: int = 64
    batch_linger: float = 0.0  # retired: requests are combined by the model's holder
    grace_period: float = 10.0
    log_level: str = "info"
    log_format: str = "text"
    default_model: str = DEFAULT_MODEL
    models: Mapping[str, Mapping] = field(default_factory=lambda: dict(EMBEDDED_MODELS))
    limits: Limits = field(default_factory=Limits)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token_file: Path | None = None
    tokens: Tokens = field(default_factory=Tokens)  # from token_file and the environment
    health_port: int | None = None
    slot_table: Path | None = None  # sharded when set (service/sharding)
    shard: int | None = None  # this shard's ordinal; from HOSTNAME (pod name) when unset

    @property
    def fsync_per_batch(self) -> bool:
        """Whether every batch's answers wait for an fsync of its log record (group commit
        then pays off: streams read ahead so that batches have several messages)."""
        return self.data_dir is not None and self.fsync == "always"


@dataclass(frozen=True)
class _Setting:
    key: str
    parse: Callable[[str], Any]
    help: str
    check: Callable[[Any], bool] = lambda value: True
    expected: str = ""
    section: str | None = None  # file table; also the ServerConfig attribute holding it

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return "HEBBIAN_" + self.key.upper()

    @property
    def file_key(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    @property
    def default(self) -> Any:
        holder = getattr(ServerConfig(), self.section) if self.section else ServerConfig()
        return getattr(holder, self.key)


def _port(value: int) -> bool:
    return 0 <= value <= 65535


def data_dir_path(value: str) -> Path:
    """A data directory setting: a path, or ":memory:" for none (see `load_config`)."""
    if not value:
        raise ValueError("empty path")
    return Path(value)


def file_path(value: str) -> Path:
    """A path setting (TLS files, the token file, cache directories): a non-empty path."""
    if not value:
        raise ValueError("empty path")
    return Path(value)


def _positive(value: float) -> bool:
    return value > 0


SETTINGS = (
    _Setting("host", str, "address to bind gRPC and metrics to (0.0.0.0 in containers)",
             lambda v: bool(v), "a host name or IP address"),
    _Setting("port", int, "gRPC port (0 picks a free one)", _port, "a port in 0..65535"),
    _Setting("metrics_port", int, "Prometheus /metrics HTTP port (0 picks a free one)",
             _port, "a port in 0..65535"),
    _Setting("data_dir", data_dir_path, "directory for snapshots and the write-ahead log "
             f"({MEMORY_ONLY} keeps models in memory only)",
             expected=f"a directory path or {MEMORY_ONLY}"),
    _Setting("engine_cache_dir", file_path, "writable directory where the native engine "
             "keeps its compiled kernels (none: $XDG_CACHE_HOME/hebbian/numba, else "
             "~/.cache/hebbian/numba)", expected="a directory path"),
    _Setting("engine_prebuilt_cache", file_path, "read-only directory of compiled kernels "
             "copied into an empty engine cache at start (the container image's, so that a "
             "pod starts warm)", expected="a directory path"),
    _Setting("fsync", str.lower, "when the write-ahead log is fsynced: always (before every "
             "answer), everysec, no (the OS decides)", lambda v: v in FSYNC_POLICIES,
             "one of " + ", ".join(FSYNC_POLICIES)),
    _Setting("snapshot_every_samples", int, "take a snapshot after this many samples",
             _positive, "an integer >= 1"),
    _Setting("snapshot_every_seconds", float, "take a snapshot this many seconds after a change",
             _positive, "a number of seconds > 0"),
    _Setting("snapshot_keep", int, "snapshots kept per model (older ones are deleted)",
             _positive, "an integer >= 1"),
    _Setting("wal_segment_bytes", int, "size at which the write-ahead log starts a new segment",
             lambda v: v >= 4096, "an integer >= 4096"),
    _Setting("workers", int, "gRPC worker threads = most concurrent RPCs (each open stream "
             "holds one)", _positive, "an integer >= 1"),
    _Setting("batch_linger", float, "retired, ignored: a busy model now batches the requests "
             "that queue behind the one being applied (combining), without waiting",
             lambda v: 0 <= v <= 1, "a number of seconds in 0..1"),
    _Setting("grace_period", float, "seconds in-flight requests get to finish on SIGTERM",
             lambda v: v >= 0, "a number of seconds >= 0"),
    _Setting("log_level", str.lower, "log level", lambda v: v in LOG_LEVELS,
             "one of " + ", ".join(LOG_LEVELS)),
    _Setting("log_format", str.lower, "log line format: text, or json (one JSON object per "
             "line, for log pipelines)", lambda v: v in LOG_FORMATS,
             "one of " + ", ".join(LOG_FORMATS)),
    _Setting("default_model", str, "name of the model that serves requests with no model name",
             lambda v: name_problem(v) is None, "a valid model name"),
    _Setting("max_samples_per_request", int, "most samples in one request or stream message "
             "(more: RESOURCE_EXHAUSTED)", _positive, "an integer >= 1", "limits"),
    _Setting("max_message_bytes", int, "largest gRPC message accepted or sent "
             "(more: RESOURCE_EXHAUSTED)", lambda v: v >= 1024, "an integer >= 1024", "limits"),
    _Setting("max_batch", int, "most samples a model applies in one micro-batch",
             _positive, "an integer >= 1", "limits"),
    _Setting("max_queued_samples", int, "samples waiting per model before requests block "
             "(back-pressure)", _positive, "an integer >= 1", "limits"),
    _Setting("max_queued_bytes", int, "sample bytes waiting per model before requests block "
             "(back-pressure; whichever of the two bounds is reached first)", _positive,
             "an integer >= 1", "limits"),
    _Setting("max_model_weights", int, "largest model CreateModel accepts, in weights "
             "(more: RESOURCE_EXHAUSTED)", _positive, "an integer >= 1", "limits"),
    _Setting("max_layers", int, "most layers of a model CreateModel accepts "
             "(more: RESOURCE_EXHAUSTED)", _positive, "an integer >= 1", "limits"),
    _Setting("max_model_cost", int, "most multiply-adds per sample of a model CreateModel "
             "accepts (see Limits in the README; more: RESOURCE_EXHAUSTED)", _positive,
             "an integer >= 1", "limits"),
    # -- security (see service/server/security/protection.py and the README's "Security") --
    _Setting("tls_cert", file_path, "PEM server certificate (chain): serve TLS instead of "
             "plaintext", expected="a file path"),
    _Setting("tls_key", file_path, "PEM private key of --tls-cert", expected="a file path"),
    _Setting("tls_client_ca", file_path, "PEM CA bundle: require client certificates signed "
             "by it (mutual TLS)", expected="a file path"),
    _Setting("token_file", file_path, "file of bearer tokens, one 'admin TOKEN' or "
             "'process TOKEN' per line (also env HEBBIAN_ADMIN_TOKENS, HEBBIAN_PROCESS_TOKENS)",
             expected="a file path"),
    _Setting("health_port", int, "extra plaintext port serving only grpc.health.v1 (for "
             "kubelet probes when the main port needs mutual TLS)", _port,
             "a port in 0..65535"),
    # -- sharding (see service/sharding and the README's "Beyond one machine") --
    _Setting("slot_table", file_path, "slot table file (slot ranges -> shard ordinal, YAML or "
             "JSON): serve as one shard of it, refusing other shards' models (reloaded when "
             "the file changes)", expected="a file path"),
    _Setting("shard", int, "this server's shard ordinal in the slot table (default: the "
             "number ending the pod name in HOSTNAME, e.g. hebbian-2 -> 2)",
             lambda v: v >= 0, "an integer >= 0"),
    _Setting("max_models", int, "most models the server holds (CreateModel beyond: "
             "RESOURCE_EXHAUSTED)", _positive, "an integer >= 1", "limits"),
    _Setting("max_streams", int, "most StreamProcess calls open at once (more: "
             "RESOURCE_EXHAUSTED); keep it below workers", _positive, "an integer >= 1",
             "limits"),
    _Setting("keepalive_time", float, "seconds of idleness after which the server pings a "
             "connection", _positive, "a number of seconds > 0", "limits"),
    _Setting("keepalive_timeout", float, "seconds a keepalive ping may stay unanswered "
             "before the connection is closed", _positive, "a number of seconds > 0", "limits"),
    _Setting("min_ping_interval", float, "shortest interval at which clients may ping "
             "(faster: the connection is closed)", _positive, "a number of seconds > 0",
             "limits"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--config` and one flag per setting to `parser` (unset flags stay None)."""
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE",
        help="TOML or YAML config file [env HEBBIAN_CONFIG]",
    )
    for setting in SETTINGS:
        parser.add_argument(
            setting.flag, dest=setting.key, type=setting.parse, default=None,
            help=f"{setting.help} [env {setting.env}; default {setting.default}]",
        )


def load_config(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> ServerConfig:
    """Merge defaults, the config file, the environment and flags into a `ServerConfig`.

    Raises:
      ConfigError: one line naming the bad setting, its source and what is expected.
    """
    env = os.environ if env is None else env
    flags = vars(args) if args is not None else {}
    path = flags.get("config") or env.get("HEBBIAN_CONFIG") or None
    document = _read_file(Path(path)) if path else {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.key] = _resolve(setting, flags, env, document, path)
    models = _models(document.get("models"), path)
    default_model = values["default_model"]
    if default_model not in models:
        raise ConfigError(
            f"default_model {default_model!r} is not one of the configured models: "
            f"{', '.join(sorted(models))}"
        )
    if values["data_dir"] == Path(MEMORY_ONLY):
        values["data_dir"] = None
    if len(models) > values["max_models"]:
        raise ConfigError(
            f"{len(models)} models are configured but limits.max_models is {values['max_models']}"
        )
    _check_tls(values)
    _resolve_shard(values, env)
    try:
        tokens = load_tokens(values["token_file"], env)
    except TokenError as err:
        raise ConfigError(str(err)) from None
    limit_keys = {s.key for s in SETTINGS if s.section == "limits"}
    return ServerConfig(
        **{k: v for k, v in values.items() if k not in limit_keys},
        models=models,
        limits=Limits(**{k: v for k, v in values.items() if k in limit_keys}),
        tokens=tokens,
    )


def _check_tls(values: Mapping[str, Any]) -> None:
    """TLS needs a certificate and its key together; a client CA needs both."""
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        raise ConfigError("TLS needs both tls_cert and tls_key (or neither, for plaintext)")
    if values["tls_client_ca"] is not None and values["tls_cert"] is None:
        raise ConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key as well")


def _resolve_shard(values: dict[str, Any], env: Mapping[str, str]) -> None:
    """With a slot table, the shard ordinal from the setting or else from HOSTNAME."""
    if values["slot_table"] is None:
        if values["shard"] is not None:
            raise ConfigError("shard needs slot_table: the table says which slots it owns")
        return
    if values["shard"] is None:
        hostname = env.get("HOSTNAME", "")
        values["shard"] = ordinal_from_pod_name(hostname)
        if values["shard"] is None:
            raise ConfigError(
                "slot_table needs this server's shard ordinal: set shard (--shard, "
                f"HEBBIAN_SHARD) or run in a StatefulSet pod (HOSTNAME {hostname!r} does not "
                "end in -N)")


def _resolve(setting: _Setting, flags: Mapping, env: Mapping, document: Mapping, path) -> Any:
    """The value of one setting by precedence, parsed and checked."""
    if flags.get(setting.key) is not None:
        value, source = flags[setting.key], f"flag {setting.flag}"
    elif env.get(setting.env, "") != "":
        source = f"environment variable {setting.env}"
        value = _parse(setting, env[setting.env], source)
    else:
        table = document.get(setting.section, {}) if setting.section else document
        if setting.key not in table:
            return setting.default
        source = f"{setting.file_key} in {path}"
        value = _parse(setting, table[setting.key], source)
    if not setting.check(value):
        raise ConfigError(f"{source} must be {setting.expected}; got {value!r}")
    return value


def _parse(setting: _Setting, raw: Any, source: str) -> Any:
    """Parse an environment string or a file value (flags are parsed by argparse)."""
    bad = ConfigError(f"{source} must be {setting.expected}; got {raw!r}")
    textual = setting.parse in (str, str.lower, data_dir_path, file_path)
    if isinstance(raw, bool) or (textual and not isinstance(raw, str)):
        raise bad
    if setting.parse is int and isinstance(raw, float) and not raw.is_integer():
        raise bad
    try:
        return setting.parse(raw)
    except (TypeError, ValueError):
        raise bad from None


def _read_file(path: Path) -> dict:
    """The config file as a dict, checked for unknown keys."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            with path.open("rb") as f:
                document = tomllib.load(f)
        elif suffix in (".yaml", ".yml"):
            with path.open() as f:
                document = yaml.safe_load(f) or {}
        else:
            raise ConfigError(f"config file {path} must end in .toml, .yaml or .yml")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        detail = " ".join(str(err).split())
        kind = suffix[1:].upper()
        raise ConfigError(f"config file {path} is not valid {kind}: {detail}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    known = {s.key for s in SETTINGS if s.section is None} | {"limits", "models"}
    limits = document.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError(f"limits in {path} must be a table")
    unknown = sorted(set(document) - known) + sorted(
        f"limits.{k}" for k in set(limits) - {s.key for s in SETTINGS if s.section == "limits"}
    )
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in config file {path}")
    return document


def _models(table: Any, path) -> dict[str, dict]:
    """The file's models by name (structure only; layers are checked when built)."""
    if table is None:
        return dict(EMBEDDED_MODELS)
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"models in {path} must be a table with one entry per model name")
    models = {}
    for name, spec in table.items():
        name = str(name)
        problem = name_problem(name)
        if problem:
            raise ConfigError(f"models in {path}: {problem}")
        if not isinstance(spec, dict) or "input_dim" not in spec or "layers" not in spec:
            raise ConfigError(f"model {name!r} in {path} needs input_dim and layers")
        models[name] = spec
    return models
