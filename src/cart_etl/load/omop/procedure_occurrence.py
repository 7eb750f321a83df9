"""PROCEDURE_OCCURRENCE: CAR-T infusion, vasopressor therapy and oxygen therapy."""

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
from cart_etl.load.omop._oxygen import oxygen_runs
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput


def _infusions(inp: OmopInput) -> pl.DataFrame | None:
    infusion = entity(inp, "infusion")
    if infusion is None:
        return None
    c = concepts()
    return with_person(inp, infusion).select(
        "person_id",
        _start=pl.col("at"),
        _end=pl.lit(None, pl.Datetime("us", "UTC")),
        procedure_concept_id=pl.lit(c.id("cart_infusion_procedure")),
        procedure_source_value=pl.lit("CAR-T cell infusion"),
    )


def _vasopressor_therapy(inp: OmopInput) -> pl.DataFrame | None:
    vaso = entity(inp, "vasopressors")
    if vaso is None:
        return None
    c = concepts()
    return with_person(inp, vaso).select(
        "person_id",
        _start=pl.col("start"),
        _end=pl.col("stop"),
        procedure_concept_id=pl.lit(c.id("vasopressor_therapy")),
        procedure_source_value=source_text(pl.col("drug_code")),
    )


def _oxygen_therapy(inp: OmopInput) -> pl.DataFrame:
    c = concepts()
    return oxygen_runs(inp).select(
        "person_id",
        _start=pl.col("start"),
        _end=pl.col("end"),
        procedure_concept_id=c.map_expr("oxygen_procedure", "device"),
        procedure_source_value=pl.col("device_source"),
    )


def map_procedure_occurrence(inp: OmopInput) -> pl.DataFrame:
    """Procedures, one row per:

    * CAR-T infusion: concept 0 (no verified CAR-T administration concept), source value
      ``CAR-T cell infusion``; the product itself is a DRUG_EXPOSURE.
    * vasopressor infusion interval: Vasopressor therapy (3655896), start/stop of the
      infusion, the drug as written in procedure_source_value.
    * oxygen-support run (see DEVICE_EXPOSURE): nasal cannula 4155151; high-flow nasal
      cannula 3655950; face mask, non-rebreather, Venturi 4162736 (Oxygen administration by
      mask); CPAP, BiPAP 4177224 (Noninvasive ventilation); mechanical ventilation 4237460
      (IPPV via endotracheal tube); the charting as written in procedure_source_value.
    procedure_type EHR (32817); dates local, datetimes naive local; procedure_occurrence_id
    1..n over (person, start, concept, source value).
    """
    c = concepts()
    tz = inp.timezone
    candidates = (_infusions(inp), _vasopressor_therapy(inp), _oxygen_therapy(inp))
    parts = [p for p in candidates if p is not None and p.height]
    if not parts:
        return empty("procedure_occurrence")
    frame = pl.concat(parts, how="diagonal_relaxed").with_columns(
        procedure_date=local_date(pl.col("_start"), tz),
        procedure_datetime=local_datetime(pl.col("_start"), tz),
        procedure_end_date=local_date(pl.col("_end"), tz),
        procedure_end_datetime=local_datetime(pl.col("_end"), tz),
        procedure_type_concept_id=pl.lit(c.id("type_ehr")),
        procedure_source_concept_id=pl.lit(c.id("no_matching_concept")),
    )
    frame = attach_visit(inp, frame, "procedure_date")
    order = ["person_id", "_start", "procedure_concept_id", "procedure_source_value"]
    return conform(assign_ids(frame, "procedure_occurrence_id", order), "procedure_occurrence")
