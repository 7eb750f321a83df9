"""OMOP CDM v5.4 mappers: one module per CDM table, each ``map_<table>(OmopInput)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class OmopInput:
    """Everything the mappers read.

    accepted: staged, validated frames per entity (``outcome.accepted`` of validate_site /
    validate_fhir); persons: patient_key, person_id, study_id, one row per accepted register
    row; patient, detail, crs_episode, treatment: the marts (schemas/marts.sql);
    source_name: e.g. ``tianjin_ref`` or ``fhir``; timezone: the site timezone (local dates
    and the naive local ``*_datetime`` values are in it).
    """

    accepted: dict[str, pl.DataFrame]
    persons: pl.DataFrame
    patient: pl.DataFrame
    detail: pl.DataFrame
    crs_episode: pl.DataFrame
    treatment: pl.DataFrame
    source_name: str
    timezone: str


def _mappers() -> dict[str, Callable[[OmopInput], pl.DataFrame]]:
    from cart_etl.load.omop.cdm_source import map_cdm_source
    from cart_etl.load.omop.condition_occurrence import map_condition_occurrence
    from cart_etl.load.omop.death import map_death
    from cart_etl.load.omop.device_exposure import map_device_exposure
    from cart_etl.load.omop.drug_exposure import map_drug_exposure
    from cart_etl.load.omop.episode import map_episode
    from cart_etl.load.omop.episode_event import map_episode_event
    from cart_etl.load.omop.measurement import map_measurement
    from cart_etl.load.omop.observation import map_observation
    from cart_etl.load.omop.observation_period import map_observation_period
    from cart_etl.load.omop.person import map_person
    from cart_etl.load.omop.procedure_occurrence import map_procedure_occurrence
    from cart_etl.load.omop.visit_occurrence import map_visit_occurrence

    return {
        "person": map_person,
        "observation_period": map_observation_period,
        "visit_occurrence": map_visit_occurrence,
        "condition_occurrence": map_condition_occurrence,
        "drug_exposure": map_drug_exposure,
        "procedure_occurrence": map_procedure_occurrence,
        "device_exposure": map_device_exposure,
        "measurement": map_measurement,
        "observation": map_observation,
        "death": map_death,
        "episode": map_episode,
        "episode_event": map_episode_event,
        "cdm_source": map_cdm_source,
    }


TABLES: tuple[str, ...] = (
    "person",
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "device_exposure",
    "measurement",
    "observation",
    "death",
    "episode",
    "episode_event",
    "cdm_source",
)


def map_all(inp: OmopInput) -> dict[str, pl.DataFrame]:
    """Every CDM table cart_etl writes, table name -> frame (DDL columns, order, dtypes)."""
    return {table: mapper(inp) for table, mapper in _mappers().items()}


__all__ = ["TABLES", "OmopInput", "map_all"]
