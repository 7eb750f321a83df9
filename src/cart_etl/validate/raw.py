"""The raw layer: the extractor contract (pandera-polars) and the checks on raw text.

``check_raw`` validates every extracted batch against the contract; ``check_raw_bucket``
runs the raw-text rules over one bucket before staging: exact duplicates are quarantined,
patient keys are normalised for linking, and FHIR's partial rows are coalesced.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pandera.polars as pa
import polars as pl

from cart_etl.contract import ENTITIES, PROVENANCE, columns_of
from cart_etl.errors import FailureCase
from cart_etl.stage.casts import normalise_text
from cart_etl.validate.crossfile import filter_duplicates


@cache
def raw_schema(entity: str) -> pa.DataFrameSchema:
    """Every contract column as text; provenance never null (rows must be traceable)."""
    return pa.DataFrameSchema(
        {
            c: pa.Column(pl.String, nullable=c not in PROVENANCE or c == "patient_key")
            for c in columns_of(entity)
        },
        strict=True,
        ordered=True,
        name=f"Raw{entity.title().replace('_', '')}",
    )


def check_raw(entity: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Validate one extracted batch against the raw contract (a failure is an extractor bug)."""
    return raw_schema(entity).validate(frame, lazy=True)


# FHIR spreads one register row (Patient, Condition, baseline Observations), one infusion
# (Procedure + dose Observations) and one oxygen charting (Procedure + flow Observation)
# over several resources; each yields a partial row. Staging coalesces them on these keys.
PARTIAL_KEYS: dict[str, tuple[str, ...]] = {
    "demographics": ("source", "patient_key"),
    "infusion": ("source", "patient_key"),
    "follow_up": ("source", "patient_key"),
    "oxygen": ("source", "patient_key", "at"),
}


def merge_partial_rows(entity: str, frame: pl.DataFrame) -> pl.DataFrame:
    """One row per key: first non-null value of each column; ``_members`` lists the inputs."""
    keys = list(PARTIAL_KEYS[entity])
    values = [c for c in frame.columns if c not in (*keys, "file", "row")]
    member = pl.concat_str([pl.col("file"), pl.lit("\x1f"), pl.col("row")])
    return frame.group_by(keys, maintain_order=True).agg(
        pl.col("file").first(),
        pl.col("row").first(),
        *[pl.col(c).drop_nulls().first() for c in values],
        member.alias("_members"),
    )


@dataclass
class CheckedRaw:
    """One bucket after the raw-layer rules.

    frames: the raw frames as extracted (for the per-file accounting); deduped: the rows
    that go on to staging (``patient_key`` normalised, ``patient_key_raw`` as written);
    duplicates: cases of the rows quarantined as duplicates; extractor_rejects: what the
    extractor could not place (accounted with this bucket).
    """

    frames: dict[str, pl.DataFrame]
    deduped: dict[str, pl.DataFrame]
    duplicates: list[FailureCase]
    extractor_rejects: list[FailureCase]


def check_raw_bucket(
    frames: dict[str, pl.DataFrame],
    *,
    extractor_rejects: list[FailureCase] | None = None,
    merge_partials: bool = False,
) -> CheckedRaw:
    """Duplicates quarantined, keys normalised, partial rows merged (``merge_partials``)."""
    deduped: dict[str, pl.DataFrame] = {}
    duplicates: list[FailureCase] = []
    for entity in ENTITIES:
        ok, dup = filter_duplicates(entity, frames[entity])
        # Patient keys link files: compare them normalised (a padded or full-width MRN is
        # the same patient), keep the text as written for the report.
        ok = ok.with_columns(
            patient_key_raw=pl.col("patient_key"), patient_key=normalise_text(pl.col("patient_key"))
        )
        if merge_partials and entity in PARTIAL_KEYS:
            ok = merge_partial_rows(entity, ok.drop("patient_key_raw")).with_columns(
                patient_key_raw=pl.col("patient_key")
            )
        deduped[entity] = ok
        duplicates += dup
    return CheckedRaw(frames, deduped, duplicates, list(extractor_rejects or []))
