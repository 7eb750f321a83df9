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

from cart_etl.mappings import plausibility


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


def _unit_converts(source_col: str = "source_unit", unit_col: str = "unit") -> pl.Expr:
    """True where the source unit is the canonical unit or a conversion to it is declared."""
    ok = pl.col(source_col) == pl.col(unit_col)
    for pair in plausibility()["conversions"]:
        src, dst = pair.split("->")
        ok = ok | ((pl.col(source_col) == src) & (pl.col(unit_col) == dst))
    return ok.fill_null(False)


def implausible(item_col: str = "item", value_col: str = "value") -> pl.Expr:
    """True for possible-but-implausible values (inside hard limits, outside ``warn``)."""
    out = pl.lit(False)
    for key, spec in plausibility()["measurements"].items():
        lo, hi = spec["warn"]
        outside = ~pl.col(value_col).is_between(lo, hi)
        out = pl.when(pl.col(item_col) == key).then(outside).otherwise(out)
    return out.fill_null(False)


def _at_parsed() -> pl.Expr:
    """The timestamp parsed (rule ``measurement.at.parse``)."""
    return pl.col("at").is_not_null()


def _at_not_future() -> pl.Expr:
    """Not after the moment of validation (rule ``measurement.at.future``); null passes."""
    return pl.col("at").is_null() | (pl.col("at") <= datetime.now(UTC))


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
        return data.lazyframe.select(_at_parsed())

    @pa.dataframe_check(name="measurement.at.future")
    def at_not_future(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_at_not_future())

    @pa.dataframe_check(name="measurement.value.numeric")
    def value_numeric(cls, data: PolarsData) -> pl.LazyFrame:
        parsed_or_blank = pl.col("value").is_not_null() | pl.col("item").is_null()
        # A number whose unit does not convert is measurement.unit.convertible's case.
        return data.lazyframe.select(parsed_or_blank | ~_unit_converts())

    @pa.dataframe_check(name="measurement.unit.convertible")
    def unit_convertible(cls, data: PolarsData) -> pl.LazyFrame:
        # Known to UCUM is not enough: a conversion to the canonical unit must be declared.
        return data.lazyframe.select(pl.col("item").is_null() | _unit_converts())

    @pa.dataframe_check(name="measurement.value.hard_range")
    def value_in_hard_range(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_hard_range_ok("item", "value"))


class StgOxygen(pa.DataFrameModel):
    """Staged oxygen chartings. Grain: one row per charting of the device in use."""

    # The timestamp checks are repeated in each model on purpose: pandera 0.35 runs a check
    # inherited from a base model twice (once under its method name), doubling the cases.

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
        return data.lazyframe.select(_at_parsed())

    @pa.dataframe_check(name="measurement.at.future")
    def at_not_future(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_at_not_future())

    @pa.dataframe_check(name="oxygen.flow.hard_range")
    def flow_in_range(cls, data: PolarsData) -> pl.LazyFrame:
        lo, hi = plausibility()["measurements"]["flow_l_min"]["hard"]
        return data.lazyframe.select(
            pl.col("flow_l_min").is_null() | pl.col("flow_l_min").is_between(lo, hi)
        )


# ---- small tables ------------------------------------------------------------------------------


class StgDemographics(pa.DataFrameModel):
    """Staged patient register. Grain: one row per screened patient."""

    patient_key: str = pa.Field(nullable=False)
    study_id: str = pa.Field(nullable=False)
    sex: str = pa.Field(nullable=True, isin=["M", "F"])
    lines_of_therapy: int = pa.Field(nullable=True, ge=0, le=20)
    marrow_blasts_pct: float = pa.Field(nullable=True, ge=0, le=100)
    weight_kg: float = pa.Field(nullable=True, ge=2, le=500)
    height_cm: float = pa.Field(nullable=True, ge=20, le=250)

    class Config:
        strict = False
        coerce = False

    @pa.dataframe_check(name="patient.dates.order")
    def birth_before_diagnosis_before_screening(cls, data: PolarsData) -> pl.LazyFrame:
        birth, dx, scr = pl.col("birth_date"), pl.col("diagnosis_date"), pl.col("screening_date")
        ok = (birth.is_null() | dx.is_null() | (birth < dx)) & (
            dx.is_null() | scr.is_null() | (dx <= scr)
        )
        return data.lazyframe.select(ok)

    @pa.dataframe_check(name="date.future")
    def no_future_dates(cls, data: PolarsData) -> pl.LazyFrame:
        today = datetime.now(UTC).date()
        cols = ("birth_date", "diagnosis_date", "screening_date")
        return data.lazyframe.select(
            pl.all_horizontal([pl.col(c).is_null() | (pl.col(c) <= today) for c in cols])
        )


class StgInfusion(pa.DataFrameModel):
    """Staged CAR-T infusions. Grain: one row per infusion."""

    patient_key: str = pa.Field(nullable=False)
    at: DateTime = pa.Field(nullable=False, dtype_kwargs={"time_unit": "us", "time_zone": "UTC"})
    dose_1e6_per_kg: float = pa.Field(nullable=False, gt=0, le=100)
    weight_kg: float = pa.Field(nullable=True, ge=2, le=500)
    cells_total: float = pa.Field(nullable=True, gt=0)  # a negative or zero count: field.range

    class Config:
        strict = False
        coerce = False

    @pa.dataframe_check(name="date.future")
    def not_future(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("at") <= datetime.now(UTC))


class StgDrug(pa.DataFrameModel):
    """Staged drug administrations. Grain: one row per administered dose."""

    patient_key: str = pa.Field(nullable=False)
    drug: str = pa.Field(nullable=True)
    at: DateTime = pa.Field(nullable=True, dtype_kwargs={"time_unit": "us", "time_zone": "UTC"})
    dose: float = pa.Field(nullable=True)

    class Config:
        strict = False
        coerce = False

    @pa.dataframe_check(name="drug.known")
    def drug_known(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("drug").is_not_null())

    @pa.dataframe_check(name="measurement.at.parse")
    def at_parses(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_at_parsed())

    @pa.dataframe_check(name="measurement.at.future")
    def at_not_future(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_at_not_future())

    @pa.dataframe_check(name="drug.dose.parse")
    def dose_parses(cls, data: PolarsData) -> pl.LazyFrame:
        ok = pl.col("drug").is_null() | pl.col("source_dose").is_not_null()
        return data.lazyframe.select(ok)

    @pa.dataframe_check(name="drug.dose.unit")
    def dose_unit_converts(cls, data: PolarsData) -> pl.LazyFrame:
        # A dose per kg without the patient's infusion weight has no absolute dose: never
        # read "8mg/kg" as 8 mg.
        per_kg_without_weight = (pl.col("source_unit") == "mg/kg") & pl.col("weight_kg").is_null()
        ok = (
            pl.col("drug").is_null()
            | pl.col("source_dose").is_null()
            | (pl.col("dose").is_not_null() & ~per_kg_without_weight.fill_null(False))
        )
        return data.lazyframe.select(ok)

    @pa.dataframe_check(name="drug.dose.hard_range")
    def dose_in_hard_range(cls, data: PolarsData) -> pl.LazyFrame:
        ok = pl.lit(True)
        for drug, spec in plausibility()["drugs"].items():
            inside = pl.col("dose").is_between(0, spec["hard_max_per_dose"], closed="right")
            ok = pl.when(pl.col("drug") == drug).then(inside).otherwise(ok)
        return data.lazyframe.select(ok | pl.col("dose").is_null())

    @pa.dataframe_check(name="drug.toci.mg_per_kg_hard")
    def toci_per_kg(cls, data: PolarsData) -> pl.LazyFrame:
        toci = plausibility()["drugs"]["tocilizumab"]
        per_kg = pl.col("dose") / pl.col("weight_kg")
        # A dose already above the absolute maximum is reported by drug.dose.hard_range only.
        over_max = pl.col("dose") > toci["hard_max_per_dose"]
        ok = (
            (pl.col("drug") != "tocilizumab")
            | per_kg.is_null()
            | (per_kg <= toci["hard_mg_per_kg_above"])
            | over_max
        )
        return data.lazyframe.select(ok.fill_null(True))


class StgVasopressor(pa.DataFrameModel):
    """Staged vasopressor infusions. Grain: one row per infusion interval."""

    patient_key: str = pa.Field(nullable=False)
    drug: str = pa.Field(nullable=True)
    rate: float = pa.Field(nullable=True)
    rate_unit: str = pa.Field(nullable=True)

    class Config:
        strict = False
        coerce = False

    @pa.dataframe_check(name="vasopressor.known")
    def drug_known(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("drug").is_not_null())

    @pa.dataframe_check(name="vasopressor.interval")
    def stop_after_start(cls, data: PolarsData) -> pl.LazyFrame:
        start, stop = pl.col("start"), pl.col("stop")
        return data.lazyframe.select(start.is_null() | stop.is_null() | (stop >= start))

    @pa.dataframe_check(name="vasopressor.rate")
    def rate_in_range(cls, data: PolarsData) -> pl.LazyFrame:
        ok = pl.lit(True)
        for drug, spec in plausibility()["vasopressors"].items():
            inside = (pl.col("rate_unit") == spec["unit"]) & pl.col("rate").is_between(
                0, spec["hard_max"], closed="right"
            )
            ok = pl.when(pl.col("drug") == drug).then(inside).otherwise(ok)
        return data.lazyframe.select(ok.fill_null(False) | pl.col("drug").is_null())


def infusion_dose_consistent(tolerance: float | None = None) -> pl.Expr:
    """True unless total cells / (weight x 10^6) disagrees with the charted dose per kg by more
    than ``tolerance`` (5 %, ``validation/plausibility.yaml`` ``infusion.dose_consistency``)."""
    if tolerance is None:
        tolerance = float(plausibility()["infusion"]["dose_consistency_tolerance"])
    implied = pl.col("cells_total") / (pl.col("weight_kg") * 1e6)
    off = (implied / pl.col("dose_1e6_per_kg") - 1).abs() > tolerance
    return ~off.fill_null(False)
