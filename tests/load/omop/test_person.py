"""PERSON, OBSERVATION_PERIOD, VISIT_OCCURRENCE, DEATH and CDM_SOURCE on the two hand-built patients."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl

from cart_etl.load.omop._common import ID_STRIDE
from cart_etl.load.omop.cdm_source import map_cdm_source
from cart_etl.load.omop.death import map_death
from cart_etl.load.omop.observation_period import map_observation_period
from cart_etl.load.omop.person import map_person
from cart_etl.load.omop.visit_occurrence import map_visit_occurrence
from tests.load.omop.conftest import MRN_A, frames, make_input


def test_01_person_gender_birth_and_study_id(inp):
    p = map_person(inp)
    assert p["person_id"].to_list() == [1, 2]
    # Gender concepts: omop_v54.md §3.1 (Female 8532, Male 8507).
    assert p["gender_concept_id"].to_list() == [8532, 8507]
    assert p["gender_source_value"].to_list() == ["女", "男"]
    assert p["year_of_birth"].to_list() == [1980, 2010]
    assert p["month_of_birth"].to_list() == [5, 2]
    assert p["day_of_birth"].to_list() == [17, 3]
    assert p["race_concept_id"].to_list() == [0, 0]
    assert p["ethnicity_concept_id"].to_list() == [0, 0]
    assert p["person_source_value"].to_list() == ["CART-001", "CART-002"]


def test_02_person_never_carries_the_mrn(inp):
    p = map_person(inp)
    for col in p.columns:
        assert MRN_A not in p[col].cast(str).to_list()


def test_03_observation_period_spans_diagnosis_to_last_contact(inp):
    op = map_observation_period(inp)
    assert op["person_id"].to_list() == [1, 2]
    assert op["observation_period_id"].to_list() == [1 * ID_STRIDE + 1, 2 * ID_STRIDE + 1]
    assert op["observation_period_start_date"].to_list() == [date(2019, 1, 10), date(2018, 6, 1)]
    assert op["observation_period_end_date"].to_list() == [date(2021, 1, 1), date(2020, 5, 20)]
    assert op["period_type_concept_id"].to_list() == [32882, 32882]


def test_04_visit_is_the_cart_admission_to_day_28(inp):
    v = map_visit_occurrence(inp)
    assert v.height == 1  # B was never infused
    row = v.row(0, named=True)
    assert row["visit_occurrence_id"] == 1 and row["person_id"] == 1
    assert row["visit_concept_id"] == 9201 and row["visit_type_concept_id"] == 32827
    # Infusion 06:50 UTC = 14:50 Asia/Shanghai; day 28 = 2020-05-16.
    assert row["visit_start_date"] == date(2020, 4, 18)
    assert row["visit_start_datetime"] == datetime(2020, 4, 18, 14, 50)
    assert row["visit_end_date"] == date(2020, 5, 16)


def test_05_visit_ends_at_an_earlier_last_contact():
    fu = frames()["follow_up"].with_columns(
        last_contact_date=pl.Series([date(2020, 5, 1), date(2020, 5, 20)])
    )
    v = map_visit_occurrence(make_input(follow_up=fu))
    assert v["visit_end_date"].to_list() == [date(2020, 5, 1)]


def test_06_death_one_row_with_cause_as_source_value(inp):
    d = map_death(inp)
    assert d.to_dicts() == [
        {
            "person_id": 2,
            "death_date": date(2020, 5, 20),
            "death_datetime": None,
            "death_type_concept_id": 32817,
            "cause_concept_id": 0,
            "cause_source_value": "disease progression",
            "cause_source_concept_id": None,
        }
    ]


def test_07_cdm_source_is_deterministic(inp):
    s = map_cdm_source(inp)
    assert s.height == 1
    row = s.row(0, named=True)
    assert row["cdm_source_abbreviation"] == "tianjin_ref"
    assert row["cdm_version_concept_id"] == 756265  # omop_v54.md §3.1 / P18
    assert row["source_release_date"] == date(2021, 1, 1)  # the latest event date
    assert s.equals(map_cdm_source(inp))
