"""Samples from delimited text (CSV, TSV, ...) for every `hebbian` command that reads them.

Read with the standard `csv` module: quoted cells, any one-character delimiter, blank
lines and `#` comment lines skipped. The delimiter is detected from the first data line
(tab, then comma, semicolon, or runs of spaces) unless `--delimiter` names it; a header
row is detected (a first row with a cell that is not a number) unless `--header` or
`--no-header` says so; `--columns` picks the columns that form a sample (names from the
header, 1-based numbers and ranges like `cut -f`: `2-17,20`), so a timestamp or a label
column can stay in the file. Every error names the source, the line and, for a cell, the
column (number and header name).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from service.cli_io import InputError, open_input, source_name

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ",
                    "pipe": "|"}


@dataclass(frozen=True)
class CsvFormat:
    """How to read samples: `delimiter` (None: detect), `header` (None: detect), `columns`
    (None: all; else names and/or 1-based numbers and ranges, as given to --columns)."""

    delimiter: str | None = None
    header: bool | None = None
    columns: tuple[str, ...] | None = None


def add_csv_arguments(parser: argparse.ArgumentParser) -> None:
    """--delimiter, --header/--no-header and --columns."""
    parser.add_argument(
        "--delimiter", type=_delimiter, metavar="CHAR",
        help="cell separator: one character, or tab, comma, semicolon, space, pipe "
        "(default: detected from the first data line)",
    )
    header = parser.add_mutually_exclusive_group()
    header.add_argument(
        "--header", dest="header", action="store_const", const=True,
        help="the first row names the columns (default: detected)",
    )
    header.add_argument(
        "--no-header", dest="header", action="store_const", const=False,
        help="the first row is a sample",
    )
    parser.add_argument(
        "--columns", type=_columns, metavar="COLS",
        help="the columns that form a sample: header names and/or 1-based numbers and "
        "ranges, e.g. 2-17 or x,y,z (default: every column)",
    )


def csv_format(args: argparse.Namespace) -> CsvFormat:
    """The `CsvFormat` of parsed arguments (see `add_csv_arguments`)."""
    return CsvFormat(args.delimiter, args.header, args.columns)


def _delimiter(text: str) -> str:
    value = _DELIMITER_NAMES.get(text.lower(), text)
    if len(value) != 1 or value in "\"\r\n" or value.isalnum() or value in ".-+":
        raise argparse.ArgumentTypeError(
            f"must be one character (not a quote, digit, letter, '.', '+' or '-') or one of "
            f"{', '.join(sorted(_DELIMITER_NAMES))}; got {text!r}"
        )
    return value


def _columns(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(","))
    if not all(items):
        raise argparse.ArgumentTypeError(f"an empty column in {text!r}")
    for item in items:
        start, dash, end = item.partition("-")
        numbers = [start, end] if dash else [start]
        if all(part.isdigit() for part in numbers) and any(int(p) < 1 for p in numbers):
            raise argparse.ArgumentTypeError(f"column numbers start at 1; got {item!r}")
        if dash and all(p.isdigit() for p in numbers) and int(end) < int(start):
            raise argparse.ArgumentTypeError(f"range {item!r} ends before it starts")
    return items


def _detect_delimiter(line: str) -> str:
    for candidate in ("\t", ",", ";", "|"):
        if candidate in line:
            return candidate
    return " "


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _select(columns: tuple[str, ...], names: list[str] | None, width: int, where: str) -> list:
    """0-based indices of `columns` in rows of `width` cells with header `names`."""
    indices: list[int] = []
    for item in columns:
        start, dash, end = item.partition("-")
        if start.isdigit() and (not dash or end.isdigit()):
            last = int(end) if dash else int(start)
            if last > width:
                raise InputError(f"{where}: --columns {item}: the rows have {width} columns")
            indices.extend(range(int(start) - 1, last))
        elif names is not None and item in names:
            indices.append(names.index(item))
        elif names is None:
            raise InputError(f"{where}: --columns {item!r} is a name, and there is no header row")
        else:
            raise InputError(
                f"{where}: no column {item!r}; the header has {', '.join(names)}"
            )
    return indices


class _Rows:
    """Reads one source: detects its delimiter and header, then yields float32 samples."""

    def __init__(self, lines: Iterable[str], fmt: CsvFormat, source: str):
        self.fmt, self.source = fmt, source
        self.lines = iter(lines)
        self.names: list[str] | None = None
        self.width: int | None = None  # cells per row
        self.first_line = 0
        self.indices: list[int] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        first = self._first_data_line()
        if first is None:
            return
        number, line = first
        delimiter = self.fmt.delimiter or _detect_delimiter(line)
        reader = csv.reader(
            self._rest(line), delimiter=delimiter, skipinitialspace=delimiter == " "
        )
        for cells in reader:
            number_now = number + reader.line_num - 1
            if delimiter == " ":
                cells = [cell for cell in cells if cell]
            if not cells:
                continue
            sample = self._row(cells, number_now)
            if sample is not None:
                yield sample

    def _first_data_line(self) -> tuple[int, str] | None:
        for number, line in enumerate(self.lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                return number, line
        return None

    def _rest(self, first: str) -> Iterator[str]:
        yield first
        for line in self.lines:  # comments become blank lines: line numbers stay right
            yield "\n" if line.lstrip().startswith("#") else line

    def _row(self, cells: list[str], number: int) -> np.ndarray | None:
        where = f"{self.source}, line {number}"
        if self.width is None:
            self.width, self.first_line = len(cells), number
            header = self.fmt.header
            if header is None:
                header = not all(_is_number(cell.strip()) for cell in cells)
            if header:
                self.names = [cell.strip() for cell in cells]
            if self.fmt.columns is not None:
                self.indices = _select(self.fmt.columns, self.names, self.width, where)
            if header:
                return None
        if len(cells) != self.width:
            raise InputError(
                f"{where}: {len(cells)} columns, expected {self.width} (as on line "
                f"{self.first_line}); a ragged row, or give --delimiter"
            )
        picked = self.indices if self.indices is not None else range(len(cells))
        values = []
        for index in picked:
            cell = cells[index].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not _is_number(cell) or not math.isfinite(value):
                raise InputError(
                    f"{where}, column {self._column(index)}: not a finite number: {cell!r}"
                    + ("" if self.fmt.columns else "; pick the sample's columns with --columns")
                )
            values.append(value)
        return np.array(values, dtype=np.float32)

    def _column(self, index: int) -> str:
        name = f" ({self.names[index]})" if self.names and self.names[index] else ""
        return f"{index + 1}{name}"


def csv_rows(
    lines: Iterable[str], fmt: CsvFormat | None = None, source: str = "stdin"
) -> Iterator[np.ndarray]:
    """One float32 sample per data row of `lines` (named `source` in errors).

    Raises:
      InputError: a cell that is not a finite number, a ragged row, an unknown column.
    """
    return iter(_Rows(lines, fmt or CsvFormat(), source))


def csv_batches(
    lines: Iterable[str], batch: int, count: int | None = None,
    fmt: CsvFormat | None = None, source: str = "stdin",
) -> Iterator[np.ndarray]:
    """Samples grouped into (<= batch, width) arrays, at most `count` samples in all."""
    rows: list[np.ndarray] = []
    sent = 0
    for row in csv_rows(lines, fmt, source):
        if count is not None and sent + len(rows) >= count:
            break
        rows.append(row)
        if len(rows) == batch:
            yield np.stack(rows)
            sent += len(rows)
            rows = []
    if rows:
        yield np.stack(rows)


def read_samples(path: str | None, fmt: CsvFormat | None = None) -> np.ndarray:
    """Every sample of a file (or stdin for None or "-") as a (n, width) float32 array."""
    stream = open_input(path)
    try:
        rows = list(csv_rows(stream, fmt, source_name(path)))
    finally:
        if stream is not sys.stdin:
            stream.close()
    if not rows:
        raise InputError(f"no samples in {source_name(path)}")
    return np.stack(rows)
