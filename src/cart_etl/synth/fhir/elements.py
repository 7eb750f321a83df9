"""Small JSON builders of the FHIR output: Coding, CodeableConcept, Quantity, Observation.

Resources are plain dicts dumped with orjson, never fhir.resources models: building
pydantic models for millions of vital signs would dominate the run time. Constant members
(categories, verification status, the concepts of every vital sign, lab test, drug, route
and oxygen device) are serialized once into ``orjson.Fragment`` objects, which orjson then
copies as bytes instead of walking dicts.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Final

import orjson

from cart_etl.synth.fhir.codes import (
    CONDITION_CATEGORY,
    CONDITION_VERIFICATION,
    DRUG_RXNORM,
    LAB_LOINC,
    LOCAL_CODES,
    LOCAL_SYSTEM,
    LOINC,
    LOINC_CODES,
    OBSERVATION_CATEGORY,
    OXYGEN_DEVICES,
    ROUTE_SNOMED,
    RXNORM,
    SNOMED,
    UCUM,
    UNIT_DISPLAY,
    VITAL_LOINC,
)
from cart_etl.synth.vocab import VITAL_UNITS

Json = dict[str, Any]

DUMP_OPTS: Final = orjson.OPT_SERIALIZE_NUMPY  # every resource is dumped with these


def coding(system: str, code: str, display: str | None = None) -> Json:
    """Build a Coding, leaving out an unknown display."""
    out: Json = {"system": system, "code": code}
    if display is not None:
        out["display"] = display
    return out


def concept(system: str, code: str, text: str, display: str | None = None) -> Json:
    """Build a single-coding CodeableConcept with a human-readable text."""
    return {"coding": [coding(system, code, display)], "text": text}


def local(code: str) -> Json:
    """CodeableConcept for a code of the local CodeSystem."""
    display = LOCAL_CODES[code]
    return concept(LOCAL_SYSTEM, code, display, display)


def loinc(key: str) -> Json:
    """CodeableConcept for an entry of LOINC_CODES."""
    code, display = LOINC_CODES[key]
    return concept(LOINC, code, display, display)


def category(system: str, code: str, display: str) -> list[Json]:
    """A one-element category list, as Observation and Condition expect."""
    return [{"coding": [coding(system, code, display)]}]


def qty(value: float, ucum: str) -> Json:
    """UCUM Quantity; values pass through unrounded so the truth stays exact."""
    return {"value": value, "unit": UNIT_DISPLAY.get(ucum, ucum), "system": UCUM, "code": ucum}


def frag(obj: Any) -> orjson.Fragment:
    """Pre-serialized JSON, spliced verbatim by orjson.dumps."""
    return orjson.Fragment(orjson.dumps(obj))


# Constant members pre-serialized once: orjson then copies bytes instead of walking dicts.
CAT_VITAL: Final = frag(category(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs"))
CAT_LAB: Final = frag(category(OBSERVATION_CATEGORY, "laboratory", "Laboratory"))
CAT_EXAM: Final = frag(category(OBSERVATION_CATEGORY, "exam", "Exam"))
CAT_PROCEDURE: Final = frag(category(OBSERVATION_CATEGORY, "procedure", "Procedure"))
CAT_PROBLEM: Final = frag(category(CONDITION_CATEGORY, "problem-list-item", "Problem List Item"))
CAT_ENC_DX: Final = frag(category(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis"))
VER_CONFIRMED: Final = frag(concept(CONDITION_VERIFICATION, "confirmed", "Confirmed", "Confirmed"))
BP_PANEL_CC: Final = frag(loinc("bp-panel"))
VITAL_CC: Final = {k: frag(concept(LOINC, c, d, d)) for k, (c, d) in VITAL_LOINC.items()}
LAB_CC: Final = {k: frag(concept(LOINC, c, t)) for k, (c, t) in LAB_LOINC.items()}
DRUG_CC: Final = {k: frag(concept(RXNORM, c, d, d)) for k, (c, d) in DRUG_RXNORM.items()}
ROUTE_CC: Final = {k: frag(concept(SNOMED, c, d, d)) for k, (c, d) in ROUTE_SNOMED.items()}
DEVICE_CC: Final = {k: concept(LOCAL_SYSTEM, c, d, d) for k, (c, d) in OXYGEN_DEVICES.items()}
# Vital item -> (Quantity.unit, UCUM code), looked up once per vital sign.
VITAL_UNIT: Final = {k: (UNIT_DISPLAY.get(u, u), u) for k, u in VITAL_UNITS.items()}


def obs(
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
