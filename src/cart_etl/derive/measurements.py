"""Clinical flags on accepted vital signs and lab results (a finding, not a data problem)."""

from __future__ import annotations

import polars as pl

from cart_etl.mappings import plausibility


def compute_clinical_flag(item_col: str = "item", value_col: str = "value") -> pl.Expr:
    """'low'/'high' outside the item's clinical reference range, else null.

    Ranges: ``validation/plausibility.yaml`` ``measurements.<item>.flag`` (e.g. temperature
    high > 40 Cel, SBP low < 90 mm[Hg], IL-6 high > 7 pg/mL; sources cited there). Should a
    site's ranges overlap (low above high), the low test wins.
    """
    flag: pl.Expr = pl.lit(None, dtype=pl.String)
    for key, spec in plausibility()["measurements"].items():
        low, high = spec["flag"].get("low"), spec["flag"].get("high")
        is_item = pl.col(item_col) == key
        if high is not None:
            flag = (
                pl.when(is_item & (pl.col(value_col) > high)).then(pl.lit("high")).otherwise(flag)
            )
        if low is not None:
            flag = pl.when(is_item & (pl.col(value_col) < low)).then(pl.lit("low")).otherwise(flag)
    return flag


def derive_col_clinical_flag(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` (item, value) with ``flag`` added (``compute_clinical_flag``)."""
    return df.with_columns(flag=compute_clinical_flag())
