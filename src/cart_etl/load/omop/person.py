"""PERSON: one row per accepted register row (person_id and study id from ``persons``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.load.omop._common import col_or, conform, empty, entity, source_text
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput


def map_person(inp: OmopInput) -> pl.DataFrame:
    """Persons of the accepted register joined to their demographics row.

    * person_id: ``persons.person_id``; person_source_value: the study id (never the MRN).
    * gender_concept_id: staged sex M -> Male (8507), F -> Female (8532), else 0;
      gender_source_value: sex as written (``sex_raw``, e.g. 女 / female).
    * year/month/day_of_birth from the birth date; birth_datetime NULL (no time recorded).
    * race_concept_id, ethnicity_concept_id: 0 (not recorded by the sources; S1 requires 0).
    * A register row without a birth date cannot satisfy NOT NULL year_of_birth: skipped.
    """
    demo = entity(inp, "demographics")
    if demo is None:
        return empty("person")
    c = concepts()
    persons = inp.persons.select(
        pl.col("patient_key").cast(pl.String),
        pl.col("person_id").cast(pl.Int64),
        pl.col("study_id").cast(pl.String),
    )
    demo = demo.select(
        pl.col("patient_key").cast(pl.String),
        "sex",
        "birth_date",
        gender_source=col_or(demo, "sex_raw", "sex"),
    ).unique("patient_key", keep="first", maintain_order=True)
    frame = (
        persons.join(demo, on="patient_key", how="inner")
        .filter(pl.col("birth_date").is_not_null())
        .select(
            "person_id",
            gender_concept_id=c.map_expr("gender", "sex"),
            year_of_birth=pl.col("birth_date").dt.year(),
            month_of_birth=pl.col("birth_date").dt.month(),
            day_of_birth=pl.col("birth_date").dt.day(),
            race_concept_id=pl.lit(c.id("no_matching_concept")),
            ethnicity_concept_id=pl.lit(c.id("no_matching_concept")),
            person_source_value=source_text(pl.col("study_id")),
            gender_source_value=source_text(pl.col("gender_source")),
        )
        .sort("person_id")
    )
    return conform(frame, "person")
