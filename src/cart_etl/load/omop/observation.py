"""OBSERVATION: register facts, CAR-T dose, ICANS/CRS assessments, response, CTCAE grades."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.timeline import local_date
from cart_etl.load.omop._common import (
    assign_ids,
    attach_visit,
    conform,
    empty,
    entity,
    local_datetime,
    source_text,
    with_person,
)
from cart_etl.load.omop.concepts import concepts
from cart_etl.load.omop.condition_occurrence import condition_keyed

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

_NO_TIME = pl.lit(None, pl.Datetime("us", "UTC"))


def _row(
    src: str | pl.Expr,
    *,
    at: pl.Expr = _NO_TIME,
    day: pl.Expr | None = None,
    number: pl.Expr | None = None,
    text: pl.Expr | None = None,
    unit: str | None = None,
) -> list[pl.Expr]:
    return [
        pl.col("person_id"),
        at.alias("_at"),
        (day if day is not None else pl.lit(None, pl.Date)).alias("_date"),
        (pl.lit(src) if isinstance(src, str) else src).alias("observation_source_value"),
        (number if number is not None else pl.lit(None, pl.Float64))
        .cast(pl.Float64)
        .alias("value_as_number"),
        (text if text is not None else pl.lit(None, pl.String)).alias("value_as_string"),
        pl.lit(unit, pl.String).alias("unit_source_value"),
    ]


def _register(inp: OmopInput) -> list[pl.DataFrame]:
    demo = entity(inp, "demographics")
    if demo is None:
        return []
    base = with_person(inp, demo).filter(pl.col("screening_date").is_not_null())
    day = pl.col("screening_date")
    return [
        base.select(_row("high-risk stratum", day=day, text=pl.col("is_high_risk"))),
        base.select(_row("risk genetics", day=day, text=source_text(pl.col("risk_genetics"), 60))),
        base.select(_row("prior lines of therapy", day=day, number=pl.col("lines_of_therapy"))),
        base.select(_row("prior allogeneic SCT", day=day, text=pl.col("prior_allo_sct"))),
    ]


def _cart_dose(inp: OmopInput) -> list[pl.DataFrame]:
    infusion = entity(inp, "infusion")
    if infusion is None:
        return []
    base = with_person(inp, infusion)
    dose = _row("CAR-T dose", at=pl.col("at"), number=pl.col("dose_1e6_per_kg"), unit="10*6/kg")
    return [base.select(dose)]


def _assessments(inp: OmopInput) -> list[pl.DataFrame]:
    out: list[pl.DataFrame] = []
    icans = entity(inp, "icans")
    if icans is not None:
        base = with_person(inp, icans)
        # FHIR carries the ICE score and the grade as two resources at the same time: each
        # non-null value is one observation, so both sources give the same rows.
        out.append(
            base.filter(pl.col("ice_score").is_not_null()).select(
                _row("ICE score", at=pl.col("at"), number=pl.col("ice_score"))
            )
        )
        out.append(
            base.filter(pl.col("grade").is_not_null()).select(
                _row("ICANS grade (recorded)", at=pl.col("at"), number=pl.col("grade"))
            )
        )
    crs = entity(inp, "recorded_crs")
    if crs is not None:
        scale = pl.col("scale").fill_null("unspecified scale")
        out.append(
            with_person(inp, crs)
            .filter(pl.col("grade").is_not_null())
            .select(
                _row(
                    "CRS grade (recorded by physician)",
                    at=pl.col("at"),
                    number=pl.col("grade"),
                    text=source_text(scale, 60),
                )
            )
        )
    resp = entity(inp, "response")
    if resp is not None:
        out.append(
            with_person(inp, resp)
            .filter(pl.col("morphology").is_not_null())
            .select(
                _row("marrow morphology (response)", at=pl.col("at"), text=pl.col("morphology"))
            )
        )
    return out


def _ctcae_grades(inp: OmopInput) -> list[pl.DataFrame]:
    cond = condition_keyed(inp)
    if "_kind" not in cond.columns or not cond.height:
        return []
    rows = cond.filter((pl.col("_kind") == "infection") & pl.col("_ctcae_grade").is_not_null())
    return [
        rows.select(
            *_row(
                "infection CTCAE grade",
                day=pl.col("condition_start_date"),
                number=pl.col("_ctcae_grade"),
            ),
            observation_event_id=pl.col("condition_occurrence_id"),
            obs_event_field_concept_id=pl.lit(concepts().id("field_condition_occurrence_id")),
        )
    ]


def map_observation(inp: OmopInput) -> pl.DataFrame:
    """Facts without a verified standard concept (observation_concept_id 0 for all, the
    meaning in observation_source_value, type EHR 32817):

    * register, at the screening date: high-risk stratum (value_as_string true/false), risk
      genetics as written, prior lines of therapy (number), prior allo-SCT (true/false);
    * CAR-T dose x10^6 cells/kg at the infusion (unit 0, ``10*6/kg`` in unit_source_value);
    * ICANS: each non-null ICE score and grade (site rows hold both, FHIR one per row);
    * physician-recorded CRS grade (number) with its scale as written (value_as_string);
    * day-28 marrow morphology (CR/CRi/PR/NR);
    * CTCAE grade of each infection, linked to its CONDITION_OCCURRENCE row through
      observation_event_id + obs_event_field_concept_id 1147127.
    observation_id 1..n over (person, date, time, source value, value).
    """
    c = concepts()
    tz = inp.timezone
    parts = [
        p
        for p in (*_register(inp), *_cart_dose(inp), *_assessments(inp), *_ctcae_grades(inp))
        if p.height
    ]
    if not parts:
        return empty("observation")
    frame = pl.concat(parts, how="diagonal_relaxed").with_columns(
        observation_concept_id=pl.lit(c.id("no_matching_concept")),
        observation_date=pl.coalesce(local_date(pl.col("_at"), tz), pl.col("_date")),
        observation_datetime=local_datetime(pl.col("_at"), tz),
        observation_type_concept_id=pl.lit(c.id("type_ehr")),
        unit_concept_id=pl.when(pl.col("unit_source_value").is_not_null()).then(
            pl.lit(c.id("unit_unverified"))
        ),
        observation_source_concept_id=pl.lit(c.id("no_matching_concept")),
    )
    frame = attach_visit(inp, frame, "observation_date")
    order = [
        "person_id",
        "observation_date",
        "_at",
        "observation_source_value",
        "value_as_number",
        "value_as_string",
    ]
    return conform(assign_ids(frame, "observation_id", order), "observation")
