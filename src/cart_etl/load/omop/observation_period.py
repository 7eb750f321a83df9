"""OBSERVATION_PERIOD: one period per person spanning every recorded event."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.timeline import local_date
from cart_etl.load.omop._common import (
    assign_ids,
    conform,
    entity,
    with_person,
)
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

# entity -> columns holding an event time (UTC instants) or a date.
INSTANT_COLUMNS: dict[str, tuple[str, ...]] = {
    "infusion": ("at",),
    "vitals": ("at",),
    "labs": ("at",),
    "oxygen": ("at",),
    "drugs": ("at",),
    "vasopressors": ("start", "stop"),
    "response": ("at",),
    "icans": ("at",),
    "recorded_crs": ("at",),
}
DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "demographics": ("diagnosis_date", "screening_date"),
    "follow_up": ("last_contact_date", "progression_date", "death_date"),
    "infections": ("onset_date",),
}


def event_dates(inp: OmopInput) -> pl.DataFrame:
    """person_id, date: the earliest and latest local event date per person and column.

    Aggregated per patient before any timezone conversion, so a 13 M-row flowsheet costs
    one group-by, not a conversion per row.
    """
    parts: list[pl.DataFrame] = []
    for name, cols in (*INSTANT_COLUMNS.items(), *DATE_COLUMNS.items()):
        frame = entity(inp, name)
        if frame is None:
            continue
        for col in cols:
            agg = frame.group_by("patient_key").agg(lo=pl.col(col).min(), hi=pl.col(col).max())
            if name in INSTANT_COLUMNS:
                agg = agg.with_columns(
                    local_date(pl.col("lo"), inp.timezone), local_date(pl.col("hi"), inp.timezone)
                )
            parts.append(
                agg.unpivot(index="patient_key", on=["lo", "hi"], value_name="date")
                .select("patient_key", pl.col("date").cast(pl.Date))
                .drop_nulls()
            )
    if not parts:
        return pl.DataFrame(schema={"person_id": pl.Int64, "date": pl.Date})
    return with_person(inp, pl.concat(parts)).select("person_id", "date")


def map_observation_period(inp: OmopInput) -> pl.DataFrame:
    """One row per person with at least one dated record.

    start = the earliest local date of any record (diagnosis date of the register, vitals,
    labs, drugs, ...), end = the latest (follow-up last contact / death, or a later record);
    period_type Standard algorithm from EHR (32882). observation_period_id: 1..n in
    person_id order. Persons of PERSON without any dated record get none (cannot happen in
    the register: diagnosis and screening dates are required there).
    """
    c = concepts()
    spans = (
        event_dates(inp)
        .group_by("person_id")
        .agg(
            observation_period_start_date=pl.col("date").min(),
            observation_period_end_date=pl.col("date").max(),
        )
        .with_columns(period_type_concept_id=pl.lit(c.id("type_ehr_algorithm")))
    )
    return conform(assign_ids(spans, "observation_period_id", ["person_id"]), "observation_period")
