"""pandera (polars) schemas of the raw layer: the extractor contract, checked on every batch."""

from __future__ import annotations

from functools import cache

import pandera.polars as pa
import polars as pl

from cart_etl.extract.contract import PROVENANCE, columns_of


@cache
def raw_schema(entity: str) -> pa.DataFrameSchema:
    """Every contract column as text; provenance never null (rows must be traceable)."""
    return pa.DataFrameSchema(
        {
            c: pa.Column(pl.String, nullable=c not in PROVENANCE or c == "patient_key")
            for c in columns_of(entity)
        },
        strict=True,
        ordered=True,
        name=f"Raw{entity.title().replace('_', '')}",
    )


def check_raw(entity: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Validate one extracted batch against the raw contract (a failure is an extractor bug)."""
    return raw_schema(entity).validate(frame, lazy=True)
