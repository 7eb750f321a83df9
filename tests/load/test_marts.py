"""Mart invariants: one declaration (schemas/marts_invariants.yaml), two generated checks.

A tiny hand-built store satisfies every declared invariant; breaking one of them makes exactly
that check fail, in SQL (``marts.check_invariants``) and, where GX expresses it, in the
great-expectations suite (``postload.run_postload_suite``).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from cart_etl.errors import ConfigurationError
from cart_etl.load import marts, postload

NAMES = [i.name for i in marts.DECLARED]
BY_NAME = {i.name: i for i in marts.DECLARED}
GX_NAMES = {i.name for i in marts.DECLARED if postload.expectation(i) is not None}


def _store() -> duckdb.DuckDBPyConnection:
    """Three patients (analysed with tocilizumab, excluded < 28 days, not infused), consistent.

    The marts have the types of schemas/marts.sql but not its constraints, so that a test can
    break what the DDL would refuse (the invariants restate those constraints).
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA ddl; CREATE SCHEMA marts; CREATE SCHEMA staging")
    con.execute(marts.marts_ddl().replace("marts.", "ddl."))
    for table in marts.MART_TABLES:
        con.execute(f"CREATE TABLE marts.{table} AS SELECT * FROM ddl.{table}")
    con.execute(
        "CREATE TABLE staging.demographics AS SELECT unnest(['S1', 'S2', 'S3']) AS study_id"
    )
    con.execute(
        """
        INSERT INTO marts.patient BY NAME SELECT * FROM (VALUES
          (1, 'S1', TRUE, NULL, TRUE, TRUE, 'F', 2, 1, 2.0, 0, 1, 100.0, 'mrd_neg_cr', 400, 300),
          (2, 'S2', TRUE, 'followup_lt_28d', FALSE, FALSE, 'M', 0, NULL, NULL, 0, 0, 0.0, NULL, 20, 20),
          (3, 'S3', FALSE, 'not_infused', FALSE, FALSE, 'M', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
        ) v(person_id, study_id, is_infused, exclusion_reason, is_included, is_toci, sex,
            max_crs_grade, crs_onset_day, crs_duration_days, max_icans_grade, toci_doses,
            steroid_mp_equiv_mg, response_day28, os_days, pfs_days);
        INSERT INTO marts.patient_detail BY NAME SELECT * FROM (VALUES
          (1, 'S1', 1, 'hypotension', 300.0, 2.0, NULL),
          (2, 'S2', 0, NULL, 0.0, 0.0, NULL),
          (3, 'S3', NULL, NULL, NULL, NULL, NULL)
        ) v(person_id, study_id, crs_episodes, crs_max_grade_mechanism, gcsf_total_ug,
            vasopressor_hours, lost_data_kind);
        INSERT INTO marts.crs_episode BY NAME SELECT * FROM (VALUES
          (1, 'S1', 1, TRUE, TIMESTAMPTZ '2024-01-02 10:00+00', TIMESTAMPTZ '2024-01-04 10:00+00',
           1, 3, 48.0, 2.0, 2, 'hypotension'),
          (1, 'S1', 2, FALSE, TIMESTAMPTZ '2024-01-21 10:00+00', TIMESTAMPTZ '2024-01-22 10:00+00',
           20, 21, 24.0, 1.0, 1, 'fever')
        ) v(person_id, study_id, episode_number, is_crs, onset_at, end_at, onset_day, end_day,
            duration_hours, duration_days, max_grade, grade_mechanism);
        INSERT INTO marts.treatment BY NAME SELECT * FROM (VALUES
          (1, 'S1', 'tocilizumab', 'anti_il6', TIMESTAMPTZ '2024-01-02 12:00+00', NULL, 1, 1, 640.0, '1'),
          (1, 'S1', 'norepinephrine', 'vasopressor', TIMESTAMPTZ '2024-01-03 00:00+00',
           TIMESTAMPTZ '2024-01-03 02:00+00', 2, 1, NULL, '2'),
          (1, 'S1', 'gcsf', 'growth_factor', TIMESTAMPTZ '2024-01-05 08:00+00', NULL, 4, 1, 300.0, '3')
        ) v(person_id, study_id, drug, drug_class, start_at, stop_at, study_day, dose_number, dose,
            source_row);
        UPDATE marts.treatment SET source_file = 'drugs.csv', counts_for_steroid_total = FALSE,
            exceeds_label_limit = FALSE;
        INSERT INTO marts.lab_timeseries BY NAME SELECT * FROM (VALUES
          (1, 'S1', 'lab', 'il6', TIMESTAMPTZ '2024-01-02 11:00+00', 900.0, 'pg/mL', 'high'),
          (1, 'S1', 'vital', 'temp', TIMESTAMPTZ '2024-01-02 11:00+00', 38.5, 'Cel', NULL),
          (2, 'S2', 'lab', 'crp', TIMESTAMPTZ '2024-01-09 08:00+00', 5.0, 'mg/L', NULL)
        ) v(person_id, study_id, category, item, measured_at, value, unit, flag);
        INSERT INTO marts.consort VALUES (1, 'screened', 3), (2, 'excluded:not_infused', 1),
          (3, 'infused', 2), (4, 'excluded:followup_lt_28d', 1), (5, 'excluded:data_lost', 0),
          (6, 'analysed', 1), (7, 'analysed:toci', 1), (8, 'analysed:no_toci', 0);
        """
    )
    return con


# One way to break each declared invariant: (SQL, the other invariants it breaks by necessity).
BREAK: dict[str, tuple[str, set[str]]] = {
    "patient.person_id_not_null": (
        "UPDATE marts.patient SET person_id = NULL WHERE person_id = 3",
        {"patient_detail.patient_fk", "patient_detail.one_row_per_patient"},
    ),
    "patient.person_id_unique": (
        "UPDATE marts.patient SET person_id = 2 WHERE person_id = 3",
        {"patient_detail.patient_fk"},
    ),
    "patient.study_id_not_null": (
        "UPDATE marts.patient SET study_id = NULL WHERE person_id = 3",
        {"patient.one_row_per_screened", "patient_detail.patient_fk"},
    ),
    "patient.study_id_unique": (
        "UPDATE marts.patient SET study_id = 'S2' WHERE person_id = 3",
        {"patient.one_row_per_screened", "patient_detail.patient_fk"},
    ),
    "patient.is_infused_not_null": (
        "UPDATE marts.patient SET is_infused = NULL WHERE person_id = 3",
        set(),
    ),
    "patient.is_included_not_null": (
        "UPDATE marts.patient SET is_included = NULL WHERE person_id = 3",
        set(),
    ),
    "patient.exclusion_reason_accepted": (
        "UPDATE marts.patient SET exclusion_reason = 'lost' WHERE person_id = 3",
        set(),
    ),
    "patient.sex_accepted": ("UPDATE marts.patient SET sex = 'X' WHERE person_id = 2", set()),
    "patient.crs_grade_range": (
        "UPDATE marts.patient SET max_crs_grade = 5 WHERE person_id = 2",
        set(),
    ),
    "patient.crs_onset_day_range": (
        "UPDATE marts.patient SET crs_onset_day = 15 WHERE person_id = 1",
        set(),
    ),
    "patient.crs_duration_non_negative": (
        "UPDATE marts.patient SET crs_duration_days = -1 WHERE person_id = 1",
        set(),
    ),
    "patient.icans_grade_range": (
        "UPDATE marts.patient SET max_icans_grade = 6 WHERE person_id = 1",
        set(),
    ),
    "patient.steroid_total_non_negative": (
        "UPDATE marts.patient SET steroid_mp_equiv_mg = -1 WHERE person_id = 1",
        set(),
    ),
    "patient.response_accepted": (
        "UPDATE marts.patient SET response_day28 = 'cr' WHERE person_id = 1",
        set(),
    ),
    "patient.os_days_non_negative": (
        "UPDATE marts.patient SET os_days = -1 WHERE person_id = 3",
        set(),
    ),
    "patient.pfs_days_non_negative": (
        "UPDATE marts.patient SET pfs_days = -1 WHERE person_id = 2",
        set(),
    ),
    "patient.pfs_within_os": ("UPDATE marts.patient SET pfs_days = 30 WHERE person_id = 2", set()),
    "patient.included_iff_no_exclusion": (
        "UPDATE marts.patient SET exclusion_reason = 'data_lost' WHERE person_id = 1",
        set(),
    ),
    "patient.included_were_infused": (
        "UPDATE marts.patient SET is_infused = FALSE WHERE person_id = 1",
        {"consort.adds_up"},
    ),
    "patient.one_row_per_screened": ("INSERT INTO staging.demographics VALUES ('S9')", set()),
    "patient_detail.person_id_not_null": (
        "UPDATE marts.patient_detail SET person_id = NULL WHERE person_id = 3",
        {"patient_detail.one_row_per_patient"},
    ),
    "patient_detail.person_id_unique": (
        "UPDATE marts.patient_detail SET person_id = 2 WHERE person_id = 3",
        {"patient_detail.patient_fk", "patient_detail.one_row_per_patient"},
    ),
    "patient_detail.study_id_not_null": (
        "UPDATE marts.patient_detail SET study_id = NULL WHERE person_id = 3",
        set(),
    ),
    "patient_detail.study_id_unique": (
        "UPDATE marts.patient_detail SET study_id = 'S2' WHERE person_id = 3",
        {"patient_detail.patient_fk"},
    ),
    "patient_detail.crs_episodes_non_negative": (
        "UPDATE marts.patient_detail SET crs_episodes = -1 WHERE person_id = 1",
        set(),
    ),
    "patient_detail.crs_mechanism_accepted": (
        "UPDATE marts.patient_detail SET crs_max_grade_mechanism = 'cytokines' WHERE person_id = 1",
        set(),
    ),
    "patient_detail.gcsf_total_non_negative": (
        "UPDATE marts.patient_detail SET gcsf_total_ug = -1 WHERE person_id = 1",
        set(),
    ),
    "patient_detail.vasopressor_hours_non_negative": (
        "UPDATE marts.patient_detail SET vasopressor_hours = -1 WHERE person_id = 1",
        set(),
    ),
    "patient_detail.lost_data_kind_accepted": (
        "UPDATE marts.patient_detail SET lost_data_kind = 'labs' WHERE person_id = 2",
        set(),
    ),
    "patient_detail.patient_fk": (
        "UPDATE marts.patient_detail SET study_id = 'S9' WHERE person_id = 3",
        set(),
    ),
    "patient_detail.one_row_per_patient": (
        "DELETE FROM marts.patient_detail WHERE person_id = 3",
        set(),
    ),
    "crs_episode.person_id_not_null": (
        "UPDATE marts.crs_episode SET person_id = NULL WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.study_id_not_null": (
        "UPDATE marts.crs_episode SET study_id = NULL WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.episode_number_not_null": (
        "UPDATE marts.crs_episode SET episode_number = NULL WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.episode_number_from_1": (
        "UPDATE marts.crs_episode SET episode_number = 0 WHERE episode_number = 1",
        set(),
    ),
    "crs_episode.grade_range": (
        "UPDATE marts.crs_episode SET max_grade = 5 WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.mechanism_accepted": (
        "UPDATE marts.crs_episode SET grade_mechanism = 'steroids' WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.duration_non_negative": (
        "UPDATE marts.crs_episode SET duration_hours = -1 WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.key_unique": (
        "UPDATE marts.crs_episode SET episode_number = 1 WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.end_not_before_onset": (
        "UPDATE marts.crs_episode SET end_at = onset_at - INTERVAL 1 HOUR WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.patient_fk": (
        "UPDATE marts.crs_episode SET study_id = 'S9' WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.non_overlapping": (
        "UPDATE marts.crs_episode SET onset_at = TIMESTAMPTZ '2024-01-03 10:00+00' "
        "WHERE episode_number = 2",
        set(),
    ),
    "crs_episode.matches_patient": (
        "UPDATE marts.crs_episode SET max_grade = 3 WHERE episode_number = 1",
        set(),
    ),
    "treatment.person_id_not_null": (
        "UPDATE marts.treatment SET person_id = NULL WHERE drug = 'gcsf'",
        set(),
    ),
    "treatment.study_id_not_null": (
        "UPDATE marts.treatment SET study_id = NULL WHERE drug = 'gcsf'",
        set(),
    ),
    "treatment.drug_not_null": (
        "UPDATE marts.treatment SET drug = NULL WHERE drug = 'gcsf'",
        set(),
    ),
    "treatment.dose_number_not_null": (
        "UPDATE marts.treatment SET dose_number = NULL WHERE drug = 'gcsf'",
        set(),
    ),
    "treatment.dose_number_from_1": (
        "UPDATE marts.treatment SET dose_number = 0 WHERE drug = 'gcsf'",
        set(),
    ),
    "treatment.dose_non_negative": (
        "UPDATE marts.treatment SET dose = -1 WHERE drug = 'gcsf'",
        set(),
    ),
    "treatment.key_unique": (
        "UPDATE marts.treatment SET drug = 'gcsf' WHERE drug = 'norepinephrine'",
        set(),
    ),
    "treatment.stop_not_before_start": (
        "UPDATE marts.treatment SET stop_at = start_at - INTERVAL 1 HOUR "
        "WHERE drug = 'norepinephrine'",
        set(),
    ),
    "treatment.patient_fk": (
        "UPDATE marts.treatment SET study_id = 'S9' WHERE drug = 'gcsf'",
        set(),
    ),
    "treatment.toci_matches_patient": (
        "DELETE FROM marts.treatment WHERE drug = 'tocilizumab'",
        set(),
    ),
    "lab_timeseries.person_id_not_null": (
        "UPDATE marts.lab_timeseries SET person_id = NULL WHERE item = 'crp'",
        set(),
    ),
    "lab_timeseries.study_id_not_null": (
        "UPDATE marts.lab_timeseries SET study_id = NULL WHERE item = 'crp'",
        set(),
    ),
    "lab_timeseries.category_accepted": (
        "UPDATE marts.lab_timeseries SET category = 'imaging' WHERE item = 'crp'",
        set(),
    ),
    "lab_timeseries.item_not_null": (
        "UPDATE marts.lab_timeseries SET item = NULL WHERE item = 'crp'",
        set(),
    ),
    "lab_timeseries.measured_at_not_null": (
        "UPDATE marts.lab_timeseries SET measured_at = NULL WHERE item = 'crp'",
        set(),
    ),
    "lab_timeseries.value_not_null": (
        "UPDATE marts.lab_timeseries SET value = NULL WHERE item = 'crp'",
        set(),
    ),
    "lab_timeseries.flag_accepted": (
        "UPDATE marts.lab_timeseries SET flag = 'H' WHERE item = 'il6'",
        set(),
    ),
    "lab_timeseries.patient_fk": (
        "UPDATE marts.lab_timeseries SET person_id = 2 WHERE item = 'il6'",
        set(),
    ),
    "consort.step_not_null": (
        "UPDATE marts.consort SET step = NULL WHERE box = 'analysed:no_toci'",
        set(),
    ),
    "consort.step_unique": (
        "UPDATE marts.consort SET step = 7 WHERE box = 'analysed:no_toci'",
        set(),
    ),
    "consort.box_not_null": ("INSERT INTO marts.consort VALUES (9, NULL, 0)", set()),
    "consort.box_unique": ("INSERT INTO marts.consort VALUES (9, 'analysed', 0)", set()),
    "consort.box_accepted": ("INSERT INTO marts.consort VALUES (9, 'lost', 0)", set()),
    "consort.patients_not_null": (
        "UPDATE marts.consort SET patients = NULL WHERE box = 'excluded:data_lost'",
        {"consort.adds_up"},
    ),
    "consort.patients_non_negative": (
        "UPDATE marts.consort SET patients = CASE box WHEN 'excluded:data_lost' THEN -1 "
        "WHEN 'excluded:followup_lt_28d' THEN 2 ELSE patients END",
        set(),
    ),
    "consort.adds_up": (
        "UPDATE marts.consort SET patients = 5 WHERE box = 'analysed:toci'",
        set(),
    ),
}
# One broken invariant per GX expectation type (each GX run takes ~2 s; SQL checks them all).
GX_CASES = [
    "patient.is_infused_not_null",
    "consort.step_unique",
    "patient.sex_accepted",
    "patient.crs_grade_range",
    "crs_episode.key_unique",
    "treatment.stop_not_before_start",
    "patient.pfs_within_os",
]


def test_declaration_covers_every_mart_table_and_its_keys():
    ddl_tables = re.findall(r"CREATE TABLE IF NOT EXISTS marts\.(\w+)", marts.marts_ddl())
    assert sorted(ddl_tables) == sorted(marts.MART_TABLES)
    assert {i.table for i in marts.DECLARED} == set(ddl_tables)
    con = _store()
    columns = {
        (t, c)
        for t, c in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'marts'"
        ).fetchall()
    }
    for inv in marts.DECLARED:
        a = inv.args
        named = [a[k] for k in ("column", "column_A", "column_B") if k in a]
        named += [*a.get("combination_of_columns", ()), *a.get("columns", ())]
        assert all((inv.table, c) in columns for c in named), inv.name
        assert inv.reason.strip() and "\n" not in inv.reason.strip(), inv.name
    # Every PRIMARY KEY / UNIQUE of marts.sql is declared: not_null on each column, and unique.
    keys = con.execute(
        "SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() "
        "WHERE schema_name = 'ddl' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
    ).fetchall()
    assert keys
    declared = {(i.table, i.test, tuple(_cols(i))) for i in marts.DECLARED}
    for table, kind, cols in keys:
        unique = "unique" if len(cols) == 1 else "unique_combination_of_columns"
        assert (table, unique, tuple(cols)) in declared, (table, cols)
        for col in cols if kind == "PRIMARY KEY" else ():
            assert (table, "not_null", (col,)) in declared, (table, col)


def _cols(inv: marts.Invariant) -> list[str]:
    return (
        [inv.column] if "column" in inv.args else list(inv.args.get("combination_of_columns", ()))
    )


def test_sql_only_tests_say_why_and_gx_runs_the_others():
    for inv in marts.DECLARED:
        if inv.test in marts.SQL_ONLY_TESTS:
            assert inv.sql_only, inv.name
        gx = postload.expectation(inv)
        assert (gx is None) == bool(inv.sql_only), inv.name
    assert set(postload.EXPECTATIONS) | marts.SQL_ONLY_TESTS == (
        set(marts.COLUMN_TESTS) | set(marts.TABLE_TESTS)
    )
    assert not set(postload.EXPECTATIONS) & marts.SQL_ONLY_TESTS
    # Foreign keys, predicates over columns and windows are SQL only, by the declaration.
    assert {i.test for i in marts.DECLARED if i.sql_only and i.table != "lab_timeseries"} == set(
        marts.SQL_ONLY_TESTS
    )


def test_every_declared_invariant_has_a_way_to_break_it():
    assert sorted(BREAK) == sorted(NAMES)
    assert all(set(also) <= set(NAMES) for _, also in BREAK.values())


def test_hand_built_store_satisfies_every_invariant():
    con = _store()
    assert marts.check_invariants(con) == []
    results = postload.run_postload_suite(con)
    assert [r for r in results if not r["success"]] == []
    assert sorted(r["invariant"] for r in results) == sorted(GX_NAMES)
    assert {r["table"] for r in results} == set(postload.POSTLOAD_SUITES)


@pytest.mark.parametrize("name", NAMES)
def test_breaking_one_invariant_fails_exactly_that_sql_check(name):
    con = _store()
    sql, also = BREAK[name]
    con.execute(sql)
    failed = {n: (rule, count) for n, rule, count in marts.check_invariants(con)}
    assert set(failed) == {name} | also
    assert failed[name] == (BY_NAME[name].reason, failed[name][1])
    assert failed[name][1] > 0


@pytest.mark.parametrize("name", GX_CASES)
def test_breaking_one_invariant_fails_exactly_that_expectation(name):
    con = _store()
    sql, also = BREAK[name]
    con.execute(sql)
    sql_counts = {n: c for n, _, c in marts.check_invariants(con)}
    failed = {r["invariant"]: r for r in postload.run_postload_suite(con) if not r["success"]}
    assert set(failed) == ({name} | also) & GX_NAMES
    result = failed[name]
    assert result["unexpected_count"] == sql_counts[name]  # both engines count the same rows
    assert result["table"] == BY_NAME[name].table
    assert result["reason"] == BY_NAME[name].reason
    assert result["expectation"].endswith(f") [{name}]")
    if name == "patient.crs_grade_range":
        assert result["expectation"] == (
            "expect_column_values_to_be_between(column=max_crs_grade, min_value=0.0, "
            "max_value=4.0) [patient.crs_grade_range]"
        )


# What the two lists checked before the declaration (commit 80b834b), and where it is now.
BEFORE_SQL = {
    "patient.one_row_per_screened": {"patient.one_row_per_screened"},
    "patient.included_iff_no_exclusion": {
        "patient.included_iff_no_exclusion",
        "patient.included_were_infused",
    },
    "patient.crs_grade_range": {"patient.crs_grade_range"},
    "patient.followup_non_negative": {
        "patient.os_days_non_negative",
        "patient.pfs_days_non_negative",
        "patient.pfs_within_os",
    },
    "crs_episode.non_overlapping": {
        "crs_episode.non_overlapping",
        "crs_episode.end_not_before_onset",
    },
    "crs_episode.matches_patient": {"crs_episode.matches_patient"},
    "treatment.toci_matches_patient": {"treatment.toci_matches_patient"},
    "treatment.dose_non_negative": {"treatment.dose_non_negative"},
    "consort.adds_up": {"consort.adds_up"},
}
BEFORE_GX = [
    ("patient", "ExpectColumnValuesToBeUnique", {"column": "person_id"}),
    ("patient", "ExpectColumnValuesToBeUnique", {"column": "study_id"}),
    ("patient", "ExpectColumnValuesToNotBeNull", {"column": "is_included"}),
    (
        "patient",
        "ExpectColumnValuesToBeBetween",
        {"column": "max_crs_grade", "min_value": 0, "max_value": 4},
    ),
    (
        "patient",
        "ExpectColumnValuesToBeBetween",
        {"column": "max_icans_grade", "min_value": 0, "max_value": 5},
    ),
    (
        "patient",
        "ExpectColumnValuesToBeBetween",
        {"column": "crs_onset_day", "min_value": 0, "max_value": 14},
    ),
    ("patient", "ExpectColumnValuesToBeBetween", {"column": "crs_duration_days", "min_value": 0}),
    ("patient", "ExpectColumnValuesToBeBetween", {"column": "os_days", "min_value": 0}),
    ("patient", "ExpectColumnValuesToBeBetween", {"column": "steroid_mp_equiv_mg", "min_value": 0}),
    (
        "patient",
        "ExpectColumnValuesToBeInSet",
        {"column": "response_day28", "value_set": ["mrd_neg_cr", "mrd_pos_cr", "pr", "nr"]},
    ),
    ("patient", "ExpectColumnValuesToBeInSet", {"column": "sex", "value_set": ["M", "F"]}),
    (
        "crs_episode",
        "ExpectColumnValuesToBeBetween",
        {"column": "max_grade", "min_value": 1, "max_value": 4},
    ),
    ("crs_episode", "ExpectColumnValuesToBeBetween", {"column": "duration_hours", "min_value": 0}),
    ("treatment", "ExpectColumnValuesToNotBeNull", {"column": "person_id"}),
    ("treatment", "ExpectColumnValuesToBeBetween", {"column": "dose", "min_value": 0}),
]


def test_nothing_checked_before_is_lost():
    assert all(new <= set(NAMES) for new in BEFORE_SQL.values())
    for table, expectation, kwargs in BEFORE_GX:
        now = [
            {k: v for k, v in kw.items() if k not in ("meta", "notes")}
            for name, kw in postload.POSTLOAD_SUITES[table]
            if name == expectation
        ]
        assert kwargs in now, (table, expectation, kwargs)


def _write(tmp_path: Path, tests: str) -> Path:
    (tmp_path / marts.INVARIANTS_FILE).write_text(
        "models:\n  - name: patient\n    tests:\n" + tests, encoding="utf-8"
    )
    return tmp_path


def test_declaration_errors_are_explained(tmp_path):
    ok = marts.load_invariants(
        _write(
            tmp_path,
            "      - expression_is_true: {name: patient.x, reason: r, expression: 'TRUE',"
            " sql_only: a predicate}\n",
        )
    )
    assert [(i.name, i.rows_sql) for i in ok] == [
        ("patient.x", "SELECT * FROM marts.patient WHERE NOT (TRUE)")
    ]
    assert ok[0].sql == f"SELECT count(*) FROM ({ok[0].rows_sql})"
    bad = {
        "      - expression_is_true: {name: patient.x, reason: r, expression: 'TRUE'}\n": "sql_only",
        "      - not_null: {name: patient.x, reason: r}\n": "unknown test",
        "      - violating_rows: {name: x, reason: r, query: 'SELECT 1', sql_only: s}\n": "a name",
        "      - column_pair_greater_than: {name: patient.x, reason: r, column_A: a}\n": "do not fit",
        "      - unique_combination_of_columns: {name: patient.x, reason: r,"
        " combination_of_columns: ['a; DROP']}\n": "not all column",
        "      - violating_rows: {name: patient.x, reason: r, query: q, sql_only: s}\n"
        "      - violating_rows: {name: patient.x, reason: r, query: q, sql_only: s}\n": "twice",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigurationError, match=message):
            marts.load_invariants(_write(tmp_path, text))


def test_failed_invariants_name_the_patients():
    """A failed run says which study ids to look up (person 3 is S3 in the hand-built store)."""
    con = _store()
    con.execute(BREAK["patient.os_days_non_negative"][0])
    assert marts.violating_study_ids(con, "patient.os_days_non_negative") == ["S3"]
    con.execute(BREAK["treatment.dose_non_negative"][0])
    ids = marts.violating_study_ids(con, "treatment.dose_non_negative")
    expected = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT study_id FROM marts.treatment WHERE drug = 'gcsf' ORDER BY 1"
        ).fetchall()
    ]
    assert ids == expected and ids
    assert marts.violating_study_ids(con, "consort.adds_up") == []  # no study_id column
    assert marts.violating_study_ids(con, "no.such.invariant") == []
