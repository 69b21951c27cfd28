"""Terminal input and output of the `hebbian` command: CSV samples, rows, a progress line."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO

import numpy as np


class InputError(ValueError):
    """Input samples that cannot be read (the message names the line)."""


def parse_values(text: str) -> np.ndarray:
    """"1,2,3" (commas and/or spaces) as one float32 sample."""
    parts = [part for part in text.replace(",", " ").split() if part]
    if not parts:
        raise InputError("--values needs at least one number")
    try:
        return np.array([float(part) for part in parts], dtype=np.float32)
    except ValueError as error:
        raise InputError(f"--values: {error}") from None


def csv_rows(lines: Iterable[str]) -> Iterator[np.ndarray]:
    """One float32 row per CSV line; skips blank lines, '#' comments and a header line."""
    width = None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        cells = [cell.strip() for cell in text.split(",")]
        try:
            row = np.array([float(cell) for cell in cells], dtype=np.float32)
        except ValueError:
            if width is None and number == 1:
                continue  # a header line
            raise InputError(f"line {number}: not a row of numbers: {text[:60]!r}") from None
        if width is not None and row.size != width:
            raise InputError(f"line {number}: {row.size} values, expected {width}")
        width = row.size
        yield row


def csv_batches(lines: Iterable[str], batch: int, count: int | None = None) -> Iterator[np.ndarray]:
    """CSV rows grouped into (<= batch, width) arrays, at most `count` rows in all."""
    rows: list[np.ndarray] = []
    sent = 0
    for row in csv_rows(lines):
        if count is not None and sent + len(rows) >= count:
            break
        rows.append(row)
        if len(rows) == batch:
            yield np.stack(rows)
            sent += len(rows)
            rows = []
    if rows:
        yield np.stack(rows)


def open_input(path: str | None) -> IO[str]:
    """The file at `path`, or stdin for None or "-"."""
    if path in (None, "-"):
        return sys.stdin
    try:
        return open(path, encoding="utf-8")  # the caller closes it
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None


def read_samples(path: str | None) -> np.ndarray:
    """Every CSV row of a file (or stdin) as a (n, width) float32 array."""
    stream = open_input(path)
    try:
        rows = list(csv_rows(stream))
    finally:
        if stream is not sys.stdin:
            stream.close()
    if not rows:
        raise InputError(f"no samples in {path if path not in (None, '-') else 'stdin'}")
    return np.stack(rows)


def format_rows(array: np.ndarray) -> str:
    """Rows as CSV lines with 7 significant digits (float32 precision)."""
    array = np.atleast_2d(array)
    return "\n".join(",".join(f"{value:.7g}" for value in row) for row in array)


class Progress:
    """A one-line progress indicator on stderr, redrawn with \\r at most 10 times a second.

    Silent when `enabled` is false (e.g. stderr is not a terminal and --quiet).
    """

    def __init__(self, total: int | None, *, enabled: bool = True, stream: IO[str] | None = None):
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._width = 0

    def update(self, done: int, step: int, *, force: bool = False) -> None:
        """Redraws the line for `done` samples sent and acknowledged, model at `step`."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last_draw < 0.1):
            return
        self._last_draw = now
        elapsed = max(now - self.start, 1e-9)
        if self.total:
            filled = int(30 * min(done / self.total, 1.0))
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}"
        else:
            bar = f"{done} samples"
        line = f"{bar}  {done / elapsed:,.0f} samples/s  step {step}"
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def clear(self) -> None:
        """Erases the line, so that the next output starts on a clean line."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
