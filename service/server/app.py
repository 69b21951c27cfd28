"""`hebbian serve`: configuration, logging, signals, and the server's lifetime.

`serve(config)` starts a `HebbianServer`, waits for SIGTERM or SIGINT, then shuts down
gracefully (readiness NOT_SERVING, no new calls, in-flight calls get the grace period)
and returns the exit status 0. The CLI calls `add_serve_arguments` and `run_serve`;
`python -m service.server.app` runs the same thing without the CLI.

TensorFlow is imported only once serving starts, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from service.server.config import ConfigError, ServerConfig, add_arguments, load_config
from service.server.observability.logs import configure_logging

log = logging.getLogger("service.server")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `hebbian serve` (--host, --port, --metrics-port, --config, ...)."""
    add_arguments(parser)


def run_serve(args: argparse.Namespace) -> int:
    """Resolve the configuration from `args`, the environment and the file, then serve.

    Returns the process exit status: 0 after a signalled shutdown, 2 for an invalid
    configuration, 1 when the server cannot start; errors are one line on stderr.
    """
    try:
        config = load_config(args)
    except ConfigError as err:
        return _fail(err, 2)
    return serve(config)


def serve(config: ServerConfig) -> int:
    """Run a server until SIGTERM/SIGINT, then stop it gracefully; returns the exit status."""
    configure_logging(config.log_level, config.log_format)
    from service.server.runtime import HebbianServer, StartupError  # imports TensorFlow

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _SIGNALS}
    try:
        try:
            server = HebbianServer(config).start()
        except ConfigError as err:
            return _fail(err, 2, config.log_format)
        except StartupError as err:
            return _fail(err, 1, config.log_format)
        stop.wait()
        server.stop(config.grace_period)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _fail(err: Exception, status: int, log_format: str = "text") -> int:
    """One line on stderr (a JSON record once logging is json); returns `status`."""
    if log_format == "json":
        log.error("hebbian serve: error: %s", err)
    else:
        print(f"hebbian serve: error: {err}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """`python -m service.server.app [flags]`: the same as `hebbian serve [flags]`."""
    parser = argparse.ArgumentParser(
        prog="hebbian serve", description="Serve Hebbian models over gRPC."
    )
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
