"""Values and identifiers that used to crash the run or merge silently (#15).

Each case is a copy of the English wide sample export (tests/cases/site_wide_en, site
``example_wide_en``) with a few cells changed: what the exporter or a data-entry slip
produces. Every case ends in quarantine with a named rule and the value, and every input
row stays accounted for (``rows_in == accepted + quarantined``).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import duckdb
import pytest

from cart_etl.errors import FailureCase
from cart_etl.pipeline import Source, run, validate_only
from cart_etl.validate.run import ValidationOutcome

REPO = Path(__file__).resolve().parents[2]
WIDE = REPO / "tests" / "cases" / "site_wide_en"
SITE = "example_wide_en"
# What the clean sample export already reports (a lab unit without a conversion, one empty
# wide row): every case below adds to these.
BASELINE = {"extract.no_values", "measurement.unit.convertible"}


def edited_export(tmp_path: Path, edits: dict[tuple[str, int, str], str]) -> Path:
    """A copy of the wide export with ``(file, data row (1-based), column) -> new text``."""
    folder = tmp_path / "export"
    shutil.copytree(WIDE, folder)
    by_file: dict[str, list[tuple[int, str, str]]] = {}
    for (file, row, column), value in edits.items():
        by_file.setdefault(file, []).append((row, column, value))
    for file, changes in by_file.items():
        path = folder / file
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        for row, column, value in changes:
            rows[row][rows[0].index(column)] = value
        with path.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
    return folder


def validate(folder: Path) -> ValidationOutcome:
    outcome, _report = validate_only(Source(str(folder), SITE), expectations=False)
    for f in outcome.files:
        assert f.rows_in == f.accepted + f.quarantined, f
        assert f.unaccounted == 0, f
    return outcome


def cases_of(outcome: ValidationOutcome, file: str) -> list[FailureCase]:
    return [c for c in outcome.quarantined if c.file == file]


# ---- 1/2. other data in a timestamp column; digits-only dates; Excel serials out of range ----

DATE_COLUMNS = {
    "vitals_wide.csv": ("charted_at", "measurement.at.parse"),
    "labs.csv": ("collected_at", "measurement.at.parse"),
    "meds.csv": ("administered_at", "measurement.at.parse"),
    "infusion.csv": ("infused_at", "field.parse"),
    "patients.csv": ("date_of_birth", "field.parse"),
}
SHIFTED = [
    "Tocilizumab",  # columns shifted by one: text in the date-time column
    "100000000",  # was a polars PanicException (temporal_conversions.rs)
    "99999999999999999999",  # was InvalidOperationError
    "19640106",  # was 'year 55672 is out of range'
    "-5",  # was loaded silently as 1899-12-24
]


@pytest.mark.parametrize("value", SHIFTED)
@pytest.mark.parametrize("file", sorted(DATE_COLUMNS))
def test_01_other_data_in_a_timestamp_column_is_quarantined_by_the_parse_rule(
    tmp_path, file, value
):
    column, rule_id = DATE_COLUMNS[file]
    outcome = validate(edited_export(tmp_path, {(file, 2, column): value}))
    mine = [c for c in cases_of(outcome, file) if c.rule_id == rule_id]
    assert mine, [c.rule_id for c in outcome.quarantined]
    assert {c.row.split(":")[0] for c in mine} == {"2"}
    assert {c.value for c in mine} == {value}
    assert all(repr(value) in c.message for c in mine)
    assert {c.rule_id for c in outcome.quarantined} <= BASELINE | {
        rule_id,
        "row.patient.quarantined",  # a register row's other rows follow it
        "drug.no_infusion",  # so do the drugs of a patient whose infusion row is quarantined
    }


def test_02_a_plausible_excel_serial_still_loads_with_its_warning(tmp_path):
    outcome = validate(edited_export(tmp_path, {("labs.csv", 1, "collected_at"): "44256.3125"}))
    assert {c.rule_id for c in outcome.quarantined} == BASELINE
    dated = [(w.row, w.value) for w in outcome.warnings if w.rule_id.startswith("date.")]
    assert dated == [("1", "44256.3125")]


# ---- 3. an infused patient whose infusion row is missing from the delivery -----------------


def _query(store: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("how", ["missing", "quarantined"])
def test_03_drugs_of_a_patient_without_an_accepted_infusion_are_quarantined(tmp_path, how):
    """Was ``NOT NULL constraint failed: treatment.study_day`` at load: EX-001 (H1004821) has
    drugs, vitals and labs but no infusion row (or an unreadable one). Now EX-001 is
    ``not_infused`` and its four meds.csv rows are quarantined by ``drug.no_infusion``."""
    if how == "missing":
        folder = edited_export(tmp_path, {})
        path = folder / "infusion.csv"
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text(lines[0] + "".join(lines[2:]), encoding="utf-8")
    else:
        folder = edited_export(tmp_path, {("infusion.csv", 1, "infused_at"): "61000000"})
    result = run(Source(str(folder), SITE), tmp_path / "s.duckdb", expectations=False)
    assert result.status == "succeeded", result.failures
    assert _query(
        result.store,
        "SELECT is_infused, exclusion_reason FROM marts.patient WHERE study_id='EX-001'",
    ) == [(False, "not_infused")]
    assert _query(result.store, "SELECT count(*) FROM marts.treatment WHERE study_id='EX-001'") == [
        (0,)
    ]
    cases = _query(
        result.store,
        "SELECT file, row_ref, field, value, message FROM etl.quarantine "
        "WHERE rule_id = 'drug.no_infusion' ORDER BY row_ref",
    )
    assert [(f, r, fld, v) for f, r, fld, v, _ in cases] == [
        ("meds.csv", str(i), "patient_key", "<redacted>") for i in range(1, 5)
    ]
    why = "was quarantined" if how == "quarantined" else "no infusion row"
    for *_, message in cases:
        assert "patients.csv row 1, study id EX-001" in message and why in message
        assert "H1004821" not in message and "Alice" not in message


# ---- 4. identifier mix-ups in the register ----------------------------------------------------

ALICE = "H1004821,Alice Thornbury,female,1987-02-14,2019-06-03,2021-02-22,165.2,61.0,high,KMT2A rearranged,3,Y,42.5"


def with_register_rows(tmp_path: Path, *lines: str) -> Path:
    folder = edited_export(tmp_path, {})
    with (folder / "patients.csv").open("a", encoding="utf-8", newline="") as fh:
        fh.writelines(f"{line}\n" for line in lines)
    return folder


REGISTER_CASES = {
    # one study id, two MRNs: was PRIMARY KEY ... duplicate key at load
    "study_id_two_mrns": (
        "EX-001,H9999999,Zed Other,male,1970-01-01,2019-06-03,2021-02-22,170,70,high,x,3,Y,42.5",
        "register.study_id.conflict",
        ["1", "5"],
        "mrn",
        "H1004821 / H9999999",
    ),
    # one MRN, two study ids: was both rows stored under one id, the other patient gone
    "mrn_two_study_ids": (
        f"EX-005,{ALICE}",
        "register.mrn.conflict",
        ["1", "5"],
        "study_id",
        "EX-001 / EX-005",
    ),
    # the same patient twice with two sexes: was one of them kept silently
    "two_sexes": (
        "EX-001," + ALICE.replace("female", "male"),
        "register.conflicting_facts",
        ["1", "5"],
        "sex",
        "female / male",
    ),
    # an MRN typed into the study-id column (another patient's, or the patient's own)
    "study_id_is_an_mrn": (
        "H1005376,H1009999,Some One,male,1987-02-14,2019-06-03,2021-02-22,165,61,high,x,3,Y,4",
        "register.study_id.is_mrn",
        ["5"],
        "mrn",
        "H1005376",
    ),
    "study_id_is_its_own_mrn": (
        "H1009999,H1009999,Some One,male,1987-02-14,2019-06-03,2021-02-22,165,61,high,x,3,Y,4",
        "register.study_id.is_mrn",
        ["5"],
        "mrn",
        "H1009999",
    ),
}


@pytest.mark.parametrize("name", sorted(REGISTER_CASES))
def test_04_conflicting_register_rows_are_quarantined_with_both_values(tmp_path, name):
    line, rule_id, rows, field, value = REGISTER_CASES[name]
    outcome = validate(with_register_rows(tmp_path, line))
    register = cases_of(outcome, "patients.csv")
    assert [(c.rule_id, c.row, c.field, c.value) for c in register] == [
        (rule_id, row, field, value) for row in rows
    ]
    for c in register:
        assert value in c.message
        assert "Alice" not in c.message and "Thornbury" not in c.message
        assert "Zed" not in c.message and "Some One" not in c.message
    if rule_id == "register.mrn.conflict":
        assert "H1004821" not in register[0].message
    # Neither row of a conflict is kept: the patient's other rows follow the register rows.
    accepted = set(outcome.accepted["demographics"].get_column("study_id").to_list())
    kept = {"EX-001", "EX-002", "EX-003", "EX-004"} - ({"EX-001"} if rows == ["1", "5"] else set())
    assert accepted == kept


def test_05_register_conflicts_load_without_identifiers_in_the_store(tmp_path):
    """The run that failed with a duplicate key loads; MRNs of the cases are redacted."""
    folder = with_register_rows(
        tmp_path,
        REGISTER_CASES["study_id_two_mrns"][0],
        REGISTER_CASES["study_id_is_an_mrn"][0],
    )
    result = run(Source(str(folder), SITE), tmp_path / "s.duckdb", expectations=False)
    assert result.status == "succeeded", result.failures
    assert _query(result.store, "SELECT study_id FROM marts.patient ORDER BY 1") == [
        ("EX-002",),
        ("EX-003",),
        ("EX-004",),
    ]
    stored = _query(
        result.store,
        "SELECT rule_id, row_ref, value, message FROM etl.quarantine "
        "WHERE rule_id LIKE 'register.%' ORDER BY row_ref",
    )
    assert [(r, row, v) for r, row, v, _ in stored] == [
        ("register.study_id.conflict", "1", "<redacted>"),
        ("register.study_id.conflict", "5", "<redacted>"),
        ("register.study_id.is_mrn", "6", "<redacted>"),
    ]
    dump = repr(_query(result.store, "SELECT * FROM etl.quarantine"))
    for mrn in ("H1004821", "H9999999", "H1005376", "H1009999"):
        assert mrn not in dump


@pytest.mark.parametrize(
    ("file", "column", "value", "rule_id"),
    [
        # was InvalidOperationError casting 1e20 to Int64
        ("patients.csv", "prior_lines", "99999999999999999999", "field.parse"),
        ("patients.csv", "prior_lines", "9" * 400, "field.parse"),
        # was accepted silently: a negative or zero cell count
        ("infusion.csv", "total_cells", "-3", "field.range"),
        ("infusion.csv", "total_cells", "0", "field.range"),
    ],
)
def test_06_out_of_range_numbers_are_quarantined(tmp_path, file, column, value, rule_id):
    outcome = validate(edited_export(tmp_path, {(file, 1, column): value}))
    mine = [c for c in cases_of(outcome, file) if c.rule_id == rule_id]
    assert [c.row for c in mine] == ["1"]


def test_07_an_implausible_vital_sign_is_kept_with_its_warning(tmp_path):
    """Found by test_mutations: SBP 20 mmHg raised KeyError (the warning had no rule)."""
    outcome = validate(edited_export(tmp_path, {("vitals_wide.csv", 13, "SBP"): "20"}))
    warned = [w for w in outcome.warnings if w.rule_id == "measurement.value.implausible"]
    assert [(w.row, w.value) for w in warned] == [("13:SBP", "20")]
