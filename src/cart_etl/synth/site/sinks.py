"""The file sinks of the site export: buffered CSV files and the deterministic MAR workbook.

``CsvSink`` writes Windows line endings in each file's codec (BOM included where the layout
says so), joining rows by hand and quoting exactly as ``csv.writer`` would; ``XlsxSink``
streams the MAR sheet with openpyxl's write-only mode and saves it with fixed metadata and
zip timestamps, so that two runs are byte-identical.
"""

from __future__ import annotations

import csv
import io
import shutil
from datetime import datetime
from pathlib import Path
from typing import Final
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from openpyxl import Workbook
from openpyxl.writer.excel import ExcelWriter

from cart_etl.synth.site.layouts import FileLayout, Row
from cart_etl.synth.vocab import MAR_SHEET

# The mar.xlsx package is rewritten with these so that two runs are byte-identical.
_XLSX_TIMESTAMP: Final = datetime(2024, 1, 1)  # noqa: DTZ001 - OOXML core properties are naive UTC
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)
_EOL: Final = "\r\n"  # Windows HIS exports


class CsvSink:
    """One CSV file, header already written; counts data rows.

    Rows are joined by hand and written once per patient: calling ``csv.writer`` per row
    (one encode and one write each) dominated the run time. Rows that need quoting go
    through ``csv.writer`` so the bytes are exactly what it would have produced.
    """

    def __init__(self, path: Path, layout: FileLayout) -> None:
        """Open ``path`` in the layout's codec and write the header."""
        self._fh = path.open("w", encoding=layout.encoding, newline="", buffering=1 << 20)
        self._buffer = io.StringIO()
        self._quoting = csv.writer(self._buffer, lineterminator=_EOL)
        self._commas = len(layout.columns) - 1
        self._fh.write(self._quoted(list(layout.columns)))
        self.count = 0

    def write(self, rows: list[Row]) -> None:
        """Append rows (one encode and one write per call)."""
        lines = []
        for row in rows:
            line = ",".join(row)  # type: ignore[arg-type]  # CSV rows hold str only
            if line.count(",") != self._commas or '"' in line or "\n" in line or "\r" in line:
                lines.append(self._quoted(row))
            else:
                lines.append(line + _EOL)
        self._fh.write("".join(lines))
        self.count += len(rows)

    def _quoted(self, row: Row) -> str:
        """One row as ``csv.writer`` (QUOTE_MINIMAL) writes it, line ending included."""
        self._buffer.seek(0)
        self._buffer.truncate()
        self._quoting.writerow(row)
        return self._buffer.getvalue()

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()


class XlsxSink:
    """The MAR workbook, streamed with openpyxl's write-only mode and saved deterministically."""

    def __init__(self, path: Path, layout: FileLayout) -> None:
        """Start a write-only workbook whose only sheet is the MAR."""
        self._path = path
        self._wb = Workbook(write_only=True)
        self._ws = self._wb.create_sheet(MAR_SHEET)
        self._ws.append(list(layout.columns))
        self.count = 0

    def write(self, rows: list[Row]) -> None:
        """Append rows to the streamed worksheet."""
        for row in rows:
            self._ws.append(row)
        self.count += len(rows)

    def close(self) -> None:
        """Save the workbook with fixed metadata and zip timestamps."""
        props = self._wb.properties
        props.creator = "HIS"
        props.created = _XLSX_TIMESTAMP
        props.modified = _XLSX_TIMESTAMP
        tmp = self._path.with_name(self._path.name + ".tmp")
        # Workbook.save() would stamp `modified` with the wall clock; ExcelWriter does not.
        with ZipFile(tmp, "w", ZIP_DEFLATED, allowZip64=True) as archive:
            ExcelWriter(self._wb, archive).save()
        _rewrite_zip(tmp, self._path)
        tmp.unlink()


def _rewrite_zip(src: Path, dst: Path) -> None:
    """Copy a zip with fixed member timestamps and attributes (zipfile stamps 'now')."""
    with ZipFile(src) as zin, ZipFile(dst, "w", ZIP_DEFLATED, allowZip64=True) as zout:
        for info in zin.infolist():
            member = ZipInfo(info.filename, date_time=_ZIP_TIME)
            member.compress_type = ZIP_DEFLATED
            member.create_system = 0
            member.external_attr = 0
            with zin.open(info) as reader, zout.open(member, "w") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
