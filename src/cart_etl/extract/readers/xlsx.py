"""XLSX reader: the declared sheet streamed with openpyxl (read-only), native cells as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

from cart_etl.errors import SourceError
from cart_etl.extract.readers.cells import (
    BadRow,
    ExportFile,
    RawChunk,
    cell_text,
    frame_from_rows,
    unique_names,
)
from cart_etl.extract.site.spec import FileSpec

__all__ = ["open_xlsx"]


def open_xlsx(path: Path, spec: FileSpec) -> ExportFile:
    """Open the declared sheet (openpyxl read-only) and read its header row."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise SourceError(
            f"{path}: not a readable .xlsx workbook ({exc}){_looks_like(path)}.",
            fix=f"re-export it as .xlsx or declare its real format under {spec.where}.format.",
        ) from exc
    try:
        sheet = _sheet(workbook, path, spec)
        rows = sheet.iter_rows(min_row=spec.header_row, values_only=True)
        header = _xlsx_header(path, spec, next(rows, None))
    except BaseException:
        workbook.close()
        raise
    names_ = unique_names(header)
    return ExportFile(
        path, spec, header, lambda n: _xlsx_chunks(workbook, rows, names_, n), workbook.close
    )


def _looks_like(path: Path) -> str:
    """What a file that is not a workbook seems to be, from its first bytes."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError:
        return ""
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "; it is an old binary .xls workbook (save it as .xlsx)"
    if not head:
        return "; the file is empty (0 bytes)"
    if b"\x00" not in head and (b"," in head or b";" in head or b"\t" in head):
        return "; it looks like a CSV text file saved under an .xlsx name"
    return ""


def _sheet(workbook: Any, path: Path, spec: FileSpec) -> Any:
    """The declared worksheet (default: the first one)."""
    if spec.sheet is None:
        return workbook.worksheets[0]
    if spec.sheet not in workbook.sheetnames:
        found = ", ".join(repr(n) for n in workbook.sheetnames)
        near = [
            n for n in workbook.sheetnames if n.strip().casefold() == spec.sheet.strip().casefold()
        ]
        hint = f" {near[0]!r} differs from it only in spaces or upper/lower case." if near else ""
        raise SourceError(
            f"{path}: no sheet {spec.sheet!r}; sheets found: {found}.{hint}",
            fix=f"set {spec.where}.sheet to the sheet holding the data"
            + (f" ({near[0]!r}, spaces included), or rename the sheet." if near else "."),
        )
    return workbook[spec.sheet]


def _xlsx_header(path: Path, spec: FileSpec, first: tuple[object, ...] | None) -> tuple[str, ...]:
    """Header cells as text (trailing blank cells dropped)."""
    cells = [cell_text(v) or "" for v in first or ()]
    while cells and not cells[-1]:
        cells.pop()
    if not cells:
        raise SourceError(
            f"{path}: row {spec.header_row} is empty; expected a header with "
            f"{', '.join(spec.columns)}.",
            fix=f"check {spec.where}.header_row and {spec.where}.sheet in the site mapping.",
        )
    return tuple(cells)


def _xlsx_chunks(
    workbook: Any, rows: Iterator[tuple[object, ...]], names: list[str], chunk_rows: int
) -> Iterator[RawChunk]:
    """Stream worksheet rows as text; trailing empty rows are not data rows."""
    width = len(names)
    texts_out: list[list[str | None]] = []
    numbers: list[str] = []
    bad: list[BadRow] = []
    pending: list[int] = []  # empty rows: data rows only if a non-empty row follows
    try:
        for index, values in enumerate(rows, start=1):
            texts = [cell_text(v) for v in values]
            if all(t is None for t in texts):
                pending.append(index)
                continue
            for row in pending:
                numbers.append(str(row))
                texts_out.append([None] * width)
            pending.clear()
            if any(t is not None for t in texts[width:]):
                bad.append(BadRow(index, len(texts), width))
            else:
                numbers.append(str(index))
                texts_out.append([*texts[:width], *([None] * (width - len(texts)))])
            if len(texts_out) >= chunk_rows:
                yield RawChunk(frame_from_rows(names, numbers, texts_out), tuple(bad))
                texts_out, numbers, bad = [], [], []
        if texts_out or bad:
            yield RawChunk(frame_from_rows(names, numbers, texts_out), tuple(bad))
    finally:
        workbook.close()
