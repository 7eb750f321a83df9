"""Extract a site's CSV/XLSX export into canonical raw frames, as the site mapping declares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cart_etl.contract import ExtractStream
from cart_etl.errors import MappingError, SourceError
from cart_etl.extract.readers.cells import ExportFile
from cart_etl.extract.readers.files import open_export_file
from cart_etl.extract.site.mapper import (
    duplicate_columns,
    map_source_frame,
    ragged_rows,
    resolve_columns,
    select_mapped,
    split_duplicates,
)
from cart_etl.extract.site.spec import FileSpec, SiteMapping

__all__ = ["extract_site_export"]


@dataclass(frozen=True, slots=True)
class _Opened:
    """A file that passed the preflight: present, readable header, every needed column."""

    file: ExportFile
    resolved: Mapping[str, str]
    duplicates: Mapping[str, list[str]]


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
            fix="use cart_etl.extract.readers.sql.extract_sql for this site.",
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
        resolved = resolve_columns(file.header, spec, str(file.path), mapping)
        return _Opened(file, resolved, duplicate_columns(file.header, resolved))
    except BaseException:
        file.close()
        raise


def _stream(opened: list[_Opened], mapping: SiteMapping, chunk_rows: int) -> ExtractStream:
    """Read and map every file in mapping order (files are closed even if abandoned)."""
    try:
        for item in opened:
            spec = item.file.spec
            for chunk in item.file.chunks(chunk_rows):
                frame, differing = split_duplicates(
                    chunk.frame, item.resolved, item.duplicates, spec, mapping, spec.name
                )
                frame = select_mapped(frame, item.resolved)
                yield from map_source_frame(frame, spec, mapping, mapping.site, spec.name)
                yield from differing
                yield from ragged_rows(spec, mapping, mapping.site, spec.name, chunk.bad_rows)
    finally:
        for item in opened:
            item.file.close()
