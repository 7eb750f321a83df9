"""Cells as text: native XLSX/SQL values rendered as the CSV reader shows them, and string frames.

Every reader hands over the same shape: a :class:`RawChunk` whose frame holds ROW_COLUMN
(the 1-based data row) and one ``pl.String`` column per header cell, an empty cell null.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Final

import polars as pl

from cart_etl.extract.site.spec import FileSpec

__all__ = [
    "ROW_COLUMN",
    "BadRow",
    "ExportFile",
    "RawChunk",
    "cell_text",
    "frame_from_rows",
    "nulls_for_empty",
    "number_rows",
    "unique_names",
]

ROW_COLUMN: Final = "__row__"  # 1-based data row number in reader frames (never a header)

_EXCEL_TRUE, _EXCEL_FALSE = "TRUE", "FALSE"


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row the reader could not align with the header (kept out of the frame).

    ``kind`` says why: ``ragged`` (more cells than the header), ``truncated`` (the file ends
    in the middle of this row) or ``unbalanced_quote`` (a quote opened in this row is never
    closed; the lines after it are read again as rows of their own).
    """

    row: int
    fields: int
    width: int
    kind: str = "ragged"


@dataclass(frozen=True, slots=True)
class RawChunk:
    """Rows of one file as text: ROW_COLUMN first, then one column per header cell."""

    frame: pl.DataFrame
    bad_rows: tuple[BadRow, ...] = ()


class ExportFile:
    """One opened export file: its header is read, its rows are streamed on demand.

    Opening reads the header only (so a whole delivery can be checked before any row is
    read); ``chunks`` then streams the rows. An XLSX workbook stays open in between: openpyxl
    parses the whole sheet to open it, so opening it twice would double the cost.
    """

    def __init__(
        self,
        path: Path,
        spec: FileSpec,
        header: tuple[str, ...],
        chunks: Callable[[int], Iterator[RawChunk]],
        close: Callable[[], None] = lambda: None,
    ) -> None:
        """Use :func:`cart_etl.extract.readers.files.open_export_file`."""
        self.path = path
        self.spec = spec
        self.header = header
        self._chunks = chunks
        self._close = close

    def chunks(self, chunk_rows: int) -> Iterator[RawChunk]:
        """Every data row as text: ROW_COLUMN + one column per header cell (unique names)."""
        return self._chunks(chunk_rows)

    def close(self) -> None:
        """Release the file (idempotent; streaming to the end closes it too)."""
        self._close()


def unique_names(header: Sequence[str]) -> list[str]:
    """Header cells as frame column names: blanks named by position, repeats suffixed."""
    names: list[str] = []
    seen: set[str] = set()
    for index, cell in enumerate(header, start=1):
        name = cell or f"column_{index}"
        while name in seen:
            name = f"{name}~{index}"
        seen.add(name)
        names.append(name)
    return names


@functools.singledispatch
def cell_text(value: object) -> str | None:
    """A native cell value as the text an extractor emits (None for an empty cell).

    Date-times become ISO text ``YYYY-MM-DDTHH:MM:SS`` (sub-seconds only when present),
    numbers their shortest round-tripping decimal (an Excel serial in a date column stays a
    number: validation converts it), booleans ``TRUE``/``FALSE`` as Excel prints them.
    """
    return str(value)


@cell_text.register(type(None))
def _none_text(value: None) -> str | None:
    return None


@cell_text.register(str)
def _str_text(value: str) -> str | None:
    return value or None  # an empty cell is missing, as in the CSV reader


@cell_text.register(bool)
def _bool_text(value: bool) -> str | None:
    return _EXCEL_TRUE if value else _EXCEL_FALSE


@cell_text.register(int)
def _int_text(value: int) -> str | None:
    return str(value)


@cell_text.register(float)
def _float_text(value: float) -> str | None:
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")  # never an exponent: 1e-07 -> 0.0000001
    return text.removesuffix(".0")


@cell_text.register(Decimal)
def _decimal_text(value: Decimal) -> str | None:
    return format(value, "f")  # as stored: NUMERIC 38.60 stays '38.60'


@cell_text.register(datetime)
def _datetime_text(value: datetime) -> str | None:
    if value.microsecond == 0:
        return value.isoformat(timespec="seconds")
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=spec)


@cell_text.register(date)
def _date_text(value: date) -> str | None:
    return value.isoformat()


@cell_text.register(time)
def _time_text(value: time) -> str | None:
    return value.isoformat(timespec="seconds" if value.microsecond == 0 else "auto")


@cell_text.register(bytes)
def _bytes_text(value: bytes) -> str | None:
    return value.hex()


def frame_from_rows(
    names: list[str], numbers: list[str], rows: Sequence[Sequence[str | None]]
) -> pl.DataFrame:
    """A ROW_COLUMN + ``names`` string frame from row lists."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    data = {ROW_COLUMN: numbers, **{n: list(c) for n, c in zip(names, columns, strict=True)}}
    return pl.DataFrame(data, schema=dict.fromkeys([ROW_COLUMN, *names], pl.String))


def number_rows(frame: pl.DataFrame, first_row: int) -> pl.DataFrame:
    """Prepend ROW_COLUMN (row numbers from ``first_row``, as text); empty cells become null."""
    frame = frame.with_row_index(ROW_COLUMN, offset=first_row)
    return nulls_for_empty(frame.with_columns(pl.col(ROW_COLUMN).cast(pl.String)))


def nulls_for_empty(frame: pl.DataFrame) -> pl.DataFrame:
    """A quoted empty cell ("") is missing like an unquoted one (every reader agrees)."""
    return frame.with_columns(
        pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in frame.columns
    )
