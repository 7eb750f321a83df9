"""Tests of the register resources: Patient, Encounter, diagnosis and the infusion."""

from __future__ import annotations

from pathlib import Path

from cart_etl.synth.fhir.codes import STUDY_ID_SYSTEM
from tests.synth.fhir.records import coded, load_bundle, resources


def test_patient_and_encounter(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    patient = resources(raw, "Patient")[0]
    systems = {i["system"]: i["value"] for i in patient["identifier"]}
    assert systems[STUDY_ID_SYSTEM] == "CART-002"
    mrn = next(i for i in patient["identifier"] if i["system"] != STUDY_ID_SYSTEM)
    assert mrn["type"]["coding"][0]["code"] == "MR"
    assert patient["gender"] == "male"
    assert patient["deceasedDateTime"] == "2021-03-20"
    (enc,) = resources(raw, "Encounter")
    assert enc["class"]["code"] == "IMP"
    assert enc["status"] == "finished"
    # Died on 2021-03-20, before infusion + 21 d: discharge is the date of death.
    assert enc["period"] == {"start": "2021-03-02T10:30:00+08:00", "end": "2021-03-20"}
    enc_url = f"urn:uuid:{enc['id']}"
    for entry in raw["entry"]:
        res = entry["resource"]
        if res["resourceType"] in ("Observation", "Condition", "Procedure"):
            assert res["encounter"]["reference"] == enc_url
        elif res["resourceType"] == "MedicationAdministration":
            assert res["context"]["reference"] == enc_url


def test_screen_failure_has_no_encounter(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-003")
    kinds = {e["resource"]["resourceType"] for e in raw["entry"]}
    assert kinds == {"Patient", "Condition", "Observation"}
    assert not any("encounter" in e["resource"] for e in raw["entry"])


def test_infusion_and_register_observations(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    obs = resources(raw, "Observation")
    (infusion,) = [
        p for p in resources(raw, "Procedure") if p["code"]["coding"][0]["code"] == "cart-infusion"
    ]
    assert infusion["performedDateTime"] == "2021-03-05T10:30:00+08:00"
    assert "LOT-21-0305" in infusion["note"][0]["text"]
    (dose,) = coded(obs, "cart-dose-per-kg")
    assert dose["valueQuantity"]["code"] == "10*6/kg"
    assert dose["partOf"][0]["reference"] == f"urn:uuid:{infusion['id']}"
    (cells,) = coded(obs, "cart-cells-total")
    assert cells["valueQuantity"] == {
        "value": 8.7e7,
        "unit": "cells",
        "system": "http://unitsofmeasure.org",
        "code": "{cells}",
    }
    weights = coded(obs, "29463-7")
    assert [w["valueQuantity"]["code"] for w in weights] == ["kg", "kg"]  # screening + infusion
    assert coded(obs, "prior-allo-sct")[0]["valueBoolean"] is True
    assert coded(obs, "lines-of-therapy")[0]["valueInteger"] == 2


def test_diagnosis_condition(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    conditions = resources(raw, "Condition")
    (dx,) = coded(conditions, "91857003")
    assert {c["code"] for c in dx["code"]["coding"]} == {"91857003", "C91.0"}
    assert dx["onsetDateTime"] == "2019-11-20"
    assert dx["clinicalStatus"]["coding"][0]["code"] == "active"  # NR, then progression
    first = coded(resources(load_bundle(clean_out, "CART-001"), "Condition"), "91857003")
    assert first[0]["clinicalStatus"]["coding"][0]["code"] == "remission"
