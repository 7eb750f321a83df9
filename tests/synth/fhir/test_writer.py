"""Tests of FhirWriter: file layout, R4B validity, references, ids, determinism."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from cart_etl.synth.fhir.codes import UUID_NAMESPACE
from cart_etl.synth.fhir.writer import FhirWriter
from cart_etl.synth.model import example_record
from tests.synth.fhir.records import (
    load_bundle,
    make_cohort,
    ndjson_files,
    references,
    resources,
    with_sid,
    write_records,
)


def test_layout(clean_out: Path) -> None:
    assert sorted(p.name for p in (clean_out / "bundles").iterdir()) == [
        "CART-001.json",
        "CART-002.json",
        "CART-003.json",
    ]
    assert {p.name for p in (clean_out / "ndjson").iterdir()} == {
        "Patient.ndjson",
        "Encounter.ndjson",
        "Condition.ndjson",
        "Observation.ndjson",
        "Procedure.ndjson",
        "MedicationAdministration.ndjson",
    }


@pytest.mark.parametrize("sid", ["CART-001", "CART-002", "CART-003"])
def test_bundle_validates_as_r4b_transaction(clean_out: Path, sid: str) -> None:
    raw = load_bundle(clean_out, sid)
    Bundle.model_validate(raw)
    assert raw["type"] == "transaction"
    for entry in raw["entry"]:
        res = entry["resource"]
        assert entry["fullUrl"] == f"urn:uuid:{res['id']}"
        assert entry["request"] == {"method": "POST", "url": res["resourceType"]}
        # Each resource also validates on its own (Bundle validation covers it, but the
        # error then names the entry, which helps when this fails).
        get_fhir_model_class(res["resourceType"]).model_validate(res)


@pytest.mark.parametrize("sid", ["CART-001", "CART-002", "CART-003"])
def test_bundle_references_resolve_to_full_urls(clean_out: Path, sid: str) -> None:
    raw = load_bundle(clean_out, sid)
    full_urls = {e["fullUrl"] for e in raw["entry"]}
    refs = list(references(raw))
    assert refs
    assert all(ref.startswith("urn:uuid:") for ref in refs)
    assert set(refs) <= full_urls
    patient_url = next(e["fullUrl"] for e in raw["entry"] if e["request"]["url"] == "Patient")
    for entry in raw["entry"]:
        res = entry["resource"]
        if res["resourceType"] not in ("Patient",):
            assert res["subject"]["reference"] == patient_url


def test_ndjson_lines_validate_and_resolve(clean_out: Path) -> None:
    files = ndjson_files(clean_out)
    ids = {rtype: {r["id"] for r in rows} for rtype, rows in files.items()}
    for rtype, rows in files.items():
        model = get_fhir_model_class(rtype)
        for row in rows:
            assert row["resourceType"] == rtype
            model.model_validate(row)
            for ref in references(row):
                target_type, target_id = ref.split("/")
                assert target_id in ids[target_type], ref
    # Same resources, same ids as the bundles.
    bundle_ids = {
        e["resource"]["id"]
        for sid in ("CART-001", "CART-002", "CART-003")
        for e in load_bundle(clean_out, sid)["entry"]
    }
    assert bundle_ids == set().union(*ids.values())


def test_ndjson_reuses_bundle_bytes_except_references(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    by_id = {r["id"]: r for rows in ndjson_files(clean_out).values() for r in rows}
    for entry in raw["entry"]:
        res = entry["resource"]
        line = by_id[res["id"]]
        strip = {"subject", "encounter", "context", "partOf"}
        assert {k: v for k, v in res.items() if k not in strip} == {
            k: v for k, v in line.items() if k not in strip
        }


def test_ids_are_uuid5_of_study_id(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-001")
    patient = resources(raw, "Patient")[0]
    assert patient["id"] == str(uuid.uuid5(UUID_NAMESPACE, "CART-001/Patient"))
    all_ids = [e["resource"]["id"] for e in raw["entry"]]
    assert len(all_ids) == len(set(all_ids))
    assert all(uuid.UUID(i).version == 5 for i in all_ids)


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "fhir", tmp_path / "b" / "fhir"
    write_records(a, make_cohort(6), defects=True, seed=3)
    write_records(b, make_cohort(6), defects=True, seed=3)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_rejects_unsafe_study_id_and_closed_writer(tmp_path: Path) -> None:
    writer = FhirWriter(tmp_path / "fhir", defects=False, seed=0)
    with pytest.raises(ValueError, match="safe file name"):
        writer.write(with_sid(example_record(), "../evil"))
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(example_record())
