"""Hand-made records for the FHIR writer tests, and readers of the bundles and NDJSON.

``example_records()`` are ``example_record()``, a dead and progressed patient exercising
every device, lab, drug, route and vasopressor (CART-002), and a screen failure never
infused (CART-003); ``make_cohort(n)`` cycles through them with distinct study ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cart_etl.synth.defects.catalogue import DefectRecord
from cart_etl.synth.fhir.writer import FhirWriter
from cart_etl.synth.model import (
    SITE_TZ,
    ClinicalRecord,
    DrugAdministration,
    FollowUp,
    IcansAssessment,
    Infection,
    LabResult,
    LabTest,
    OxygenCharting,
    OxygenDevice,
    ResponseAssessment,
    VasopressorInfusion,
    VitalSign,
    example_record,
)


def with_sid(rec: ClinicalRecord, sid: str) -> ClinicalRecord:
    return dataclasses.replace(
        rec, demographics=dataclasses.replace(rec.demographics, study_id=sid)
    )


def sick_record() -> ClinicalRecord:
    """Dead, progressed patient exercising every device, lab, drug, route and vasopressor."""
    base = example_record()
    t0 = base.infusion.at if base.infusion else datetime(2021, 3, 5, tzinfo=SITE_TZ)
    h = timedelta(hours=1)
    devices: list[OxygenDevice] = [
        "nasal_cannula",
        "high_flow_nasal_cannula",
        "face_mask",
        "non_rebreather",
        "venturi",
        "cpap",
        "bipap",
        "mechanical_ventilation",
        "room_air",
    ]
    labs: list[LabTest] = ["il6", "il10", "sil2r", "tnf_alpha", "ifn_gamma", "crp", "ferritin"]
    labs += ["wbc", "anc", "plt", "hgb", "marrow_blasts"]
    return dataclasses.replace(
        base,
        demographics=dataclasses.replace(
            base.demographics, study_id="CART-002", sex="M", prior_allo_sct=True
        ),
        follow_up=FollowUp(date(2021, 3, 20), date(2021, 3, 18), date(2021, 3, 20), "CRS"),
        vitals=[
            # dbp listed before its sbp, a lone dbp, a lone sbp and microseconds.
            VitalSign(t0 + h, "dbp", 60),
            VitalSign(t0 + h, "sbp", 95),
            VitalSign(t0 + 2 * h, "dbp", 55),
            VitalSign(t0 + 3 * h, "sbp", 80, key=True),
            VitalSign(t0 + 4 * h + timedelta(microseconds=250), "hr", 131.0),
            VitalSign(t0 + 5 * h, "spo2", 88.5),
            VitalSign(t0 + 6 * h, "temp", 40.1, key=True),
        ],
        oxygen=[
            # Deliberately unsorted, so periods must follow time, not list order.
            OxygenCharting(t0 + (10 + k) * h, dev, None if dev == "room_air" else 2.0 + k)
            for k, dev in reversed(list(enumerate(devices)))
        ],
        labs=[LabResult(t0 + 2 * h, test, 10.0 + k) for k, test in enumerate(labs)],
        drugs=[
            DrugAdministration(t0 + 3 * h, "tocilizumab", 640.0, "IV", "CRS", key=True),
            DrugAdministration(t0 + 4 * h, "dexamethasone", 10.0, "IV", "ICANS"),
            DrugAdministration(t0 + 5 * h, "prednisone", 60.0, "PO", "CRS"),
            DrugAdministration(t0 + 6 * h, "methylprednisolone", 50.0, "IT", "CNS prophylaxis"),
            DrugAdministration(t0 + 7 * h, "gcsf", 300.0, "SC", "neutropenia"),
        ],
        vasopressors=[
            VasopressorInfusion(t0 + 8 * h, t0 + 20 * h, "norepinephrine", 0.3, "ug/kg/min"),
            VasopressorInfusion(t0 + 9 * h, t0 + 20 * h, "vasopressin", 0.03, "U/min"),
            VasopressorInfusion(t0 + 9 * h, t0 + 10 * h, "epinephrine", 0.05, "ug/kg/min"),
            VasopressorInfusion(t0 + 9 * h, t0 + 10 * h, "dopamine", 5.0, "ug/kg/min"),
            VasopressorInfusion(t0 + 9 * h, t0 + 10 * h, "phenylephrine", 1.0, "ug/kg/min"),
        ],
        response=ResponseAssessment(t0 + 10 * 24 * h, "NR", 45.0, 12.5),
        infections=[Infection(date(2021, 3, 12), "blood", "Candida albicans", 4)],
        icans=[IcansAssessment(t0 + 50 * h, None, 4), IcansAssessment(t0 + 60 * h, 3, 3)],
    )


def screen_failure() -> ClinicalRecord:
    """Never infused: no Encounter, only baseline and follow-up resources."""
    base = example_record()
    return ClinicalRecord(
        demographics=dataclasses.replace(base.demographics, study_id="CART-003"),
        infusion=None,
        follow_up=FollowUp(date(2021, 4, 1), None, None, None),
    )


def example_records() -> list[ClinicalRecord]:
    return [example_record(), sick_record(), screen_failure()]


def make_cohort(n: int) -> list[ClinicalRecord]:
    """n records with distinct study ids, cycling through the variants."""
    variants = example_records()
    return [with_sid(variants[i % len(variants)], f"CART-{i + 1:03d}") for i in range(n)]


def write_records(
    out: Path, records: list[ClinicalRecord], *, defects: bool = False, seed: int = 11
) -> list[DefectRecord]:
    with FhirWriter(out, defects=defects, seed=seed) as writer:
        for rec in records:
            writer.write(rec)
    return writer.close()


def load_bundle(out: Path, sid: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((out / "bundles" / f"{sid}.json").read_bytes())
    return data


def ndjson_files(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        path.stem: [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for path in sorted((out / "ndjson").glob("*.ndjson"))
    }


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def coded(resources: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [r for r in resources if any(c["code"] == code for c in r["code"].get("coding", []))]
