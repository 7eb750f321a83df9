"""great-expectations suites over staged frames (pandas batches), results for the report.

GX runs on pandas batches, not on its SQL datasource: GX 1.x's SQL path fails on DuckDB
with SQLAlchemy 2.x (see DEVELOPERS.md). The suites restate the staged contracts as
expectations so a reviewer can read them in GX terms; they are a second line, the pandera
models are the gate.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import polars as pl

from cart_etl.mappings import plausibility

# Column -> expectation specs per staged table; bounds come from plausibility.yaml.
SUITES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "vitals": [
        ("ExpectColumnValuesToNotBeNull", {"column": "patient_key"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "at"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "value"}),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "item", "value_set": ["temp", "sbp", "dbp", "hr", "spo2"]},
        ),
    ],
    "labs": [
        ("ExpectColumnValuesToNotBeNull", {"column": "patient_key"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "value"}),
        ("ExpectColumnValuesToBeBetween", {"column": "value", "min_value": 0}),
    ],
    "drugs": [
        ("ExpectColumnValuesToNotBeNull", {"column": "dose"}),
        ("ExpectColumnValuesToBeBetween", {"column": "dose", "min_value": 0, "strict_min": True}),
    ],
    "demographics": [
        ("ExpectColumnValuesToBeUnique", {"column": "study_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "patient_key"}),
        ("ExpectColumnValuesToBeInSet", {"column": "sex", "value_set": ["M", "F"]}),
    ],
}


def _temperature_bounds() -> dict[str, Any]:
    lo, hi = plausibility()["measurements"]["temp"]["hard"]
    return {"min_value": lo, "max_value": hi}


def gx_context() -> tuple[Any, Any]:
    import great_expectations as gx  # slow import (~5 s): only when a suite runs

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    return gx, context


def validate_table(
    context: tuple[Any, Any],
    source: Any,
    table: str,
    pdf: pd.DataFrame,
    specs: list[tuple[str, dict[str, Any]]],
    suite_prefix: str,
) -> list[tuple[Any, Any]]:
    """One pandas batch validated against its expectation specs (GX 1.x, ephemeral context).

    Returns (result, expectation config) per expectation that has a config. ``source`` is a
    pandas data source of ``context`` (one per suite family, so asset names stay unique).
    """
    gx, ctx = context
    batch = (
        source.add_dataframe_asset(name=table)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": pdf})
    )
    suite = gx.ExpectationSuite(name=f"{suite_prefix}_{table}")
    for name, kwargs in specs:
        suite.add_expectation(getattr(gx.expectations, name)(**kwargs))
    outcome = batch.validate(ctx.suites.add(suite))
    return [(r, r.expectation_config) for r in outcome.results if r.expectation_config is not None]


def validate_batches(
    suites: dict[str, list[tuple[str, dict[str, Any]]]],
    frames: dict[str, pd.DataFrame],
    suite_prefix: str,
    context: Any = None,
) -> list[dict[str, Any]]:
    """Run each table's expectation specs on its pandas batch; one result dict per expectation."""
    gx, ctx = gx_context() if context is None else context
    source = ctx.data_sources.add_pandas(f"cart_etl_{suite_prefix}")
    results: list[dict[str, Any]] = []
    for table, specs in suites.items():
        pdf = frames.get(table)
        if pdf is None or pdf.empty:
            continue
        for r, cfg in validate_table((gx, ctx), source, table, pdf, specs, suite_prefix):
            shown = {
                k: v
                for k, v in cfg.kwargs.items()
                if k in ("column", "min_value", "max_value", "value_set")
            }
            results.append(
                {
                    "table": table,
                    "expectation": f"{cfg.type}({', '.join(f'{k}={v}' for k, v in shown.items())})",
                    "success": bool(r.success),
                    "unexpected_count": int((r.result or {}).get("unexpected_count") or 0),
                }
            )
    return results


def run_suites(frames: dict[str, pl.DataFrame]) -> list[dict[str, Any]]:
    """Validate each staged frame that has a suite; one result dict per expectation."""
    gx, context = gx_context()
    batches: dict[str, pd.DataFrame] = {}
    for table, specs in SUITES.items():
        frame = frames.get(table)
        if frame is None or frame.is_empty():
            continue
        columns = [c for c in frame.columns if c in {s[1]["column"] for s in specs} | {"item"}]
        batches[table] = frame.select(columns).to_pandas()
    results = validate_batches(SUITES, batches, "staged", (gx, context))
    temps = frames.get("vitals")
    if temps is not None and not temps.is_empty():
        # A separate batch rather than a row_condition: string conditions are deprecated in GX 1.9.
        pdf = temps.filter(pl.col("item") == "temp").select("value").to_pandas()
        spec = [("ExpectColumnValuesToBeBetween", {"column": "value", **_temperature_bounds()})]
        results += validate_batches(
            {"vitals (temperature)": spec}, {"vitals (temperature)": pdf}, "temp", (gx, context)
        )
    return results
