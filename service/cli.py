"""The `hebbian` command: run the server, benchmark the engine, and talk to a server.

    hebbian serve [--host H] [--port P] [--metrics-port M] [--data-dir D] [--config F]
    hebbian bench [service] [...]      (service vs a bare gRPC echo server)
    hebbian bench engine [...]         (the engine alone)
    hebbian bench pipeline [...]       (the service's own cost per message, without gRPC)
    hebbian bench floor [...]          (echo, the least work any design adds, the service)
    hebbian bench shards [...]         (3 shards against 1 behind HAProxy, as a ratio)
    hebbian [--target HOST:PORT] [--timeout S] models list|create|get|update|delete ...
    hebbian models create NAME --from model.npz|model.keras   (config and state of a file)
    hebbian models update NAME --learning-rate X [--decay-steps N] [--layer-index I]
    hebbian models list --targets H0:P,H1:P,...   (every shard's models, with their shard)
    hebbian shards status --targets ... [--slot-table F];  hebbian shards render-haproxy ...
    hebbian shards move --targets ... --slot-table F --slots A-B --to K [--router-socket S]
    hebbian process [-m MODEL] (--values 1,2,... | --file samples.csv | < samples.csv)
    hebbian stream [-m MODEL] (--synthetic | --file samples.csv | < samples.csv) [--batch N]
    hebbian reset|snapshot|snapshots [-m MODEL];  hebbian restore SNAPSHOT_ID [-m MODEL]
    hebbian export [-m MODEL] --out model.npz|model.keras   (writes nothing on the server)
    hebbian plot [-m MODEL | --from model.keras] --out model.png [--image-shape 8x8]
    hebbian check-data DIR                (offline: reads a data directory, changes nothing)
    hebbian completion bash|zsh           (a shell completion script, from this parser)
    hebbian --version

Every command that talks to a server names its model with `-m/--model` (empty: the
server's default model; the older positional MODEL still works) and prints its result
as JSON with `--json`. `serve` and `bench` import their (TensorFlow-heavy) modules only
when they run, so `hebbian --help` and the client commands start fast. Client commands
print one line on stderr and exit 1 when the server answers an error or cannot be
reached, 2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# One BLAS thread: each model is applied by one thread at a time by design, and extra
# OpenBLAS threads spinning for small matrices steal their core (measured: +55% samples/s
# at 64 samples per message, offered-load p99 21 ms -> 5 ms). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from collections.abc import Sequence
from typing import Any

from service.cli_csv import add_csv_arguments, csv_format, read_samples
from service.cli_data import add_data_commands, check_data, run_data_command
from service.cli_io import InputError, format_rows, parse_values
from service.cli_models import add_model_option, add_models_command, model_name, run_models
from service.cli_models import record as model_record
from service.cli_plot import add_plot_command, run_plot, run_plot_file
from service.cli_shards import add_shards_command

DEFAULT_TARGET = "127.0.0.1:50051"  # same as service.client.DEFAULT_TARGET (kept import-free)


def version() -> str:
    """The installed package's version ("unknown" when run from a source tree only)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("hebbian-service")
    except PackageNotFoundError:
        return "unknown"


class _Version(argparse.Action):
    """--version, looking the version up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"hebbian {version()} (API hebbian.v1)")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `hebbian` (delegated subcommands take their own flags)."""
    parser = argparse.ArgumentParser(
        prog="hebbian",
        description="Streaming online-learning service for Hebbian neural models.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    _add_client_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "serve", add_help=False, help="run the gRPC server (`hebbian serve --help` for its flags)"
    )
    commands.add_parser(
        "bench", add_help=False,
        help="benchmarks: `hebbian bench [service]` runs the service against a bare gRPC "
        "echo server, `hebbian bench engine` the engine alone, `hebbian bench pipeline` the "
        "service without gRPC, `hebbian bench floor` the echo plus the least work any design "
        "adds, `hebbian bench shards` 3 shards against 1 behind HAProxy (each with --help)",
    )

    client = argparse.ArgumentParser(add_help=False)
    _add_client_options(client, defaults=False)
    client.add_argument("--json", action="store_true", help="print the result as JSON")

    add_models_command(commands, client)
    add_shards_command(commands, client)

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
    source.add_argument(
        "--file", metavar="CSV", help="delimited text, one sample per line (- = stdin)"
    )
    add_csv_arguments(process)
    process.add_argument("--request-id", default="", help="id echoed by the server")

    stream = commands.add_parser(
        "stream", parents=[client], help="stream samples over one bidirectional call",
        description="Stream samples (delimited text from a file or stdin, or the built-in "
        "synthetic sensor) to a model in messages of --batch samples; shows progress with "
        "rate and ETA on a terminal and a summary at the end. With --synthetic the summary "
        "compares the model with the sensor's known principal components. A server restart "
        "in the middle is ridden out: the stream resumes and applies nothing twice.",
    )
    _add_sample_options(stream)
    stream_source = stream.add_mutually_exclusive_group()
    stream_source.add_argument(
        "--file", metavar="CSV",
        help="delimited text, one sample per line (- = stdin, the default)",
    )
    stream_source.add_argument(
        "--synthetic", action="store_true",
        help="a synthetic multi-channel sensor with known principal components "
        "(as many channels as the model's input width)",
    )
    add_csv_arguments(stream)
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
    stream.add_argument("--quiet", action="store_true", help="no progress display")

    reset = commands.add_parser(
        "reset", parents=[client], help="re-initialise a model's weights (step back to 0)"
    )
    add_model_option(reset, positional=True)
    reset.add_argument("--seed", type=int, help="new seed (default: each layer's configured seed)")
    add_data_commands(commands, client)
    add_plot_command(commands, client)

    completion = commands.add_parser(
        "completion", help="print a shell completion script generated from this parser",
        description="Print a completion script for bash or zsh. bash: "
        "`source <(hebbian completion bash)` (or save it under "
        "~/.local/share/bash-completion/completions/hebbian); zsh: "
        "`source <(hebbian completion zsh)` in ~/.zshrc.",
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell")
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
        "--timeout", type=_positive_float, metavar="SECONDS", default=default(30.0),
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
    add_model_option(parser, positional=False)
    parser.add_argument(
        "--no-learn", dest="learn", action="store_false",
        help="inference only: the model's state is untouched",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text}")
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
    if args.command == "plot" and args.source_file is not None:
        return run_plot_file(args)
    if args.command == "completion":
        from service.bench.service import build_parser as bench_parser
        from service.cli_completion import completion_script

        delegated = {"serve": _serve_parser(), "bench": bench_parser()}
        print(completion_script(parser, args.shell, delegated), end="")
        return 0
    try:
        return _run_client_command(args)
    except KeyboardInterrupt:
        print("hebbian: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `hebbian models get | head`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _serve_parser() -> argparse.ArgumentParser:
    from service.server.app import add_serve_arguments

    parser = argparse.ArgumentParser(
        prog="hebbian serve", description="Run the Hebbian gRPC server."
    )
    add_serve_arguments(parser)
    return parser


def _serve(rest: list[str]) -> int:
    from service.server.app import run_serve

    return run_serve(_serve_parser().parse_args(rest))


def _bench(rest: list[str]) -> int:
    """`bench engine|pipeline|floor|shards ...` -> those benchmarks; `bench [service] ...` ->
    the service one."""
    if rest[:1] == ["engine"]:
        from service.bench.engine import main as bench_engine

        return bench_engine(rest[1:])
    if rest[:1] == ["pipeline"]:
        from service.bench.pipeline import main as bench_pipeline

        return bench_pipeline(rest[1:])
    if rest[:1] == ["floor"]:
        from service.bench.floor import main as bench_floor

        return bench_floor(rest[1:])
    if rest[:1] == ["shards"]:
        from service.bench.shards import main as bench_shards

        return bench_shards(rest[1:])
    from service.bench.service import main as bench_service

    return bench_service(rest[1:] if rest[:1] == ["service"] else rest)


def _run_client_command(args: argparse.Namespace) -> int:
    """Runs a client command; server errors and bad input become one line on stderr."""
    from service.client import HebbianClient, HebbianError, tls_credentials

    try:
        args.model = model_name(args)
        credentials = None
        if args.tls or args.ca or args.cert or args.key:
            credentials = tls_credentials(args.ca, args.cert, args.key)
        if args.command == "shards" or getattr(args, "targets", None):
            return _run_shards_command(args, lambda target: HebbianClient(
                target, timeout=args.timeout, token=args.token, credentials=credentials,
                connect_timeout=args.timeout,
            ))
        with HebbianClient(
            args.target, timeout=args.timeout, token=args.token, credentials=credentials,
            connect_timeout=args.timeout,
        ) as client:
            if args.command == "models":
                return run_models(client, args)
            if args.command == "process":
                return _process(client, args)
            if args.command == "stream":
                from service.cli_stream import run_stream

                return run_stream(client, args)
            if args.command in ("export", "snapshot", "snapshots", "restore"):
                return run_data_command(client, args)
            if args.command == "plot":
                return run_plot(client, args)
            if args.command == "reset":
                model = client.reset(args.model, seed=args.seed)
                if args.json:
                    print(json.dumps(model_record(model), indent=2))
                else:
                    print(f"model {model.name}: reset, step {model.step}")
                return 0
    except HebbianError as error:
        print(f"hebbian: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # InputError, or a config/sample the client cannot encode
        print(f"hebbian: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file that cannot be written, e.g. export --out
        where = f"{error.filename}: " if error.filename else ""
        print(f"hebbian: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


def _run_shards_command(args: argparse.Namespace, connect: Any) -> int:
    """`shards ...` and `models list --targets`: commands over several shards."""
    from service.cli_shards import list_models_on_shards, move_shards, render_haproxy, shards_status

    if args.command == "models":
        return list_models_on_shards(args, connect)
    if args.shards_command == "render-haproxy":
        return render_haproxy(args)
    if args.shards_command == "move":
        return move_shards(args, connect)
    return shards_status(args, connect)


def _process(client: Any, args: argparse.Namespace) -> int:
    if args.values is not None:
        samples = parse_values(args.values)
    elif args.file in (None, "-") and sys.stdin.isatty():
        raise InputError("no samples: give --values or --file, or pipe CSV rows into stdin")
    else:
        samples = read_samples(args.file, csv_format(args))
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
