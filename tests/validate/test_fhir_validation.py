"""Acceptance (#4): `cart-etl validate --fhir` on the reference cohort's FHIR output."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cart_etl.cli import app
from cart_etl.pipeline import validate_fhir

EXPECTED = {
    "fast": {
        "fhir_malformed_resource": {"measurement.value.numeric"},
        "fhir_missing_subject": {"fhir.missing_subject"},
    },
    "strict": {
        "fhir_malformed_resource": {"fhir.invalid_resource"},
        "fhir_missing_subject": {"fhir.missing_subject"},
    },
}


def _bundle_defects(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "truth" / "defects.csv").open(encoding="utf-8") as fh:
        return [d for d in csv.DictReader(fh) if d["file"].startswith("fhir/bundles/")]


@pytest.fixture(scope="module")
def fast_ndjson(reference_cohort: Path):
    return validate_fhir(reference_cohort / "fhir" / "ndjson", mode="fast", expectations=False)


def test_01_fast_ndjson_catches_both_fhir_defects_and_loses_nothing(reference_cohort, fast_ndjson):
    outcome, report = fast_ndjson
    by_row = {(c.rule_id, c.row) for c in outcome.quarantined}
    defects = _bundle_defects(reference_cohort)
    assert {d["kind"] for d in defects} == {"fhir_malformed_resource", "fhir_missing_subject"}
    for d in defects:  # the bundle record names the resource id, the same resource as in NDJSON
        assert any((rule, d["row"]) in by_row for rule in EXPECTED["fast"][d["kind"]]), d
    assert len(outcome.quarantined) == len(defects)  # nothing else is rejected
    assert outcome.warnings == []
    assert all(
        f.unaccounted == 0 and f.rows_in == f.accepted + f.quarantined for f in outcome.files
    )
    assert report.exit_code == 1


def test_02_register_rows_are_coalesced_per_patient(fast_ndjson):
    outcome, _ = fast_ndjson
    patients = outcome.accepted["demographics"]
    assert patients.height == 61
    assert patients["study_id"].n_unique() == 61
    assert set(patients["sex"].unique()) <= {"M", "F"}
    assert outcome.accepted["infusion"].height == 60


def test_03_strict_mode_on_the_defective_bundles(reference_cohort, tmp_path):
    defects = _bundle_defects(reference_cohort)
    for name in {Path(d["file"]).name for d in defects}:
        shutil.copy(reference_cohort / "fhir" / "bundles" / name, tmp_path / name)
    outcome, _ = validate_fhir(tmp_path, mode="strict", expectations=False)
    by_row = {(c.rule_id, c.row) for c in outcome.quarantined}
    for d in defects:
        assert any((rule, d["row"]) in by_row for rule in EXPECTED["strict"][d["kind"]]), d


def test_04_clean_fhir_has_no_case(clean_cohort):
    outcome, report = validate_fhir(
        clean_cohort / "fhir" / "ndjson", mode="fast", expectations=False
    )
    assert outcome.quarantined == []
    assert outcome.warnings == []
    assert report.exit_code == 0


def test_05_cli_fhir_exit_codes(clean_cohort, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "validate",
            "--fhir",
            str(clean_cohort / "fhir" / "ndjson"),
            "--report",
            str(tmp_path),
            "--no-expectations",
        ],
    )
    assert ok.exit_code == 0, ok.output
    missing = runner.invoke(app, ["validate", "--fhir", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    bad_mode = runner.invoke(app, ["validate", "--fhir", str(tmp_path), "--fhir-mode", "lenient"])
    assert bad_mode.exit_code == 2
