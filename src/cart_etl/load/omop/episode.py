"""EPISODE: CRS episodes, tocilizumab regimens, disease remission and progression."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.periods import derive_toci_regimens
from cart_etl.derive.rules import derivation_rules
from cart_etl.derive.timeline import local_date
from cart_etl.load.omop._common import (
    assign_ids,
    conform,
    empty,
    entity,
    local_datetime,
    with_person,
)
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

_KIND_RANK = {"crs": 0, "regimen": 1, "remission": 2, "progression": 3}
_UTC = pl.Datetime("us", "UTC")


def utc(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A mart timestamp as a UTC instant (naive values are read as UTC, as DuckDB stores)."""
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return expr.dt.replace_time_zone("UTC").cast(_UTC)
    return expr.dt.convert_time_zone("UTC").cast(_UTC)


def _known(inp: OmopInput, frame: pl.DataFrame) -> pl.DataFrame:
    known = inp.persons.select(pl.col("person_id").cast(pl.Int64))
    return frame.with_columns(pl.col("person_id").cast(pl.Int64)).join(
        known, on="person_id", how="semi"
    )


def crs_episodes(inp: OmopInput) -> pl.DataFrame:
    """person_id, _crs_number (mart episode_number), _onset, _end (UTC), max_grade, and
    episode_number = rank among the person's CRS episodes (onset day 0-14)."""
    eps = inp.crs_episode
    schema = pl.Schema(
        {
            "person_id": pl.Int64(),
            "_crs_number": pl.Int32(),
            "_onset": _UTC,
            "_end": _UTC,
            "max_grade": pl.Int32(),
            "episode_number": pl.Int32(),
        }
    )
    if not eps.height:
        return pl.DataFrame(schema=schema)
    return (
        _known(inp, eps)
        .filter(pl.col("is_crs"))
        .select(
            "person_id",
            _crs_number=pl.col("episode_number").cast(pl.Int32),
            _onset=utc(pl.col("onset_at"), eps.schema["onset_at"]),
            _end=utc(pl.col("end_at"), eps.schema["end_at"]),
            max_grade=pl.col("max_grade").cast(pl.Int32),
        )
        .sort("person_id", "_onset", "_crs_number")
        .with_columns(
            episode_number=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("person_id")
        )
        .select(list(schema))
    )


def toci_doses(inp: OmopInput) -> pl.DataFrame:
    """person_id, _at (UTC), dose, course: tocilizumab rows of ``marts.treatment``, with the
    course number (1.. per person; a gap > 72 h since the previous dose starts a course)."""
    treat = inp.treatment
    schema = pl.Schema(
        {"person_id": pl.Int64(), "_at": _UTC, "dose": pl.Float64(), "course": pl.Int32()}
    )
    if not treat.height:
        return pl.DataFrame(schema=schema)
    doses = (
        _known(inp, treat)
        .filter(pl.col("drug") == "tocilizumab")
        .select(
            "person_id",
            at=utc(pl.col("start_at"), treat.schema["start_at"]),
            dose=pl.col("dose").cast(pl.Float64),
        )
    )
    regimens = derive_toci_regimens(doses, "person_id", derivation_rules().toci_regimen_gap)
    return regimens.select(
        "person_id", _at=pl.col("at"), dose=pl.col("dose"), course=pl.col("course").cast(pl.Int32)
    )


def episodes_keyed(inp: OmopInput) -> pl.DataFrame:
    """EPISODE rows before conforming, with ``_kind``, ``_crs_number`` / ``_course`` kept
    for EPISODE_EVENT."""
    c = concepts()
    tz = inp.timezone
    parts: list[pl.DataFrame] = []

    crs = crs_episodes(inp)
    if crs.height:
        parts.append(
            crs.select(
                "person_id",
                "_crs_number",
                "episode_number",
                _kind=pl.lit("crs"),
                _start=pl.col("_onset"),
                _stop=pl.col("_end"),
                episode_concept_id=pl.when(pl.col("episode_number") == 1)
                .then(pl.lit(c.id("disease_first_occurrence")))
                .otherwise(pl.lit(c.id("disease_recurrence"))),
                episode_object_concept_id=pl.lit(c.id("cytokine_release_syndrome")),
                episode_type_concept_id=pl.lit(c.id("type_ehr_algorithm")),
                episode_source_value=pl.format(
                    "CRS episode {} (ASTCT 2019 grade {})",
                    pl.col("episode_number"),
                    pl.col("max_grade"),
                ),
            )
        )

    doses = toci_doses(inp)
    if doses.height:
        courses = doses.group_by("person_id", "course").agg(
            _start=pl.col("_at").min(),
            _stop=pl.col("_at").max(),
            n=pl.len(),
            mg=pl.col("dose").sum(),
        )
        parts.append(
            courses.select(
                "person_id",
                _course=pl.col("course"),
                episode_number=pl.col("course"),
                _kind=pl.lit("regimen"),
                _start=pl.col("_start"),
                _stop=pl.col("_stop"),
                episode_concept_id=pl.lit(c.id("treatment_regimen")),
                episode_object_concept_id=pl.lit(c.id("tocilizumab_regimen")),
                episode_type_concept_id=pl.lit(c.id("type_ehr")),
                episode_source_value=pl.format(
                    "tocilizumab course: {} doses, {} mg", pl.col("n"), pl.col("mg").round(1)
                ),
            )
        )

    resp = entity(inp, "response")
    if resp is not None:
        first_cr = (
            with_person(inp, resp)
            .filter(pl.col("morphology").is_in(derivation_rules().remission_morphology))
            .group_by("person_id")
            .agg(pl.col("at").min(), pl.col("morphology").sort_by("at").first())
        )
        parts.append(
            first_cr.select(
                "person_id",
                _kind=pl.lit("remission"),
                _start=pl.col("at"),
                episode_concept_id=pl.lit(c.id("disease_remission")),
                episode_object_concept_id=pl.lit(c.id("b_all")),
                episode_type_concept_id=pl.lit(c.id("type_ehr")),
                episode_source_value=pl.format("day-28 marrow {}", pl.col("morphology")),
            )
        )

    follow = entity(inp, "follow_up")
    if follow is not None:
        prog = (
            with_person(inp, follow)
            .filter(pl.col("progression_date").is_not_null())
            .group_by("person_id")
            .agg(pl.col("progression_date").min())
        )
        parts.append(
            prog.select(
                "person_id",
                _kind=pl.lit("progression"),
                _start_date=pl.col("progression_date"),
                episode_concept_id=pl.lit(c.id("disease_progression")),
                episode_object_concept_id=pl.lit(c.id("b_all")),
                episode_type_concept_id=pl.lit(c.id("type_ehr")),
                episode_source_value=pl.lit("progression (follow-up)"),
            )
        )

    parts = [p for p in parts if p.height]
    if not parts:
        return pl.DataFrame(
            schema={"episode_id": pl.Int64, "person_id": pl.Int64, "_kind": pl.String}
        )
    frame = pl.concat(parts, how="diagonal_relaxed")
    for col, dtype in (("_start", _UTC), ("_stop", _UTC), ("_start_date", pl.Date)):
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(col))
    for col in ("_crs_number", "_course", "episode_number"):
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Int32).alias(col))
    frame = frame.with_columns(
        _rank=pl.col("_kind").replace_strict(_KIND_RANK, return_dtype=pl.Int32),
        episode_start_date=pl.coalesce(local_date(pl.col("_start"), tz), pl.col("_start_date")),
        episode_start_datetime=local_datetime(pl.col("_start"), tz),
        episode_end_date=local_date(pl.col("_stop"), tz),
        episode_end_datetime=local_datetime(pl.col("_stop"), tz),
        episode_source_concept_id=pl.lit(c.id("no_matching_concept")),
    )
    frame = assign_ids(
        frame,
        "episode_id",
        ["person_id", "_rank", "episode_start_date", "_start", "episode_number"],
    )
    # A regimen's parent is the CRS episode in which its first dose was given.
    crs_rows = frame.filter(pl.col("_kind") == "crs").select(
        "person_id", _p_id="episode_id", _p_start="_start", _p_stop="_stop"
    )
    parents = (
        frame.filter(pl.col("_kind") == "regimen")
        .select("episode_id", "person_id", "_start")
        .join(crs_rows, on="person_id", how="inner")
        .filter((pl.col("_start") >= pl.col("_p_start")) & (pl.col("_start") <= pl.col("_p_stop")))
        .group_by("episode_id")
        .agg(episode_parent_id=pl.col("_p_id").min())
    )
    return frame.join(parents, on="episode_id", how="left").sort("episode_id")


def map_episode(inp: OmopInput) -> pl.DataFrame:
    """Episodes (OMOP oncology extension, omop_v54.md §2), first case that applies:

    * CRS: one per ``marts.crs_episode`` row with ``is_crs``. Class *Disease Episode*:
      the person's first CRS episode is Disease First Occurrence (32528), later ones
      Disease Recurrence (32529); object = the CRS condition concept (0: unverified);
      start = onset (first fever), end = last CRS sign; episode_number = 1.. per person;
      type Standard algorithm from EHR (32882): derived with ASTCT 2019.
    * Tocilizumab course: Treatment Regimen (32531) from the tocilizumab rows of
      ``marts.treatment``; a dose > 72 h after the previous one starts a new course;
      start/end = first/last dose; object 0 (no verified regimen concept); parent = the CRS
      episode whose onset..end contains the first dose; episode_number = course number.
    * Disease Remission (32530): the first day-28 CR/CRi assessment, object B-ALL (4173963).
    * Disease Progression (32677): the follow-up progression date, object B-ALL.
    episode_source_concept_id 0 (S1: user-defined episodes have none); episode_id 1..n over
    (person, kind, start).
    """
    keyed = episodes_keyed(inp)
    if not keyed.height:
        return empty("episode")
    return conform(keyed, "episode")
