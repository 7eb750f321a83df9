"""CDM_SOURCE: one row describing the source and the ETL."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import polars as pl

from cart_etl.load.omop._common import conform
from cart_etl.load.omop.concepts import concepts
from cart_etl.load.omop.observation_period import event_dates

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

VOCABULARY_VERSION = "cart_etl concepts v1"


def map_cdm_source(inp: OmopInput) -> pl.DataFrame:
    """One row.

    cdm_source_name/abbreviation = the source name (e.g. ``tianjin_ref``, ``fhir``);
    cdm_holder ``cart_etl``; source_release_date and cdm_release_date = the latest event
    date in the data (the data cut: a run date would make two runs on the same input
    differ); cdm_version ``v5.4`` with 756265; vocabulary_version names the concept file
    (``mappings/omop/concepts.yaml``), since no Athena vocabulary is loaded.
    """
    c = concepts()
    dates = event_dates(inp)
    cut = dates["date"].max() if dates.height else None
    release = cut if isinstance(cut, date) else date(1970, 1, 1)
    frame = pl.DataFrame(
        {
            "cdm_source_name": [f"cart_etl CAR-T cohort ({inp.source_name})"],
            "cdm_source_abbreviation": [inp.source_name[:25]],
            "cdm_holder": ["cart_etl"],
            "source_description": [
                "CD19 CAR-T patients (r/r B-ALL): register, infusion, flowsheet vitals, oxygen, "
                "labs, MAR, vasopressors, ICANS/CRS assessments, response, follow-up; CRS "
                "episodes derived with ASTCT 2019 (cart_etl marts)."
            ],
            "cdm_etl_reference": ["cart_etl.load.omop (docs/omop/README.md)"],
            "source_release_date": [release],
            "cdm_release_date": [release],
            "cdm_version": ["v5.4"],
            "cdm_version_concept_id": [c.id("cdm_v54")],
            "vocabulary_version": [VOCABULARY_VERSION],
        }
    )
    return conform(frame, "cdm_source")
