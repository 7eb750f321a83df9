"""ICANS periods, oxygen runs, tocilizumab regimens and the CAR-T admission
(``cart_etl.derive.periods``) on hand-made records.

Expected values are worked out by hand from ``derive/derivation.yaml`` ``periods`` and the
function docstrings: ICANS assessments with grade >= 1 chained while < 48 h apart (the
CRS-episode chaining of the README "Episode" rule); oxygen runs split by a device change or
a gap > 24 h, room air dropped; tocilizumab doses > 72 h apart are two regimens (Actemra
USPI: up to 4 doses >= 8 h apart for one flare, crs_grading.md 5); admission = local
infusion date to day 28, earlier at death or last contact, never before the start.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl

from cart_etl.derive import periods
from cart_etl.derive.rules import derivation_rules
from tests.derive.frames import TS, frame, h

RULES = derivation_rules()


def test_01_gaps_from_derivation_yaml():
    assert (RULES.icans_gap, RULES.oxygen_run_gap, RULES.toci_regimen_gap) == (
        timedelta(hours=48),
        timedelta(hours=24),
        timedelta(hours=72),
    )


# --- ICANS periods ------------------------------------------------------------------------

ICANS = {"person_id": pl.Int64, "at": TS, "grade": pl.Int64}


def icans_periods(rows: list[tuple]) -> list[tuple]:
    out = periods.derive_icans_periods(frame(ICANS, rows), "person_id", RULES.icans_gap)
    return out.sort("person_id", "period_number").rows()


def test_02_docstring_example_two_periods():
    """Grade 1 at 0 h and 24 h, grade 3 at 100 h (76 h later > 48 h): (0-24 h, 1) and
    (100-100 h, 3). A grade-0 assessment at 60 h is not ICANS and bridges nothing."""
    # fmt: off
    rows = [
        (1, h(0),   1),
        (1, h(24),  1),
        (1, h(60),  0),
        (1, h(100), 3),
    ]
    # fmt: on
    assert icans_periods(rows) == [(1, 1, h(0), h(24), 1), (1, 2, h(100), h(100), 3)]


def test_03_assessments_less_than_48h_apart_chain_and_take_the_max_grade():
    """0 h (grade 1), 47 h (grade 2), 94 h (grade 1): each step 47 h < 48 h -> one period
    0-94 h of grade 2. Person 2 is keyed separately."""
    # fmt: off
    rows = [
        (1, h(0),  1),
        (1, h(47), 2),
        (1, h(94), 1),
        (2, h(10), 4),
    ]
    # fmt: on
    assert icans_periods(rows) == [(1, 1, h(0), h(94), 2), (2, 1, h(10), h(10), 4)]


def test_04_more_than_48h_apart_splits():
    rows = [(1, h(0), 2), (1, h(48.5), 2)]
    assert [r[1] for r in icans_periods(rows)] == [1, 2]


def test_05_exactly_48h_apart_is_one_period():
    """derive_icans_periods docstring: chained while at most ``gap`` (48 h) apart, as CRS
    episodes are (crs.py chains a sign <= 48 h after the episode end)."""
    rows = [(1, h(0), 1), (1, h(48), 1)]
    assert icans_periods(rows) == [(1, 1, h(0), h(48), 1)]


# --- oxygen runs --------------------------------------------------------------------------

OXYGEN = {
    "patient_key": pl.String,
    "at": TS,
    "device": pl.String,
    "flow_l_min": pl.Float64,
    "device_source": pl.String,
}


def oxygen_runs(rows: list[tuple]) -> list[tuple]:
    out = periods.derive_oxygen_runs(
        frame(OXYGEN, rows), "patient_key", RULES.oxygen_run_gap, RULES.room_air_device
    )
    return out.sort("patient_key", "start").select("device", "start", "end", "max_flow").rows()


def test_06_runs_split_by_device_change_and_gap_and_room_air_dropped():
    """NC 0-8 h (max 3 L/min); face mask 10-14 h (max 10); room air at 20 h (dropped, and
    it ends the mask run); NC at 30 h alone; NC at 60 h is 30 h after the last charting
    (> 24 h): a new run, continued by 84 h (exactly 24 h: no gap above 24 h)."""
    # fmt: off
    rows = [
        ("p", h(0),  "nasal_cannula", 2.0,  "鼻导管"),
        ("p", h(4),  "nasal_cannula", 3.0,  "鼻导管"),
        ("p", h(8),  "nasal_cannula", 2.0,  "鼻导管"),
        ("p", h(10), "face_mask",     8.0,  "面罩"),
        ("p", h(14), "face_mask",     10.0, "面罩"),
        ("p", h(20), "room_air",      None, "未吸氧"),
        ("p", h(30), "nasal_cannula", 1.0,  "鼻导管"),
        ("p", h(60), "nasal_cannula", 4.0,  "鼻导管"),
        ("p", h(84), "nasal_cannula", 5.0,  "鼻导管"),
    ]
    # fmt: on
    assert oxygen_runs(rows) == [
        ("nasal_cannula", h(0), h(8), 3.0),
        ("face_mask", h(10), h(14), 10.0),
        ("nasal_cannula", h(30), h(30), 1.0),
        ("nasal_cannula", h(60), h(84), 5.0),
    ]


def test_07_runs_are_per_patient_and_in_time_order_whatever_the_row_order():
    """Rows out of order; q's mask does not interrupt p's cannula run."""
    # fmt: off
    rows = [
        ("p", h(12), "nasal_cannula", 2.0,  "NC"),
        ("q", h(6),  "face_mask",     8.0,  "FM"),
        ("p", h(0),  "nasal_cannula", 4.0,  "NC"),
    ]
    # fmt: on
    out = periods.derive_oxygen_runs(
        frame(OXYGEN, rows), "patient_key", RULES.oxygen_run_gap, RULES.room_air_device
    ).sort("patient_key")
    assert out.select("patient_key", "device", "start", "end", "device_source").rows() == [
        ("p", "nasal_cannula", h(0), h(12), "NC"),
        ("q", "face_mask", h(6), h(6), "FM"),
    ]


# --- tocilizumab regimens -----------------------------------------------------------------


def test_08_toci_doses_more_than_72h_apart_are_two_regimens():
    """0, 8, 16 h: one flare; 90 h is 74 h after 16 h (> 72 h): regimen 2; 162 h is exactly
    72 h after 90 h ("further apart than 72 h" starts a new one): still regimen 2."""
    # fmt: off
    df = frame({"patient_key": pl.String, "at": TS, "dose": pl.Float64}, [
        ("p", h(90),  560.0),
        ("p", h(0),   560.0),
        ("p", h(8),   560.0),
        ("p", h(16),  560.0),
        ("p", h(162), 560.0),
        ("q", h(100), 400.0),
    ])
    # fmt: on
    out = periods.derive_toci_regimens(df, "patient_key", RULES.toci_regimen_gap)
    assert out.select("patient_key", "at", "course").rows() == [
        ("p", h(0), 1),
        ("p", h(8), 1),
        ("p", h(16), 1),
        ("p", h(90), 2),
        ("p", h(162), 2),
        ("q", h(100), 1),
    ]


# --- admission ----------------------------------------------------------------------------

INFUSION = {"patient_key": pl.String, "at": TS}
FOLLOW_UP = {"patient_key": pl.String, "last_contact_date": pl.Date, "death_date": pl.Date}


def test_09_admission_window():
    """Shanghai: a: two infusions, the first 2021-03-01 17:30 UTC = 01:30 on 2 March -> start
    2021-03-02, end day 28 = 2021-03-30 (last contact later). b: died 2021-03-15 -> end
    2021-03-15. c: last contact 2021-02-20, before the start -> end = start 2021-03-01.
    d: no follow-up row -> end = day 28."""
    # fmt: off
    inf = frame(INFUSION, [
        ("a", datetime(2021, 4, 1, 2, 0, tzinfo=UTC)),
        ("a", datetime(2021, 3, 1, 17, 30, tzinfo=UTC)),
        ("b", datetime(2021, 3, 1, 6, 0, tzinfo=UTC)),
        ("c", datetime(2021, 3, 1, 6, 0, tzinfo=UTC)),
        ("d", datetime(2021, 3, 1, 6, 0, tzinfo=UTC)),
    ])
    fu = frame(FOLLOW_UP, [
        ("a", date(2021, 9, 1),  None),
        ("b", date(2021, 3, 15), date(2021, 3, 15)),
        ("c", date(2021, 2, 20), None),
    ])
    # fmt: on
    out = periods.derive_admission(inf, fu, "patient_key", RULES.admission_days, "Asia/Shanghai")
    assert out.sort("patient_key").select("patient_key", "at", "start_date", "end_date").rows() == [
        ("a", datetime(2021, 3, 1, 17, 30, tzinfo=UTC), date(2021, 3, 2), date(2021, 3, 30)),
        ("b", datetime(2021, 3, 1, 6, 0, tzinfo=UTC), date(2021, 3, 1), date(2021, 3, 15)),
        ("c", datetime(2021, 3, 1, 6, 0, tzinfo=UTC), date(2021, 3, 1), date(2021, 3, 1)),
        ("d", datetime(2021, 3, 1, 6, 0, tzinfo=UTC), date(2021, 3, 1), date(2021, 3, 29)),
    ]


def test_10_admission_without_follow_up_frame_and_in_london():
    """The same instant 2021-03-01 17:30 UTC starts on 1 March in London -> end 29 March."""
    inf = frame(INFUSION, [("a", datetime(2021, 3, 1, 17, 30, tzinfo=UTC))])
    out = periods.derive_admission(inf, None, "patient_key", 28, "Europe/London")
    assert out.select("start_date", "stop", "end_date").rows() == [
        (date(2021, 3, 1), None, date(2021, 3, 29))
    ]
