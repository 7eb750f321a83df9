"""Writes a patient's assessments and outcomes: day-28 response, ICANS, CRS grade, follow-up.

The day-28 marrow response is an Observation coded in the local response system with
blasts and MRD components; each ICANS assessment gives an ICE-score and a grade
Observation; the physician's CRS grade names its scale in ``method``; infections are
Conditions graded on the CTCAE scale (``severity``); follow-up gives the last contact,
progression and cause-of-death Observations.
"""

from __future__ import annotations

from cart_etl.synth.fhir.codes import (
    CRS_SCALE_TEXT,
    CTCAE_GRADE_SYSTEM,
    RESPONSE_CODES,
    RESPONSE_SYSTEM,
)
from cart_etl.synth.fhir.context import PatientContext
from cart_etl.synth.fhir.elements import (
    CAT_ENC_DX,
    CAT_EXAM,
    CAT_LAB,
    LAB_CC,
    VER_CONFIRMED,
    Json,
    concept,
    local,
    loinc,
    obs,
    qty,
)


def add_response(p: PatientContext) -> None:
    """Day-28 marrow response with blasts and MRD components."""
    r = p.rec.response
    if r is None:
        return
    value = concept(RESPONSE_SYSTEM, r.morphology, r.morphology, RESPONSE_CODES[r.morphology])
    components = [
        {"code": LAB_CC["marrow_blasts"], "valueQuantity": qty(r.marrow_blasts_pct, "%")},
        {"code": local("mrd-flow"), "valueQuantity": qty(r.mrd_pct, "%")},
    ]
    body = obs(
        p.ids("response/day28"),
        local("day28-marrow-response"),
        r.at,
        CAT_LAB,
        valueCodeableConcept=value,
        component=components,
    )
    p.observe(body)


def add_neuro_and_crs(p: PatientContext) -> None:
    """ICE score and ICANS grade Observations, and the physician's CRS grade."""
    for i, a in enumerate(p.rec.icans):
        if a.ice_score is not None:
            ice = obs(
                p.ids(f"icans/{i}/ice"),
                local("ice-score"),
                a.at,
                CAT_EXAM,
                valueInteger=a.ice_score,
            )
            p.observe(ice)
        grade = obs(
            p.ids(f"icans/{i}/grade"),
            local("icans-grade"),
            a.at,
            CAT_EXAM,
            valueInteger=a.grade,
        )
        p.observe(grade)
    crs = p.rec.recorded_crs
    if crs is not None:
        scale = CRS_SCALE_TEXT.get(crs.scale, crs.scale)
        body = obs(
            p.ids("crs-grade"),
            local("crs-grade-recorded"),
            crs.at,
            CAT_EXAM,
            valueInteger=crs.grade,
            method={"text": f"{scale} (physician)"},
        )
        p.observe(body)


def add_infections(p: PatientContext) -> None:
    """One CTCAE-graded Condition per documented infection."""
    for i, inf in enumerate(p.rec.infections):
        label = f"CTCAE grade {inf.ctcae_grade}"
        body: Json = {
            "resourceType": "Condition",
            "id": p.ids(f"infection/{i}"),
            "verificationStatus": VER_CONFIRMED,
            "category": CAT_ENC_DX,
            "severity": concept(CTCAE_GRADE_SYSTEM, str(inf.ctcae_grade), label, label),
            "code": {"text": f"{inf.organism} infection of {inf.site}"},
            "onsetDateTime": inf.onset_date,
        }
        p.add("Condition", body, p.refs)


def add_follow_up(p: PatientContext) -> None:
    """Last contact, progression and cause of death."""
    fu = p.rec.follow_up
    last = fu.last_contact_date
    p.observe(obs(p.ids("last-contact"), local("last-contact"), last, valueDateTime=last))
    if fu.progression_date is not None:
        body = obs(
            p.ids("progression"),
            local("disease-progression"),
            fu.progression_date,
            valueBoolean=True,
        )
        p.observe(body)
    if fu.death_cause is not None:
        body = obs(
            p.ids("death-cause"),
            loinc("cause-of-death"),
            fu.death_date,
            valueString=fu.death_cause,
        )
        p.observe(body)
