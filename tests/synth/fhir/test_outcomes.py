"""Tests of the outcome resources: day-28 response, ICANS, CRS grade, follow-up, infections."""

from __future__ import annotations

from pathlib import Path

from tests.synth.fhir.records import coded, load_bundle, resources


def test_response_follow_up_and_grades(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    obs = resources(raw, "Observation")
    (response,) = coded(obs, "day28-marrow-response")
    assert response["valueCodeableConcept"]["coding"][0]["code"] == "NR"
    assert [c["valueQuantity"]["value"] for c in response["component"]] == [45.0, 12.5]
    assert coded(obs, "last-contact")[0]["effectiveDateTime"] == "2021-03-20"
    assert coded(obs, "disease-progression")[0]["effectiveDateTime"] == "2021-03-18"
    assert coded(obs, "69453-9")[0]["valueString"] == "CRS"
    assert [o["valueInteger"] for o in coded(obs, "icans-grade")] == [4, 3]
    assert [o["valueInteger"] for o in coded(obs, "ice-score")] == [3]  # None is not charted
    crs = coded(resources(load_bundle(clean_out, "CART-001"), "Observation"), "crs-grade-recorded")
    assert crs[0]["valueInteger"] == 3
    assert crs[0]["method"]["text"] == "ASTCT 2019 (physician)"


def test_infection_conditions(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    conditions = resources(raw, "Condition")
    (infection,) = [c for c in conditions if "coding" not in c["code"]]
    assert infection["code"]["text"] == "Candida albicans infection of blood"
    assert infection["severity"]["text"] == "CTCAE grade 4"
    assert infection["severity"]["coding"][0]["code"] == "4"
    assert infection["onsetDateTime"] == "2021-03-12"
