"""Writes the synthetic 'tianjin_ref' hospital export (HIS, nursing flowsheet, LIS, MAR, EMR).

``SiteExportWriter`` streams ClinicalRecords into the eleven files of ``LAYOUTS``: each
call formats one patient's rows with the row builders of this package (register,
flowsheet, labs, mar, tables), lets the defect injector of
:mod:`cart_etl.synth.defects.site` alter a few cells when defects are on, and hands the
rows to the CSV and XLSX sinks. The mapping that reads it back is
``mappings/sites/tianjin_ref.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from cart_etl.synth.defects.catalogue import DefectRecord
from cart_etl.synth.defects.site import SiteDefectInjector
from cart_etl.synth.model import ClinicalRecord
from cart_etl.synth.site.flowsheet import flowsheet_rows
from cart_etl.synth.site.labs import LabRows
from cart_etl.synth.site.layouts import (
    CART_INFUSION,
    CRS_RECORDED,
    FOLLOWUP,
    ICANS,
    INFECTIONS,
    LABS,
    LAYOUTS,
    MAR,
    PATIENTS,
    RESPONSE,
    VASOPRESSORS,
    VITALS,
    Event,
    FileLayout,
    Row,
)
from cart_etl.synth.site.mar import mar_rows
from cart_etl.synth.site.register import infusion_rows, register_row
from cart_etl.synth.site.sinks import CsvSink, XlsxSink
from cart_etl.synth.site.tables import (
    crs_rows,
    followup_rows,
    icans_rows,
    infection_rows,
    response_rows,
    vasopressor_rows,
)


class SiteExportWriter:
    """Streams ClinicalRecords into the tianjin_ref HIS/LIS/EMR export, optionally defective.

    Memory stays flat: each call to ``write`` formats one patient's rows and hands them to
    buffered CSV writers or to openpyxl's write-only worksheet. With ``defects=True`` a
    seeded DefectPlanner alters a few cells (or inserts duplicate rows) before writing; the
    clean export (``defects=False``) is identical except at exactly those cells and rows.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        defects: bool,
        seed: int,
        defect_sink: Callable[[DefectRecord], None] | None = None,
    ) -> None:
        """Create the export directory and open every file (headers are written at once).

        Args:
            out_dir: ``<synth_out>/site_export``; DefectRecord paths start with its name.
            defects: Inject the defects of ``DEFECT_CATALOGUE``.
            seed: Cohort seed; only the defect planner draws from it.
            defect_sink: Receives each DefectRecord as it is injected (then ``close`` returns
                none), so registries of millions of rows keep memory flat.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        self._sinks: dict[str, CsvSink | XlsxSink] = {
            name: XlsxSink(out_dir / name, layout)
            if layout is MAR
            else CsvSink(out_dir / name, layout)
            for name, layout in LAYOUTS.items()
        }
        self._defects: list[DefectRecord] = []
        sink = defect_sink if defect_sink is not None else self._defects.append
        self._injector = SiteDefectInjector(seed, out_dir.name, sink) if defects else None
        self._lab_rows = LabRows()
        self._closed = False

    def __enter__(self) -> Self:
        """Return the writer itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the files (also on error, so partial output stays readable)."""
        self.close()

    @property
    def rows_written(self) -> dict[str, int]:
        """Data rows written so far per file name (inserted duplicates included)."""
        return {name: sink.count for name, sink in self._sinks.items()}

    def write(self, record: ClinicalRecord) -> None:
        """Append one patient to every file it belongs in."""
        if self._closed:
            raise RuntimeError("SiteExportWriter is closed")
        if self._injector is not None:
            self._injector.start_patient(record)
        demo = record.demographics
        mrn = demo.mrn
        self._emit(PATIENTS, [register_row(demo)], None, record)
        if record.infusion is not None:
            self._emit(CART_INFUSION, infusion_rows(mrn, record), None, record)
            self._emit(VITALS, *flowsheet_rows(mrn, record), record)
            self._emit(LABS, *self._lab_rows(mrn, record), record)
            self._emit(MAR, *mar_rows(mrn, record), record)
            self._emit(VASOPRESSORS, *vasopressor_rows(mrn, record), record)
            self._emit(RESPONSE, response_rows(mrn, record), None, record)
        self._emit(FOLLOWUP, followup_rows(mrn, record), None, record)
        if record.infusion is not None:
            self._emit(INFECTIONS, infection_rows(mrn, record), None, record)
            self._emit(ICANS, icans_rows(mrn, record), None, record)
            self._emit(CRS_RECORDED, crs_rows(mrn, record), None, record)

    def close(self) -> list[DefectRecord]:
        """Flush and close every file; return the defects injected (empty when clean)."""
        if not self._closed:
            self._closed = True
            for sink in self._sinks.values():
                sink.close()
        return list(self._defects)

    def _emit(
        self,
        layout: FileLayout,
        rows: list[Row],
        events: list[Event] | None,
        record: ClinicalRecord,
    ) -> None:
        """Inject this patient's defects into ``rows`` (if enabled) and write them."""
        if not rows:
            return
        sink = self._sinks[layout.path]
        if self._injector is not None:
            self._injector.inject(layout, rows, events, record, base=sink.count)
        sink.write(rows)
