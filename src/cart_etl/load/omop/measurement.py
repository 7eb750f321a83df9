"""MEASUREMENT: vital signs, labs, oxygen flow, height/weight, day-28 marrow and MRD."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.load.omop._common import (
    assign_ids,
    attach_visit,
    col_or,
    conform,
    empty,
    entity,
    local_datetime,
    source_text,
    with_person,
)
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

_NO_TIME = pl.lit(None, pl.Datetime("us", "UTC"))
_ORDER = ["person_id", "measurement_date", "_at", "measurement_concept_id", "_src", "_file", "_row"]


def _provenance(frame: pl.DataFrame) -> list[pl.Expr]:
    return [
        col_or(frame, "file", pl.lit("")).cast(pl.String).alias("_file"),
        col_or(frame, "row", pl.lit("")).cast(pl.String).alias("_row"),
    ]


def _observations(inp: OmopInput, name: str, code_col: str, type_key: str) -> pl.DataFrame | None:
    """Vitals or labs: one row per accepted value."""
    frame = entity(inp, name)
    if frame is None:
        return None
    c = concepts()
    return with_person(inp, frame).select(
        "person_id",
        *_provenance(frame),
        _at=pl.col("at"),
        measurement_concept_id=c.map_expr("measurement_item", "item"),
        measurement_type_concept_id=pl.lit(c.id(type_key)),
        value_as_number=pl.col("value"),
        unit_concept_id=pl.when(pl.col("unit").is_not_null()).then(c.map_expr("unit", "unit")),
        _src=source_text(pl.col(code_col)),
        unit_source_value=source_text(pl.col("source_unit")),
        value_source_value=source_text(col_or(frame, "value_raw", pl.col("value").cast(pl.String))),
    )


def _oxygen_flow(inp: OmopInput) -> pl.DataFrame | None:
    oxygen = entity(inp, "oxygen")
    if oxygen is None:
        return None
    c = concepts()
    return (
        with_person(inp, oxygen)
        .filter(pl.col("flow_l_min").is_not_null())
        .select(
            "person_id",
            *_provenance(oxygen),
            _at=pl.col("at"),
            measurement_concept_id=pl.lit(c.id("inhaled_o2_flow")),
            measurement_type_concept_id=pl.lit(c.id("type_ehr")),
            value_as_number=pl.col("flow_l_min"),
            unit_concept_id=pl.lit(c.id("unit_l_min")),
            _src=source_text(pl.col("device_code")),
            unit_source_value=pl.lit("L/min"),
        )
    )


def _body_size(inp: OmopInput) -> pl.DataFrame | None:
    demo = entity(inp, "demographics")
    if demo is None:
        return None
    c = concepts()
    base = with_person(inp, demo).filter(pl.col("screening_date").is_not_null())
    parts = []
    for col, concept, unit_key, unit in (
        ("height_cm", "body_height", "unit_cm", "cm"),
        ("weight_kg", "body_weight", "unit_kg", "kg"),
    ):
        parts.append(
            base.filter(pl.col(col).is_not_null()).select(
                "person_id",
                *_provenance(demo),
                _at=_NO_TIME,
                _date=pl.col("screening_date"),
                measurement_concept_id=pl.lit(c.id(concept)),
                measurement_type_concept_id=pl.lit(c.id("type_ehr")),
                value_as_number=pl.col(col),
                unit_concept_id=pl.lit(c.id(unit_key)),
                _src=pl.lit(f"{col} (register, screening)"),
                unit_source_value=pl.lit(unit),
            )
        )
    return pl.concat(parts)


def _marrow_response(inp: OmopInput) -> pl.DataFrame | None:
    resp = entity(inp, "response")
    if resp is None:
        return None
    c = concepts()
    base = with_person(inp, resp)
    mrd = base.filter(pl.col("mrd_pct").is_not_null()).select(
        "person_id",
        *_provenance(resp),
        _at=pl.col("at"),
        measurement_concept_id=pl.lit(c.id("mrd_flow")),
        measurement_type_concept_id=pl.lit(c.id("type_lab")),
        value_as_number=pl.col("mrd_pct"),
        value_as_concept_id=pl.when(pl.col("mrd_pct") == 0)
        .then(pl.lit(c.id("value_not_detected")))
        .otherwise(pl.lit(c.id("value_detected"))),
        unit_concept_id=pl.lit(c.id("unit_percent")),
        _src=pl.lit("MRD by flow cytometry (marrow)"),
        unit_source_value=pl.lit("%"),
        value_source_value=source_text(
            col_or(resp, "mrd_pct_raw", pl.col("mrd_pct").cast(pl.String))
        ),
    )
    blasts = base.filter(pl.col("marrow_blasts_pct").is_not_null()).select(
        "person_id",
        *_provenance(resp),
        _at=pl.col("at"),
        measurement_concept_id=pl.lit(c.id("marrow_blasts")),
        measurement_type_concept_id=pl.lit(c.id("type_lab")),
        value_as_number=pl.col("marrow_blasts_pct"),
        unit_concept_id=pl.lit(c.id("unit_percent")),
        _src=pl.lit("marrow blasts (response assessment)"),
        unit_source_value=pl.lit("%"),
    )
    return pl.concat([mrd, blasts], how="diagonal_relaxed")


def map_measurement(inp: OmopInput) -> pl.DataFrame:
    """One row per accepted value:

    * vitals (type EHR 32817) and labs (type Lab 32856): measurement_concept_id by the
      canonical ``item`` (temp 3020891, hr 3027018, sbp 3004249, dbp 3012888, spo2
      40762499, il6 3023091, crp 3020460, ferritin 3001122, wbc 3000905, anc 3013650,
      plt 3024929, hgb 3000963; il10, sil2r, tnf_alpha, ifn_gamma, marrow_blasts 0:
      unverified); value_as_number = the staged value in the canonical UCUM ``unit``
      (unit_concept_id by UCUM code; g/L and U/mL have no verified concept -> 0);
      measurement_source_value = the local test/item name or LOINC code as written,
      unit_source_value = the unit as the source wrote it (``source_unit``, e.g. [degF]
      for a Fahrenheit reading converted to Cel), value_source_value = the value as written.
    * oxygen chartings with a flow: Inhaled oxygen flow rate (3005629) in L/min (8698),
      the charting as written in measurement_source_value.
    * register height (3036277, cm 8582) and weight (3025315, kg 9529) at the screening date.
    * day-28 response: MRD by flow (concept 0, unverified) as % (8554) with
      value_as_concept_id Not detected (9190) when 0, else Detected (4126681), verbatim
      result (e.g. 阴性) in value_source_value; marrow blasts % (concept 0).
    operator_concept_id NULL (exact values); measurement_datetime naive local time;
    measurement_id 1..n over (person, date, time, concept, source value, file, row).
    """
    tz = inp.timezone
    candidates = (
        _observations(inp, "vitals", "item_code", "type_ehr"),
        _observations(inp, "labs", "test_code", "type_lab"),
        _oxygen_flow(inp),
        _body_size(inp),
        _marrow_response(inp),
    )
    parts = [p for p in candidates if p is not None and p.height]
    if not parts:
        return empty("measurement")
    frame = pl.concat(parts, how="diagonal_relaxed")
    if "_date" not in frame.columns:
        frame = frame.with_columns(_date=pl.lit(None, pl.Date))
    # One timezone conversion per row (the costly step on a 13 M-row flowsheet).
    frame = frame.with_columns(measurement_datetime=local_datetime(pl.col("_at"), tz))
    frame = frame.with_columns(
        measurement_date=pl.coalesce(pl.col("measurement_datetime").dt.date(), pl.col("_date")),
        measurement_source_value=pl.col("_src"),
    )
    frame = attach_visit(inp, frame, "measurement_date")
    return conform(assign_ids(frame, "measurement_id", _ORDER), "measurement")
