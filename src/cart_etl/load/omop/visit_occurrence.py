"""VISIT_OCCURRENCE: one inpatient visit per infused person, the CAR-T admission."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.rules import derivation_rules
from cart_etl.load.omop._common import admission, conform
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput


def visit_keys(inp: OmopInput) -> pl.DataFrame:
    """person_id, _v_id, _v_start, _v_end: the visit window used to link events by date."""
    adm = admission(inp)
    return adm.select(
        "person_id",
        _v_id=pl.col("person_id"),
        _v_start=pl.col("start_date"),
        _v_end=pl.col("end_date"),
    )


def map_visit_occurrence(inp: OmopInput) -> pl.DataFrame:
    """One row per infused person (rule in ``_common.admission``).

    visit_occurrence_id = person_id (one admission per person, so the key is stable across
    runs and needs no lookup); visit_concept_id Inpatient Visit (9201); visit_type EHR
    encounter record (32827); start = infusion local date/time, end = study day 28 or the
    earlier death/last-contact date. Events dated (local date) inside the window carry its
    visit_occurrence_id.
    """
    c = concepts()
    adm = admission(inp)
    frame = adm.select(
        visit_occurrence_id=pl.col("person_id"),
        person_id=pl.col("person_id"),
        visit_concept_id=pl.lit(c.id("inpatient_visit")),
        visit_start_date=pl.col("start_date"),
        visit_start_datetime=pl.col("start_datetime"),
        visit_end_date=pl.col("end_date"),
        visit_type_concept_id=pl.lit(c.id("type_ehr_encounter")),
        visit_source_value=pl.lit(f"CAR-T admission (day 0-{derivation_rules().admission_days})"),
    )
    return conform(frame, "visit_occurrence")
