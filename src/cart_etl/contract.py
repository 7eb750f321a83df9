"""The shared contract: the canonical raw frames every extractor yields (site export, SQL
database, FHIR), and the column lists of the derived marts (``schemas/marts.sql``).

An extractor only *locates* values: it maps source columns or FHIR elements onto these
columns and keeps every value as the source wrote it, as text (no parsing, no unit
conversion, no code mapping, no de-duplication). Validation and staging do the rest, so the
same checks run whatever the source was.

Every frame has the provenance columns first, then the entity's columns. All columns are
``pl.String``; a missing value is null. Names follow ``cart_etl.synth.model`` so that a
site mapping's ``field: vitals[].at`` names a column here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import polars as pl

from cart_etl.errors import FailureCase, MappingError

# source: site name, "sql:<site>" or "fhir"; file: path relative to the source root, a SQL
# table name or an NDJSON/bundle file; row: 1-based data row (header excluded), or the FHIR
# resource id; patient_key: the source's patient identifier (MRN for hospital exports, the
# Patient resource id for FHIR). (source, file, row) identifies one input row/resource.
PROVENANCE: tuple[str, ...] = ("source", "file", "row", "patient_key")

# Coded items carry the code as written plus the system it comes from: a site-local
# system ("local:<site>:<file>:<column>") or a standard URI (http://loinc.org, RxNorm, SNOMED).
ENTITY_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "demographics": (
        "study_id",
        "sex",
        "birth_date",
        "diagnosis_date",
        "screening_date",
        "height_cm",
        "weight_kg",
        "is_high_risk",
        "risk_genetics",
        "lines_of_therapy",
        "prior_allo_sct",
        "marrow_blasts_pct",
    ),
    "infusion": (
        "at",
        "product",
        "lot",
        "cells_total",
        "dose_1e6_per_kg",
        "weight_kg",
        "donor_derived",
    ),
    "vitals": ("at", "item_system", "item_code", "value", "unit"),
    "oxygen": (
        "at",
        "item_system",
        "item_code",
        "device_system",
        "device_code",
        "flow_l_min",
        "flow_unit",
    ),
    "labs": ("at", "test_system", "test_code", "value", "unit", "specimen_id"),
    "drugs": (
        "at",
        "drug_system",
        "drug_code",
        "dose",
        "dose_unit",
        "route",
        "indication",
        "status",
    ),
    "vasopressors": ("start", "stop", "drug_system", "drug_code", "rate", "rate_unit"),
    "response": ("at", "morphology", "marrow_blasts_pct", "mrd_pct"),
    "follow_up": ("last_contact_date", "progression_date", "death_date", "death_cause"),
    "infections": ("onset_date", "site", "organism", "ctcae_grade"),
    "icans": ("at", "ice_score", "grade"),
    "recorded_crs": ("at", "grade", "scale"),
}
ENTITIES: tuple[str, ...] = tuple(ENTITY_COLUMNS)


def columns_of(entity: str) -> tuple[str, ...]:
    """Provenance + entity columns, in frame order."""
    try:
        return PROVENANCE + ENTITY_COLUMNS[entity]
    except KeyError:
        raise MappingError(
            f"Unknown canonical entity {entity!r}.", fix=f"use one of: {', '.join(ENTITIES)}."
        ) from None


def empty_frame(entity: str) -> pl.DataFrame:
    """A zero-row frame with the entity's schema."""
    return pl.DataFrame(schema=dict.fromkeys(columns_of(entity), pl.String))


def conform(entity: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Cast to text, add missing entity columns as null, order columns; reject unknown ones."""
    expected = columns_of(entity)
    unknown = [c for c in frame.columns if c not in expected]
    if unknown:
        raise MappingError(
            f"Columns {unknown} are not part of the canonical {entity!r} frame.",
            fix=f"map them to one of {list(ENTITY_COLUMNS[entity])} or drop them in the mapping.",
        )
    return frame.with_columns(
        [pl.lit(None, dtype=pl.String).alias(c) for c in expected if c not in frame.columns]
    ).select([pl.col(c).cast(pl.String) for c in expected])


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One chunk of one entity from one input file/table/resource stream."""

    entity: str
    frame: pl.DataFrame
    input_rows: int  # rows/resources read from the input for this chunk (before any routing)


# An input row/resource the extractor could not place (e.g. unparseable JSON): the same
# record as any other quarantined case, so the run log stores both alike.
Rejected = FailureCase


ExtractStream = Iterator[RawBatch | Rejected]


# The derived marts' columns, in mart order (``schemas/marts.sql``; ``person_id`` is added
# at load). ``PATIENT_COLUMNS`` are also the columns of the generator's truth/patients.csv.
PATIENT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "is_infused",
    "exclusion_reason",
    "is_included",
    "is_toci",
    "age_years",
    "sex",
    "is_high_risk",
    "lines_of_therapy",
    "prior_allo_sct",
    "marrow_blasts_pct",
    "cart_dose_1e6_per_kg",
    "max_crs_grade",
    "crs_onset_day",
    "crs_duration_days",
    "has_icans",
    "max_icans_grade",
    "toci_doses",
    "toci_cumulative_mg",
    "steroid_mp_equiv_mg",
    "response_day28",
    "os_days",
    "os_event",
    "pfs_days",
    "pfs_event",
    "serious_infection",
)
DETAIL_COLUMNS: tuple[str, ...] = (
    "study_id",
    "infusion_at",
    "infusion_date",
    "last_contact_date",
    "progression_date",
    "death_date",
    "crs_episodes",
    "crs_grade_recorded",
    "recorded_grade_disagrees",
    "crs_max_grade_mechanism",
    "pre_infusion_fever",
    "first_toci_at",
    "hours_onset_to_first_toci",
    "toci_max_doses_in_24h",
    "toci_exceeds_course_limit",
    "il6_before_first_toci",
    "il6_after_first_toci",
    "il6_fell_after_toci",
    "gcsf_total_ug",
    "vasopressor_hours",
    "lost_data_kind",
)
EPISODE_COLUMNS: tuple[str, ...] = (
    "study_id",
    "episode_number",
    "is_crs",
    "onset_at",
    "end_at",
    "onset_day",
    "end_day",
    "duration_hours",
    "duration_days",
    "max_grade",
    "grade_mechanism",
    "first_mask_at",
    "first_toci_at",
    "hours_onset_to_first_toci",
)
