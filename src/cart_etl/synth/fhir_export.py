"""FHIR R4B export of synthetic records: per-patient transaction Bundles plus Bulk-Data NDJSON.

Layout under ``out_dir``: ``bundles/<study_id>.json`` (one transaction Bundle per patient,
entries addressed by ``urn:uuid:`` fullUrls) and ``ndjson/<ResourceType>.ndjson`` (one
resource per line, references as ``<ResourceType>/<id>``). Resource ids are uuid5 of
``UUID_NAMESPACE`` and ``"<study_id>/<discriminator>"``, so output is a pure function of
the records (plus ``seed`` for the injected defects).

Resources are plain dicts dumped with orjson, never fhir.resources models: building
pydantic models for millions of vital signs would dominate the run time. Each resource is
serialized once without its references; the reference members are appended as
pre-rendered byte suffixes, one per output flavour (``urn:uuid:`` vs ``Type/id``).

Oxygen support: every ``OxygenCharting`` with a known flow becomes an Observation (LOINC
3151-8, ``L/min``). Every non-room-air charting also becomes one Procedure (SNOMED 57485005
"Oxygen therapy", device in ``usedCode`` and code text) whose ``performedPeriod`` runs from
that charting to the next charting of the patient (status ``completed``); the last charting
has an open period (status ``in-progress``) because the source never says when it stopped.
Room-air chartings only close the previous period. Consecutive chartings with the same
device are not merged, keeping one Procedure per source row for traceability; the flow
Observation points at its Procedure through ``partOf``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import numpy as np
import orjson

from cart_etl.synth.defects import DefectRecord
from cart_etl.synth.model import (
    DRUG_UNITS,
    LAB_UNITS,
    VITAL_UNITS,
    ClinicalRecord,
    Demographics,
    FollowUp,
    Infusion,
    VitalSign,
)

__all__ = ["STUDY_ID_SYSTEM", "UUID_NAMESPACE", "FhirWriter"]

Json = dict[str, Any]

# --- identifier and code systems ------------------------------------------------------------

STUDY_ID_SYSTEM: Final = "https://cart-etl.example.org/fhir/sid/study-id"
MRN_SYSTEM: Final = "https://tj-ref-hospital.example.cn/fhir/sid/mrn"
LOCAL_SYSTEM: Final = "https://cart-etl.example.org/fhir/CodeSystem/local"
RESPONSE_SYSTEM: Final = "https://cart-etl.example.org/fhir/CodeSystem/marrow-response"
CTCAE_GRADE_SYSTEM: Final = "https://cart-etl.example.org/fhir/CodeSystem/ctcae-grade"
LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
ICD10: Final = "http://hl7.org/fhir/sid/icd-10"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM: Final = "http://unitsofmeasure.org"
V2_0203: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# Fixed forever: changing it changes every resource id of every synthetic cohort.
UUID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://cart-etl.example.org/fhir/synth")

# --- code tables (mirrored by mappings/fhir/*.yaml) -----------------------------------------

# Vital item -> (LOINC, display); units come from model.VITAL_UNITS (already UCUM).
VITAL_LOINC: Final[dict[str, tuple[str, str]]] = {
    "temp": ("8310-5", "Body temperature"),
    "sbp": ("8480-6", "Systolic blood pressure"),
    "dbp": ("8462-4", "Diastolic blood pressure"),
    "hr": ("8867-4", "Heart rate"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
}
# Other LOINC concepts by local key -> (LOINC, display).
LOINC_CODES: Final[dict[str, tuple[str, str]]] = {
    "bp-panel": ("85354-9", "Blood pressure panel with all children optional"),
    "body-height": ("8302-2", "Body height"),
    "body-weight": ("29463-7", "Body weight"),
    "o2-flow": ("3151-8", "Inhaled oxygen flow rate"),
    "cause-of-death": ("69453-9", "Cause of death [US Standard Certificate of Death]"),
}
# Lab test -> (LOINC, label). LOINC long names were not checked against a release, so the
# label goes into CodeableConcept.text instead of Coding.display (no display-mismatch noise).
LAB_LOINC: Final[dict[str, tuple[str, str]]] = {
    "il6": ("26881-3", "Interleukin-6 (IL-6), serum"),
    "il10": ("26848-2", "Interleukin-10 (IL-10), serum"),
    "sil2r": ("33209-6", "Soluble interleukin-2 receptor (sIL-2R), serum"),
    "tnf_alpha": ("3074-2", "Tumor necrosis factor alpha (TNF-α), serum"),
    "ifn_gamma": ("27415-9", "Interferon gamma (IFN-γ), serum"),
    "crp": ("1988-5", "C-reactive protein (CRP), serum"),
    "ferritin": ("2276-4", "Ferritin, serum"),
    "wbc": ("6690-2", "Leukocytes (WBC), blood"),
    "anc": ("751-8", "Neutrophils, absolute count (ANC), blood"),
    "plt": ("777-3", "Platelets, blood"),
    "hgb": ("718-7", "Hemoglobin, blood"),
    "marrow_blasts": ("11118-7", "Blasts/100 leukocytes in Bone marrow"),
}
# Local concepts (no suitable LOINC/SNOMED code) -> display.
LOCAL_CODES: Final[dict[str, str]] = {
    "risk-genetics": "Risk-defining genetic abnormality",
    "high-risk-genetics": "High-risk genetics",
    "lines-of-therapy": "Number of prior lines of therapy",
    "prior-allo-sct": "Prior allogeneic stem-cell transplant",
    "cart-infusion": "CD19 CAR-T cell infusion",
    "cart-dose-per-kg": "CAR-T dose per kg body weight",
    "cart-cells-total": "CAR-T cells infused, total",
    "day28-marrow-response": "Day-28 bone marrow response",
    "mrd-flow": "Minimal residual disease by flow cytometry",
    "last-contact": "Date of last contact",
    "disease-progression": "Disease progression",
    "ice-score": "Immune effector cell-associated encephalopathy (ICE) score",
    "icans-grade": "ICANS grade (ASTCT 2019)",
    "crs-grade-recorded": "CRS grade as recorded by the physician",
}
# B-ALL diagnosis codings: (system, code, label).
DIAGNOSIS_CODINGS: Final[tuple[tuple[str, str, str], ...]] = (
    (SNOMED, "91857003", "Acute lymphoblastic leukemia"),
    (ICD10, "C91.0", "Acute lymphoblastic leukaemia"),
)
DIAGNOSIS_TEXT: Final = "B-cell acute lymphoblastic leukemia (B-ALL)"
OXYGEN_THERAPY_SNOMED: Final = ("57485005", "Oxygen therapy")
# Oxygen device -> (local code, display); room air is deliberately absent.
OXYGEN_DEVICES: Final[dict[str, tuple[str, str]]] = {
    "nasal_cannula": ("nasal-cannula", "Nasal cannula"),
    "high_flow_nasal_cannula": ("high-flow-nasal-cannula", "High-flow nasal cannula"),
    "face_mask": ("face-mask", "Simple face mask"),
    "non_rebreather": ("non-rebreather", "Non-rebreather mask"),
    "venturi": ("venturi", "Venturi mask"),
    "cpap": ("cpap", "CPAP"),
    "bipap": ("bipap", "BiPAP"),
    "mechanical_ventilation": ("mechanical-ventilation", "Invasive mechanical ventilation"),
}
# Drug / vasopressor -> (RxNorm ingredient, display).
DRUG_RXNORM: Final[dict[str, tuple[str, str]]] = {
    "tocilizumab": ("612865", "tocilizumab"),
    "methylprednisolone": ("6902", "methylprednisolone"),
    "dexamethasone": ("3264", "dexamethasone"),
    "prednisone": ("8640", "prednisone"),
    "gcsf": ("68442", "filgrastim"),
    "norepinephrine": ("7512", "norepinephrine"),
    "dopamine": ("3628", "dopamine"),
    "epinephrine": ("3992", "epinephrine"),
    "phenylephrine": ("8163", "phenylephrine"),
    "vasopressin": ("11149", "vasopressin"),
}
# Route -> (SNOMED, display).
ROUTE_SNOMED: Final[dict[str, tuple[str, str]]] = {
    "IV": ("47625008", "Intravenous route"),
    "PO": ("26643006", "Oral route"),
    "SC": ("34206005", "Subcutaneous route"),
    "IT": ("72607000", "Intrathecal route"),
}
RESPONSE_CODES: Final[dict[str, str]] = {
    "CR": "Complete remission",
    "CRi": "Complete remission with incomplete hematologic recovery",
    "PR": "Partial remission",
    "NR": "No response",
}
CRS_SCALE_TEXT: Final[dict[str, str]] = {"ASTCT2019": "ASTCT 2019"}
# Vasopressor rate unit as stored in the model -> UCUM code.
RATE_UCUM: Final[dict[str, str]] = {"ug/kg/min": "ug/kg/min", "U/min": "U/min"}
# UCUM code -> human-readable Quantity.unit (falls back to the code itself).
UNIT_DISPLAY: Final[dict[str, str]] = {
    "Cel": "°C",
    "mm[Hg]": "mmHg",
    "/min": "/min",
    "10*9/L": "10^9/L",
    "10*6/kg": "10^6 cells/kg",
    "{cells}": "cells",
}
GENDER: Final[dict[str, str]] = {"M": "male", "F": "female"}

# --- defect injection -----------------------------------------------------------------------

DEFECT_KINDS: Final = ("fhir_malformed_resource", "fhir_missing_subject")
_MALFORMED, _MISSING_SUBJECT = 0, 1
_DEFECT_BLOCK: Final = 25  # about one defect of each kind per block of patients
_DEFECT_WINDOW: Final = 20  # targets fall in the first 20 of a block: >= 20 patients => >= 1 each
_RNG_SALT: Final = 4242
_CAN_DROP_SUBJECT: Final = 1  # resource flags: eligible for fhir_missing_subject
_CAN_MALFORM: Final = 2  # eligible for fhir_malformed_resource (top-level valueQuantity)

_DUMP_OPTS: Final = orjson.OPT_SERIALIZE_NUMPY
_NDJSON_BUFFER: Final = 1 << 20
_BUNDLE_BUFFER: Final = 1 << 18
_STUDY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# (element, target resource type, target id, element is a list)
Ref = tuple[str, str, str, bool]


# Receives one resource: (resource type, id, body without references, references,
# defect-eligibility flags). References are rendered separately for each output.
Emit = Callable[[str, str, Json, tuple[Ref, ...], int], None]


# --- small JSON builders ----------------------------------------------------------------------


def _coding(system: str, code: str, display: str | None = None) -> Json:
    """Build a Coding, leaving out an unknown display."""
    out: Json = {"system": system, "code": code}
    if display is not None:
        out["display"] = display
    return out


def _concept(system: str, code: str, text: str, display: str | None = None) -> Json:
    """Build a single-coding CodeableConcept with a human-readable text."""
    return {"coding": [_coding(system, code, display)], "text": text}


def _local(code: str) -> Json:
    """CodeableConcept for a code of the local CodeSystem."""
    display = LOCAL_CODES[code]
    return _concept(LOCAL_SYSTEM, code, display, display)


def _loinc(key: str) -> Json:
    """CodeableConcept for an entry of LOINC_CODES."""
    code, display = LOINC_CODES[key]
    return _concept(LOINC, code, display, display)


def _category(system: str, code: str, display: str) -> list[Json]:
    """A one-element category list, as Observation and Condition expect."""
    return [{"coding": [_coding(system, code, display)]}]


def _qty(value: float, ucum: str) -> Json:
    """UCUM Quantity; values pass through unrounded so the truth stays exact."""
    return {"value": value, "unit": UNIT_DISPLAY.get(ucum, ucum), "system": UCUM, "code": ucum}


def _frag(obj: Any) -> orjson.Fragment:
    """Pre-serialized JSON, spliced verbatim by orjson.dumps."""
    return orjson.Fragment(orjson.dumps(obj))


# Constant members pre-serialized once: orjson then copies bytes instead of walking dicts.
_CAT_VITAL: Final = _frag(_category(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs"))
_CAT_LAB: Final = _frag(_category(OBSERVATION_CATEGORY, "laboratory", "Laboratory"))
_CAT_EXAM: Final = _frag(_category(OBSERVATION_CATEGORY, "exam", "Exam"))
_CAT_PROCEDURE: Final = _frag(_category(OBSERVATION_CATEGORY, "procedure", "Procedure"))
_CAT_PROBLEM: Final = _frag(_category(CONDITION_CATEGORY, "problem-list-item", "Problem List Item"))
_CAT_ENC_DX: Final = _frag(
    _category(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")
)
_VER_CONFIRMED: Final = _frag(
    _concept(CONDITION_VERIFICATION, "confirmed", "Confirmed", "Confirmed")
)
_BP_PANEL_CC: Final = _frag(_loinc("bp-panel"))
_VITAL_CC: Final = {k: _frag(_concept(LOINC, c, d, d)) for k, (c, d) in VITAL_LOINC.items()}
_LAB_CC: Final = {k: _frag(_concept(LOINC, c, t)) for k, (c, t) in LAB_LOINC.items()}
_DRUG_CC: Final = {k: _frag(_concept(RXNORM, c, d, d)) for k, (c, d) in DRUG_RXNORM.items()}
_ROUTE_CC: Final = {k: _frag(_concept(SNOMED, c, d, d)) for k, (c, d) in ROUTE_SNOMED.items()}
_DEVICE_CC: Final = {k: _concept(LOCAL_SYSTEM, c, d, d) for k, (c, d) in OXYGEN_DEVICES.items()}
# Vital item -> (Quantity.unit, UCUM code), looked up once per vital sign.
_VITAL_UNIT: Final = {k: (UNIT_DISPLAY.get(u, u), u) for k, u in VITAL_UNITS.items()}


def _obs(
    rid: str,
    code: Json | orjson.Fragment,
    effective: date | datetime | None,
    category: orjson.Fragment | None = None,
    **members: Any,
) -> Json:
    """Observation body (status final); ``members`` carry value[x], component, method..."""
    body: Json = {"resourceType": "Observation", "id": rid, "status": "final"}
    if category is not None:
        body["category"] = category
    body["code"] = code
    if effective is not None:
        body["effectiveDateTime"] = effective
    body.update(members)
    return body


# --- ids -------------------------------------------------------------------------------------


# Hex digit at uuid position 16 -> same digit with the RFC 4122 variant bits (10xx) set.
_VARIANT_HEX: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _id_maker(study_id: str) -> Callable[[str], str]:
    """Return ``disc -> str(uuid.uuid5(UUID_NAMESPACE, f"{study_id}/{disc}"))``, only faster.

    uuid.uuid5 costs ~5 us; millions of resources make that visible, so the sha1 state of
    the per-patient prefix is reused and the version/variant nibbles are patched as text.
    """
    prefix = hashlib.sha1(UUID_NAMESPACE.bytes + f"{study_id}/".encode())
    variant = _VARIANT_HEX

    def make(discriminator: str) -> str:
        h = prefix.copy()
        h.update(discriminator.encode())
        x = h.hexdigest()
        return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant[x[16]]}{x[17:20]}-{x[20:32]}"

    return make


# --- record -> resources -----------------------------------------------------------------------


def _encounter_end(inf: Infusion, fu: FollowUp) -> date | datetime:
    """Discharge: infusion + 21 d, or the death/last-contact date when that comes first."""
    start = inf.at - timedelta(days=3)
    end = inf.at + timedelta(days=21)
    cutoffs = [d for d in (fu.death_date, fu.last_contact_date) if d is not None]
    earliest = min(cutoffs, default=None)
    if earliest is not None and earliest < end.date():
        # Date precision only: the source knows the day, not the hour, of death/last contact.
        return max(earliest, start.date())
    return end


def _clinical_status(rec: ClinicalRecord) -> str:
    """Condition clinical status of the leukemia as known at last contact."""
    in_remission = rec.response is not None and rec.response.morphology in ("CR", "CRi")
    if rec.follow_up.progression_date is not None:
        return "relapse" if in_remission else "active"
    return "remission" if in_remission else "active"


def _no_sink(rtype: str, rid: str, body: Json, refs: tuple[Ref, ...], flags: int) -> None:
    """Placeholder sink of a builder whose build() has not started."""
    raise RuntimeError("_PatientBuilder.build() was not given a sink")


def _bp_pairs(vitals: list[VitalSign]) -> dict[int, int]:
    """Map sbp index -> dbp index for readings charted at the same instant."""
    dbp_at: dict[datetime, list[int]] = {}
    for i, v in enumerate(vitals):
        if v.item == "dbp":
            dbp_at.setdefault(v.at, []).append(i)
    pairs: dict[int, int] = {}
    if not dbp_at:
        return pairs
    for i, v in enumerate(vitals):
        if v.item == "sbp" and (free := dbp_at.get(v.at)):
            pairs[i] = free.pop(0)
    return pairs


def _candidate_counts(rec: ClinicalRecord, pairs: dict[int, int]) -> tuple[int, int]:
    """Count defect-eligible resources (malformable, subject-droppable) the builder will emit.

    Must agree with the flags set in ``_PatientBuilder._vitals``/``_labs``; the sink checks.
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


class _PatientBuilder:
    """Turns one ClinicalRecord into resource bodies, handed in bundle order to a sink."""

    def __init__(self, rec: ClinicalRecord, study_id_system: str) -> None:
        self.rec = rec
        self.pairs = _bp_pairs(rec.vitals)
        self.emit: Emit = _no_sink
        self.sid = rec.demographics.study_id
        self.ids = _id_maker(self.sid)
        self.system = study_id_system
        self.pid = self.ids("Patient")
        self.eid = self.ids("Encounter") if rec.infusion is not None else None
        subject: Ref = ("subject", "Patient", self.pid, False)
        self.ctx: tuple[Ref, ...] = (subject,)
        self.med_ctx: tuple[Ref, ...] = (subject,)
        if self.eid is not None:
            self.ctx = (subject, ("encounter", "Encounter", self.eid, False))
            self.med_ctx = (subject, ("context", "Encounter", self.eid, False))

    def build(self, emit: Emit) -> None:
        """Hand every resource of the patient to ``emit``, in bundle order."""
        self.emit = emit
        self._patient()
        self._encounter()
        self._baseline()
        self._infusion()
        self._vitals()
        self._oxygen()
        self._labs()
        self._drugs()
        self._vasopressors()
        self._response()
        self._neuro_and_crs()
        self._infections()
        self._follow_up()

    def _add(self, rtype: str, body: Json, refs: tuple[Ref, ...], flags: int = 0) -> None:
        self.emit(rtype, body["id"], body, refs, flags)

    def _observe(self, body: Json, *extra: Ref) -> None:
        self._add("Observation", body, self.ctx + extra)

    def _patient(self) -> None:
        d: Demographics = self.rec.demographics
        body: Json = {
            "resourceType": "Patient",
            "id": self.pid,
            "identifier": [
                {"use": "official", "system": self.system, "value": d.study_id},
                {
                    "use": "usual",
                    "type": _concept(
                        V2_0203, "MR", "Medical record number", "Medical record number"
                    ),
                    "system": MRN_SYSTEM,
                    "value": d.mrn,
                },
            ],
            "name": [{"text": d.name}],
            "gender": GENDER[d.sex],
            "birthDate": d.birth_date,
        }
        if self.rec.follow_up.death_date is not None:
            body["deceasedDateTime"] = self.rec.follow_up.death_date
        self._add("Patient", body, ())

    def _encounter(self) -> None:
        inf = self.rec.infusion
        if inf is None or self.eid is None:
            return
        body: Json = {
            "resourceType": "Encounter",
            "id": self.eid,
            "status": "finished",
            "class": _coding(V3_ACT_CODE, "IMP", "inpatient encounter"),
            "type": [{"text": "CAR-T infusion admission"}],
            "period": {
                "start": inf.at - timedelta(days=3),
                "end": _encounter_end(inf, self.rec.follow_up),
            },
        }
        self._add("Encounter", body, self.ctx[:1])

    def _baseline(self) -> None:
        d = self.rec.demographics
        ids, when = self.ids, d.screening_date
        status = _clinical_status(self.rec)
        dx: Json = {
            "resourceType": "Condition",
            "id": ids("Condition/diagnosis"),
            "clinicalStatus": _concept(CONDITION_CLINICAL, status, status),
            "verificationStatus": _VER_CONFIRMED,
            "category": _CAT_PROBLEM,
            "code": {
                "coding": [_coding(s, c) for s, c, _ in DIAGNOSIS_CODINGS],
                "text": DIAGNOSIS_TEXT,
            },
            "onsetDateTime": d.diagnosis_date,
            "recordedDate": d.screening_date,
        }
        self._add("Condition", dx, self.ctx)
        measures = (
            ("height", _CAT_VITAL, _loinc("body-height"), _qty(d.height_cm, "cm")),
            ("weight", _CAT_VITAL, _loinc("body-weight"), _qty(d.weight_kg, "kg")),
            ("marrow-blasts", _CAT_LAB, _LAB_CC["marrow_blasts"], _qty(d.marrow_blasts_pct, "%")),
        )
        for name, category, code, quantity in measures:
            body = _obs(ids(f"baseline/{name}"), code, when, category, valueQuantity=quantity)
            self._observe(body)
        history: tuple[tuple[str, str, Any], ...] = (
            ("risk-genetics", "valueString", d.risk_genetics),
            ("high-risk-genetics", "valueBoolean", d.is_high_risk),
            ("lines-of-therapy", "valueInteger", d.lines_of_therapy),
            ("prior-allo-sct", "valueBoolean", d.prior_allo_sct),
        )
        for local, vtype, value in history:
            self._observe(_obs(ids(f"baseline/{local}"), _local(local), when, **{vtype: value}))

    def _infusion(self) -> None:
        inf = self.rec.infusion
        if inf is None:
            return
        ids = self.ids
        proc_id = ids("infusion")
        proc: Json = {
            "resourceType": "Procedure",
            "id": proc_id,
            "status": "completed",
            "code": _local("cart-infusion"),
            "performedDateTime": inf.at,
            "usedCode": [{"text": inf.product}],
            "note": [
                {
                    "text": f"Product: {inf.product}; lot: {inf.lot}; "
                    f"donor-derived: {'yes' if inf.donor_derived else 'no'}"
                }
            ],
        }
        self._add("Procedure", proc, self.ctx)
        part_of: Ref = ("partOf", "Procedure", proc_id, True)
        doses = (
            ("cart-dose-per-kg", inf.dose_1e6_per_kg, "10*6/kg"),
            ("cart-cells-total", inf.cells_total, "{cells}"),
        )
        for code, value, unit in doses:
            body = _obs(
                ids(f"infusion/{code}"),
                _local(code),
                inf.at,
                _CAT_PROCEDURE,
                valueQuantity=_qty(value, unit),
            )
            self._observe(body, part_of)
        weight = _obs(
            ids("infusion/weight"),
            _loinc("body-weight"),
            inf.at,
            _CAT_VITAL,
            valueQuantity=_qty(inf.weight_kg, "kg"),
        )
        self._observe(weight, part_of)

    def _vitals(self) -> None:
        # The hot loop (hundreds of rows per patient): Quantity dicts are inlined on purpose.
        vitals = self.rec.vitals
        pairs = self.pairs
        paired_dbp = set(pairs.values())
        ids, ctx, emit, cat, codes = self.ids, self.ctx, self.emit, _CAT_VITAL, _VITAL_CC
        mmhg_unit, mmhg = _VITAL_UNIT["sbp"]
        for i, v in enumerate(vitals):
            if i in paired_dbp:
                continue
            j = pairs.get(i)
            if j is None:
                rid = ids(f"vital/{i}")
                unit, ucum = _VITAL_UNIT[v.item]
                body: Json = {
                    "resourceType": "Observation",
                    "id": rid,
                    "status": "final",
                    "category": cat,
                    "code": codes[v.item],
                    "effectiveDateTime": v.at,
                    "valueQuantity": {"value": v.value, "unit": unit, "system": UCUM, "code": ucum},
                }
                flags = 0 if v.key else _CAN_DROP_SUBJECT | _CAN_MALFORM
            else:
                dbp = vitals[j]
                rid = ids(f"vital/{i}+{j}")
                sbp_q = {"value": v.value, "unit": mmhg_unit, "system": UCUM, "code": mmhg}
                dbp_q = {"value": dbp.value, "unit": mmhg_unit, "system": UCUM, "code": mmhg}
                body = {
                    "resourceType": "Observation",
                    "id": rid,
                    "status": "final",
                    "category": cat,
                    "code": _BP_PANEL_CC,
                    "effectiveDateTime": v.at,
                    "component": [
                        {"code": codes["sbp"], "valueQuantity": sbp_q},
                        {"code": codes["dbp"], "valueQuantity": dbp_q},
                    ],
                }
                flags = 0 if v.key or dbp.key else _CAN_DROP_SUBJECT
            emit("Observation", rid, body, ctx, flags)

    def _oxygen(self) -> None:
        charts = self.rec.oxygen
        order = sorted(range(len(charts)), key=lambda k: charts[k].at)
        for pos, i in enumerate(order):
            c = charts[i]
            nxt = charts[order[pos + 1]].at if pos + 1 < len(order) else None
            proc_ref: tuple[Ref, ...] = ()
            if c.device != "room_air":
                proc_id = self.ids(f"oxygen/{i}/device")
                self._add(
                    "Procedure", self._oxygen_procedure(proc_id, c.device, c.at, nxt), self.ctx
                )
                proc_ref = (("partOf", "Procedure", proc_id, True),)
            if c.flow_l_min is not None:
                body = _obs(
                    self.ids(f"oxygen/{i}/flow"),
                    _loinc("o2-flow"),
                    c.at,
                    _CAT_VITAL,
                    valueQuantity=_qty(c.flow_l_min, "L/min"),
                )
                self._observe(body, *proc_ref)

    @staticmethod
    def _oxygen_procedure(rid: str, device: str, start: datetime, end: datetime | None) -> Json:
        device_cc = _DEVICE_CC[device]
        code, display = OXYGEN_THERAPY_SNOMED
        period: Json = {"start": start}
        if end is not None:
            period["end"] = end
        return {
            "resourceType": "Procedure",
            "id": rid,
            "status": "completed" if end is not None else "in-progress",
            "code": _concept(SNOMED, code, f"{display} via {device_cc['text']}", display),
            "performedPeriod": period,
            "usedCode": [device_cc],
        }

    def _labs(self) -> None:
        ids, ctx, emit, cat = self.ids, self.ctx, self.emit, _CAT_LAB
        for i, lab in enumerate(self.rec.labs):
            rid = ids(f"lab/{i}")
            body: Json = {
                "resourceType": "Observation",
                "id": rid,
                "status": "final",
                "category": cat,
                "code": _LAB_CC[lab.test],
                "effectiveDateTime": lab.at,
                "valueQuantity": _qty(lab.value, LAB_UNITS[lab.test]),
            }
            flags = 0 if lab.key else _CAN_DROP_SUBJECT | _CAN_MALFORM
            emit("Observation", rid, body, ctx, flags)

    def _drugs(self) -> None:
        for i, d in enumerate(self.rec.drugs):
            body: Json = {
                "resourceType": "MedicationAdministration",
                "id": self.ids(f"drug/{i}"),
                "status": "completed",
                "medicationCodeableConcept": _DRUG_CC[d.drug],
                "effectiveDateTime": d.at,
                "reasonCode": [{"text": d.indication}],
                "dosage": {"route": _ROUTE_CC[d.route], "dose": _qty(d.dose, DRUG_UNITS[d.drug])},
            }
            self._add("MedicationAdministration", body, self.med_ctx)

    def _vasopressors(self) -> None:
        for i, v in enumerate(self.rec.vasopressors):
            body: Json = {
                "resourceType": "MedicationAdministration",
                "id": self.ids(f"vasopressor/{i}"),
                "status": "completed",
                "medicationCodeableConcept": _DRUG_CC[v.drug],
                "effectivePeriod": {"start": v.start, "end": v.stop},
                "dosage": {
                    "route": _ROUTE_CC["IV"],
                    "rateQuantity": _qty(v.rate, RATE_UCUM.get(v.rate_unit, v.rate_unit)),
                },
            }
            self._add("MedicationAdministration", body, self.med_ctx)

    def _response(self) -> None:
        r = self.rec.response
        if r is None:
            return
        value = _concept(RESPONSE_SYSTEM, r.morphology, r.morphology, RESPONSE_CODES[r.morphology])
        components = [
            {"code": _LAB_CC["marrow_blasts"], "valueQuantity": _qty(r.marrow_blasts_pct, "%")},
            {"code": _local("mrd-flow"), "valueQuantity": _qty(r.mrd_pct, "%")},
        ]
        body = _obs(
            self.ids("response/day28"),
            _local("day28-marrow-response"),
            r.at,
            _CAT_LAB,
            valueCodeableConcept=value,
            component=components,
        )
        self._observe(body)

    def _neuro_and_crs(self) -> None:
        for i, a in enumerate(self.rec.icans):
            if a.ice_score is not None:
                ice = _obs(
                    self.ids(f"icans/{i}/ice"),
                    _local("ice-score"),
                    a.at,
                    _CAT_EXAM,
                    valueInteger=a.ice_score,
                )
                self._observe(ice)
            grade = _obs(
                self.ids(f"icans/{i}/grade"),
                _local("icans-grade"),
                a.at,
                _CAT_EXAM,
                valueInteger=a.grade,
            )
            self._observe(grade)
        crs = self.rec.recorded_crs
        if crs is not None:
            scale = CRS_SCALE_TEXT.get(crs.scale, crs.scale)
            body = _obs(
                self.ids("crs-grade"),
                _local("crs-grade-recorded"),
                crs.at,
                _CAT_EXAM,
                valueInteger=crs.grade,
                method={"text": f"{scale} (physician)"},
            )
            self._observe(body)

    def _infections(self) -> None:
        for i, inf in enumerate(self.rec.infections):
            label = f"CTCAE grade {inf.ctcae_grade}"
            body: Json = {
                "resourceType": "Condition",
                "id": self.ids(f"infection/{i}"),
                "verificationStatus": _VER_CONFIRMED,
                "category": _CAT_ENC_DX,
                "severity": _concept(CTCAE_GRADE_SYSTEM, str(inf.ctcae_grade), label, label),
                "code": {"text": f"{inf.organism} infection of {inf.site}"},
                "onsetDateTime": inf.onset_date,
            }
            self._add("Condition", body, self.ctx)

    def _follow_up(self) -> None:
        fu = self.rec.follow_up
        last = fu.last_contact_date
        self._observe(
            _obs(self.ids("last-contact"), _local("last-contact"), last, valueDateTime=last)
        )
        if fu.progression_date is not None:
            body = _obs(
                self.ids("progression"),
                _local("disease-progression"),
                fu.progression_date,
                valueBoolean=True,
            )
            self._observe(body)
        if fu.death_cause is not None:
            body = _obs(
                self.ids("death-cause"),
                _loinc("cause-of-death"),
                fu.death_date,
                valueString=fu.death_cause,
            )
            self._observe(body)


# --- defects -----------------------------------------------------------------------------------


class _DefectPlanner:
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


def _comma_decimal(value: float) -> str:
    """Render a number with a decimal comma, which no FHIR decimal accepts."""
    text = repr(float(value))
    if "." not in text or "e" in text:
        text = f"{float(value):.6f}"
    return text.replace(".", ",")


def _ref_suffixes(rtype: str, refs: Iterable[Ref]) -> tuple[bytes, bytes]:
    """Bytes closing a resource: (bundle form incl. the entry's request, NDJSON form + newline)."""
    bundle: Json = {}
    ndjson: Json = {}
    for element, target, rid, many in refs:
        b_ref: Json = {"reference": f"urn:uuid:{rid}"}
        n_ref: Json = {"reference": f"{target}/{rid}"}
        bundle[element] = [b_ref] if many else b_ref
        ndjson[element] = [n_ref] if many else n_ref
    request = b',"request":{"method":"POST","url":"%s"}}' % rtype.encode()
    if not bundle:
        return b"}" + request, b"}\n"
    return (
        b"," + orjson.dumps(bundle)[1:] + request,
        b"," + orjson.dumps(ndjson)[1:] + b"\n",
    )


class _PatientSink:
    """Streams one patient's resources into its bundle file and the NDJSON files.

    Each resource is dumped and written straight to buffered file handles: holding the
    patient's bodies or orjson results in memory (or copying them into growing bytearrays)
    made allocation cost more than the serialization itself.
    """

    def __init__(
        self,
        writer: FhirWriter,
        study_id: str,
        bundle: IO[bytes],
        bundle_id: str,
        targets: dict[int, int],
    ) -> None:
        self.study_id = study_id
        self.prefix = writer.file_prefix
        self.targets = targets  # defect kind -> ordinal among that kind's eligible resources
        self.seen = [0] * len(DEFECT_KINDS)
        self.defects: list[DefectRecord] = []
        self._bundle = bundle
        self._ndjson = writer.ndjson_handle
        self._lines = writer.ndjson_lines  # shared running counts, updated per resource
        self._suffixes: dict[tuple[str, tuple[Ref, ...]], tuple[bytes, bytes]] = {}
        self._sep = ""
        head = b'{"resourceType":"Bundle","id":"%s","type":"transaction","entry":['
        bundle.write(head % bundle_id.encode())

    def emit(self, rtype: str, rid: str, body: Json, refs: tuple[Ref, ...], flags: int) -> None:
        """Write one resource as a bundle entry and as an NDJSON line."""
        if flags and self.targets:
            body, refs = self._inject(rtype, rid, body, refs, flags)
        head = orjson.dumps(body, option=_DUMP_OPTS)[:-1]  # reopen the object for the refs
        key = (rtype, refs)
        sfx = self._suffixes.get(key)
        if sfx is None:
            sfx = self._suffixes[key] = _ref_suffixes(rtype, refs)
        # One concatenation + one write per output beats several small buffered writes.
        entry = f'{self._sep}{{"fullUrl":"urn:uuid:{rid}","resource":'.encode()
        self._bundle.write(entry + head + sfx[0])
        self._sep = ","
        self._ndjson(rtype).write(head + sfx[1])
        self._lines[rtype] += 1

    def finish(self) -> None:
        """Close the bundle's JSON.

        Raises:
            RuntimeError: A planned defect found no resource (candidate count out of sync).
        """
        for kind, ordinal in self.targets.items():
            if self.seen[kind] <= ordinal:
                raise RuntimeError(f"{DEFECT_KINDS[kind]} not injected into {self.study_id}")
        self._bundle.write(b"]}\n")

    def _inject(
        self, rtype: str, rid: str, body: Json, refs: tuple[Ref, ...], flags: int
    ) -> tuple[Json, tuple[Ref, ...]]:
        """Apply a defect if this resource is a planned target; return (body, refs)."""
        targets, seen = self.targets, self.seen
        if flags & _CAN_MALFORM and _MALFORMED in targets:
            seen[_MALFORMED] += 1
            if seen[_MALFORMED] - 1 == targets[_MALFORMED]:
                quantity = body["valueQuantity"]
                bad = _comma_decimal(quantity["value"])
                original = orjson.dumps(quantity["value"], option=_DUMP_OPTS).decode()
                self._record(
                    rtype, rid, _MALFORMED, field="valueQuantity.value", before=original, after=bad
                )
                # Copy, never mutate: body fragments may be shared module-level objects.
                # Return early so one resource never carries both defects.
                return {**body, "valueQuantity": {**quantity, "value": bad}}, refs
        if flags & _CAN_DROP_SUBJECT and _MISSING_SUBJECT in targets:
            seen[_MISSING_SUBJECT] += 1
            if seen[_MISSING_SUBJECT] - 1 == targets[_MISSING_SUBJECT]:
                pid = next(r[2] for r in refs if r[0] == "subject")
                self._record(
                    rtype,
                    rid,
                    _MISSING_SUBJECT,
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
            self.defects.append(
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


# --- writer ------------------------------------------------------------------------------------


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
        self._planner = _DefectPlanner(seed) if defects else None
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
        builder = _PatientBuilder(record, self._system)
        targets: dict[int, int] = {}
        if self._planner is not None:
            targets = self._plan(self._planner, record, builder.pairs)
        with (self._bundle_dir / f"{sid}.json").open("wb", buffering=_BUNDLE_BUFFER) as bundle:
            sink = _PatientSink(self, sid, bundle, builder.ids("Bundle"), targets)
            builder.build(sink.emit)
            sink.finish()
        self._defects += sink.defects
        self._n_patients += 1

    def _plan(
        self, planner: _DefectPlanner, record: ClinicalRecord, pairs: dict[int, int]
    ) -> dict[int, int]:
        """Pick, per due defect kind, the ordinal of the eligible resource to damage."""
        malformable, droppable = _candidate_counts(record, pairs)
        targets: dict[int, int] = {}
        for kind in planner.due(self._n_patients):
            # A malformed resource is excluded from the subject-drop ordinals.
            n = malformable if kind == _MALFORMED else droppable - (_MALFORMED in targets)
            if n > 0:
                targets[kind] = planner.pick(self._n_patients, kind, n)
        return targets

    def close(self) -> list[DefectRecord]:
        """Flush and close the NDJSON files; return the defects injected so far."""
        if not self._closed:
            for handle in self._handles.values():
                handle.close()
            self._closed = True
        return list(self._defects)

    # -- used by _PatientSink --

    @property
    def file_prefix(self) -> str:
        """Directory name prefixed to DefectRecord paths (e.g. ``"fhir"``)."""
        return self._prefix

    @property
    def ndjson_lines(self) -> dict[str, int]:
        """Lines written so far per resource type (mutable, shared with the sink)."""
        return self._lines

    def ndjson_handle(self, rtype: str) -> IO[bytes]:
        """The NDJSON file of ``rtype``, opened on first use."""
        handle = self._handles.get(rtype)
        if handle is None:
            path = self._ndjson_dir / f"{rtype}.ndjson"
            handle = self._handles[rtype] = path.open("wb", buffering=_NDJSON_BUFFER)
            self._lines[rtype] = 0
        return handle
