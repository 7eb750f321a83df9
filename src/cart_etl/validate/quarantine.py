"""Lazy validation that splits a frame into accepted rows and quarantined failure cases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandera.errors
import pandera.polars as pa
import polars as pl

from cart_etl.errors import FailureCase
from cart_etl.validate.rules import RULES

# Which raw column a rule's message should quote (the text as the source wrote it).
_RAW_OF_FIELD = {
    "at": "at_raw",
    "value": "value_raw",
    "unit": "unit_raw",
    "item_code": "item_code",
    "dose": "dose_raw",  # "4g", "8mg/kg": not the converted mg
}


def case_for(
    rec: Mapping[str, Any], rule_id: str, field: str, value: object, detail: str
) -> FailureCase:
    """A failure case for one record (provenance from ``rec``), its message ending with the fix.

    ``detail`` says what is wrong in words a data manager uses; the fix comes from the rule
    table (``RULES``) so every message for a rule proposes the same remedy.
    """
    rule = RULES.get(rule_id)
    fix = rule.fix if rule else "see the rule table in the README"
    return FailureCase(
        source=str(rec["source"]),
        file=str(rec["file"]),
        row=str(rec["row"]),
        field=field,
        value="" if value is None else str(value),
        rule_id=rule_id,
        message=f"{rec['file']} row {rec['row']}: {detail}. Fix: {fix}",
    )


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
        bad = exc.failure_cases.select(
            pl.col("index").cast(pl.UInt32),
            pl.col("check"),
            pl.col("column"),
            pl.col("schema_context"),
        ).unique()
        cases = _cases(indexed, bad)
        keep = indexed.join(
            bad.select("index").unique(), left_on="_i", right_on="index", how="anti"
        )
        return Validated(keep.drop("_i"), cases, df.height)
    return Validated(df, [], df.height)


def cast_failures(
    df: pl.DataFrame, fields: dict[str, str]
) -> tuple[pl.DataFrame, list[FailureCase]]:
    """Rows where a non-empty raw cell did not cast (``<field>_raw`` set, ``<field>`` null).

    Returns the rows that cast cleanly and one ``field.parse`` case per failed cell.
    """
    rule = RULES["field.parse"]
    failed = [
        (name, pl.col(f"{name}_raw").str.strip_chars().ne("") & pl.col(name).is_null())
        for name in fields
        if f"{name}_raw" in df.columns
    ]
    if not failed:
        return df, []
    flags = df.with_columns([expr.fill_null(False).alias(f"_bad_{name}") for name, expr in failed])
    cases = []
    for name, _ in failed:
        for rec in flags.filter(pl.col(f"_bad_{name}")).iter_rows(named=True):
            value = rec[f"{name}_raw"]
            detail = f"{name}={value!r} does not read as {fields[name]}"
            cases.append(case_for(rec, rule.rule_id, name, value, detail))
    any_bad = pl.any_horizontal([pl.col(f"_bad_{name}") for name, _ in failed])
    ok = flags.filter(~any_bad).drop([f"_bad_{name}" for name, _ in failed])
    return ok, cases


def _cases(indexed: pl.DataFrame, bad: pl.DataFrame) -> list[FailureCase]:
    rows = bad.join(indexed, left_on="index", right_on="_i", how="left")
    cases = []
    for rec in rows.iter_rows(named=True):
        column_level = rec["schema_context"] == "Column"
        rule_id = "field.range" if column_level else rec["check"]
        rule = RULES.get(rule_id)
        field = rec["column"] if column_level or (rule and rule.field.startswith("<")) else None
        field = field or (rule.field if rule else rec["check"])
        raw_col = _RAW_OF_FIELD.get(field, field)
        value = rec.get(raw_col)
        what = f"{rec['check']}" if column_level else (rule.checks if rule else rec["check"])
        cases.append(case_for(rec, rule_id, field, value, f"{field}={value!r} fails '{what}'"))
    return cases
