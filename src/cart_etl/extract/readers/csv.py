"""CSV reader: a file streamed in blocks, decoded strictly with the declared codec.

Polars parses only UTF-8. A file is read in blocks of BLOCK_BYTES cut at the last record
boundary (a newline outside quotes; the cut is found on the raw bytes, see
_last_record_end). Each block is decoded strictly with the declared codec, which both
validates it (a decode error knows its byte offset and line) and, for GB18030 and other
non-UTF-8 codecs, transcodes it in memory before polars parses it; UTF-8 blocks are
validated and handed over as they are. Compared with pre-transcoding to a temporary UTF-8
file this needs no disk space or clean-up, reads the file once, and keeps memory at a few
blocks whatever the file size. (A stray, unbalanced quote makes the rest of the file one
block: still parsed correctly, only not in constant memory.)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

import polars as pl

from cart_etl.errors import SourceError
from cart_etl.extract.readers.cells import (
    BadRow,
    ExportFile,
    RawChunk,
    frame_from_rows,
    nulls_for_empty,
    number_rows,
    unique_names,
)
from cart_etl.extract.site.spec import FileSpec

__all__ = ["BLOCK_BYTES", "open_csv"]

BLOCK_BYTES: Final = 8 << 20  # CSV bytes decoded and parsed at a time (memory stays flat)

# Codecs whose bytes polars reads as they are (it only reads UTF-8): validated, not re-encoded.
_UTF8_CODECS: Final = frozenset({"utf-8", "utf-8-sig", "ascii"})
_BOM: Final = "\ufeff"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
_LINE_ENDS: Final = ("\n", "\r")
# The csv module refuses cells over 128 KiB by default; a long cell is the mapper's to judge.
_FIELD_LIMIT: Final = 1 << 30


def open_csv(path: Path, spec: FileSpec, block_bytes: int = BLOCK_BYTES) -> ExportFile:
    """Read the header of a CSV file; its rows are streamed by ``chunks``."""
    header, _ = _csv_header_and_start(path, spec, block_bytes)
    return ExportFile(path, spec, header, lambda n: _csv_chunks(path, spec, n, block_bytes))


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
        row = line - spec.header_row
        where = f"row {row}" if row > 0 else "header"
        utf16 = offset == 0 and data[:2] in _UTF16_BOMS
        hint = " The file starts with a UTF-16 byte-order mark: it is UTF-16." if utf16 else ""
        raise SourceError(
            f"{path}: {where}: cannot decode byte(s) {bad} at byte offset {offset + exc.start} "
            f"(line {line}) with the declared encoding {spec.encoding!r} ({spec.where}).{hint}",
            fix=f"re-export the file as {spec.encoding}, or declare its real encoding under "
            f"{spec.where}.encoding in the site mapping (e.g. utf-8 or gb18030; UTF-16 is not "
            "supported: save it as UTF-8).",
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
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
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
    _check_raw_start(path, spec, block_bytes)
    for offset, block in _csv_blocks(path, _quote_bytes(spec), block_bytes):
        start, end = _split_header(path, spec, block)
        text = _decode(path, spec, block[start:end], offset + start, block.count(b"\n", 0, start))
        return _parse_header(path, spec, text), end
    raise SourceError(
        f"{path}: empty; expected a header row with {', '.join(spec.columns)}.",
        fix="re-export the file with its header.",
    )


def _check_raw_start(path: Path, spec: FileSpec, block_bytes: int) -> None:
    """Refuse what would be misread as one endless line: CR-only line ends, UTF-16 text."""
    with path.open("rb") as fh:
        head = fh.read(block_bytes)
    if head[:2] in _UTF16_BOMS or head[:200].count(b"\x00") > 10:
        raise SourceError(
            f"{path}: header: the file is UTF-16 (byte-order mark or NUL bytes between "
            f"the characters), not the declared encoding {spec.encoding!r} ({spec.where}).",
            fix=f"re-export the file as {spec.encoding} (UTF-16 is not supported: save it as "
            "UTF-8 or GB18030 and declare that encoding).",
        )
    if b"\r" in head and b"\n" not in head:
        raise SourceError(
            f"{path}: the lines end with a carriage return only (CR, old Mac style), so the "
            "whole file would be read as one line.",
            fix="re-export the file with LF or CRLF line endings (e.g. save it as 'CSV UTF-8' "
            "or convert it with `mac2unix`).",
        )


def _quote_bytes(spec: FileSpec) -> bytes | None:
    """The quote character as the byte it is in every ASCII-compatible codec."""
    return spec.quotechar.encode("ascii") if spec.quotechar else None


def _parse_block(data: bytes, names: list[str], spec: FileSpec, first_row: int) -> RawChunk:
    """UTF-8 CSV records -> a string frame numbered from ``first_row``.

    Polars parses; a block it refuses (a row longer than the header, a short first row ...)
    is re-parsed with the csv module so that only the bad rows are set aside.
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
    except pl.exceptions.PolarsError:
        return _parse_block_python(data.decode("utf-8"), names, spec, first_row)
    return RawChunk(number_rows(frame, first_row))


def _read_records(text: str, spec: FileSpec) -> list[tuple[list[str], int]]:
    """(cells, 0-based physical line where the record starts) of every record in ``text``."""
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=spec.delimiter,
        quotechar=spec.quotechar or '"',
        quoting=_csv_quoting(spec),
        strict=False,
    )
    records: list[tuple[list[str], int]] = []
    line = 0
    for record in reader:
        records.append((record, line))
        line = reader.line_num
    return records


def _line_offset(text: str, line: int) -> int:
    """Character offset where 0-based physical ``line`` of ``text`` starts (as csv counts)."""
    offset = 0
    for index, piece in enumerate(io.StringIO(text, newline="")):
        if index == line:
            return offset
        offset += len(piece)
    return len(text)


def _parse_block_python(
    text: str, names: list[str], spec: FileSpec, first_row: int, *, open_end: bool = False
) -> RawChunk:
    """Slow path for ragged blocks: rows wider than the header become BadRows.

    ``open_end``: the block is the end of a file that does not end on a record boundary (no
    final line break, or inside a quoted cell). Its last record is then set aside as
    truncated when it is short or stops inside a quote on its own line; a quote that opens
    in a row and swallows the lines after it sets that row aside and reads those lines again.
    """
    width = len(names)
    rows: list[list[str | None]] = []
    numbers: list[str] = []
    bad: list[BadRow] = []
    row = first_row
    quote = spec.quotechar
    while True:
        records = _read_records(text, spec)
        tail = records.pop() if open_end and records else None
        for record, _ in records:
            if len(record) > width:
                bad.append(BadRow(row, len(record), width))
            else:
                numbers.append(str(row))
                rows.append([*record, *([None] * (width - len(record)))])
            row += 1
        if tail is None:
            break
        record, start = tail
        begin = _line_offset(text, start)
        rest = text[_line_offset(text, start + 1) :]
        in_quote = quote is not None and text.count(quote, begin) % 2 == 1
        if in_quote and rest:
            bad.append(BadRow(row, len(record), width, "unbalanced_quote"))
            row += 1
            text = rest
            open_end = not text.endswith(_LINE_ENDS) or text.count(quote or '"') % 2 == 1
            continue
        if in_quote or (len(record) < width and not text.endswith(_LINE_ENDS)):
            bad.append(BadRow(row, len(record), width, "truncated"))
        elif len(record) > width:
            bad.append(BadRow(row, len(record), width))
        else:
            numbers.append(str(row))
            rows.append([*record, *([None] * (width - len(record)))])
        break
    frame = frame_from_rows(names, numbers, rows)
    return RawChunk(nulls_for_empty(frame), tuple(bad))


def _open_end(data: bytes, quote: bytes | None) -> bool:
    """The bytes do not end on a record boundary (no final line break, or inside quotes)."""
    return not data.endswith((b"\n", b"\r")) or (quote is not None and data.count(quote) % 2 == 1)


def _csv_chunks(
    path: Path, spec: FileSpec, chunk_rows: int, block_bytes: int = BLOCK_BYTES
) -> Iterator[RawChunk]:
    """Stream a CSV file: decode block by block, parse with polars, number the rows."""
    header, start = _csv_header_and_start(path, spec, block_bytes)
    names = unique_names(header)
    next_row, lines_before = 1, 0
    passthrough = spec.encoding in _UTF8_CODECS
    quote = _quote_bytes(spec)
    for offset, block in _csv_blocks(path, quote, block_bytes):
        skip = start if offset == 0 else 0  # the first block starts with the header
        data = block[skip:]
        lines_before += block.count(b"\n", 0, skip)
        text = _decode(path, spec, data, offset + skip, lines_before)
        lines_before += data.count(b"\n")
        if not text:
            continue
        if _open_end(data, quote):  # only the last block of a file can be open-ended
            chunk = _parse_block_python(text, names, spec, next_row, open_end=True)
        else:
            utf8 = data if passthrough else text.encode("utf-8")
            chunk = _parse_block(utf8, names, spec, next_row)
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
