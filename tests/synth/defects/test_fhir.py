"""Tests of the FHIR defects: both kinds in both outputs, where planned, and nothing else."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from cart_etl.synth.defects.catalogue import DefectRecord
from cart_etl.synth.fhir.codes import UUID_NAMESPACE
from tests.synth.fhir.records import make_cohort, write_records

DEFECT_KINDS = {"fhir_malformed_resource", "fhir_missing_subject"}


@pytest.fixture(scope="module")
def defect_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[DefectRecord]]:
    root = tmp_path_factory.mktemp("defects")
    clean, dirty = root / "clean" / "fhir", root / "dirty" / "fhir"
    cohort = make_cohort(25)
    assert write_records(clean, cohort, defects=False, seed=5) == []
    return clean, dirty, write_records(dirty, cohort, defects=True, seed=5)


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
    cohort = {r.demographics.study_id: r for r in make_cohort(25)}
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
    records = write_records(tmp_path / "fhir", make_cohort(20), defects=True, seed=seed)
    assert {r.kind for r in records} == DEFECT_KINDS


def test_defects_depend_on_seed(tmp_path: Path) -> None:
    runs = [
        write_records(tmp_path / str(s) / "fhir", make_cohort(50), defects=True, seed=s)
        for s in (1, 2)
    ]
    assert runs[0] != runs[1]
    again = write_records(tmp_path / "again" / "fhir", make_cohort(50), defects=True, seed=1)
    assert again == runs[0]
