"""EPISODE and EPISODE_EVENT: CRS episodes, tocilizumab regimens, remission, progression.

Episode concepts: omop_v54.md §3.6 (S3); field concepts 1147127 / 1147094: §2 (S10, S12).
"""

from __future__ import annotations

from datetime import date

import polars as pl

from cart_etl.load.omop._common import ID_STRIDE
from cart_etl.load.omop.condition_occurrence import map_condition_occurrence
from cart_etl.load.omop.drug_exposure import map_drug_exposure
from cart_etl.load.omop.episode import map_episode, toci_doses
from cart_etl.load.omop.episode_event import map_episode_event
from tests.load.omop.conftest import make_input, treatment


def test_01_episode_kinds_and_concepts(inp):
    e = map_episode(inp)
    # Keys are person_id * ID_STRIDE + rank within the person (three for A, one for B).
    crs, toci, remission = (1 * ID_STRIDE + 1, 1 * ID_STRIDE + 2, 1 * ID_STRIDE + 3)
    assert e["episode_id"].to_list() == [crs, toci, remission, 2 * ID_STRIDE + 1]
    assert e["person_id"].to_list() == [1, 1, 1, 2]
    assert e["episode_concept_id"].to_list() == [32528, 32531, 32530, 32677]
    assert e["episode_object_concept_id"].to_list() == [0, 0, 4173963, 4173963]
    assert e["episode_parent_id"].to_list() == [None, crs, None, None]
    assert e["episode_number"].to_list() == [1, 1, None, None]
    assert e["episode_start_date"].to_list() == [
        date(2020, 4, 19),
        date(2020, 4, 19),
        date(2020, 5, 14),
        date(2020, 5, 10),
    ]
    assert e["episode_source_value"].to_list()[:2] == [
        "CRS episode 1 (ASTCT 2019 grade 3)",
        "tocilizumab course: 2 doses, 800.0 mg",
    ]


def test_02_second_crs_episode_is_a_recurrence():
    inp = make_input()
    eps = inp.crs_episode.with_columns(is_crs=pl.Series([True, True]))
    e = map_episode(
        type(inp)(**{**inp.__dict__, "crs_episode": eps})  # frozen dataclass: copy
    )
    assert e.filter(pl.col("episode_source_value").str.starts_with("CRS"))[
        "episode_concept_id"
    ].to_list() == [32528, 32529]


def test_03_a_gap_over_72_h_starts_a_new_tocilizumab_course():
    tr = treatment().with_columns(
        start_at=pl.Series(
            [
                "2020-04-19 04:00",
                "2020-04-23 04:00",
                "2020-04-19 06:00",
                "2020-04-25 01:00",
                "2020-04-19 05:00",
            ]
        ).str.to_datetime("%Y-%m-%d %H:%M", time_zone="UTC")
    )
    inp = make_input()
    doses = toci_doses(type(inp)(**{**inp.__dict__, "treatment": tr}))
    assert doses["course"].to_list() == [1, 2]


def test_04_episode_events_link_condition_and_drug_rows(inp):
    ev = map_episode_event(inp)
    cond = map_condition_occurrence(inp)
    drugs = map_drug_exposure(inp)
    crs_cond = cond.filter(condition_source_value="D89.833")["condition_occurrence_id"].item()
    toci = drugs.filter(drug_concept_id=40171288)["drug_exposure_id"].to_list()
    mp = drugs.filter(drug_concept_id=1506270)["drug_exposure_id"].item()
    ne = drugs.filter(drug_concept_id=1321341)["drug_exposure_id"].item()
    gcsf = drugs.filter(drug_source_value="G-CSF")["drug_exposure_id"].item()
    # Episode keys of patient A: CRS episode rank 1, tocilizumab course rank 2.
    crs_ep, toci_ep = 1 * ID_STRIDE + 1, 1 * ID_STRIDE + 2
    assert crs_cond == 1 * ID_STRIDE + 2
    assert toci == [1 * ID_STRIDE + 2, 1 * ID_STRIDE + 5]
    assert (mp, ne, gcsf) == (1 * ID_STRIDE + 4, 1 * ID_STRIDE + 3, 1 * ID_STRIDE + 6)
    got = set(ev.rows())
    assert (crs_ep, crs_cond, 1147127) in got
    assert {(crs_ep, d, 1147094) for d in [*toci, mp, ne]} <= got
    assert (crs_ep, gcsf, 1147094) not in got  # G-CSF is not a CRS treatment
    assert {(toci_ep, d, 1147094) for d in toci} <= got
    assert ev.height == len(got) == 7
