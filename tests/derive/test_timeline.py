"""Time axis (``cart_etl.derive.timeline``) on hand-made instants.

Expected values are worked out by hand from the README "Truth columns and conventions"
(day 0 = local calendar date of the infusion; study day = local date - local infusion
date; age = completed years on day 0, on the screening date when never infused) and the
PALS hypotension cut-offs of reference/crs_grading.md section 7 (E6).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from cart_etl.derive.rules import crs_rules
from cart_etl.derive.timeline import (
    completed_years,
    derive_timeline,
    local_date,
    sbp_threshold,
    study_day,
)

RULES = crs_rules()
TS = pl.Datetime("us", "UTC")


def frame(schema: dict[str, pl.DataType], rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


def demographics(rows: list[tuple]) -> pl.DataFrame:
    schema = {
        "patient_key": pl.String,
        "study_id": pl.String,
        "birth_date": pl.Date,
        "screening_date": pl.Date,
    }
    return frame(schema, rows)


def infusion(rows: list[tuple]) -> pl.DataFrame:
    return frame({"patient_key": pl.String, "at": TS}, rows)


def test_01_local_date_of_one_instant_differs_between_shanghai_and_london():
    """2021-03-01 17:30 UTC is 01:30 on 2 March in Shanghai (UTC+8) but 17:30 on 1 March in
    London (GMT, before the 28 March 2021 change): README "day 0 = local calendar date"."""
    df = pl.DataFrame({"at": [datetime(2021, 3, 1, 17, 30, tzinfo=UTC)]}, schema={"at": TS})
    shanghai = df.select(local_date("at", "Asia/Shanghai")).item()
    london = df.select(local_date("at", "Europe/London")).item()
    assert (shanghai, london) == (date(2021, 3, 2), date(2021, 3, 1))


def test_02_london_summer_time_moves_the_date_after_23_00_utc():
    """2021-07-01 23:30 UTC is 00:30 BST (UTC+1) on 2 July in London."""
    df = pl.DataFrame({"at": [datetime(2021, 7, 1, 23, 30, tzinfo=UTC)]}, schema={"at": TS})
    assert df.select(local_date("at", "Europe/London")).item() == date(2021, 7, 2)


def test_03_day0_across_midnight_depends_on_the_site_timezone():
    """Infusion 2021-03-01 17:30 UTC: day 0 = 2 March in Shanghai, 1 March in London."""
    demo = demographics([("p", "S-1", date(1980, 1, 1), date(2021, 2, 1))])
    inf = infusion([("p", datetime(2021, 3, 1, 17, 30, tzinfo=UTC))])
    sh = derive_timeline(demo, inf, "Asia/Shanghai", RULES)
    ld = derive_timeline(demo, inf, "Europe/London", RULES)
    assert sh.get_column("day0").to_list() == [date(2021, 3, 2)]
    assert ld.get_column("day0").to_list() == [date(2021, 3, 1)]


def test_04_same_instant_gets_different_study_days_per_site():
    """Infusion 2021-03-01 06:00 UTC: day 0 = 1 March at both sites (14:00 Shanghai, 06:00
    London). Reading 2021-03-02 15:00 UTC = 23:00 on 2 March in Shanghai and 15:00 on 2
    March in London: day 1 at both. Reading 2021-03-02 17:00 UTC = 01:00 on 3 March in
    Shanghai (day 2) but 17:00 on 2 March in London (day 1). README: study day = local
    date - local infusion date."""
    demo = demographics([("p", "S-1", date(1980, 1, 1), date(2021, 2, 1))])
    inf = infusion([("p", datetime(2021, 3, 1, 6, 0, tzinfo=UTC))])
    readings = pl.DataFrame(
        {
            "patient_key": ["p", "p"],
            "at": [
                datetime(2021, 3, 2, 15, 0, tzinfo=UTC),
                datetime(2021, 3, 2, 17, 0, tzinfo=UTC),
            ],
        },
        schema={"patient_key": pl.String, "at": TS},
    )

    def days(tz: str) -> list[int]:
        tl = derive_timeline(demo, inf, tz, RULES).select("patient_key", "day0")
        return (
            readings.join(tl, on="patient_key")
            .select(study_day(local_date("at", tz)))
            .to_series()
            .to_list()
        )

    assert days("Asia/Shanghai") == [1, 2]
    assert days("Europe/London") == [1, 1]


def test_05_study_day_zero_exists_and_days_before_are_negative():
    """README: day 0 exists (no CDISC --DY shift); the day before is -1."""
    # fmt: off
    df = frame({"d": pl.Date, "day0": pl.Date}, [
        (date(2021, 2, 28), date(2021, 3, 1)),
        (date(2021, 3, 1),  date(2021, 3, 1)),
        (date(2021, 3, 29), date(2021, 3, 1)),
    ])
    # fmt: on
    assert df.select(study_day(pl.col("d"))).to_series().to_list() == [-1, 0, 28]


@pytest.mark.parametrize(
    ("on", "age"),
    [
        (date(2021, 3, 4), 9),  # the day before the 10th birthday: still 9 completed years
        (date(2021, 3, 5), 10),  # on the birthday: 10
        (date(2021, 3, 6), 10),
        (date(2021, 2, 28), 9),  # earlier month
        (date(2021, 12, 31), 10),
    ],
)
def test_06_completed_years_on_and_before_the_birthday(on, age):
    """Born 2011-03-05 (README: age = completed years)."""
    df = pl.DataFrame({"birth": [date(2011, 3, 5)], "on": [on]})
    assert df.select(completed_years(pl.col("birth"), pl.col("on"))).item() == age


@pytest.mark.parametrize(
    ("age", "threshold"),
    [
        (1, 72.0),  # PALS (E6): 70 + 2 x 1
        (5, 80.0),  # 70 + 2 x 5
        (9, 88.0),  # 70 + 2 x 9, the last paediatric year
        (10, 90.0),  # from age 10: adult 90 mmHg
        (45, 90.0),
    ],
)
def test_07_sbp_threshold_is_70_plus_2_age_for_ages_1_to_9(age, threshold):
    df = pl.DataFrame({"age": [age]}, schema={"age": pl.Int32})
    assert df.select(sbp_threshold(pl.col("age"), RULES)).item() == threshold


def test_08_timeline_age_on_day0_and_on_screening_when_not_infused():
    """p infused 2021-03-01 (Shanghai) turns 10 on 2021-03-02: age 9 on day 0, SBP cut-off
    70 + 18 = 88. q is never infused: age on the screening date 2021-02-01, which is q's
    21st birthday -> 21, adult cut-off 90, no day 0."""
    # fmt: off
    demo = demographics([
        ("p", "S-1", date(2011, 3, 2), date(2021, 2, 1)),
        ("q", "S-2", date(2000, 2, 1), date(2021, 2, 1)),
    ])
    # fmt: on
    inf = infusion([("p", datetime(2021, 3, 1, 6, 0, tzinfo=UTC))])
    tl = derive_timeline(demo, inf, "Asia/Shanghai", RULES).sort("patient_key")
    assert tl.get_column("day0").to_list() == [date(2021, 3, 1), None]
    assert tl.get_column("age_years").to_list() == [9, 21]
    assert tl.get_column("sbp_below").to_list() == [88.0, 90.0]
    assert tl.get_column("infusion_at").to_list() == [datetime(2021, 3, 1, 6, 0, tzinfo=UTC), None]


def test_09_day0_is_the_earliest_infusion_when_rows_are_unordered():
    """crs_grading.md 4.1: day 0 = date of the FIRST CAR-T infusion."""
    demo = demographics([("p", "S-1", date(1980, 1, 1), date(2021, 2, 1))])
    # fmt: off
    inf = infusion([
        ("p", datetime(2021, 4, 1, 6, 0, tzinfo=UTC)),  # re-infusion, listed first
        ("p", datetime(2021, 3, 1, 6, 0, tzinfo=UTC)),
    ])
    # fmt: on
    tl = derive_timeline(demo, inf, "Asia/Shanghai", RULES)
    assert tl.get_column("day0").to_list() == [date(2021, 3, 1)]
