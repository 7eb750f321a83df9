"""Acceptance (#4): validation of the generated reference export catches every injected defect."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cart_etl.cli import app
from cart_etl.extract.readers.sql import load_site_export_into_sqlite
from cart_etl.extract.site.parse import load_site_mapping
from cart_etl.pipeline import validate_site
from cart_etl.validate.report import write_report

REPO = Path(__file__).resolve().parents[2]
# The rule a correct validator must fire for each defect kind of cart_etl.synth.defects.
EXPECTED_RULES: dict[str, set[str]] = {
    "excel_serial_date": {"date.excel_serial"},
    "mixed_date_format": {"date.alternate_format"},
    "timezone_less": {"date.timezone_assumed"},
    "future_date": {"measurement.at.future", "date.future"},
    "fahrenheit_temperature": {"unit.converted"},
    "dose_unit_g": {"unit.converted"},
    "dose_unit_mg_per_kg": {"drug.dose.per_kg"},
    "crp_mg_dl": {"unit.converted"},
    "decimal_comma": {"number.decimal_comma"},
    "missing_unit": {"unit.inferred"},
    "impossible_value": {"measurement.value.hard_range"},
    "duplicated_row": {"row.duplicate"},
    "mrn_typo": {"row.patient.known"},
    "trailing_space": {"text.normalised"},
    "fullwidth_chars": {"text.normalised"},
}


@pytest.fixture(scope="module")
def defective(reference_cohort: Path):
    return validate_site(reference_cohort / "site_export", "tianjin_ref", expectations=False)


@pytest.fixture(scope="module")
def clean(clean_cohort: Path):
    return validate_site(clean_cohort / "site_export", "tianjin_ref", expectations=True)


def _site_defects(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "truth" / "defects.csv").open(encoding="utf-8") as fh:
        return [d for d in csv.DictReader(fh) if d["file"].startswith("site_export/")]


def test_01_every_defect_caught_by_its_rule(reference_cohort, defective):
    outcome, _ = defective
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for case in outcome.quarantined + outcome.warnings:
        found[(case.file, case.row)].add(case.rule_id)
    missed = [
        (d["kind"], d["file"], d["row"], d["injected_value"])
        for d in _site_defects(reference_cohort)
        if not found[(d["file"].removeprefix("site_export/"), d["row"])] & EXPECTED_RULES[d["kind"]]
    ]
    assert missed == []
    kinds = Counter(d["kind"] for d in _site_defects(reference_cohort))
    assert len(kinds) >= 15


def test_02_no_case_without_a_defect(reference_cohort, defective):
    outcome, _ = defective
    defect_rows = {
        (d["file"].removeprefix("site_export/"), d["row"]) for d in _site_defects(reference_cohort)
    }
    stray = [
        c.message
        for c in outcome.quarantined + outcome.warnings
        if (c.file, c.row) not in defect_rows
    ]
    assert stray == []


def test_03_clean_export_has_no_case_no_warning_and_passes_expectations(clean):
    outcome, report = clean
    assert outcome.quarantined == []
    assert outcome.warnings == []
    assert report.expectations
    assert all(e["success"] for e in report.expectations)
    assert report.exit_code == 0


def test_04_nothing_lost_rows_in_equals_accepted_plus_quarantined(defective):
    outcome, _ = defective
    for f in outcome.files:
        assert f.rows_in == f.accepted + f.quarantined, f
    assert sum(f.quarantined for f in outcome.files) > 0


def test_05_sql_delivery_gives_the_same_result(reference_cohort, defective, tmp_path):
    mapping = load_site_mapping("tianjin_ref", REPO / "mappings")
    db = tmp_path / "site.sqlite"
    load_site_export_into_sqlite(reference_cohort / "site_export", mapping, db)
    outcome_sql, _ = validate_site(f"sqlite:///{db}", "tianjin_ref", expectations=False)
    outcome_files, _ = defective
    assert Counter(c.rule_id for c in outcome_sql.quarantined) == Counter(
        c.rule_id for c in outcome_files.quarantined
    )
    assert Counter(c.rule_id for c in outcome_sql.warnings) == Counter(
        c.rule_id for c in outcome_files.warnings
    )
    assert sum(f.accepted for f in outcome_sql.files) == sum(
        f.accepted for f in outcome_files.files
    )


def test_06_report_files_summary_first_then_rules(defective, tmp_path):
    _, report = defective
    html_path, json_path = write_report(report, tmp_path)
    text = html_path.read_text(encoding="utf-8")
    assert text.index("Summary") < text.index("What to fix, by rule") < text.index("Files")
    assert "row.duplicate" in text and "Fix:" in text
    assert json_path.stat().st_size > 0
    assert report.exit_code == 1


def test_07_cli_exit_codes(reference_cohort, clean_cohort, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "validate",
            str(clean_cohort / "site_export"),
            "--site",
            "tianjin_ref",
            "--report",
            str(tmp_path / "a"),
            "--no-expectations",
        ],
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        app,
        [
            "validate",
            str(reference_cohort / "site_export"),
            "--site",
            "tianjin_ref",
            "--report",
            str(tmp_path / "b"),
            "--no-expectations",
        ],
    )
    assert bad.exit_code == 1
    assert (tmp_path / "b" / "validation.html").exists()
    unknown = runner.invoke(
        app, ["validate", str(clean_cohort / "site_export"), "--site", "nosuch"]
    )
    assert unknown.exit_code == 2
    missing = runner.invoke(app, ["validate", str(tmp_path / "nothing"), "--site", "tianjin_ref"])
    assert missing.exit_code == 2


def test_08_partitioned_by_patient_gives_the_same_cases(reference_cohort, defective, monkeypatch):
    """Spilling to patient buckets (memory-flat path for registries) changes nothing."""
    from cart_etl.validate import partition

    monkeypatch.setattr(partition, "BUCKET_ROWS", 15_000)  # ~6 buckets for the 61-patient export
    outcome_parts, _ = validate_site(
        reference_cohort / "site_export", "tianjin_ref", expectations=False
    )
    outcome_one, _ = defective
    key = lambda c: (c.file, c.row, c.rule_id, c.field)  # noqa: E731
    assert sorted(map(key, outcome_parts.quarantined)) == sorted(map(key, outcome_one.quarantined))
    assert sorted(map(key, outcome_parts.warnings)) == sorted(map(key, outcome_one.warnings))
    assert [(f.file, f.rows_in, f.accepted, f.quarantined) for f in outcome_parts.files] == [
        (f.file, f.rows_in, f.accepted, f.quarantined) for f in outcome_one.files
    ]


def test_09_study_window_quarantines_infusions_outside_it(clean_cohort, tmp_path):
    """The reference cohort enrols 2020-04 to 2023-10 (Methods 2.1); a 2021-only window rejects the rest."""
    outcome, _ = validate_site(
        clean_cohort / "site_export",
        "tianjin_ref",
        expectations=False,
        study_window=(date(2021, 1, 1), date(2021, 12, 31)),
    )
    rules = Counter(c.rule_id for c in outcome.quarantined)
    # Day-28 assessments and drugs of those patients lose their day 0, so response.window
    # and drug.no_infusion follow.
    assert set(rules) == {"infusion.study_window", "response.window", "drug.no_infusion"}
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "validate",
            str(clean_cohort / "site_export"),
            "--site",
            "tianjin_ref",
            "--no-expectations",
            "--report",
            str(tmp_path),
            "--study-window",
            "2020-04-01:2023-10-31",
        ],
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(
        app,
        [
            "validate",
            str(clean_cohort / "site_export"),
            "--site",
            "tianjin_ref",
            "--study-window",
            "2023-12-31:2020-01-01",
        ],
    )
    assert bad.exit_code == 2
