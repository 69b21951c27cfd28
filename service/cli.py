"""The `hebbian` command: run the server, benchmark the engine, and talk to a server.

    hebbian serve [--host H] [--port P] [--metrics-port M] [--data-dir D] [--config F]
    hebbian bench [service] [...]      (service vs a bare gRPC echo server)
    hebbian bench engine [...]         (the engine alone)
    hebbian bench pipeline [...]       (the service's own cost per message, without gRPC)
    hebbian [--target HOST:PORT] [--timeout S] models list|create|get|delete ...
    hebbian process (--values 1,2,... | --file samples.csv | < samples.csv)
    hebbian stream (--synthetic | --file samples.csv | < samples.csv) [--batch N] [--count N]
    hebbian reset [MODEL] [--seed N]
    hebbian snapshot|snapshots [MODEL];  hebbian restore SNAPSHOT_ID [MODEL]
    hebbian export [MODEL] --out model.keras
    hebbian check-data DIR                (offline: reads a data directory, changes nothing)

`serve` and `bench` import their (TensorFlow-heavy) modules only when they run, so
`hebbian --help` and the client commands start fast. Client commands print one
line on stderr and exit 1 when the server answers an error or cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# One BLAS thread: the server's learners are one thread per model by design, and extra
# OpenBLAS threads spinning for small matrices steal their core (measured: +55% samples/s
# at 64 samples per message, offered-load p99 21 ms -> 5 ms). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from collections.abc import Sequence
from typing import Any

from service.cli_data import add_data_commands, check_data, run_data_command
from service.cli_io import InputError, format_rows, parse_values, read_samples

DEFAULT_TARGET = "127.0.0.1:50051"  # same as service.client.DEFAULT_TARGET (kept import-free)

_DELEGATED = {"serve", "bench"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `hebbian` (delegated subcommands take their own flags)."""
    parser = argparse.ArgumentParser(
        prog="hebbian",
        description="Streaming online-learning service for Hebbian neural models.",
    )
    _add_client_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "serve", add_help=False, help="run the gRPC server (`hebbian serve --help` for its flags)"
    )
    commands.add_parser(
        "bench", add_help=False,
        help="benchmarks: `hebbian bench [service]` runs the service against a bare gRPC "
        "echo server, `hebbian bench engine` the engine alone, `hebbian bench pipeline` the "
        "service without gRPC (each with --help)",
    )

    client = argparse.ArgumentParser(add_help=False)
    _add_client_options(client, defaults=False)

    models = commands.add_parser("models", help="list, create, inspect and delete models")
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = model_commands.add_parser("list", parents=[client], help="list the models")
    listing.add_argument("--json", action="store_true", help="print the full records as JSON")
    create = model_commands.add_parser(
        "create", parents=[client], help="create a model",
        description="Create a model from a config file (JSON or YAML, the StackConfig form "
        '{"input_dim": 16, "layers": [{"units": 4, "rule": "sanger"}]}) or from '
        "--input-dim and one --layer per layer.",
    )
    create.add_argument("name", help="model name (lowercase letters, digits, '_' and '-')")
    create.add_argument("--config", metavar="FILE", help="model config file, JSON or YAML")
    create.add_argument("--input-dim", type=int, help="width of the input samples")
    create.add_argument(
        "--layer", action="append", metavar="KEY=VALUE,...", default=[],
        help="one layer, e.g. units=4,rule=sanger,learning_rate=0.005 (repeat for a stack)",
    )
    get = model_commands.add_parser("get", parents=[client], help="show one model as JSON")
    get.add_argument("name", nargs="?", default="", help="model name (default: the default model)")
    delete = model_commands.add_parser("delete", parents=[client], help="delete a model")
    delete.add_argument("name", help="model name")

    process = commands.add_parser(
        "process", parents=[client], help="send samples once, print their activations",
        description="Send samples to a model and print one CSV line of activations per "
        "sample on stdout (the model's step goes to stderr). Samples come from --values, "
        "--file, or CSV on stdin.",
    )
    _add_sample_options(process)
    source = process.add_mutually_exclusive_group()
    source.add_argument(
        "--values", metavar="V,V,...",
        help="one sample as comma-separated numbers (write --values=-1,2 if it starts with -)",
    )
    source.add_argument("--file", metavar="CSV", help="CSV file, one sample per line (- = stdin)")
    process.add_argument("--request-id", default="", help="id echoed by the server")
    process.add_argument("--json", action="store_true", help="print the whole response as JSON")

    stream = commands.add_parser(
        "stream", parents=[client], help="stream samples over one bidirectional call",
        description="Stream samples (CSV file, stdin, or the built-in synthetic sensor) to a "
        "model in messages of --batch samples; shows progress on stderr and a summary at the "
        "end. With --synthetic the summary compares the model with the sensor's known "
        "principal components.",
    )
    _add_sample_options(stream)
    stream_source = stream.add_mutually_exclusive_group()
    stream_source.add_argument(
        "--file", metavar="CSV", help="CSV file, one sample per line (- = stdin, the default)"
    )
    stream_source.add_argument(
        "--synthetic", action="store_true",
        help="a synthetic multi-channel sensor with known principal components "
        "(as many channels as the model's input width)",
    )
    stream.add_argument(
        "--batch", type=_positive_int, default=64,
        help="samples per message (default 64); a message leaves when full or at the end of "
        "the input, so use --batch 1 for a live pipe",
    )
    stream.add_argument("--count", type=_positive_int, help="samples in all (synthetic: 20000)")
    stream.add_argument("--seed", type=int, default=0, help="seed of the synthetic sensor")
    stream.add_argument(
        "--noise", type=float, default=0.05, help="synthetic channel noise (standard deviation)"
    )
    stream.add_argument(
        "--report-every", type=_positive_int, metavar="N",
        help="with --synthetic: print the alignment with the known components every N samples",
    )
    stream.add_argument(
        "--output", metavar="CSV", help="write the activations to this file (- = stdout)"
    )
    stream.add_argument("--quiet", action="store_true", help="no progress line")

    reset = commands.add_parser(
        "reset", parents=[client], help="re-initialise a model's weights (step back to 0)"
    )
    reset.add_argument(
        "name", nargs="?", default="", help="model name (default: the default model)"
    )
    reset.add_argument("--seed", type=int, help="new seed (default: each layer's configured seed)")
    add_data_commands(commands, client)
    return parser


def _add_client_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--target/--timeout/--token/--tls/--ca/--cert/--key, accepted before and after the
    subcommand."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--target", metavar="HOST:PORT",
        default=default(os.environ.get("HEBBIAN_TARGET", DEFAULT_TARGET)),
        help=f"server address (env HEBBIAN_TARGET; default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", default=default(30.0),
        help="deadline of each unary call and of connecting (default 30)",
    )
    parser.add_argument(
        "--token", default=default(os.environ.get("HEBBIAN_TOKEN")),
        help="bearer token sent as 'authorization: Bearer ...' (env HEBBIAN_TOKEN)",
    )
    parser.add_argument(
        "--tls", action="store_true", default=default(_env_flag("HEBBIAN_TLS")),
        help="connect with TLS (implied by --ca/--cert/--key; env HEBBIAN_TLS=1)",
    )
    for flag, what in (
        ("ca", "CA bundle (PEM) that signed the server's certificate (default: system roots)"),
        ("cert", "client certificate (PEM), for servers that require mutual TLS"),
        ("key", "private key (PEM) of --cert"),
    ):
        variable = f"HEBBIAN_{flag.upper()}"
        parser.add_argument(
            f"--{flag}", metavar="FILE", default=default(os.environ.get(variable) or None),
            help=f"{what} (env {variable})",
        )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _add_sample_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="", help="model name (default: the default model)")
    parser.add_argument(
        "--no-learn", dest="learn", action="store_false",
        help="inference only: the model's state is untouched",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `hebbian` with `argv` (default: the process arguments); returns the exit code."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        return _serve(rest)
    if args.command == "bench":
        return _bench(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check-data":
        return check_data(args.directory, args.json)
    try:
        return _run_client_command(args)
    except KeyboardInterrupt:
        print("hebbian: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `hebbian models get | head`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _serve(rest: list[str]) -> int:
    from service.server.app import add_serve_arguments, run_serve

    parser = argparse.ArgumentParser(
        prog="hebbian serve", description="Run the Hebbian gRPC server."
    )
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(rest))


def _bench(rest: list[str]) -> int:
    """`bench engine|pipeline ...` -> those benchmarks; `bench [service] ...` -> the service one."""
    if rest[:1] == ["engine"]:
        from service.bench.engine import main as bench_engine

        return bench_engine(rest[1:])
    if rest[:1] == ["pipeline"]:
        from service.bench.pipeline import main as bench_pipeline

        return bench_pipeline(rest[1:])
    from service.bench.service import main as bench_service

    return bench_service(rest[1:] if rest[:1] == ["service"] else rest)


def _run_client_command(args: argparse.Namespace) -> int:
    """Runs a client command; server errors and bad input become one line on stderr."""
    from service.client import HebbianClient, HebbianError, tls_credentials

    try:
        credentials = None
        if args.tls or args.ca or args.cert or args.key:
            credentials = tls_credentials(args.ca, args.cert, args.key)
        with HebbianClient(
            args.target, timeout=args.timeout, token=args.token, credentials=credentials,
            connect_timeout=args.timeout,
        ) as client:
            if args.command == "models":
                return _models(client, args)
            if args.command == "process":
                return _process(client, args)
            if args.command == "stream":
                from service.cli_stream import run_stream

                return run_stream(client, args)
            if args.command in ("export", "snapshot", "snapshots", "restore"):
                return run_data_command(client, args)
            if args.command == "reset":
                model = client.reset(args.name, seed=args.seed)
                print(f"model {model.name}: reset, step {model.step}")
                return 0
    except HebbianError as error:
        print(f"hebbian: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # InputError, or a config/sample the client cannot encode
        print(f"hebbian: {error}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)


def _record(model: Any) -> dict:
    """A `Model` message as JSON data, with the proto's field names (as grpcurl shows them)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(model, preserving_proto_field_name=True)


def _models(client: Any, args: argparse.Namespace) -> int:
    if args.models_command == "list":
        models = client.list_models()
        if args.json:
            print(json.dumps([_record(model) for model in models], indent=2))
            return 0
        print(f"{'NAME':<24} {'STEP':>12}  {'SHAPE':<14} RULES")
        for model in models:
            widths = [model.config.input_dim, *(layer.units for layer in model.config.layers)]
            rules = ",".join(layer.rule or "oja" for layer in model.config.layers)
            name = model.name + (" *" if model.is_default else "")
            shape = "->".join(str(w) for w in widths)
            print(f"{name:<24} {model.step:>12}  {shape:<14} {rules}")
        return 0
    if args.models_command == "create":
        model = client.create_model(args.name, _model_config(args))
        print(json.dumps(_record(model), indent=2))
        return 0
    if args.models_command == "get":
        model = client.get_model(args.name)
        print(json.dumps(_record(model), indent=2))
        return 0
    if args.models_command == "delete":
        client.delete_model(args.name)
        print(f"model {args.name}: deleted")
        return 0
    raise AssertionError(args.models_command)


def _model_config(args: argparse.Namespace) -> dict:
    """The config of `models create`: --config file, or --input-dim plus --layer flags."""
    if args.config:
        if args.input_dim is not None or args.layer:
            raise InputError("give either --config or --input-dim/--layer, not both")
        try:
            with open(args.config, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise InputError(f"cannot read {args.config}: {error.strerror}") from None
        import yaml  # JSON is YAML too

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputError(f"{args.config}: not valid JSON or YAML: {error}") from None
        if not isinstance(config, dict):
            raise InputError(f"{args.config}: expected a mapping with input_dim and layers")
        return config
    if args.input_dim is None or not args.layer:
        raise InputError("models create needs --config, or --input-dim and at least one --layer")
    return {"input_dim": args.input_dim, "layers": [_parse_layer(text) for text in args.layer]}


def _parse_layer(text: str) -> dict:
    """"units=4,rule=sanger,learning_rate=0.01" as a layer dict with typed values."""
    layer: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--layer {text!r}: expected KEY=VALUE items, got {item!r}")
        layer[key.strip()] = _scalar(value.strip())
    return layer


def _scalar(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _process(client: Any, args: argparse.Namespace) -> int:
    if args.values is not None:
        samples = parse_values(args.values)
    elif args.file in (None, "-") and sys.stdin.isatty():
        raise InputError("no samples: give --values or --file, or pipe CSV rows into stdin")
    else:
        samples = read_samples(args.file)
    result = client.process_full(
        samples, learn=args.learn, model=args.model, request_id=args.request_id
    )
    if args.json:
        print(json.dumps({
            "model": result.model,
            "step": result.step,
            "request_id": result.request_id,
            "activations": result.activations.tolist(),
            "skipped_samples": list(result.skipped),
        }))
        return 0
    print(format_rows(result.activations))
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    print(f"model {result.model}: step {result.step}{skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
