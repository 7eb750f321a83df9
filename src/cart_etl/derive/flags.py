"""Exclusion flags (paper Figure 1; README "Exclusions"); the CONSORT counts are summed over
all patients in SQL (``cart_etl.load.marts``)."""

from __future__ import annotations

import polars as pl


def derive_exclusions(patients: pl.DataFrame, min_follow_up_days: int) -> pl.DataFrame:
    """Exclusion reason in CONSORT order, ``lost_data_kind`` and ``is_included``.

    1. ``not_infused``: no accepted infusion record.
    2. ``followup_lt_28d``: death or last contact before study day ``min_follow_up_days``
       (28, ``derive/derivation.yaml`` ``exclusions``).
    3. ``data_lost``: infused and followed >= 28 days, but the required monitoring data are
       missing: no temperature charted at/after the infusion on study days 0-14 (CRS cannot
       be graded: ``lost_data_kind = monitoring``), or no marrow response assessment on study
       days 21-35 (``response``), or no follow-up record at all (``follow_up``).
    Everyone else is analysed. Needs columns is_infused, os_days, monitored, response_assessed.
    """
    reason = (
        pl.when(~pl.col("is_infused"))
        .then(pl.lit("not_infused"))
        .when(pl.col("os_days") < min_follow_up_days)
        .then(pl.lit("followup_lt_28d"))
        .when(~pl.col("monitored") | ~pl.col("response_assessed") | pl.col("os_days").is_null())
        .then(pl.lit("data_lost"))
    )
    kind = (
        pl.when(~pl.col("exclusion_reason").eq_missing("data_lost"))
        .then(pl.lit(None, pl.String))
        .when(~pl.col("monitored"))
        .then(pl.lit("monitoring"))
        .when(~pl.col("response_assessed"))
        .then(pl.lit("response"))
        .otherwise(pl.lit("follow_up"))
    )
    return (
        patients.with_columns(
            pl.col("monitored").fill_null(False), pl.col("response_assessed").fill_null(False)
        )
        .with_columns(exclusion_reason=reason)
        .with_columns(lost_data_kind=kind, is_included=pl.col("exclusion_reason").is_null())
    )
