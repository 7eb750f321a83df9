"""One file of a site export (CSV or XLSX, as its spec says): header first, rows on demand."""

from __future__ import annotations

import os
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
    """A file that cannot be opened says why: missing, a folder, a link loop, unreadable."""
    if path.is_file():
        _check_readable(path, spec)
        return
    grain = spec.options.get("grain")
    what = f"{spec.format} file" + (f" ({grain})" if grain else "")
    expected = f"the site mapping expects {spec.where} there: a {what}"
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (RuntimeError, OSError):  # a loop raises RuntimeError or ELOOP by Python version
            raise SourceError(
                f"{path}: is a symbolic link that loops back on itself (or a chain of links "
                f"that never reaches a file); {expected}.",
                fix=f"replace the link with the file itself, or point it at the real {spec.name}.",
            ) from None
        if not target.is_file():
            raise SourceError(
                f"{path}: is a symbolic link to {target}, which is not a file; {expected}.",
                fix=f"point the link at the real {spec.name}, or copy the file in its place.",
            )
    if path.is_dir():
        raise SourceError(
            f"{path}: is a folder, not a file; {expected}.",
            fix=f"put the file itself at {path} (the export may have been unpacked one level "
            "too deep).",
        )
    if path.exists():
        raise SourceError(
            f"{path}: is not a regular file (a device, socket or pipe); {expected}.",
            fix="copy the exported file into the export directory.",
        )
    near = _case_variants(path)
    if near:
        found = ", ".join(repr(n) for n in near)
        raise SourceError(
            f"{path}: missing; found {found}, which differs only in upper/lower case "
            f"(file names are case-sensitive here); {expected}.",
            fix=f"rename the file to {path.name!r} (or the mapping's file name under "
            f"{spec.where} to the export's).",
        )
    raise SourceError(
        f"{path}: missing; {expected} with columns {', '.join(spec.columns)}.",
        fix="add the file to the export directory (or point at the right directory).",
    )


def _case_variants(path: Path) -> list[str]:
    """Names in the file's folder equal to its name but for upper/lower case."""
    try:
        names = [p.name for p in path.parent.iterdir()]
    except OSError:
        return []
    wanted = path.name.casefold()
    return sorted(n for n in names if n.casefold() == wanted and n != path.name)


def _check_readable(path: Path, spec: FileSpec) -> None:
    """An unreadable file (permissions) names the user and the fix, not an OSError."""
    try:
        with path.open("rb"):
            pass
    except PermissionError:
        raise SourceError(
            f"{path}: cannot be read: permission denied for the user running cart-etl "
            f"(uid {os.geteuid()}); the site mapping expects {spec.where} there.",
            fix=f"make the file readable (e.g. `chmod a+r {path}`) or run as a user who may "
            "read the export.",
        ) from None
    except OSError as exc:
        raise SourceError(
            f"{path}: cannot be opened ({exc.strerror or exc}).",
            fix="check the file and the disk it is on, then copy the export again.",
        ) from None
