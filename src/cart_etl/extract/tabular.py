"""Extract a site's CSV/XLSX export into canonical raw frames, as the site mapping declares."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal
from zipfile import BadZipFile

import polars as pl

from cart_etl.errors import MappingError, SourceError
from cart_etl.extract.contract import ExtractStream, RawBatch, Rejected, conform
from cart_etl.extract.site_mapping import FileSpec, Output, SiteMapping, normalize_key

__all__ = [
    "BLOCK_BYTES",
    "ROW_COLUMN",
    "RULE_EMPTY_ROW",
    "RULE_MISSING_PATIENT_KEY",
    "RULE_NO_VALUES",
    "RULE_RAGGED_ROW",
    "RULE_UNKNOWN_ITEM",
    "WIDE_ROW_SEPARATOR",
    "BadRow",
    "ExportFile",
    "RawChunk",
    "cell_text",
    "extract_site_export",
    "iter_raw_chunks",
    "map_source_frame",
    "needed_columns",
    "number_rows",
    "open_export_file",
    "read_header",
    "resolve_columns",
    "select_mapped",
    "source_row",
    "unique_names",
]

ROW_COLUMN: Final = "__row__"  # 1-based data row number in reader frames (never a header)
WIDE_ROW_SEPARATOR: Final = ":"  # wide layouts: row = "<data row>:<item>"
BLOCK_BYTES: Final = 8 << 20  # CSV bytes decoded and parsed at a time (memory stays flat)

RULE_UNKNOWN_ITEM: Final = "extract.unknown_item"
RULE_MISSING_PATIENT_KEY: Final = "extract.missing_patient_key"
RULE_EMPTY_ROW: Final = "extract.empty_row"
RULE_NO_VALUES: Final = "extract.no_values"
RULE_RAGGED_ROW: Final = "extract.ragged_row"

_TARGET: Final = "__target__"
_ORDER: Final = ("__n__", "__k__")
# Codecs whose bytes polars reads as they are (it only reads UTF-8): validated, not re-encoded.
_UTF8_CODECS: Final = frozenset({"utf-8", "utf-8-sig", "ascii"})
_BOM: Final = "\ufeff"
_EXCEL_TRUE, _EXCEL_FALSE = "TRUE", "FALSE"


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row the reader could not align with the header (kept out of the frame)."""

    row: int
    fields: int
    width: int


@dataclass(frozen=True, slots=True)
class RawChunk:
    """Rows of one file as text: ROW_COLUMN first, then one column per header cell."""

    frame: pl.DataFrame
    bad_rows: tuple[BadRow, ...] = ()


def source_row(row: str) -> str:
    """The input data row a provenance ``row`` comes from ("12:Temp" -> "12")."""
    return row.split(WIDE_ROW_SEPARATOR, 1)[0]


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


# --- cell text (XLSX and SQL values) -------------------------------------------------------------


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


# --- CSV reader ----------------------------------------------------------------------------------
#
# Polars parses only UTF-8. A file is read in blocks of BLOCK_BYTES cut at the last record
# boundary (a newline outside quotes; the cut is found on the raw bytes, see
# _last_record_end). Each block is decoded strictly with the declared codec, which both
# validates it (a decode error knows its byte offset and line) and, for GB18030 and other
# non-UTF-8 codecs, transcodes it in memory before polars parses it; UTF-8 blocks are
# validated and handed over as they are. Compared with pre-transcoding to a temporary UTF-8
# file this needs no disk space or clean-up, reads the file once, and keeps memory at a few
# blocks whatever the file size. (A stray, unbalanced quote makes the rest of the file one
# block: still parsed correctly, only not in constant memory.)


def _record_end(buf: bytes, quote: bytes | None, start: int = 0) -> int:
    """Index after the first newline at or after ``start`` outside quotes (len(buf) if none)."""
    pos = buf.find(b"\n", start)
    while pos != -1:
        if quote is None or buf.count(quote, start, pos) % 2 == 0:
            return pos + 1
        pos = buf.find(b"\n", pos + 1)
    return len(buf)


def _last_record_end(buf: bytes, quote: bytes | None) -> int:
    """Index after the last newline outside quotes (0 if none): a safe place to cut.

    Newline and quote bytes never occur inside a multi-byte character of an
    ASCII-compatible codec (UTF-8, GB18030, GBK ...), so the cut needs no decoding; the
    quote parity keeps a quoted cell with a line break in one piece.
    """
    pos = buf.rfind(b"\n")
    while pos != -1:
        if quote is None or buf.count(quote, 0, pos) % 2 == 0:
            return pos + 1
        pos = buf.rfind(b"\n", 0, pos)
    return 0


def _csv_blocks(path: Path, quote: bytes | None, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(file offset, bytes) pieces of a CSV file, each ending on a record boundary."""
    with path.open("rb") as fh:
        carry, offset = b"", 0
        while data := fh.read(block_bytes):
            buf = carry + data
            cut = _last_record_end(buf, quote)
            if cut:
                yield offset, buf[:cut]
                offset += cut
            carry = buf[cut:]
        if carry:
            yield offset, carry


def _decode(path: Path, spec: FileSpec, data: bytes, offset: int, lines_before: int) -> str:
    """``data`` decoded with the declared codec; a decode error names byte, line and fix."""
    try:
        return data.decode(spec.encoding)
    except UnicodeDecodeError as exc:
        line = lines_before + data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise SourceError(
            f"{path}: cannot decode byte(s) {bad} at byte offset {offset + exc.start} "
            f"(line {line}) with the declared encoding {spec.encoding!r} ({spec.where}).",
            fix=f"re-export the file as {spec.encoding}, or declare its real encoding under "
            f"{spec.where}.encoding in the site mapping (e.g. utf-8 or gb18030).",
        ) from exc


def _split_header(path: Path, spec: FileSpec, block: bytes) -> tuple[int, int]:
    """Start and end of the header record in the first block (preamble lines skipped)."""
    start = 0
    for _ in range(spec.header_row - 1):
        pos = block.find(b"\n", start)
        if pos == -1:
            raise SourceError(
                f"{path}: has fewer than {spec.header_row} lines; no header row.",
                fix=f"check {spec.where}.header_row in the site mapping.",
            )
        start = pos + 1
    return start, _record_end(block, _quote_bytes(spec), start)


def _csv_quoting(spec: FileSpec) -> Literal[0, 3]:
    """csv-module quoting of a spec: minimal, or none when the mapping says quoting: none."""
    return csv.QUOTE_NONE if spec.quotechar is None else csv.QUOTE_MINIMAL


def _parse_header(path: Path, spec: FileSpec, text: str) -> tuple[str, ...]:
    """Header cells of the decoded header record (BOM and line ending removed)."""
    text = text.removeprefix(_BOM).rstrip("\r\n")
    rows = list(
        csv.reader(
            [text],
            delimiter=spec.delimiter,
            quotechar=spec.quotechar or '"',
            quoting=_csv_quoting(spec),
            strict=False,
        )
    )
    if not rows or not any(rows[0]):
        raise SourceError(
            f"{path}: empty; expected a header row with {', '.join(spec.columns)}.",
            fix="re-export the file with its header.",
        )
    return tuple(rows[0])


def _csv_header_and_start(
    path: Path, spec: FileSpec, block_bytes: int
) -> tuple[tuple[str, ...], int]:
    """The header and the byte offset where data rows start."""
    for offset, block in _csv_blocks(path, _quote_bytes(spec), block_bytes):
        start, end = _split_header(path, spec, block)
        text = _decode(path, spec, block[start:end], offset + start, block.count(b"\n", 0, start))
        return _parse_header(path, spec, text), end
    raise SourceError(
        f"{path}: empty; expected a header row with {', '.join(spec.columns)}.",
        fix="re-export the file with its header.",
    )


def _quote_bytes(spec: FileSpec) -> bytes | None:
    """The quote character as the byte it is in every ASCII-compatible codec."""
    return spec.quotechar.encode("ascii") if spec.quotechar else None


def _parse_block(data: bytes, names: list[str], spec: FileSpec, first_row: int) -> RawChunk:
    """UTF-8 CSV records -> a string frame numbered from ``first_row``.

    Polars parses; a block with a row longer than the header (polars refuses it) is
    re-parsed with the csv module so that only the bad rows are set aside.
    """
    try:
        frame = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            schema=dict.fromkeys(names, pl.String),
            separator=spec.delimiter,
            quote_char=spec.quotechar,
            infer_schema=False,
            raise_if_empty=False,
        )
    except pl.exceptions.ComputeError:
        return _parse_block_python(data.decode("utf-8"), names, spec, first_row)
    return RawChunk(number_rows(frame, first_row))


def _parse_block_python(text: str, names: list[str], spec: FileSpec, first_row: int) -> RawChunk:
    """Slow path for ragged blocks: rows wider than the header become BadRows."""
    width = len(names)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=spec.delimiter,
        quotechar=spec.quotechar or '"',
        quoting=_csv_quoting(spec),
        strict=False,
    )
    rows: list[list[str | None]] = []
    numbers: list[str] = []
    bad: list[BadRow] = []
    for index, record in enumerate(reader):
        row = first_row + index
        if len(record) > width:
            bad.append(BadRow(row, len(record), width))
            continue
        numbers.append(str(row))
        rows.append([*record, *([None] * (width - len(record)))])
    frame = _frame_from_rows(names, numbers, rows)
    return RawChunk(_nulls_for_empty(frame), tuple(bad))


def _frame_from_rows(
    names: list[str], numbers: list[str], rows: Sequence[Sequence[str | None]]
) -> pl.DataFrame:
    """A ROW_COLUMN + ``names`` string frame from row lists."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    data = {ROW_COLUMN: numbers, **{n: list(c) for n, c in zip(names, columns, strict=True)}}
    return pl.DataFrame(data, schema=dict.fromkeys([ROW_COLUMN, *names], pl.String))


def number_rows(frame: pl.DataFrame, first_row: int) -> pl.DataFrame:
    """Prepend ROW_COLUMN (row numbers from ``first_row``, as text); empty cells become null."""
    frame = frame.with_row_index(ROW_COLUMN, offset=first_row)
    return _nulls_for_empty(frame.with_columns(pl.col(ROW_COLUMN).cast(pl.String)))


def _nulls_for_empty(frame: pl.DataFrame) -> pl.DataFrame:
    """A quoted empty cell ("") is missing like an unquoted one (every reader agrees)."""
    return frame.with_columns(
        pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in frame.columns
    )


def _csv_chunks(
    path: Path, spec: FileSpec, chunk_rows: int, block_bytes: int = BLOCK_BYTES
) -> Iterator[RawChunk]:
    """Stream a CSV file: decode block by block, parse with polars, number the rows."""
    header, start = _csv_header_and_start(path, spec, block_bytes)
    names = unique_names(header)
    next_row, lines_before = 1, 0
    passthrough = spec.encoding in _UTF8_CODECS
    for offset, block in _csv_blocks(path, _quote_bytes(spec), block_bytes):
        skip = start if offset == 0 else 0  # the first block starts with the header
        data = block[skip:]
        lines_before += block.count(b"\n", 0, skip)
        text = _decode(path, spec, data, offset + skip, lines_before)
        lines_before += data.count(b"\n")
        if not text:
            continue
        chunk = _parse_block(data if passthrough else text.encode("utf-8"), names, spec, next_row)
        next_row += chunk.frame.height + len(chunk.bad_rows)
        yield from _sliced(chunk, chunk_rows)


def _sliced(chunk: RawChunk, chunk_rows: int) -> Iterator[RawChunk]:
    """A chunk cut into frames of at most ``chunk_rows`` rows (bad rows go with the first)."""
    bad = chunk.bad_rows
    if chunk.frame.height == 0:
        if bad:
            yield chunk
        return
    for piece in chunk.frame.iter_slices(chunk_rows):
        yield RawChunk(piece, bad)
        bad = ()


# --- XLSX reader ---------------------------------------------------------------------------------


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
        """Use :func:`open_export_file`."""
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


def open_export_file(path: Path, spec: FileSpec, *, block_bytes: int = BLOCK_BYTES) -> ExportFile:
    """Open an export file and read its header.

    Args:
        path: The file.
        spec: Its spec in the site mapping (format, codec, dialect, sheet, header row).
        block_bytes: CSV bytes decoded and parsed at a time.

    Raises:
        SourceError: the file is missing, unreadable or not in its declared encoding.
    """
    _check_exists(path, spec)
    if spec.format == "xlsx":
        return _open_xlsx(path, spec)
    header, _ = _csv_header_and_start(path, spec, block_bytes)
    return ExportFile(path, spec, header, lambda n: _csv_chunks(path, spec, n, block_bytes))


def read_header(path: Path, spec: FileSpec) -> tuple[str, ...]:
    """The header cells of an export file, as written (BOM removed)."""
    file = open_export_file(path, spec)
    file.close()
    return file.header


def iter_raw_chunks(
    path: Path, spec: FileSpec, chunk_rows: int, *, block_bytes: int = BLOCK_BYTES
) -> Iterator[RawChunk]:
    """Every data row of an export file as text, ROW_COLUMN + one column per header cell."""
    return open_export_file(path, spec, block_bytes=block_bytes).chunks(chunk_rows)


def _open_xlsx(path: Path, spec: FileSpec) -> ExportFile:
    """Open the declared sheet (openpyxl read-only) and read its header row."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        raise SourceError(
            f"{path}: not a readable .xlsx workbook ({exc}).",
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


def _sheet(workbook: Any, path: Path, spec: FileSpec) -> Any:
    """The declared worksheet (default: the first one)."""
    if spec.sheet is None:
        return workbook.worksheets[0]
    if spec.sheet not in workbook.sheetnames:
        raise SourceError(
            f"{path}: no sheet {spec.sheet!r}; sheets found: {', '.join(workbook.sheetnames)}.",
            fix=f"set {spec.where}.sheet to the sheet holding the data.",
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
                yield RawChunk(_frame_from_rows(names, numbers, texts_out), tuple(bad))
                texts_out, numbers, bad = [], [], []
        if texts_out or bad:
            yield RawChunk(_frame_from_rows(names, numbers, texts_out), tuple(bad))
    finally:
        workbook.close()


def _check_exists(path: Path, spec: FileSpec) -> None:
    """A missing file names what the mapping expected there."""
    if not path.is_file():
        grain = spec.options.get("grain")
        what = f"{spec.format} file" + (f" ({grain})" if grain else "")
        raise SourceError(
            f"{path}: missing; the site mapping expects {spec.where} there: a {what} with "
            f"columns {', '.join(spec.columns)}.",
            fix="add the file to the export directory (or point at the right directory).",
        )


# --- columns -------------------------------------------------------------------------------------


def needed_columns(spec: FileSpec) -> list[str]:
    """Declared columns the extraction reads (private and unreferenced null-field ones are not)."""
    referenced = {c.unit_column for c in spec.columns.values()}
    referenced |= {spec.patient_key, spec.item_column, spec.value_column, spec.unit_column}
    return [
        name
        for name, col in spec.columns.items()
        if col.role != "private"
        and (col.role != "ignored" or col.item is not None or name in referenced)
    ]


def resolve_columns(
    header: Sequence[str], spec: FileSpec, label: str, mapping: SiteMapping
) -> dict[str, str]:
    """Mapping column -> frame column (exact header match, else after NFKC + strip).

    Raises:
        MappingError: a needed column is not in the header (names file, column, header).
    """
    names = unique_names(header)
    by_key: dict[str, str] = {}
    for name in names:
        by_key.setdefault(normalize_key(name), name)
    resolved: dict[str, str] = {}
    missing: list[str] = []
    for column in needed_columns(spec):
        found = column if column in names else by_key.get(normalize_key(column))
        if found is None:
            missing.append(column)
        else:
            resolved[column] = found
    if missing:
        raise MappingError(
            f"{label}: column(s) {', '.join(repr(m) for m in missing)} declared under "
            f"{spec.where}.columns in {mapping.display_path} are not in the header. "
            f"Columns found: {', '.join(repr(h) for h in header)}.",
            fix="rename the columns in the site mapping to the export's header, or re-export "
            "the file with the agreed columns.",
        )
    return resolved


def select_mapped(frame: pl.DataFrame, resolved: Mapping[str, str]) -> pl.DataFrame:
    """ROW_COLUMN plus the needed columns, renamed to the mapping's column names."""
    return frame.select(
        pl.col(ROW_COLUMN), *(pl.col(found).alias(name) for name, found in resolved.items())
    )


# --- mapper --------------------------------------------------------------------------------------


def map_source_frame(
    frame: pl.DataFrame, file_spec: FileSpec, mapping: SiteMapping, source: str, file: str
) -> list[RawBatch | Rejected]:
    """Map one chunk of a file/table onto canonical entity frames (no cleaning).

    Args:
        frame: ROW_COLUMN + the spec's needed columns (mapping names), all ``pl.String``.
        file_spec: The spec of the file or table the chunk comes from.
        mapping: The site mapping (named in messages).
        source: ``source`` provenance value (site name, or ``sql:<site>``).
        file: ``file`` provenance value (path in the export, or table name).

    Returns:
        One RawBatch per entity with rows, then a Rejected per row that cannot be placed:
        every mapped cell empty, no patient key, an unknown long-format item (routing looks
        the item up after NFKC + strip; the emitted code keeps the cell as written), or a
        wide row without any item value. ``RawBatch.input_rows`` is the number of input
        rows behind the batch's records (its height, except in wide layouts where one row
        yields a record per item).
    """
    ctx = _MapCtx(file_spec, mapping, source, file)
    frame, rejected = _drop_unplaceable(frame, ctx)
    mappers = {"flat": _map_flat, "long": _map_long, "wide": _map_wide}
    batches, more = mappers[file_spec.layout](frame, ctx)
    return [*batches, *rejected, *more]


@dataclass(frozen=True, slots=True)
class _MapCtx:
    """What every mapping step needs."""

    spec: FileSpec
    mapping: SiteMapping
    source: str
    file: str

    def reject(self, row: str, field: str, value: str, rule_id: str, message: str) -> Rejected:
        """A Rejected of this file."""
        return Rejected(self.source, self.file, row, field, value, rule_id, message)


def _drop_unplaceable(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[pl.DataFrame, list[Rejected]]:
    """Set aside blank rows and rows without a patient key (they belong to nobody)."""
    cells = [c for c in frame.columns if c != ROW_COLUMN]
    key = ctx.spec.patient_key
    blank = pl.all_horizontal(pl.col(c).is_null() for c in cells)
    no_key = pl.col(key).is_null()
    bad = frame.filter(blank | no_key)
    if bad.height == 0:
        return frame, []
    rejected = []
    for row, is_blank in bad.select(ROW_COLUMN, blank.alias("b")).iter_rows():
        if is_blank:
            rejected.append(
                ctx.reject(
                    row,
                    "*",
                    "",
                    RULE_EMPTY_ROW,
                    f"{ctx.file} row {row}: every mapped column is empty; nothing to extract. "
                    "Fix: remove blank rows from the export.",
                )
            )
        else:
            rejected.append(
                ctx.reject(
                    row,
                    key,
                    "",
                    RULE_MISSING_PATIENT_KEY,
                    f"{ctx.file} row {row}: the patient key column {key!r} is empty, so the "
                    "row belongs to no patient. Fix: fill in the MRN in the export.",
                )
            )
    return frame.filter(~(blank | no_key)), rejected


def _assign_exprs(output: Output) -> list[pl.Expr]:
    """Polars expressions filling the output's canonical columns."""
    exprs = []
    for a in output.assigns:
        if a.source is not None:
            expr = pl.col(a.source)
        elif a.when is not None:
            expr = pl.when(pl.col(a.when).is_not_null()).then(pl.lit(a.literal, pl.String))
        else:
            expr = pl.lit(a.literal, pl.String)
        exprs.append(expr.alias(a.column))
    return exprs


def _records(part: pl.DataFrame, output: Output, ctx: _MapCtx, row: pl.Expr) -> pl.DataFrame:
    """Provenance + the output's columns for the rows of ``part``."""
    return part.select(
        pl.lit(ctx.source, pl.String).alias("source"),
        pl.lit(ctx.file, pl.String).alias("file"),
        row.alias("row"),
        pl.col(ctx.spec.patient_key).alias("patient_key"),
        *_assign_exprs(output),
    )


def _map_flat(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[list[RawBatch], list[Rejected]]:
    """Every row becomes one record of each entity the file maps to."""
    if frame.height == 0:
        return [], []
    batches = [
        RawBatch(
            o.entity, conform(o.entity, _records(frame, o, ctx, pl.col(ROW_COLUMN))), frame.height
        )
        for o in ctx.spec.outputs
    ]
    return batches, []


def _map_long(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[list[RawBatch], list[Rejected]]:
    """Route each row to the entity of its item (looked up after NFKC + strip)."""
    spec = ctx.spec
    assert spec.item_column is not None
    items = frame.get_column(spec.item_column)
    # Few distinct item texts: normalise those in Python, route every row in polars.
    route = {
        text: item.target
        for text in items.drop_nulls().unique().to_list()
        if (item := spec.find_item(text)) is not None
    }
    routed = frame.with_columns(
        items.replace_strict(route, default=None, return_dtype=pl.String).alias(_TARGET)
    )
    batches = []
    for output in spec.outputs:
        part = routed.filter(pl.col(_TARGET) == output.entity)
        if part.height:
            records = _records(part, output, ctx, pl.col(ROW_COLUMN))
            batches.append(RawBatch(output.entity, conform(output.entity, records), part.height))
    unknown = routed.filter(pl.col(_TARGET).is_null()).select(ROW_COLUMN, spec.item_column)
    return batches, [_unknown_item(ctx, row, value) for row, value in unknown.iter_rows()]


def _unknown_item(ctx: _MapCtx, row: str, value: str | None) -> Rejected:
    """Rejected for a long-format row whose item is not in the mapping."""
    spec = ctx.spec
    column = spec.item_column or ""
    text = value or ""
    key = normalize_key(text)
    where = f"{spec.where}.{spec.item_table}"
    problem = (
        f"{column!r} is empty"
        if not key
        else f"{column!r} = {text!r} (looked up as {key!r} after NFKC + strip) is not an item "
        f"of the site mapping"
    )
    return ctx.reject(
        row,
        column,
        text,
        RULE_UNKNOWN_ITEM,
        f"{ctx.file} row {row}: {problem}, so the row cannot be routed to an entity. "
        f"Fix: add {key or '<item>'!r} with its target entity under {where} in "
        f"{ctx.mapping.display_path} (known: {', '.join(spec.items)}), or correct the export.",
    )


def _map_wide(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[list[RawBatch], list[Rejected]]:
    """One record per item with a value in the row; rows with no item value are rejected."""
    spec = ctx.spec
    present = {
        o.item: pl.any_horizontal(pl.col(c).is_not_null() for c in o.present) for o in spec.outputs
    }
    batches = []
    for entity in spec.entities:
        outputs = [o for o in spec.outputs if o.entity == entity]
        parts = []
        for k, output in enumerate(outputs):
            part = frame.filter(present[output.item])
            row = pl.concat_str(pl.col(ROW_COLUMN), pl.lit(f"{WIDE_ROW_SEPARATOR}{output.item}"))
            records = conform(entity, _records(part, output, ctx, row))
            number = part.get_column(ROW_COLUMN).cast(pl.Int64).alias(_ORDER[0])
            parts.append(records.with_columns(number, pl.lit(k).alias(_ORDER[1])))
        records = pl.concat(parts).sort(list(_ORDER)).drop(_ORDER)
        if records.height:
            rows_in = frame.filter(pl.any_horizontal(present[o.item] for o in outputs)).height
            batches.append(RawBatch(entity, records, rows_in))
    empty = frame.filter(~pl.any_horizontal(present.values())).get_column(ROW_COLUMN)
    columns = ", ".join(c for o in spec.outputs for c in o.present)
    rejected = [
        ctx.reject(
            row,
            "*",
            "",
            RULE_NO_VALUES,
            f"{ctx.file} row {row}: none of the item columns ({columns}) has a value; "
            "nothing to extract. Fix: remove the row from the export or fill in its values.",
        )
        for row in empty.to_list()
    ]
    return batches, rejected


def _bad_row(ctx: _MapCtx, bad: BadRow) -> Rejected:
    """Rejected for a row with more cells than the header (cells are not echoed: privacy)."""
    delimiter = ctx.spec.delimiter
    return ctx.reject(
        str(bad.row),
        "*",
        f"{bad.fields} fields",
        RULE_RAGGED_ROW,
        f"{ctx.file} row {bad.row}: {bad.fields} cells but the header has {bad.width}; the "
        f"cells cannot be aligned with the columns. Fix: quote cells containing the "
        f"delimiter {delimiter!r} in the export, or remove the extra cells.",
    )


# --- site export ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opened:
    """A file that passed the preflight: present, readable header, every needed column."""

    file: ExportFile
    resolved: Mapping[str, str]


def extract_site_export(
    export_dir: Path, mapping: SiteMapping, *, chunk_rows: int = 100_000
) -> ExtractStream:
    """Stream every file of a site export as canonical raw frames.

    Every file is checked before the first row is read (present, decodable header, every
    mapped column found), so a broken delivery fails at once, not after the flowsheet.

    Args:
        export_dir: Folder holding the files named under ``files:`` of the mapping.
        mapping: A ``files`` site mapping.
        chunk_rows: Maximum rows per RawBatch (memory stays flat for any file size).

    Raises:
        SourceError: a file is missing, unreadable, or not in its declared encoding.
        MappingError: a header lacks a mapped column, or the mapping is a ``tables`` one.
    """
    if mapping.kind != "files":
        raise MappingError(
            f"{mapping.display_path} describes database tables, not files.",
            fix="use cart_etl.extract.sql.extract_sql for this site.",
        )
    if not export_dir.is_dir():
        raise SourceError(
            f"{export_dir}: the site export directory does not exist.",
            fix=f"point at the folder holding {', '.join(mapping.files)}.",
        )
    opened: list[_Opened] = []
    try:
        for spec in mapping.files.values():
            opened.append(_preflight(export_dir, spec, mapping))
    except BaseException:
        for item in opened:
            item.file.close()
        raise
    return _stream(opened, mapping, chunk_rows)


def _preflight(export_dir: Path, spec: FileSpec, mapping: SiteMapping) -> _Opened:
    """Open one file and check its header against the mapping."""
    file = open_export_file(export_dir / spec.name, spec)
    try:
        return _Opened(file, resolve_columns(file.header, spec, str(file.path), mapping))
    except BaseException:
        file.close()
        raise


def _stream(opened: list[_Opened], mapping: SiteMapping, chunk_rows: int) -> ExtractStream:
    """Read and map every file in mapping order (files are closed even if abandoned)."""
    try:
        for item in opened:
            spec = item.file.spec
            ctx = _MapCtx(spec, mapping, mapping.site, spec.name)
            for chunk in item.file.chunks(chunk_rows):
                frame = select_mapped(chunk.frame, item.resolved)
                yield from map_source_frame(frame, spec, mapping, mapping.site, spec.name)
                yield from (_bad_row(ctx, bad) for bad in chunk.bad_rows)
    finally:
        for item in opened:
            item.file.close()
