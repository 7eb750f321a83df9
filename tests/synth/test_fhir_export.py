"""Tests for the FHIR R4B bundle / NDJSON writer of the synthetic cohort."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from cart_etl.synth.defects import DefectRecord
from cart_etl.synth.fhir_export import STUDY_ID_SYSTEM, UUID_NAMESPACE, FhirWriter
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

DEFECT_KINDS = {"fhir_malformed_resource", "fhir_missing_subject"}

# --- fixtures / helpers ------------------------------------------------------------------------


def _with_sid(rec: ClinicalRecord, sid: str) -> ClinicalRecord:
    return dataclasses.replace(
        rec, demographics=dataclasses.replace(rec.demographics, study_id=sid)
    )


def _sick_record() -> ClinicalRecord:
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


def _screen_failure() -> ClinicalRecord:
    """Never infused: no Encounter, only baseline and follow-up resources."""
    base = example_record()
    return ClinicalRecord(
        demographics=dataclasses.replace(base.demographics, study_id="CART-003"),
        infusion=None,
        follow_up=FollowUp(date(2021, 4, 1), None, None, None),
    )


def _records() -> list[ClinicalRecord]:
    return [example_record(), _sick_record(), _screen_failure()]


def _cohort(n: int) -> list[ClinicalRecord]:
    """n records with distinct study ids, cycling through the variants."""
    variants = _records()
    return [_with_sid(variants[i % len(variants)], f"CART-{i + 1:03d}") for i in range(n)]


def _write(
    out: Path, records: list[ClinicalRecord], *, defects: bool = False, seed: int = 11
) -> list[DefectRecord]:
    with FhirWriter(out, defects=defects, seed=seed) as writer:
        for rec in records:
            writer.write(rec)
    return writer.close()


def _load_bundle(out: Path, sid: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((out / "bundles" / f"{sid}.json").read_bytes())
    return data


def _ndjson(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        path.stem: [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for path in sorted((out / "ndjson").glob("*.ndjson"))
    }


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def _coded(resources: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [r for r in resources if any(c["code"] == code for c in r["code"].get("coding", []))]


@pytest.fixture(scope="module")
def clean_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "fhir"
    assert _write(out, _records()) == []
    return out


# --- structure and validity --------------------------------------------------------------------


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
    raw = _load_bundle(clean_out, sid)
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
    raw = _load_bundle(clean_out, sid)
    full_urls = {e["fullUrl"] for e in raw["entry"]}
    refs = list(_references(raw))
    assert refs
    assert all(ref.startswith("urn:uuid:") for ref in refs)
    assert set(refs) <= full_urls
    patient_url = next(e["fullUrl"] for e in raw["entry"] if e["request"]["url"] == "Patient")
    for entry in raw["entry"]:
        res = entry["resource"]
        if res["resourceType"] not in ("Patient",):
            assert res["subject"]["reference"] == patient_url


def test_ndjson_lines_validate_and_resolve(clean_out: Path) -> None:
    files = _ndjson(clean_out)
    ids = {rtype: {r["id"] for r in rows} for rtype, rows in files.items()}
    for rtype, rows in files.items():
        model = get_fhir_model_class(rtype)
        for row in rows:
            assert row["resourceType"] == rtype
            model.model_validate(row)
            for ref in _references(row):
                target_type, target_id = ref.split("/")
                assert target_id in ids[target_type], ref
    # Same resources, same ids as the bundles.
    bundle_ids = {
        e["resource"]["id"]
        for sid in ("CART-001", "CART-002", "CART-003")
        for e in _load_bundle(clean_out, sid)["entry"]
    }
    assert bundle_ids == set().union(*ids.values())


def test_ndjson_reuses_bundle_bytes_except_references(clean_out: Path) -> None:
    raw = _load_bundle(clean_out, "CART-002")
    by_id = {r["id"]: r for rows in _ndjson(clean_out).values() for r in rows}
    for entry in raw["entry"]:
        res = entry["resource"]
        line = by_id[res["id"]]
        strip = {"subject", "encounter", "context", "partOf"}
        assert {k: v for k, v in res.items() if k not in strip} == {
            k: v for k, v in line.items() if k not in strip
        }


def test_ids_are_uuid5_of_study_id(clean_out: Path) -> None:
    raw = _load_bundle(clean_out, "CART-001")
    patient = _resources(raw, "Patient")[0]
    assert patient["id"] == str(uuid.uuid5(UUID_NAMESPACE, "CART-001/Patient"))
    all_ids = [e["resource"]["id"] for e in raw["entry"]]
    assert len(all_ids) == len(set(all_ids))
    assert all(uuid.UUID(i).version == 5 for i in all_ids)


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "fhir", tmp_path / "b" / "fhir"
    _write(a, _cohort(6), defects=True, seed=3)
    _write(b, _cohort(6), defects=True, seed=3)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


# --- content -----------------------------------------------------------------------------------


def test_patient_and_encounter(clean_out: Path) -> None:
    raw = _load_bundle(clean_out, "CART-002")
    patient = _resources(raw, "Patient")[0]
    systems = {i["system"]: i["value"] for i in patient["identifier"]}
    assert systems[STUDY_ID_SYSTEM] == "CART-002"
    mrn = next(i for i in patient["identifier"] if i["system"] != STUDY_ID_SYSTEM)
    assert mrn["type"]["coding"][0]["code"] == "MR"
    assert patient["gender"] == "male"
    assert patient["deceasedDateTime"] == "2021-03-20"
    (enc,) = _resources(raw, "Encounter")
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
    raw = _load_bundle(clean_out, "CART-003")
    kinds = {e["resource"]["resourceType"] for e in raw["entry"]}
    assert kinds == {"Patient", "Condition", "Observation"}
    assert not any("encounter" in e["resource"] for e in raw["entry"])


def test_vital_signs(clean_out: Path) -> None:
    obs = _resources(_load_bundle(clean_out, "CART-002"), "Observation")
    panels = _coded(obs, "85354-9")
    assert len(panels) == 1  # sbp 95 / dbp 60, charted in reverse order
    comps = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in panels[0]["component"]}
    assert comps["8480-6"]["value"] == 95
    assert comps["8462-4"] == {
        "value": 60,
        "unit": "mmHg",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    }
    assert [o["valueQuantity"]["value"] for o in _coded(obs, "8462-4")] == [55]
    assert [o["valueQuantity"]["value"] for o in _coded(obs, "8480-6")] == [80]
    (temp,) = _coded(obs, "8310-5")
    assert temp["valueQuantity"]["code"] == "Cel"
    assert temp["status"] == "final"
    assert temp["category"][0]["coding"][0]["code"] == "vital-signs"
    assert temp["effectiveDateTime"] == "2021-03-05T16:30:00+08:00"
    (hr,) = _coded(obs, "8867-4")
    assert hr["valueQuantity"]["code"] == "/min"
    assert hr["effectiveDateTime"].endswith("+08:00")
    assert _coded(obs, "59408-5")[0]["valueQuantity"]["code"] == "%"


def test_oxygen_periods_follow_charting_time(clean_out: Path) -> None:
    raw = _load_bundle(clean_out, "CART-002")
    procs = _oxygen_procedures(raw)
    assert len(procs) == 8  # one per non-room-air charting
    procs.sort(key=lambda p: p["performedPeriod"]["start"])
    for prev, nxt in pairwise(procs):
        assert prev["performedPeriod"]["end"] == nxt["performedPeriod"]["start"]
        assert prev["status"] == "completed"
    # The last device is closed by the room-air charting one hour later.
    assert procs[-1]["performedPeriod"]["end"] == "2021-03-06T04:30:00+08:00"
    devices = [p["usedCode"][0]["coding"][0]["code"] for p in procs]
    assert devices[0] == "nasal-cannula"
    assert devices[-1] == "mechanical-ventilation"
    flows = _coded(_resources(raw, "Observation"), "3151-8")
    assert len(flows) == 8
    proc_urls = {f"urn:uuid:{p['id']}" for p in procs}
    assert all(f["partOf"][0]["reference"] in proc_urls for f in flows)
    assert all(f["valueQuantity"]["code"] == "L/min" for f in flows)


def _oxygen_procedures(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    procs = _resources(bundle, "Procedure")
    return [p for p in procs if p["code"]["coding"][0]["code"] == "57485005"]


def test_last_oxygen_device_without_successor_is_in_progress(tmp_path: Path) -> None:
    rec = example_record()
    closed = _oxygen_procedures(_load_bundle(_out_of(tmp_path / "a", rec), "CART-001"))
    assert [p["status"] for p in closed] == ["completed", "completed"]  # room air closes it
    rec.oxygen = rec.oxygen[:-1]
    still_on = _oxygen_procedures(_load_bundle(_out_of(tmp_path / "b", rec), "CART-001"))
    assert [p["status"] for p in still_on] == ["completed", "in-progress"]
    assert "end" not in still_on[-1]["performedPeriod"]


def _out_of(root: Path, rec: ClinicalRecord) -> Path:
    out = root / "fhir"
    _write(out, [rec])
    return out


def test_labs_drugs_and_vasopressors(clean_out: Path) -> None:
    raw = _load_bundle(clean_out, "CART-002")
    obs = _resources(raw, "Observation")
    expected = {
        "26881-3": "pg/mL",
        "26848-2": "pg/mL",
        "33209-6": "U/mL",
        "3074-2": "pg/mL",
        "27415-9": "pg/mL",
        "1988-5": "mg/L",
        "2276-4": "ng/mL",
        "6690-2": "10*9/L",
        "751-8": "10*9/L",
        "777-3": "10*9/L",
        "718-7": "g/L",
        "11118-7": "%",
    }
    for code, unit in expected.items():
        labs = [
            o for o in _coded(obs, code) if o["category"][0]["coding"][0]["code"] == "laboratory"
        ]
        assert labs, code
        assert all(o["valueQuantity"]["code"] == unit for o in labs)
    meds = _resources(raw, "MedicationAdministration")
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


def test_infusion_response_follow_up_and_grades(clean_out: Path) -> None:
    raw = _load_bundle(clean_out, "CART-002")
    obs = _resources(raw, "Observation")
    (infusion,) = [
        p for p in _resources(raw, "Procedure") if p["code"]["coding"][0]["code"] == "cart-infusion"
    ]
    assert infusion["performedDateTime"] == "2021-03-05T10:30:00+08:00"
    assert "LOT-21-0305" in infusion["note"][0]["text"]
    (dose,) = _coded(obs, "cart-dose-per-kg")
    assert dose["valueQuantity"]["code"] == "10*6/kg"
    assert dose["partOf"][0]["reference"] == f"urn:uuid:{infusion['id']}"
    (cells,) = _coded(obs, "cart-cells-total")
    assert cells["valueQuantity"] == {
        "value": 8.7e7,
        "unit": "cells",
        "system": "http://unitsofmeasure.org",
        "code": "{cells}",
    }
    weights = _coded(obs, "29463-7")
    assert [w["valueQuantity"]["code"] for w in weights] == ["kg", "kg"]  # screening + infusion
    (response,) = _coded(obs, "day28-marrow-response")
    assert response["valueCodeableConcept"]["coding"][0]["code"] == "NR"
    assert [c["valueQuantity"]["value"] for c in response["component"]] == [45.0, 12.5]
    assert _coded(obs, "last-contact")[0]["effectiveDateTime"] == "2021-03-20"
    assert _coded(obs, "disease-progression")[0]["effectiveDateTime"] == "2021-03-18"
    assert _coded(obs, "69453-9")[0]["valueString"] == "CRS"
    assert [o["valueInteger"] for o in _coded(obs, "icans-grade")] == [4, 3]
    assert [o["valueInteger"] for o in _coded(obs, "ice-score")] == [3]  # None is not charted
    crs = _coded(
        _resources(_load_bundle(clean_out, "CART-001"), "Observation"), "crs-grade-recorded"
    )
    assert crs[0]["valueInteger"] == 3
    assert crs[0]["method"]["text"] == "ASTCT 2019 (physician)"
    assert _coded(obs, "prior-allo-sct")[0]["valueBoolean"] is True
    assert _coded(obs, "lines-of-therapy")[0]["valueInteger"] == 2


def test_conditions(clean_out: Path) -> None:
    raw = _load_bundle(clean_out, "CART-002")
    conditions = _resources(raw, "Condition")
    (dx,) = _coded(conditions, "91857003")
    assert {c["code"] for c in dx["code"]["coding"]} == {"91857003", "C91.0"}
    assert dx["onsetDateTime"] == "2019-11-20"
    assert dx["clinicalStatus"]["coding"][0]["code"] == "active"  # NR, then progression
    (infection,) = [c for c in conditions if "coding" not in c["code"]]
    assert infection["code"]["text"] == "Candida albicans infection of blood"
    assert infection["severity"]["text"] == "CTCAE grade 4"
    assert infection["severity"]["coding"][0]["code"] == "4"
    assert infection["onsetDateTime"] == "2021-03-12"
    first = _coded(_resources(_load_bundle(clean_out, "CART-001"), "Condition"), "91857003")
    assert first[0]["clinicalStatus"]["coding"][0]["code"] == "remission"


def test_rejects_unsafe_study_id_and_closed_writer(tmp_path: Path) -> None:
    writer = FhirWriter(tmp_path / "fhir", defects=False, seed=0)
    with pytest.raises(ValueError, match="safe file name"):
        writer.write(_with_sid(example_record(), "../evil"))
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(example_record())


# --- defects -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defect_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[DefectRecord]]:
    root = tmp_path_factory.mktemp("defects")
    clean, dirty = root / "clean" / "fhir", root / "dirty" / "fhir"
    cohort = _cohort(25)
    assert _write(clean, cohort, defects=False, seed=5) == []
    return clean, dirty, _write(dirty, cohort, defects=True, seed=5)


def _line(out: Path, rec: DefectRecord) -> dict[str, Any]:
    assert rec.row.startswith("line ")
    lines = (out.parent / rec.file).read_bytes().splitlines()
    data: dict[str, Any] = orjson.loads(lines[int(rec.row.split()[1]) - 1])
    return data


def _entry(out: Path, rec: DefectRecord) -> dict[str, Any]:
    raw = orjson.loads((out.parent / rec.file).read_bytes())
    (res,) = [e["resource"] for e in raw["entry"] if e["resource"]["id"] == rec.row]
    data: dict[str, Any] = res
    return data


def test_defect_records_cover_both_kinds_and_both_files(
    defect_run: tuple[Path, Path, list[DefectRecord]],
) -> None:
    _, _, records = defect_run
    assert {r.kind for r in records} == DEFECT_KINDS
    for kind in DEFECT_KINDS:
        recs = [r for r in records if r.kind == kind]
        bundle_recs = [r for r in recs if r.file.startswith("fhir/bundles/")]
        ndjson_recs = [r for r in recs if r.file == "fhir/ndjson/Observation.ndjson"]
        assert len(bundle_recs) == len(ndjson_recs) >= 1
        assert len(recs) == 2 * len(bundle_recs)
        for b in bundle_recs:
            assert b.file == f"fhir/bundles/{b.study_id}.json"


def test_malformed_resource_fails_r4b_validation(
    defect_run: tuple[Path, Path, list[DefectRecord]],
) -> None:
    _, dirty, records = defect_run
    Observation = get_fhir_model_class("Observation")
    malformed = [r for r in records if r.kind == "fhir_malformed_resource"]
    for rec in malformed:
        res = _entry(dirty, rec) if rec.file.startswith("fhir/bundles/") else _line(dirty, rec)
        assert rec.field == "Observation.valueQuantity.value"
        assert res["valueQuantity"]["value"] == rec.injected_value
        assert "," in rec.injected_value
        assert float(rec.original_value) == float(rec.injected_value.replace(",", "."))
        with pytest.raises(ValidationError):
            Observation.model_validate(res)
    for rec in malformed:
        if rec.file.startswith("fhir/bundles/"):
            with pytest.raises(ValidationError):
                Bundle.model_validate(orjson.loads((dirty.parent / rec.file).read_bytes()))


def test_missing_subject_is_absent_in_bundle_and_ndjson(
    defect_run: tuple[Path, Path, list[DefectRecord]],
) -> None:
    _, dirty, records = defect_run
    for rec in (r for r in records if r.kind == "fhir_missing_subject"):
        in_bundle = rec.file.startswith("fhir/bundles/")
        res = _entry(dirty, rec) if in_bundle else _line(dirty, rec)
        assert rec.field == "Observation.subject"
        assert "subject" not in res
        assert rec.injected_value == ""
        prefix = "urn:uuid:" if in_bundle else "Patient/"
        assert rec.original_value.startswith(prefix)
        # Still valid FHIR: subject is optional, the defect is semantic.
        get_fhir_model_class("Observation").model_validate(res)


def test_defects_hit_only_non_key_observations(
    defect_run: tuple[Path, Path, list[DefectRecord]],
) -> None:
    _, _, records = defect_run
    cohort = {r.demographics.study_id: r for r in _cohort(25)}
    for rec in records:
        if not rec.file.startswith("fhir/bundles/"):
            continue
        patient = cohort[rec.study_id]
        key_ids = {
            str(uuid.uuid5(UUID_NAMESPACE, f"{rec.study_id}/vital/{i}"))
            for i, v in enumerate(patient.vitals)
            if v.key
        } | {
            str(uuid.uuid5(UUID_NAMESPACE, f"{rec.study_id}/lab/{i}"))
            for i, lab in enumerate(patient.labs)
            if lab.key
        }
        assert rec.row not in key_ids


def test_defects_change_nothing_else(defect_run: tuple[Path, Path, list[DefectRecord]]) -> None:
    clean, dirty, records = defect_run
    damaged_lines = {(r.file, r.row) for r in records if r.row.startswith("line ")}
    damaged_ids = {r.row for r in records if not r.row.startswith("line ")}
    for path in sorted(clean.rglob("*.ndjson")):
        rel = f"fhir/{path.relative_to(clean)}"
        a = path.read_bytes().splitlines()
        b = (dirty / path.relative_to(clean)).read_bytes().splitlines()
        assert len(a) == len(b)
        differing = {
            (rel, f"line {n}") for n, (x, y) in enumerate(zip(a, b, strict=True), 1) if x != y
        }
        assert differing == {d for d in damaged_lines if d[0] == rel}
    for path in sorted((clean / "bundles").iterdir()):
        a_entries = orjson.loads(path.read_bytes())["entry"]
        b_entries = orjson.loads((dirty / "bundles" / path.name).read_bytes())["entry"]
        for x, y in zip(a_entries, b_entries, strict=True):
            assert (x == y) == (x["resource"]["id"] not in damaged_ids)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_twenty_patients_get_every_defect_kind(tmp_path: Path, seed: int) -> None:
    records = _write(tmp_path / "fhir", _cohort(20), defects=True, seed=seed)
    assert {r.kind for r in records} == DEFECT_KINDS


def test_defects_depend_on_seed(tmp_path: Path) -> None:
    runs = [_write(tmp_path / str(s) / "fhir", _cohort(50), defects=True, seed=s) for s in (1, 2)]
    assert runs[0] != runs[1]
    again = _write(tmp_path / "again" / "fhir", _cohort(50), defects=True, seed=1)
    assert again == runs[0]
