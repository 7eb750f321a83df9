"""One file of a site export (CSV or XLSX, as its spec says): header first, rows on demand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cart_etl.errors import SourceError
from cart_etl.extract.readers.cells import ExportFile, RawChunk
from cart_etl.extract.readers.csv import BLOCK_BYTES, open_csv
from cart_etl.extract.readers.xlsx import open_xlsx
from cart_etl.extract.site.spec import FileSpec

__all__ = ["iter_raw_chunks", "open_export_file", "read_header"]


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
        return open_xlsx(path, spec)
    return open_csv(path, spec, block_bytes)


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
