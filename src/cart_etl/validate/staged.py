"""pandera (polars backend) models of the staged bulk tables: vitals, labs, oxygen.

Each dataframe check is named after its rule id (``cart_etl.validate.rules``) so that lazy
validation returns failure cases a data manager can act on. Checks are written so that one
cause fails one rule: a missing value is not also reported as out of range.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.engines.polars_engine import DateTime

from cart_etl.transform.staging import plausibility


def _hard_range_ok(item_col: str, value_col: str) -> pl.Expr:
    """True when the value is null (another rule) or inside its item's hard limits."""
    ok = pl.lit(True)
    for key, spec in plausibility()["measurements"].items():
        lo, hi = spec["hard"]
        ok = (
            pl.when(pl.col(item_col) == key)
            .then(pl.col(value_col).is_between(lo, hi))
            .otherwise(ok)
        )
    return ok | pl.col(value_col).is_null()


def alert_flag(item_col: str = "item", value_col: str = "value") -> pl.Expr:
    """'low'/'high' when outside the clinical alert range (rows are kept), else null."""
    flag: pl.Expr = pl.lit(None, dtype=pl.String)
    for key, spec in plausibility()["measurements"].items():
        low, high = spec["alert"].get("low"), spec["alert"].get("high")
        is_item = pl.col(item_col) == key
        if high is not None:
            flag = (
                pl.when(is_item & (pl.col(value_col) > high)).then(pl.lit("high")).otherwise(flag)
            )
        if low is not None:
            flag = pl.when(is_item & (pl.col(value_col) < low)).then(pl.lit("low")).otherwise(flag)
    return flag


class StgMeasurement(pa.DataFrameModel):
    """Staged vital signs and lab results. Grain: one row per charted/resulted value."""

    source: str = pa.Field(nullable=False)
    file: str = pa.Field(nullable=False)
    row: str = pa.Field(nullable=False)
    patient_key: str = pa.Field(nullable=False)
    item: str = pa.Field(nullable=True)
    at: DateTime = pa.Field(nullable=True, dtype_kwargs={"time_unit": "us", "time_zone": "UTC"})
    value: float = pa.Field(nullable=True)
    unit: str = pa.Field(nullable=True)

    class Config:
        strict = False
        coerce = False

    @pa.dataframe_check(name="measurement.item.known")
    def item_known(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("item").is_not_null())

    @pa.dataframe_check(name="measurement.at.parse")
    def at_parses(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("at").is_not_null())

    @pa.dataframe_check(name="measurement.at.future")
    def at_not_future(cls, data: PolarsData) -> pl.LazyFrame:
        now = datetime.now(UTC)
        return data.lazyframe.select(pl.col("at").is_null() | (pl.col("at") <= now))

    @pa.dataframe_check(name="measurement.value.numeric")
    def value_numeric(cls, data: PolarsData) -> pl.LazyFrame:
        parsed_or_blank = pl.col("value").is_not_null() | pl.col("item").is_null()
        return data.lazyframe.select(parsed_or_blank | pl.col("source_unit").is_null())

    @pa.dataframe_check(name="measurement.unit.convertible")
    def unit_convertible(cls, data: PolarsData) -> pl.LazyFrame:
        ok = pl.col("item").is_null() | (
            pl.col("source_unit").is_not_null() & pl.col("unit").is_not_null()
        )
        return data.lazyframe.select(ok)

    @pa.dataframe_check(name="measurement.value.hard_range")
    def value_in_hard_range(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_hard_range_ok("item", "value"))


class StgOxygen(pa.DataFrameModel):
    """Staged oxygen chartings. Grain: one row per charting of the device in use."""

    source: str = pa.Field(nullable=False)
    file: str = pa.Field(nullable=False)
    row: str = pa.Field(nullable=False)
    patient_key: str = pa.Field(nullable=False)
    device: str = pa.Field(nullable=True)
    at: DateTime = pa.Field(nullable=True, dtype_kwargs={"time_unit": "us", "time_zone": "UTC"})
    flow_l_min: float = pa.Field(nullable=True)

    class Config:
        strict = False
        coerce = False

    @pa.dataframe_check(name="oxygen.device.known")
    def device_known(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("device").is_not_null())

    @pa.dataframe_check(name="measurement.at.parse")
    def at_parses(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("at").is_not_null())

    @pa.dataframe_check(name="measurement.at.future")
    def at_not_future(cls, data: PolarsData) -> pl.LazyFrame:
        now = datetime.now(UTC)
        return data.lazyframe.select(pl.col("at").is_null() | (pl.col("at") <= now))

    @pa.dataframe_check(name="oxygen.flow.hard_range")
    def flow_in_range(cls, data: PolarsData) -> pl.LazyFrame:
        lo, hi = plausibility()["measurements"]["flow_l_min"]["hard"]
        return data.lazyframe.select(
            pl.col("flow_l_min").is_null() | pl.col("flow_l_min").is_between(lo, hi)
        )
