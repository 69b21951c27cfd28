"""Terminal input and output of the `hebbian` command: values, input files, rows, progress."""

from __future__ import annotations

import sys
from typing import IO, Any

import numpy as np


class InputError(ValueError):
    """Input that cannot be read: bad samples (the message names the file, line and
    column), a missing file, a bad combination of arguments."""


def parse_values(text: str) -> np.ndarray:
    """"1,2,3" (commas and/or spaces) as one float32 sample."""
    parts = [part for part in text.replace(",", " ").split() if part]
    if not parts:
        raise InputError("--values needs at least one number")
    try:
        return np.array([float(part) for part in parts], dtype=np.float32)
    except ValueError as error:
        raise InputError(f"--values: {error}") from None


def open_input(path: str | None) -> IO[str]:
    """The file at `path`, or stdin for None or "-"."""
    if path in (None, "-"):
        return sys.stdin
    try:
        return open(path, encoding="utf-8")  # the caller closes it
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None


def source_name(path: str | None) -> str:
    """How errors name an input: its path, or "stdin"."""
    return "stdin" if path in (None, "-") else str(path)


def format_rows(array: np.ndarray) -> str:
    """Rows as CSV lines with 7 significant digits (float32 precision)."""
    array = np.atleast_2d(array)
    return "\n".join(",".join(f"{value:.7g}" for value in row) for row in array)


class Progress:
    """A progress display on stderr: bar, count, rate, elapsed time and ETA (rich).

    Shown only when `enabled` and stderr is a terminal (never in pipes, logs or tests);
    otherwise every method does nothing. Use as a context manager:

        with Progress(total=20000, unit="samples", description="streaming") as progress:
            progress.update(done, note=f"step {step}")
    """

    def __init__(
        self, total: int | None, *, unit: str = "samples", description: str = "",
        enabled: bool = True, refresh_per_second: float = 10,
    ):
        self.total, self.unit, self.description = total, unit, description
        self.refresh_per_second = refresh_per_second
        self.done = 0  # the last count given to `update`
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), _rate_column(self.unit), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                console=Console(stderr=True), transient=True,
                refresh_per_second=self.refresh_per_second,
                redirect_stdout=False, redirect_stderr=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, note="")
        return self

    def update(self, done: int, *, note: str = "", description: str | None = None) -> None:
        """`done` units so far; `note` is shown after the ETA."""
        self.done = done
        if self._bar is not None:
            fields = {} if description is None else {"description": description}
            self._bar.update(self._task, completed=done, note=note, **fields)

    def write(self, text: str, file: IO[str]) -> None:
        """Prints a line to `file` without tearing the display (above it on a terminal)."""
        if self._bar is not None and file.isatty():
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=file)

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _rate_column(unit: str) -> Any:
    """A rich column showing the task's speed as "12,345 <unit>/s"."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s")

    return Rate()
