"""CONDITION_OCCURRENCE: B-ALL, derived CRS episodes, recorded ICANS periods, infections."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.periods import derive_icans_periods
from cart_etl.derive.rules import derivation_rules
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

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

_KIND_RANK = {"b_all": 0, "crs": 1, "icans": 2, "infection": 3}


def _b_all(inp: OmopInput) -> pl.DataFrame | None:
    demo = entity(inp, "demographics")
    if demo is None:
        return None
    c = concepts()
    return (
        with_person(inp, demo)
        .filter(pl.col("diagnosis_date").is_not_null())
        .select(
            "person_id",
            _kind=pl.lit("b_all"),
            _episode_number=pl.lit(None, pl.Int32),
            condition_concept_id=pl.lit(c.id("b_all")),
            condition_start_date=pl.col("diagnosis_date"),
            condition_type_concept_id=pl.lit(c.id("type_ehr")),
            condition_source_value=pl.lit("B-ALL (register diagnosis date)"),
        )
    )


def _crs(inp: OmopInput) -> pl.DataFrame | None:
    eps = inp.crs_episode
    if not eps.height:
        return None
    c = concepts()
    tz = inp.timezone
    known = inp.persons.select(pl.col("person_id").cast(pl.Int64))
    grade = pl.col("max_grade")
    return (
        eps.with_columns(pl.col("person_id").cast(pl.Int64))
        .join(known, on="person_id", how="semi")
        .filter(pl.col("is_crs"))
        .select(
            "person_id",
            _kind=pl.lit("crs"),
            _episode_number=pl.col("episode_number").cast(pl.Int32),
            condition_concept_id=pl.lit(c.id("cytokine_release_syndrome")),
            condition_start_date=local_date(pl.col("onset_at"), tz),
            condition_start_datetime=local_datetime(pl.col("onset_at"), tz),
            condition_end_date=local_date(pl.col("end_at"), tz),
            condition_end_datetime=local_datetime(pl.col("end_at"), tz),
            condition_type_concept_id=pl.lit(c.id("type_ehr_algorithm")),
            condition_source_value=pl.when(grade.is_between(1, 5))
            .then(pl.format("D89.83{}", grade))
            .otherwise(pl.lit("D89.839")),
            condition_status_source_value=pl.format("ASTCT 2019 grade {} (derived)", grade),
        )
    )


def _icans(inp: OmopInput) -> pl.DataFrame | None:
    icans = entity(inp, "icans")
    if icans is None:
        return None
    c = concepts()
    tz = inp.timezone
    periods = derive_icans_periods(
        with_person(inp, icans), "person_id", derivation_rules().icans_gap
    ).rename({"period_number": "_period"})
    grade = pl.col("grade")
    return periods.select(
        "person_id",
        _kind=pl.lit("icans"),
        _episode_number=pl.col("_period").cast(pl.Int32),
        condition_concept_id=pl.lit(c.id("icans")),
        condition_start_date=local_date(pl.col("start"), tz),
        condition_start_datetime=local_datetime(pl.col("start"), tz),
        condition_end_date=local_date(pl.col("end"), tz),
        condition_end_datetime=local_datetime(pl.col("end"), tz),
        condition_type_concept_id=pl.lit(c.id("type_ehr")),
        condition_source_value=pl.when(grade.is_between(1, 5))
        .then(pl.format("G92.0{}", grade))
        .otherwise(pl.lit("G92.00")),
        condition_status_source_value=pl.format("ICANS grade {} (recorded)", grade),
    )


def _infections(inp: OmopInput) -> pl.DataFrame | None:
    inf = entity(inp, "infections")
    if inf is None:
        return None
    c = concepts()
    return with_person(inp, inf).select(
        "person_id",
        _kind=pl.lit("infection"),
        _episode_number=pl.lit(None, pl.Int32),
        _ctcae_grade=pl.col("ctcae_grade"),
        condition_concept_id=pl.lit(c.id("infection")),
        condition_start_date=pl.col("onset_date"),
        condition_type_concept_id=pl.lit(c.id("type_ehr")),
        condition_source_value=source_text(
            pl.concat_str([pl.col("site"), pl.col("organism")], separator=": ", ignore_nulls=True)
        ),
    )


def condition_keyed(inp: OmopInput) -> pl.DataFrame:
    """CONDITION_OCCURRENCE rows before conforming, with ``_kind`` (b_all, crs, icans,
    infection), ``_episode_number`` (CRS episode number) and ``_ctcae_grade`` kept."""
    candidates = (_b_all(inp), _crs(inp), _icans(inp), _infections(inp))
    parts = [p for p in candidates if p is not None]
    if not parts:
        return pl.DataFrame(
            schema={
                "condition_occurrence_id": pl.Int64,
                "person_id": pl.Int64,
                "_kind": pl.String,
                "_episode_number": pl.Int32,
                "_ctcae_grade": pl.Int64,
                "condition_start_date": pl.Date,
            }
        )
    frame = pl.concat(parts, how="diagonal_relaxed").with_columns(
        _rank=pl.col("_kind").replace_strict(_KIND_RANK, return_dtype=pl.Int32)
    )
    if "_ctcae_grade" not in frame.columns:
        frame = frame.with_columns(_ctcae_grade=pl.lit(None, pl.Int64))
    frame = attach_visit(inp, frame, "condition_start_date")
    order = [
        "person_id",
        "condition_start_date",
        "_rank",
        "condition_start_datetime",
        "_episode_number",
        "condition_source_value",
    ]
    if "condition_start_datetime" not in frame.columns:
        order.remove("condition_start_datetime")
    return assign_ids(frame, "condition_occurrence_id", order)


def map_condition_occurrence(inp: OmopInput) -> pl.DataFrame:
    """Conditions, first case that applies per source row:

    * B-ALL: one row per register row at the diagnosis date, B-cell ALL (4173963), EHR.
    * CRS: one row per ``marts.crs_episode`` row with ``is_crs`` (onset day 0-14), start =
      onset (first fever), end = last CRS sign; concept 0 (the SNOMED CRS concept is
      unverified), condition_source_value = the ICD-10-CM grade code D89.83<grade>
      (D89.839 if the grade is outside 1-5), the grade in condition_status_source_value;
      type Standard algorithm from EHR (32882): the episode is derived, ASTCT 2019.
      Febrile episodes with onset after day 14 are not CRS and are not written.
    * ICANS: recorded assessments with grade >= 1 grouped per person into periods
      (``derive.periods.derive_icans_periods``: a gap > 48 h starts a new one);
      start/end = first/last such assessment, concept 0 (unverified), source value
      G92.0<max grade> (ICD-10-CM), EHR.
    * Infections: one row per documented infection at its onset date, concept 0, source
      value ``site: organism`` (the CTCAE grade is an OBSERVATION linked to this row).
    condition_occurrence_id: 1..n over (person, start date, kind, start time, episode).
    """
    keyed = condition_keyed(inp)
    if not keyed.height:
        return empty("condition_occurrence")
    return conform(keyed, "condition_occurrence")
