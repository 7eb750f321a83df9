"""Day 0, study days and age: the time axis every other derivation uses."""

from __future__ import annotations

import polars as pl

from cart_etl.derive.rules import CrsRules


def local_date(col: str | pl.Expr, tz: str) -> pl.Expr:
    """Local calendar date of a UTC instant in the site timezone."""
    expr = pl.col(col) if isinstance(col, str) else col
    return expr.dt.convert_time_zone(tz).dt.date()


def study_day(date_expr: pl.Expr, day0: str = "day0") -> pl.Expr:
    """Study day = local date - local infusion date (day 0 exists; README "Time axis")."""
    return (date_expr - pl.col(day0)).dt.total_days().cast(pl.Int32)


def completed_years(birth: pl.Expr, on: pl.Expr) -> pl.Expr:
    """Age in completed years on a date (birthday not yet reached that year subtracts one)."""
    before_birthday = (on.dt.month() < birth.dt.month()) | (
        (on.dt.month() == birth.dt.month()) & (on.dt.day() < birth.dt.day())
    )
    return (on.dt.year() - birth.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int32)


def sbp_threshold(age: pl.Expr, rules: CrsRules) -> pl.Expr:
    """Hypotension cut-off: SBP < 90 mmHg from age 10; < 70 + 2 x age at 1-9 y (PALS, E6)."""
    return (
        pl.when(age >= rules.adult_from_age)
        .then(pl.lit(rules.adult_sbp_below))
        .otherwise(rules.child_sbp_base + rules.child_sbp_per_year * age.cast(pl.Float64))
    )


def derive_timeline(
    demographics: pl.DataFrame, infusion: pl.DataFrame, tz: str, rules: CrsRules
) -> pl.DataFrame:
    """One row per register patient: infusion instant, day 0, age and SBP threshold.

    Day 0 = local calendar date of the CAR-T infusion; age = completed years on day 0, or on
    the screening date for a patient never infused (README "Truth columns and conventions").
    """
    # The earliest infusion is day 0 (a re-infusion, when allowed, is not).
    inf = (
        infusion.select("patient_key", infusion_at=pl.col("at"))
        .sort("patient_key", "infusion_at", nulls_last=True)
        .unique("patient_key", keep="first")
    )
    out = (
        demographics.select("patient_key", "study_id", "birth_date", "screening_date")
        .join(inf, on="patient_key", how="left")
        .with_columns(day0=local_date("infusion_at", tz))
    )
    age = completed_years(pl.col("birth_date"), pl.coalesce("day0", "screening_date"))
    return out.with_columns(age_years=age).with_columns(
        sbp_below=sbp_threshold(pl.col("age_years"), rules)
    )
