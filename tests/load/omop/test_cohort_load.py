"""All mappers on the staged frames of a generated cohort, loaded into the project DDL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cart_etl.load.omop import TABLES, OmopInput, map_all
from cart_etl.load.omop._common import device_exposure_ddl
from cart_etl.load.omop_ddl import DDL_SQL
from cart_etl.pipeline import validate_site
from cart_etl.synth.generate import generate

TZ = "Asia/Shanghai"


def _marts(acc: dict[str, pl.DataFrame], persons: pl.DataFrame) -> tuple[pl.DataFrame, ...]:
    """Stand-in marts (the real derivations are built elsewhere): every tocilizumab dose is
    a treatment row, and each treated patient gets one CRS episode from 2 h before the first
    dose to 48 h after it."""
    pid = persons.select("patient_key", "person_id", "study_id")
    toci = (
        acc["drugs"]
        .filter(pl.col("drug") == "tocilizumab")
        .join(pid, on="patient_key")
        .select(
            "person_id",
            "study_id",
            "drug",
            drug_class=pl.lit("anti_il6"),
            route=pl.col("route"),
            start_at=pl.col("at"),
            dose=pl.col("dose"),
        )
    )
    first = toci.group_by("person_id", "study_id").agg(pl.col("start_at").min())
    crs = first.select(
        "person_id",
        "study_id",
        episode_number=pl.lit(1, pl.Int32),
        is_crs=pl.lit(True),
        onset_at=pl.col("start_at") - timedelta(hours=2),
        end_at=pl.col("start_at") + timedelta(hours=48),
        max_grade=pl.lit(2, pl.Int32),
    )
    return crs, toci


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[OmopInput, set[str]]:
    out: Path = tmp_path_factory.mktemp("omop_cohort")
    generate(out, patients=61, seed=2025, defects=True, fhir=False)
    outcome, _ = validate_site(out / "site_export", "tianjin_ref", expectations=False)
    acc = outcome.accepted
    demo = acc["demographics"].sort("study_id")
    persons = demo.select("patient_key", "study_id").with_row_index("person_id", offset=1)
    persons = persons.with_columns(pl.col("person_id").cast(pl.Int64))
    crs, treatment = _marts(acc, persons)
    mrns = {
        v
        for frame in acc.values()
        for col in ("patient_key", "patient_key_raw")
        if col in frame.columns
        for v in frame[col].drop_nulls().str.strip_chars().to_list()
        if v
    }
    inp = OmopInput(
        accepted=acc,
        persons=persons,
        patient=pl.DataFrame(),
        detail=pl.DataFrame(),
        crs_episode=crs,
        treatment=treatment,
        source_name="tianjin_ref",
        timezone=TZ,
    )
    return inp, mrns


@pytest.fixture(scope="module")
def tables(cohort) -> dict[str, pl.DataFrame]:
    return map_all(cohort[0])


@pytest.fixture(scope="module")
def store(tables) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(DDL_SQL.read_text(encoding="utf-8"))
    con.execute(device_exposure_ddl())
    for table, frame in tables.items():
        con.register("frame", frame.to_arrow())
        con.execute(f"INSERT INTO omop.{table} SELECT * FROM frame")
        con.unregister("frame")
    return con


def test_01_every_table_loads_through_arrow_with_ddl_constraints(store, tables):
    for table in TABLES:
        (n,) = store.execute(f"SELECT count(*) FROM omop.{table}").fetchone()
        assert n == tables[table].height, table
    assert tables["person"].height == 61
    assert tables["visit_occurrence"].height == 60
    assert tables["measurement"].height > 70_000
    assert tables["episode_event"].height > 0


def test_02_foreign_keys_resolve(store):
    for table in TABLES:
        cols = [
            r[0]
            for r in store.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema='omop' AND table_name=?",
                [table],
            ).fetchall()
        ]
        if "person_id" in cols and table != "person":
            (bad,) = store.execute(
                f"SELECT count(*) FROM omop.{table} t ANTI JOIN omop.person p USING (person_id)"
            ).fetchone()
            assert bad == 0, table
        if "visit_occurrence_id" in cols and table != "visit_occurrence":
            (bad,) = store.execute(
                f"SELECT count(*) FROM omop.{table} t WHERE visit_occurrence_id IS NOT NULL "
                "AND visit_occurrence_id NOT IN (SELECT visit_occurrence_id FROM omop.visit_occurrence)"
            ).fetchone()
            assert bad == 0, table
    (bad,) = store.execute(
        """
        SELECT count(*) FROM omop.episode_event ee WHERE NOT (
          (ee.episode_event_field_concept_id = 1147127 AND ee.event_id IN
             (SELECT condition_occurrence_id FROM omop.condition_occurrence))
          OR (ee.episode_event_field_concept_id = 1147094 AND ee.event_id IN
             (SELECT drug_exposure_id FROM omop.drug_exposure)))
        """
    ).fetchone()
    assert bad == 0
    (bad,) = store.execute(
        "SELECT count(*) FROM omop.episode WHERE episode_parent_id IS NOT NULL "
        "AND episode_parent_id NOT IN (SELECT episode_id FROM omop.episode)"
    ).fetchone()
    assert bad == 0


def test_03_every_event_lies_in_an_observation_period(store):
    for table, date_col in (
        ("condition_occurrence", "condition_start_date"),
        ("drug_exposure", "drug_exposure_start_date"),
        ("measurement", "measurement_date"),
        ("observation", "observation_date"),
        ("procedure_occurrence", "procedure_date"),
        ("device_exposure", "device_exposure_start_date"),
        ("death", "death_date"),
    ):
        (bad,) = store.execute(
            f"SELECT count(*) FROM omop.{table} t JOIN omop.observation_period o USING (person_id) "
            f"WHERE t.{date_col} NOT BETWEEN o.observation_period_start_date "
            "AND o.observation_period_end_date"
        ).fetchone()
        assert bad == 0, table


def test_04_no_mrn_in_any_column(cohort, tables):
    _, mrns = cohort
    assert len(mrns) >= 61
    for table, frame in tables.items():
        for col in frame.columns:
            values = frame[col].cast(pl.String).drop_nulls().unique()
            hit = values.is_in(list(mrns))
            assert not hit.any(), (table, col, values.filter(hit).head(3).to_list())
            if frame.schema[col] == pl.String:
                assert not values.str.contains_any(list(mrns)).any(), (table, col)


def test_05_deterministic(cohort, tables):
    again = map_all(cohort[0])
    for table in TABLES:
        assert again[table].equals(tables[table]), table
