"""Injects the FHIR defects: malformed decimals and missing subjects in bundles and NDJSON.

About one defect of each kind per block of 25 patients, at patients and resources chosen
from the seed alone (``FhirDefectPlanner``): ``fhir_malformed_resource`` writes a
top-level ``valueQuantity.value`` with a decimal comma (invalid FHIR), and
``fhir_missing_subject`` drops the subject reference of an Observation. Only Observations
no truth column depends on are eligible; ``PatientDefects`` applies a patient's planned
defects as the sink writes its resources and records one ``DefectRecord`` per output file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import orjson

from cart_etl.synth.defects.catalogue import DefectRecord
from cart_etl.synth.fhir.context import Ref
from cart_etl.synth.fhir.elements import DUMP_OPTS, Json
from cart_etl.synth.model import ClinicalRecord

DEFECT_KINDS: Final = ("fhir_malformed_resource", "fhir_missing_subject")
MALFORMED, MISSING_SUBJECT = 0, 1
_DEFECT_BLOCK: Final = 25  # about one defect of each kind per block of patients
_DEFECT_WINDOW: Final = 20  # targets fall in the first 20 of a block: >= 20 patients => >= 1 each
_RNG_SALT: Final = 4242
CAN_DROP_SUBJECT: Final = 1  # resource flags: eligible for fhir_missing_subject
CAN_MALFORM: Final = 2  # eligible for fhir_malformed_resource (top-level valueQuantity)


def candidate_counts(rec: ClinicalRecord, pairs: dict[int, int]) -> tuple[int, int]:
    """Count defect-eligible resources (malformable, subject-droppable) the builder will emit.

    Must agree with the flags set by ``fhir.observations.add_vitals``/``add_labs``; the
    sink checks.
    """
    vitals = rec.vitals
    paired_dbp = set(pairs.values())
    malformable = droppable = 0
    for i, v in enumerate(vitals):
        if i in paired_dbp:
            continue
        j = pairs.get(i)
        if j is None:
            malformable += not v.key
            droppable += not v.key
        else:
            droppable += not (v.key or vitals[j].key)
    free_labs = sum(1 for lab in rec.labs if not lab.key)
    return malformable + free_labs, droppable + free_labs


class FhirDefectPlanner:
    """Decides, from the seed alone, which patients and resources receive which defect."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._targets: list[int] = []
        self._pending = [0] * len(DEFECT_KINDS)

    def due(self, patient_index: int) -> list[int]:
        """Kinds (indices into DEFECT_KINDS) to inject into this patient if possible."""
        block, offset = divmod(patient_index, _DEFECT_BLOCK)
        if offset == 0:
            rng = np.random.default_rng([self._seed, _RNG_SALT, block])
            self._targets = rng.integers(0, _DEFECT_WINDOW, size=len(DEFECT_KINDS)).tolist()
        for kind, target in enumerate(self._targets):
            if offset == target:
                self._pending[kind] += 1
        # A kind stays pending until a patient has an eligible resource.
        return [k for k, n in enumerate(self._pending) if n > 0]

    def pick(self, patient_index: int, kind: int, n_candidates: int) -> int:
        """Choose one of ``n_candidates`` eligible resources and mark the kind as done."""
        self._pending[kind] -= 1
        rng = np.random.default_rng([self._seed, _RNG_SALT, patient_index, kind, 1])
        return int(rng.integers(n_candidates))

    def plan(
        self, patient_index: int, record: ClinicalRecord, pairs: dict[int, int]
    ) -> dict[int, int]:
        """Pick, per due defect kind, the ordinal of the eligible resource to damage."""
        malformable, droppable = candidate_counts(record, pairs)
        targets: dict[int, int] = {}
        for kind in self.due(patient_index):
            # A malformed resource is excluded from the subject-drop ordinals.
            n = malformable if kind == MALFORMED else droppable - (MALFORMED in targets)
            if n > 0:
                targets[kind] = self.pick(patient_index, kind, n)
        return targets


def comma_decimal(value: float) -> str:
    """Render a number with a decimal comma, which no FHIR decimal accepts."""
    text = repr(float(value))
    if "." not in text or "e" in text:
        text = f"{float(value):.6f}"
    return text.replace(".", ",")


class PatientDefects:
    """The FHIR defects planned for one patient, applied as its resources are written."""

    def __init__(
        self,
        study_id: str,
        prefix: str,
        targets: dict[int, int],
        ndjson_handle: Callable[[str], object],
        ndjson_lines: dict[str, int],
    ) -> None:
        """Hold the plan of one patient.

        Args:
            study_id: The patient's study id (bundle file name, DefectRecord.study_id).
            prefix: Directory name prefixed to DefectRecord paths (e.g. ``"fhir"``).
            targets: Defect kind -> ordinal among that kind's eligible resources.
            ndjson_handle: Opens (on first use) the NDJSON file of a resource type.
            ndjson_lines: Lines written so far per resource type (shared, live counts).
        """
        self.study_id = study_id
        self.prefix = prefix
        self.targets = targets
        self.seen = [0] * len(DEFECT_KINDS)
        self.records: list[DefectRecord] = []
        self._ndjson = ndjson_handle
        self._lines = ndjson_lines

    def check_done(self) -> None:
        """Raise when a planned defect found no resource.

        Raises:
            RuntimeError: A planned defect found no resource (candidate count out of sync).
        """
        for kind, ordinal in self.targets.items():
            if self.seen[kind] <= ordinal:
                raise RuntimeError(f"{DEFECT_KINDS[kind]} not injected into {self.study_id}")

    def apply(
        self, rtype: str, rid: str, body: Json, refs: tuple[Ref, ...], flags: int
    ) -> tuple[Json, tuple[Ref, ...]]:
        """Apply a defect if this resource is a planned target; return (body, refs)."""
        targets, seen = self.targets, self.seen
        if flags & CAN_MALFORM and MALFORMED in targets:
            seen[MALFORMED] += 1
            if seen[MALFORMED] - 1 == targets[MALFORMED]:
                quantity = body["valueQuantity"]
                bad = comma_decimal(quantity["value"])
                original = orjson.dumps(quantity["value"], option=DUMP_OPTS).decode()
                self._record(
                    rtype, rid, MALFORMED, field="valueQuantity.value", before=original, after=bad
                )
                # Copy, never mutate: body fragments may be shared module-level objects.
                # Return early so one resource never carries both defects.
                return {**body, "valueQuantity": {**quantity, "value": bad}}, refs
        if flags & CAN_DROP_SUBJECT and MISSING_SUBJECT in targets:
            seen[MISSING_SUBJECT] += 1
            if seen[MISSING_SUBJECT] - 1 == targets[MISSING_SUBJECT]:
                pid = next(r[2] for r in refs if r[0] == "subject")
                self._record(
                    rtype,
                    rid,
                    MISSING_SUBJECT,
                    field="subject",
                    before=(f"urn:uuid:{pid}", f"Patient/{pid}"),
                    after="",
                )
                return body, tuple(r for r in refs if r[0] != "subject")
        return body, refs

    def _record(
        self,
        rtype: str,
        rid: str,
        kind: int,
        *,
        field: str,
        before: str | tuple[str, str],
        after: str,
    ) -> None:
        """Add the bundle and NDJSON DefectRecords; a tuple ``before`` differs per file."""
        self._ndjson(rtype)  # make sure the line counter exists
        line = self._lines[rtype] + 1
        in_bundle, in_ndjson = (before, before) if isinstance(before, str) else before
        rows = (
            (f"bundles/{self.study_id}.json", rid, in_bundle),
            (f"ndjson/{rtype}.ndjson", f"line {line}", in_ndjson),
        )
        for path, row, original in rows:
            self.records.append(
                DefectRecord(
                    file=f"{self.prefix}/{path}",
                    row=row,
                    field=f"{rtype}.{field}",
                    kind=DEFECT_KINDS[kind],
                    original_value=original,
                    injected_value=after,
                    study_id=self.study_id,
                )
            )
