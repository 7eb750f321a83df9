"""Hand-built frames shared by the derive tests: the time axis and the staged-table schemas.

Day 0 is 2021-03-01 in Asia/Shanghai; ``T0`` is 14:00 local (06:00 UTC) that day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl

from cart_etl.derive.rules import crs_rules
from cart_etl.derive.timeline import derive_timeline

TZ = "Asia/Shanghai"
T0 = datetime(2021, 3, 1, 6, 0, tzinfo=UTC)  # 14:00 local; day 0 = 2021-03-01
TS = pl.Datetime("us", "UTC")
DRUG_SCHEMA = {
    "patient_key": pl.String,
    "drug": pl.String,
    "route": pl.String,
    "dose": pl.Float64,
    "dose_unit": pl.String,
    "weight_kg": pl.Float64,
    "at": TS,
    "file": pl.String,
    "row": pl.String,
    "indication": pl.String,
}
VASO_SCHEMA = {
    "patient_key": pl.String,
    "drug": pl.String,
    "start": TS,
    "stop": TS,
    "rate": pl.Float64,
    "rate_unit": pl.String,
    "file": pl.String,
    "row": pl.String,
}


def h(hours: float) -> datetime:
    """The instant ``hours`` after ``T0``."""
    return T0 + timedelta(hours=hours)


def frame(schema: dict[str, pl.DataType], rows: list[tuple]) -> pl.DataFrame:
    """A frame from row tuples in schema order."""
    return pl.DataFrame(rows, schema=schema, orient="row")


def timeline(*keys: str) -> pl.DataFrame:
    """``derive_timeline`` of adults (born 1980) infused at ``T0``; keys default to ("p",)."""
    keys = keys or ("p",)
    demo = pl.DataFrame(
        {
            "patient_key": list(keys),
            "study_id": [f"S-{k}" for k in keys],
            "birth_date": [date(1980, 1, 1)] * len(keys),
            "screening_date": [date(2021, 2, 1)] * len(keys),
        }
    )
    inf = pl.DataFrame(
        {"patient_key": list(keys), "at": [T0] * len(keys)},
        schema={"patient_key": pl.String, "at": TS},
    )
    return derive_timeline(demo, inf, TZ, crs_rules())
