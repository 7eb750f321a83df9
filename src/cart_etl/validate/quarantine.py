"""Lazy validation that splits a frame into accepted rows and quarantined failure cases."""

from __future__ import annotations

from dataclasses import dataclass

import pandera.errors
import pandera.polars as pa
import polars as pl

from cart_etl.errors import FailureCase
from cart_etl.validate.rules import RULES

# Which raw column a rule's message should quote (the text as the source wrote it).
_RAW_OF_FIELD = {"at": "at_raw", "value": "value_raw", "unit": "unit_raw", "item_code": "item_code"}


@dataclass(frozen=True)
class Validated:
    """Result of validating one staged frame: accepted rows and why the others were rejected."""

    accepted: pl.DataFrame
    quarantined: list[FailureCase]
    rows_in: int

    @property
    def rows_quarantined(self) -> int:
        return self.rows_in - self.accepted.height


def validate_frame(model: type[pa.DataFrameModel], df: pl.DataFrame) -> Validated:
    """Run ``model`` lazily on ``df``; every failing row is quarantined with each failed rule.

    Invariant (tested): ``rows_in == accepted.height + number of distinct quarantined rows``.
    """
    indexed = df.with_row_index("_i")
    try:
        model.validate(indexed, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        schema_level = exc.failure_cases.filter(pl.col("index").is_null())
        if schema_level.height:
            # A missing column or wrong dtype is a bug in staging, not bad input data.
            raise
        bad = exc.failure_cases.select(pl.col("index").cast(pl.UInt32), pl.col("check")).unique()
        cases = _cases(indexed, bad)
        keep = indexed.join(
            bad.select("index").unique(), left_on="_i", right_on="index", how="anti"
        )
        return Validated(keep.drop("_i"), cases, df.height)
    return Validated(df, [], df.height)


def _cases(indexed: pl.DataFrame, bad: pl.DataFrame) -> list[FailureCase]:
    rows = bad.join(indexed, left_on="index", right_on="_i", how="left")
    cases = []
    for rec in rows.iter_rows(named=True):
        rule = RULES.get(rec["check"])
        field = rule.field if rule else rec["check"]
        raw_col = _RAW_OF_FIELD.get(field, field)
        value = rec.get(raw_col)
        fix = rule.fix if rule else "see the rule table in the README"
        what = rule.checks if rule else rec["check"]
        cases.append(
            FailureCase(
                source=str(rec["source"]),
                file=str(rec["file"]),
                row=str(rec["row"]),
                field=field,
                value="" if value is None else str(value),
                rule_id=str(rec["check"]),
                message=(
                    f"{rec['file']} row {rec['row']}: {field}={value!r} fails '{what}'. Fix: {fix}"
                ),
            )
        )
    return cases
