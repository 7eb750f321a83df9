"""DEATH: at most one row per person, from the follow-up record."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.load.omop._common import conform, empty, entity, source_text, with_person
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput


def map_death(inp: OmopInput) -> pl.DataFrame:
    """One row per person with a follow-up death date.

    death_date = the latest recorded death date (Themis "multiple death dates": keep one row
    per person); death_datetime NULL (date only); death_type EHR (32817); cause_concept_id 0
    (causes are free text, no verified concepts) with the cause kept in cause_source_value.
    """
    follow = entity(inp, "follow_up")
    if follow is None:
        return empty("death")
    c = concepts()
    frame = (
        with_person(inp, follow)
        .filter(pl.col("death_date").is_not_null())
        .sort("person_id", "death_date", "death_cause", nulls_last=True)
        .group_by("person_id", maintain_order=True)
        .last()
        .select(
            "person_id",
            "death_date",
            death_type_concept_id=pl.lit(c.id("type_ehr")),
            cause_concept_id=pl.when(pl.col("death_cause").is_not_null()).then(
                pl.lit(c.id("no_matching_concept"))
            ),
            cause_source_value=source_text(pl.col("death_cause")),
        )
    )
    return conform(frame, "death")
