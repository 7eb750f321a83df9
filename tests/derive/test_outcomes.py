"""Day-28 response, survival, serious infection, ICANS, IL-6 and pre-infusion fever
(``cart_etl.derive.outcomes``) on hand-made records.

Expected values are worked out by hand from: the ALL response criteria and MRD threshold
(reference/crs_grading.md section 8: F1 CR/CRi/PR, F2 / ELIANA MRD < 0.01 % = negative;
README "Response day 28", marrow on day 21-35 closest to day 28), the OS/PFS definitions
(F3: OS = death or last contact, PFS = first of progression or death), the README rules for
serious infection (CTCAE >= 3 after infusion), ICANS (days 0-28) and IL-6 (last sample
before the first tocilizumab dose vs the first 24-72 h after it; E7), and
``derive/derivation.yaml``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest

from cart_etl.derive import outcomes
from cart_etl.derive.rules import crs_rules, derivation_rules
from tests.derive.frames import T0, TS, TZ, frame, h, timeline

RULES = derivation_rules()


def day(n: int, local_hour: float = 14.0) -> datetime:
    """The instant at ``local_hour`` (Shanghai) on study day ``n``."""
    return T0 + timedelta(days=n, hours=local_hour - 14.0)


# --- day-28 response ----------------------------------------------------------------------

RESPONSE = {"patient_key": pl.String, "at": TS, "morphology": pl.String, "mrd_pct": pl.Float64}


def response(rows: list[tuple]) -> pl.DataFrame:
    out = outcomes.derive_response(frame(RESPONSE, rows), timeline("p", "q"), RULES, TZ)
    return out.sort("patient_key")


@pytest.mark.parametrize(
    ("morphology", "mrd", "category"),
    [
        ("CR", 0.0, "mrd_neg_cr"),  # MRD not detected
        ("CR", 0.009, "mrd_neg_cr"),  # < 0.01 % (F2 / ELIANA: < 10^-4)
        ("CR", 0.01, "mrd_pos_cr"),  # exactly 0.01 % is not below 10^-4: positive
        ("CR", 2.5, "mrd_pos_cr"),
        ("CRi", 0.0, "mrd_neg_cr"),  # the paper's CR ignores count recovery (crs_grading 8)
        ("CRi", 0.5, "mrd_pos_cr"),
        ("PR", 0.0, "pr"),  # F1 partial response, whatever the MRD
        ("NR", None, "nr"),
    ],
)
def test_01_response_categories(morphology, mrd, category):
    r = response([("p", day(28), morphology, mrd)])
    assert r.get_column("response_day28").to_list() == [category]
    assert r.get_column("response_assessed").to_list() == [True]


def test_02_assessment_closest_to_day_28_wins():
    """p: day 22 (NR) and day 27 (CR MRD-negative) -> day 27, 1 day from 28.
    q: day 29 (PR) beats day 35 (NR)."""
    # fmt: off
    r = response([
        ("p", day(22), "NR", None),
        ("p", day(27), "CR", 0.0),
        ("q", day(35), "NR", None),
        ("q", day(29), "PR", 1.0),
    ])
    # fmt: on
    assert r.get_column("response_day28").to_list() == ["mrd_neg_cr", "pr"]


def test_03_tie_at_equal_distance_takes_the_earlier_assessment():
    """Day 26 and day 30 are both 2 days from 28. The sources name no tie-break; the code
    sorts by distance then time, so the earlier assessment wins (ETL convention)."""
    r = response([("p", day(30), "NR", None), ("p", day(26), "CR", 0.0)])
    assert r.get_column("response_day28").to_list() == ["mrd_neg_cr"]


def test_04_window_is_days_21_to_35_inclusive_in_local_days():
    """p: day 21 counts. q: day 20 and day 36 lie outside 21-35: no day-28 response.
    23:30 local on day 20 is half an hour before day 21 and still outside the window."""
    # fmt: off
    r = response([
        ("p", day(21, 9.0),   "CR", 0.0),
        ("q", day(20, 23.5),  "CR", 0.0),
        ("q", day(36, 0.5),   "CR", 0.0),
    ])
    # fmt: on
    assert r.get_column("patient_key").to_list() == ["p"]


def test_05_day_35_is_the_last_day_of_the_window():
    r = response([("p", day(35, 23.5), "PR", None), ("q", day(36, 0.5), "PR", None)])
    assert r.get_column("patient_key").to_list() == ["p"]


def test_06_unknown_morphology_is_not_a_complete_remission():
    """F1 / docstring: only CR or CRi are remissions. A morphology the site value map could
    not map (staged as null) must not be counted as an MRD-negative CR."""
    r = response([("p", day(28), None, 0.0)])
    assert r.get_column("response_day28").to_list() not in (["mrd_neg_cr"], ["mrd_pos_cr"])


# --- survival -----------------------------------------------------------------------------

FOLLOW_UP = {
    "patient_key": pl.String,
    "last_contact_date": pl.Date,
    "progression_date": pl.Date,
    "death_date": pl.Date,
}


def test_07_os_and_pfs_censoring():
    """Day 0 = 2021-03-01. 2021-04-15 = day 45, 2021-05-01 = day 61, 2021-05-10 = day 70,
    2021-09-01 = day 184 (31+30+31+30+31+31).

    a alive, no progression: OS 184 censored, PFS 184 censored.
    b died 2021-05-10 (last contact 2021-05-01): OS 70 event; PFS 70 event (death).
    c progressed 2021-04-15, died 2021-05-10: OS 70 event; PFS 45 event (progression first).
    d progressed 2021-04-15, alive at 2021-09-01: OS 184 censored; PFS 45 event.
    """
    # fmt: off
    fu = frame(FOLLOW_UP, [
        ("a", date(2021, 9, 1), None,              None),
        ("b", date(2021, 5, 1), None,              date(2021, 5, 10)),
        ("c", date(2021, 5, 1), date(2021, 4, 15), date(2021, 5, 10)),
        ("d", date(2021, 9, 1), date(2021, 4, 15), None),
    ])
    # fmt: on
    s = outcomes.derive_survival(fu, timeline("a", "b", "c", "d")).sort("patient_key")
    assert s.select("patient_key", "os_days", "os_event", "pfs_days", "pfs_event").rows() == [
        ("a", 184, False, 184, False),
        ("b", 70, True, 70, True),
        ("c", 70, True, 45, True),
        ("d", 184, False, 45, True),
    ]


# --- serious infection --------------------------------------------------------------------

INFECTIONS = {"patient_key": pl.String, "onset_date": pl.Date, "ctcae_grade": pl.Int64}


def test_08_serious_infection_is_ctcae_3_or_more_on_or_after_day_0():
    """derivation.yaml serious_infection_min_ctcae = 3, README "after infusion".
    a: grade 3 on day 0 -> serious. b: grade 2 on day 5 only -> not serious.
    c: grade 4 on day -3 (before day 0) and grade 2 on day 10 -> not serious.
    d: only a grade-4 infection on day -1 -> no row (nothing after day 0)."""
    # fmt: off
    inf = frame(INFECTIONS, [
        ("a", date(2021, 3, 1),  3),
        ("b", date(2021, 3, 6),  2),
        ("c", date(2021, 2, 26), 4),
        ("c", date(2021, 3, 11), 2),
        ("d", date(2021, 2, 28), 4),
    ])
    # fmt: on
    s = outcomes.derive_serious_infection(inf, timeline("a", "b", "c", "d"), RULES)
    assert s.sort("patient_key").rows() == [("a", True), ("b", False), ("c", False)]


# --- ICANS --------------------------------------------------------------------------------

ICANS = {"patient_key": pl.String, "at": TS, "grade": pl.Int64}


def test_09_icans_counts_on_study_days_0_to_28():
    """derivation.yaml icans_window_days [0, 28], local days.
    a: grade 2 at 23:00 on day 28 counts; grade 3 at 00:30 on day 29 does not -> max 2.
    b: grade 1 on day -1 and grade 4 on day 30 only -> no ICANS row.
    c: ICE score only (grade not recorded) on day 5 -> assessed, no ICANS, max grade 0.
    d: grade 0 on day 3 and grade 1 on day 7 -> ICANS, max 1."""
    # fmt: off
    icans = frame(ICANS, [
        ("a", day(28, 23.0), 2),
        ("a", day(29, 0.5),  3),
        ("b", day(-1),       1),
        ("b", day(30),       4),
        ("c", day(5),        None),
        ("d", day(3),        0),
        ("d", day(7),        1),
    ])
    # fmt: on
    i = outcomes.derive_icans(icans, timeline("a", "b", "c", "d"), RULES, TZ).sort("patient_key")
    assert i.rows() == [("a", True, 2), ("c", False, 0), ("d", True, 1)]


# --- IL-6 around the first tocilizumab dose -----------------------------------------------

LABS = {"patient_key": pl.String, "item": pl.String, "at": TS, "value": pl.Float64}


def test_10_il6_before_is_last_sample_before_and_after_is_first_in_24_to_72_h():
    """First dose at F = T0 + 10 h for every patient.
    a: before = 150 (F - 1 h; F - 10 h is older; a CRP at F - 0.5 h is not IL-6); after:
       F + 23 h excluded, F + 30 h = 60 is the first in 24-72 h -> fell (60 < 150).
    b: before 150; only F + 23 h and F + 73 h after -> no 'after' sample, fell unknown.
    c: before 100; F + 24 h = 250 (the window includes 24 h) -> rose (E7), not fell.
    d: no sample before; F + 72 h = 40 (the window includes 72 h) -> after only."""
    f = 10.0
    # fmt: off
    labs = frame(LABS, [
        ("a", "il6", h(f - 10),  40.0),
        ("a", "il6", h(f - 1),   150.0),
        ("a", "crp", h(f - 0.5), 5.0),
        ("a", "il6", h(f + 23),  5.0),
        ("a", "il6", h(f + 30),  60.0),
        ("a", "il6", h(f + 50),  10.0),
        ("b", "il6", h(f - 1),   150.0),
        ("b", "il6", h(f + 23),  10.0),
        ("b", "il6", h(f + 73),  5.0),
        ("c", "il6", h(f - 2),   100.0),
        ("c", "il6", h(f + 24),  250.0),
        ("d", "il6", h(f + 72),  40.0),
    ])
    # fmt: on
    first = pl.DataFrame(
        {"patient_key": ["a", "b", "c", "d"], "first_toci_at": [h(f)] * 4},
        schema={"patient_key": pl.String, "first_toci_at": TS},
    )
    out = outcomes.derive_il6_course(labs, first, RULES).sort("patient_key")
    cols = ("patient_key", "il6_before_first_toci", "il6_after_first_toci", "il6_fell_after_toci")
    assert out.select(cols).rows() == [
        ("a", 150.0, 60.0, True),
        ("b", 150.0, None, None),
        ("c", 100.0, 250.0, False),
        ("d", None, 40.0, None),
    ]


# --- pre-infusion fever -------------------------------------------------------------------

VITALS = {"patient_key": pl.String, "item": pl.String, "value": pl.Float64, "at": TS}


def test_11_pre_infusion_fever_is_day_0_before_the_infusion_only():
    """README "Fever": a fever on day 0 before the infusion (lymphodepletion) is flagged.
    a: 38.6 at 12:00 on day 0 (T0 - 2 h) -> flagged.
    b: 38.6 at 22:00 on day -1 (T0 - 16 h) -> not day 0. c: 37.9 at T0 - 1 h -> not fever.
    d: 38.0 exactly at T0 - 1 h -> fever (>= 38.0, ASTCT). e: 39.0 after the infusion -> no."""
    # fmt: off
    v = frame(VITALS, [
        ("a", "temp", 38.6, h(-2)),
        ("b", "temp", 38.6, h(-16)),
        ("c", "temp", 37.9, h(-1)),
        ("d", "temp", 38.0, h(-1)),
        ("e", "temp", 39.0, h(1)),
        ("e", "sbp",  80.0, h(-1)),
    ])
    # fmt: on
    tl = timeline("a", "b", "c", "d", "e")
    out = outcomes.derive_pre_infusion_fever(v, tl, crs_rules().fever_c, TZ).sort("patient_key")
    assert out.rows() == [("a", True), ("d", True)]
