"""Periods built from dated records: ICANS periods, oxygen-support runs, tocilizumab
regimens and the CAR-T admission window.

Each function is pure and keyed by ``by`` (``patient_key`` in the per-bucket derivations,
``person_id`` when the OMOP stage asks for a period of its persons). Gaps and windows are
data: ``mappings/derive/derivation.yaml`` ``periods`` (read by
``cart_etl.derive.rules.derivation_rules``).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from cart_etl.derive.timeline import local_date

_UTC = pl.Datetime("us", "UTC")


def compute_period_number(at: pl.Expr, by: str, gap: timedelta) -> pl.Expr:
    """1, 2, ... per ``by`` in time order: a new period starts after a gap above ``gap``.

    Input must be sorted by (``by``, ``at``).
    """
    new = (at.diff().over(by) > gap).fill_null(True)
    return new.cast(pl.Int32).cum_sum().over(by)


def derive_icans_periods(df: pl.DataFrame, by: str, gap: timedelta) -> pl.DataFrame:
    """One row per ICANS period: ``by``, period_number, start, end, grade (max recorded).

    Recorded assessments with grade >= 1 (ASTCT 2019 ICANS, taken as recorded) chained while
    at most ``gap`` (48 h) apart (a longer gap starts a new period); the period starts at its
    first and ends at its last graded assessment. Needs columns ``by``, at (UTC), grade.

    Example: grade-1 assessments at 0 h and 24 h and a grade-3 one at 100 h give two
    periods: (0 h-24 h, grade 1) and (100 h-100 h, grade 3).
    """
    graded = df.filter(pl.col("grade") >= 1).select(by, "at", "grade").sort(by, "at")
    return (
        graded.with_columns(period_number=compute_period_number(pl.col("at"), by, gap))
        .group_by(by, "period_number")
        .agg(start=pl.col("at").min(), end=pl.col("at").max(), grade=pl.col("grade").max())
    )


def derive_oxygen_runs(
    df: pl.DataFrame, by: str, gap: timedelta, room_air_device: str
) -> pl.DataFrame:
    """One row per oxygen-support run: ``by``, device, start, end, max_flow, device_source.

    A run is a maximal sequence of consecutive chartings (per ``by``, in time order) of
    the same device category with no gap above ``gap`` (24 h); it starts at its first and
    ends at its last charting. Runs of ``room_air_device`` are not oxygen support and are
    dropped. Needs columns ``by``, at (UTC), device, flow_l_min, device_source.
    """
    charted = df.select(by, "at", "device", "flow_l_min", "device_source").sort(
        by, "at", "device", maintain_order=True
    )
    new_run = (
        (pl.col("device") != pl.col("device").shift().over(by))
        | (pl.col("at").diff().over(by) > gap)
    ).fill_null(True)
    return (
        charted.with_columns(_run=new_run.cast(pl.Int32).cum_sum().over(by))
        .group_by(by, "_run", maintain_order=True)
        .agg(
            device=pl.col("device").first(),
            start=pl.col("at").min(),
            end=pl.col("at").max(),
            max_flow=pl.col("flow_l_min").max(),
            device_source=pl.col("device_source").first(),
        )
        .filter(pl.col("device") != room_air_device)
        .drop("_run")
    )


def derive_toci_regimens(df: pl.DataFrame, by: str, gap: timedelta) -> pl.DataFrame:
    """Tocilizumab doses numbered into regimens (courses): ``by``, at, dose, course.

    Doses further apart than ``gap`` (72 h) belong to two regimens (the label allows up to
    four doses at >= 8 h intervals for one CRS flare). Needs columns ``by``, at, dose of
    tocilizumab administrations only.
    """
    doses = df.select(by, "at", "dose").sort(by, "at")
    return doses.with_columns(course=compute_period_number(pl.col("at"), by, gap))


def derive_admission(
    df_infusion: pl.DataFrame,
    df_follow_up: pl.DataFrame | None,
    by: str,
    days: int,
    tz: str,
) -> pl.DataFrame:
    """The CAR-T admission of each infused patient: ``by``, at (first infusion), start_date,
    stop (earliest death or last contact), end_date.

    Rule (the sources carry no admission or lymphodepletion dates): start = local date of
    the first CAR-T infusion; end = study day ``days`` (28), earlier if death or last
    contact is earlier, never before the start.
    """
    first = (
        df_infusion.group_by(by)
        .agg(pl.col("at").min())
        .with_columns(start_date=local_date(pl.col("at"), tz))
    )
    if df_follow_up is not None:
        stops = (
            df_follow_up.group_by(by)
            .agg(pl.min_horizontal(pl.col("death_date").min(), pl.col("last_contact_date").min()))
            .rename({"death_date": "stop"})
        )
        first = first.join(stops, on=by, how="left")
    else:
        first = first.with_columns(stop=pl.lit(None, pl.Date))
    end = pl.min_horizontal(pl.col("start_date") + timedelta(days=days), pl.col("stop"))
    return first.with_columns(end_date=pl.max_horizontal(end, pl.col("start_date")))
