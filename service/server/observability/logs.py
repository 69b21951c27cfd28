"""The server's log output: human-readable text lines or one JSON object per line.

`configure_logging(level, "json")` makes every record one line of JSON for log pipelines
(Loki, Elasticsearch, Cloud Logging, ...)::

    {"time": "2026-12-01T22:55:01.123Z", "level": "INFO", "logger": "service.server",
     "message": "ready: 1 model(s) warmed up", "thread": "MainThread"}

with ``exception`` (the formatted traceback) when the record carries one. Python warnings
and uncaught exceptions (main thread and others) go through the same handler, so a JSON
log holds nothing but JSON lines. Records never carry secrets: tokens and keys are not
logged anywhere in the server.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO, Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str, stream: IO[str] | None = None) -> None:
    """Send every log record at `level` or above to `stream` (stderr) as text or json.

    Replaces the root logger's handlers, so calling it twice does not duplicate lines.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json; got {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    if log_format == "json":
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def json_logging() -> bool:
    """Whether the root logger writes JSON lines (`configure_logging(..., "json")`)."""
    return any(isinstance(handler.formatter, JsonFormatter)
               for handler in logging.getLogger().handlers)


def _utc_timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-12-01T22:55:01.123Z."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    logging.getLogger("service").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("service").critical(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
