"""Writes a patient's register resources: Patient, Encounter, the B-ALL Condition, baseline
Observations (height, weight, marrow blasts, genetics, lines, prior transplant) and the
CAR-T infusion (a Procedure with its dose, cell count and dosing-weight Observations).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from cart_etl.synth.fhir.codes import (
    CONDITION_CLINICAL,
    DIAGNOSIS_CODINGS,
    DIAGNOSIS_TEXT,
    GENDER,
    MRN_SYSTEM,
    MRN_TYPE_CODE,
    V2_0203,
    V3_ACT_CODE,
)
from cart_etl.synth.fhir.context import PatientContext, Ref
from cart_etl.synth.fhir.elements import (
    CAT_LAB,
    CAT_PROBLEM,
    CAT_PROCEDURE,
    CAT_VITAL,
    LAB_CC,
    VER_CONFIRMED,
    Json,
    coding,
    concept,
    local,
    loinc,
    obs,
    qty,
)
from cart_etl.synth.model import ClinicalRecord, Demographics, FollowUp, Infusion


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


def add_patient(p: PatientContext) -> None:
    """Patient: study id and MRN identifiers, name, gender, birth and death dates."""
    d: Demographics = p.rec.demographics
    body: Json = {
        "resourceType": "Patient",
        "id": p.pid,
        "identifier": [
            {"use": "official", "system": p.system, "value": d.study_id},
            {
                "use": "usual",
                "type": concept(
                    V2_0203, MRN_TYPE_CODE, "Medical record number", "Medical record number"
                ),
                "system": MRN_SYSTEM,
                "value": d.mrn,
            },
        ],
        "name": [{"text": d.name}],
        "gender": GENDER[d.sex],
        "birthDate": d.birth_date,
    }
    if p.rec.follow_up.death_date is not None:
        body["deceasedDateTime"] = p.rec.follow_up.death_date
    p.add("Patient", body, ())


def add_encounter(p: PatientContext) -> None:
    """Encounter of the infusion admission (none for a patient never infused)."""
    inf = p.rec.infusion
    if inf is None or p.eid is None:
        return
    body: Json = {
        "resourceType": "Encounter",
        "id": p.eid,
        "status": "finished",
        "class": coding(V3_ACT_CODE, "IMP", "inpatient encounter"),
        "type": [{"text": "CAR-T infusion admission"}],
        "period": {
            "start": inf.at - timedelta(days=3),
            "end": _encounter_end(inf, p.rec.follow_up),
        },
    }
    p.add("Encounter", body, p.refs[:1])


def add_baseline(p: PatientContext) -> None:
    """The B-ALL Condition and the screening Observations of the register."""
    d = p.rec.demographics
    ids, when = p.ids, d.screening_date
    status = _clinical_status(p.rec)
    dx: Json = {
        "resourceType": "Condition",
        "id": ids("Condition/diagnosis"),
        "clinicalStatus": concept(CONDITION_CLINICAL, status, status),
        "verificationStatus": VER_CONFIRMED,
        "category": CAT_PROBLEM,
        "code": {
            "coding": [coding(s, c) for s, c, _ in DIAGNOSIS_CODINGS],
            "text": DIAGNOSIS_TEXT,
        },
        "onsetDateTime": d.diagnosis_date,
        "recordedDate": d.screening_date,
    }
    p.add("Condition", dx, p.refs)
    measures = (
        ("height", CAT_VITAL, loinc("body-height"), qty(d.height_cm, "cm")),
        ("weight", CAT_VITAL, loinc("body-weight"), qty(d.weight_kg, "kg")),
        ("marrow-blasts", CAT_LAB, LAB_CC["marrow_blasts"], qty(d.marrow_blasts_pct, "%")),
    )
    for name, category, code, quantity in measures:
        body = obs(ids(f"baseline/{name}"), code, when, category, valueQuantity=quantity)
        p.observe(body)
    history: tuple[tuple[str, str, Any], ...] = (
        ("risk-genetics", "valueString", d.risk_genetics),
        ("high-risk-genetics", "valueBoolean", d.is_high_risk),
        ("lines-of-therapy", "valueInteger", d.lines_of_therapy),
        ("prior-allo-sct", "valueBoolean", d.prior_allo_sct),
    )
    for key, vtype, value in history:
        p.observe(obs(ids(f"baseline/{key}"), local(key), when, **{vtype: value}))


def add_infusion(p: PatientContext) -> None:
    """CAR-T infusion Procedure with its dose, cell count and dosing weight."""
    inf = p.rec.infusion
    if inf is None:
        return
    ids = p.ids
    proc_id = ids("infusion")
    proc: Json = {
        "resourceType": "Procedure",
        "id": proc_id,
        "status": "completed",
        "code": local("cart-infusion"),
        "performedDateTime": inf.at,
        "usedCode": [{"text": inf.product}],
        "note": [
            {
                "text": f"Product: {inf.product}; lot: {inf.lot}; "
                f"donor-derived: {'yes' if inf.donor_derived else 'no'}"
            }
        ],
    }
    p.add("Procedure", proc, p.refs)
    part_of: Ref = ("partOf", "Procedure", proc_id, True)
    doses = (
        ("cart-dose-per-kg", inf.dose_1e6_per_kg, "10*6/kg"),
        ("cart-cells-total", inf.cells_total, "{cells}"),
    )
    for code, value, unit in doses:
        body = obs(
            ids(f"infusion/{code}"),
            local(code),
            inf.at,
            CAT_PROCEDURE,
            valueQuantity=qty(value, unit),
        )
        p.observe(body, part_of)
    weight = obs(
        ids("infusion/weight"),
        loinc("body-weight"),
        inf.at,
        CAT_VITAL,
        valueQuantity=qty(inf.weight_kg, "kg"),
    )
    p.observe(weight, part_of)
