"""Tests of the MedicationAdministrations: drug doses and vasopressor infusions."""

from __future__ import annotations

from pathlib import Path

from tests.synth.fhir.records import load_bundle, resources


def test_drugs_and_vasopressors(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    meds = resources(raw, "MedicationAdministration")
    rx = {m["medicationCodeableConcept"]["coding"][0]["code"]: m for m in meds}
    assert set(rx) == {"612865", "3264", "8640", "6902", "68442", "7512", "11149", "3992"} | {
        "3628",
        "8163",
    }
    assert rx["612865"]["dosage"]["dose"]["code"] == "mg"
    assert rx["612865"]["dosage"]["route"]["coding"][0]["code"] == "47625008"
    assert rx["8640"]["dosage"]["route"]["coding"][0]["code"] == "26643006"
    assert rx["6902"]["dosage"]["route"]["coding"][0]["code"] == "72607000"
    assert rx["68442"]["dosage"]["dose"]["code"] == "ug"
    assert rx["68442"]["dosage"]["route"]["coding"][0]["code"] == "34206005"
    assert rx["7512"]["dosage"]["rateQuantity"]["code"] == "ug/kg/min"
    assert rx["11149"]["dosage"]["rateQuantity"]["code"] == "U/min"
    assert rx["11149"]["effectivePeriod"]["end"] == "2021-03-06T06:30:00+08:00"
    assert all(m["status"] == "completed" for m in meds)
