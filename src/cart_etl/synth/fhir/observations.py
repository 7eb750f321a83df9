"""Writes a patient's charted Observations: vital signs, oxygen support and laboratory results.

Vital signs are LOINC-coded Observations in UCUM units (an sbp and a dbp charted at the
same instant become one blood-pressure panel). Every ``OxygenCharting`` with a known flow
becomes an Observation (LOINC 3151-8, ``L/min``); every non-room-air charting also becomes
one Procedure (SNOMED 57485005 "Oxygen therapy", device in ``usedCode`` and code text)
whose ``performedPeriod`` runs from that charting to the next charting of the patient
(status ``completed``); the last charting has an open period (status ``in-progress``)
because the source never says when it stopped. Room-air chartings only close the previous
period. Consecutive chartings with the same device are not merged, keeping one Procedure
per source row for traceability; the flow Observation points at its Procedure through
``partOf``. Lab results are LOINC-coded Observations with the test's label as text.
"""

from __future__ import annotations

from datetime import datetime

from cart_etl.synth.defects.fhir import CAN_DROP_SUBJECT, CAN_MALFORM
from cart_etl.synth.fhir.codes import OXYGEN_THERAPY_SNOMED, SNOMED, UCUM
from cart_etl.synth.fhir.context import PatientContext, Ref
from cart_etl.synth.fhir.elements import (
    BP_PANEL_CC,
    CAT_LAB,
    CAT_VITAL,
    DEVICE_CC,
    LAB_CC,
    VITAL_CC,
    VITAL_UNIT,
    Json,
    concept,
    loinc,
    obs,
    qty,
)
from cart_etl.synth.vocab import LAB_UNITS


def add_vitals(p: PatientContext) -> None:
    """Vital-sign Observations; an sbp and dbp charted together become one BP panel."""
    # The hot loop (hundreds of rows per patient): Quantity dicts are inlined on purpose.
    vitals = p.rec.vitals
    pairs = p.pairs
    paired_dbp = set(pairs.values())
    ids, ctx, emit, cat, codes = p.ids, p.refs, p.emit, CAT_VITAL, VITAL_CC
    mmhg_unit, mmhg = VITAL_UNIT["sbp"]
    for i, v in enumerate(vitals):
        if i in paired_dbp:
            continue
        j = pairs.get(i)
        if j is None:
            rid = ids(f"vital/{i}")
            unit, ucum = VITAL_UNIT[v.item]
            body: Json = {
                "resourceType": "Observation",
                "id": rid,
                "status": "final",
                "category": cat,
                "code": codes[v.item],
                "effectiveDateTime": v.at,
                "valueQuantity": {"value": v.value, "unit": unit, "system": UCUM, "code": ucum},
            }
            flags = 0 if v.key else CAN_DROP_SUBJECT | CAN_MALFORM
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
                "code": BP_PANEL_CC,
                "effectiveDateTime": v.at,
                "component": [
                    {"code": codes["sbp"], "valueQuantity": sbp_q},
                    {"code": codes["dbp"], "valueQuantity": dbp_q},
                ],
            }
            flags = 0 if v.key or dbp.key else CAN_DROP_SUBJECT
        emit("Observation", rid, body, ctx, flags)


def add_oxygen(p: PatientContext) -> None:
    """Oxygen-therapy Procedures (one per non-room-air charting) and flow Observations."""
    charts = p.rec.oxygen
    order = sorted(range(len(charts)), key=lambda k: charts[k].at)
    for pos, i in enumerate(order):
        c = charts[i]
        nxt = charts[order[pos + 1]].at if pos + 1 < len(order) else None
        proc_ref: tuple[Ref, ...] = ()
        if c.device != "room_air":
            proc_id = p.ids(f"oxygen/{i}/device")
            p.add("Procedure", oxygen_procedure(proc_id, c.device, c.at, nxt), p.refs)
            proc_ref = (("partOf", "Procedure", proc_id, True),)
        if c.flow_l_min is not None:
            body = obs(
                p.ids(f"oxygen/{i}/flow"),
                loinc("o2-flow"),
                c.at,
                CAT_VITAL,
                valueQuantity=qty(c.flow_l_min, "L/min"),
            )
            p.observe(body, *proc_ref)


def oxygen_procedure(rid: str, device: str, start: datetime, end: datetime | None) -> Json:
    """Oxygen-therapy Procedure of one charted device, open while no later charting ends it."""
    device_cc = DEVICE_CC[device]
    code, display = OXYGEN_THERAPY_SNOMED
    period: Json = {"start": start}
    if end is not None:
        period["end"] = end
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": "completed" if end is not None else "in-progress",
        "code": concept(SNOMED, code, f"{display} via {device_cc['text']}", display),
        "performedPeriod": period,
        "usedCode": [device_cc],
    }


def add_labs(p: PatientContext) -> None:
    """Laboratory Observations, one per result."""
    ids, ctx, emit, cat = p.ids, p.refs, p.emit, CAT_LAB
    for i, lab in enumerate(p.rec.labs):
        rid = ids(f"lab/{i}")
        body: Json = {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "category": cat,
            "code": LAB_CC[lab.test],
            "effectiveDateTime": lab.at,
            "valueQuantity": qty(lab.value, LAB_UNITS[lab.test]),
        }
        flags = 0 if lab.key else CAN_DROP_SUBJECT | CAN_MALFORM
        emit("Observation", rid, body, ctx, flags)
