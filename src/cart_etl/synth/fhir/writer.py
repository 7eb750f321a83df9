"""Writes the FHIR R4B export: per-patient transaction Bundles plus Bulk-Data NDJSON.

Layout under ``out_dir``: ``bundles/<study_id>.json`` (one transaction Bundle per patient,
entries addressed by ``urn:uuid:`` fullUrls) and ``ndjson/<ResourceType>.ndjson`` (one
resource per line, references as ``<ResourceType>/<id>``). ``FhirWriter`` builds each
patient's resources family by family (register, observations, medications, outcomes) in
bundle order and streams them through a ``PatientSink``; the output is a pure function of
the records plus ``seed`` for the injected defects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from cart_etl.synth.defects.catalogue import DefectRecord
from cart_etl.synth.defects.fhir import FhirDefectPlanner, PatientDefects
from cart_etl.synth.fhir import background, baseline, medications, observations, outcomes
from cart_etl.synth.fhir.codes import STUDY_ID_SYSTEM
from cart_etl.synth.fhir.context import PatientContext
from cart_etl.synth.fhir.sink import PatientSink
from cart_etl.synth.model import ClinicalRecord

_NDJSON_BUFFER: Final = 1 << 20
_BUNDLE_BUFFER: Final = 1 << 18
_STUDY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# The resource builders of one patient, in bundle order.
_FAMILIES: Final[tuple[Callable[[PatientContext], None], ...]] = (
    baseline.add_patient,
    baseline.add_encounter,
    baseline.add_baseline,
    baseline.add_infusion,
    observations.add_vitals,
    observations.add_oxygen,
    observations.add_labs,
    medications.add_drugs,
    medications.add_vasopressors,
    outcomes.add_response,
    outcomes.add_neuro_and_crs,
    outcomes.add_infections,
    outcomes.add_follow_up,
)


class FhirWriter:
    """Streams ClinicalRecords to transaction Bundles and Bulk-Data NDJSON files.

    Memory stays flat in the number of patients: every resource goes straight into the
    patient's bundle file and the per-resource-type NDJSON file (both buffered); only
    the defect log grows, by a few records per 25 patients.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        defects: bool,
        seed: int,
        study_id_system: str = STUDY_ID_SYSTEM,
    ) -> None:
        """Create the output directories.

        Args:
            out_dir: Target directory, normally ``<synth_out>/fhir``. Its name prefixes the
                ``file`` of every DefectRecord (paths are relative to its parent).
            defects: Inject the FHIR defects listed in DEFECT_KINDS.
            seed: Non-negative seed; only the defect placement depends on it.
            study_id_system: Identifier system of the study id on Patient.
        """
        self._out = Path(out_dir)
        self._bundle_dir = self._out / "bundles"
        self._ndjson_dir = self._out / "ndjson"
        self._bundle_dir.mkdir(parents=True, exist_ok=True)
        self._ndjson_dir.mkdir(parents=True, exist_ok=True)
        self._prefix = self._out.name
        self._system = study_id_system
        self._planner = FhirDefectPlanner(seed) if defects else None
        self._seed = seed
        self._handles: dict[str, IO[bytes]] = {}
        self._lines: dict[str, int] = {}
        self._defects: list[DefectRecord] = []
        self._n_patients = 0
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, record: ClinicalRecord) -> None:
        """Write one patient's bundle and append its resources to the NDJSON files.

        Raises:
            RuntimeError: The writer is closed.
            ValueError: The study id is not usable as a file name.
        """
        if self._closed:
            raise RuntimeError("FhirWriter is closed")
        sid = record.demographics.study_id
        if not _STUDY_ID_RE.fullmatch(sid):
            raise ValueError(f"study_id {sid!r} is not a safe file name")
        patient = PatientContext(record, self._system)
        defects = None
        if self._planner is not None:
            targets = self._planner.plan(self._n_patients, record, patient.pairs)
            if targets:
                defects = PatientDefects(sid, self._prefix, targets, self._ndjson, self._lines)
        with (self._bundle_dir / f"{sid}.json").open("wb", buffering=_BUNDLE_BUFFER) as bundle:
            sink = PatientSink(bundle, patient.ids("Bundle"), self._ndjson, self._lines, defects)
            patient.emit = sink.emit
            for family in _FAMILIES:
                family(patient)
            sink.finish()
        if defects is not None:
            self._defects += defects.records
        self._n_patients += 1

    def write_background(self, index: int) -> None:
        """Write background (non-CAR-T) patient ``index``: its bundle and NDJSON lines.

        Background patients get no defects and do not count as cohort patients, so the
        cohort's resources are the same with or without them (see ``background``).

        Raises:
            RuntimeError: The writer is closed.
        """
        if self._closed:
            raise RuntimeError("FhirWriter is closed")
        name = background.background_patient_id(index)
        with (self._bundle_dir / f"{name}.json").open("wb", buffering=_BUNDLE_BUFFER) as bundle:
            bundle_id = background.background_bundle_id(index)
            sink = PatientSink(bundle, bundle_id, self._ndjson, self._lines, None)
            background.build_background_patient(sink.emit, self._seed, index)
            sink.finish()

    def close(self) -> list[DefectRecord]:
        """Flush and close the NDJSON files; return the defects injected so far."""
        if not self._closed:
            for handle in self._handles.values():
                handle.close()
            self._closed = True
        return list(self._defects)

    def _ndjson(self, rtype: str) -> IO[bytes]:
        """The NDJSON file of ``rtype``, opened on first use."""
        handle = self._handles.get(rtype)
        if handle is None:
            path = self._ndjson_dir / f"{rtype}.ndjson"
            handle = self._handles[rtype] = path.open("wb", buffering=_NDJSON_BUFFER)
            self._lines[rtype] = 0
        return handle
