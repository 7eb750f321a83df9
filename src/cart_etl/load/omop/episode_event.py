"""EPISODE_EVENT: the condition and drug rows behind each CRS episode and regimen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.rules import derivation_rules
from cart_etl.load.omop._common import conform, empty
from cart_etl.load.omop.concepts import concepts
from cart_etl.load.omop.condition_occurrence import condition_keyed
from cart_etl.load.omop.drug_exposure import drug_exposure_keyed
from cart_etl.load.omop.episode import episodes_keyed, toci_doses, utc

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

# Treatment classes of marts.treatment that treat CRS (linked to the episode they fall in).


def _treatment_drug_ids(inp: OmopInput) -> pl.DataFrame:
    """marts.treatment rows with their drug_exposure_id (same person, drug and start)."""
    treat = inp.treatment
    drugs = drug_exposure_keyed(inp)
    if not treat.height or not drugs.height:
        return pl.DataFrame(
            schema={
                "person_id": pl.Int64,
                "_at": pl.Datetime("us", "UTC"),
                "drug_class": pl.String,
                "route": pl.String,
                "drug_exposure_id": pl.Int64,
            }
        )
    rows = treat.select(
        pl.col("person_id").cast(pl.Int64),
        _drug=pl.col("drug"),
        _at=utc(pl.col("start_at"), treat.schema["start_at"]),
        drug_class=pl.col("drug_class"),
        route=pl.col("route"),
    )
    ids = drugs.select("person_id", "_drug", "_at", "drug_exposure_id")
    return rows.join(ids, on=["person_id", "_drug", "_at"], how="inner").drop("_drug")


def map_episode_event(inp: OmopInput) -> pl.DataFrame:
    """Links, one row per (episode, event):

    * CRS episode -> its CONDITION_OCCURRENCE row (same person and mart episode number;
      field concept 1147127);
    * CRS episode -> DRUG_EXPOSURE rows of tocilizumab, systemic (non-intrathecal)
      corticosteroids and vasopressors started between onset and end (1147094);
    * tocilizumab regimen -> the DRUG_EXPOSURE row of each of its doses (1147094).
    Treatment rows are matched to drug exposures on (person, drug, start instant).
    Remission/progression episodes have no events (S1: EPISODE_EVENT is then empty).
    """
    c = concepts()
    episodes = episodes_keyed(inp)
    if not episodes.height:
        return empty("episode_event")
    f_cond = c.id("field_condition_occurrence_id")
    f_drug = c.id("field_drug_exposure_id")
    crs = episodes.filter(pl.col("_kind") == "crs").select(
        "episode_id", "person_id", "_crs_number", "_start", "_stop"
    )
    links: list[pl.DataFrame] = []

    cond = condition_keyed(inp)
    if cond.height:
        crs_cond = cond.filter(pl.col("_kind") == "crs").select(
            "person_id",
            pl.col("_episode_number").alias("_crs_number"),
            event_id=pl.col("condition_occurrence_id"),
        )
        links.append(
            crs.join(crs_cond, on=["person_id", "_crs_number"], how="inner").select(
                "episode_id", "event_id", episode_event_field_concept_id=pl.lit(f_cond)
            )
        )

    treated = _treatment_drug_ids(inp).filter(
        pl.col("drug_class").is_in(derivation_rules().crs_treatment_classes)
        & (pl.col("route").fill_null("") != "IT")
    )
    links.append(
        crs.join(treated, on="person_id", how="inner")
        .filter((pl.col("_at") >= pl.col("_start")) & (pl.col("_at") <= pl.col("_stop")))
        .select(
            "episode_id",
            event_id=pl.col("drug_exposure_id"),
            episode_event_field_concept_id=pl.lit(f_drug),
        )
    )

    regimens = episodes.filter(pl.col("_kind") == "regimen").select(
        "episode_id", "person_id", pl.col("_course").alias("course")
    )
    drug_ids = drug_exposure_keyed(inp).filter(pl.col("_drug") == "tocilizumab")
    dose_ids = toci_doses(inp).join(
        drug_ids.select("person_id", "_at", "drug_exposure_id"), on=["person_id", "_at"]
    )
    links.append(
        regimens.join(dose_ids, on=["person_id", "course"], how="inner").select(
            "episode_id",
            event_id=pl.col("drug_exposure_id"),
            episode_event_field_concept_id=pl.lit(f_drug),
        )
    )
    frame = (
        pl.concat([lk.cast({"event_id": pl.Int64}) for lk in links])
        .unique()
        .sort("episode_id", "episode_event_field_concept_id", "event_id")
    )
    return conform(frame, "episode_event")
