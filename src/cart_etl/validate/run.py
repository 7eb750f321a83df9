"""Validate an extract stream end to end: dedupe, stage, check, cross-check, warn, account."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import pandera.polars as pa
import polars as pl

from cart_etl.errors import FailureCase
from cart_etl.stage.bucket import BUCKET_ENTITIES
from cart_etl.stage.casts import has_decimal_comma
from cart_etl.stage.staging import (
    CAST_SPECS,
    StagingContext,
    date_recovery,
    stg_drug_doses,
    text_was_normalised,
)
from cart_etl.validate import crossfile
from cart_etl.validate.quarantine import case_for, cast_failures, validate_frame
from cart_etl.validate.raw import PARTIAL_KEYS, CheckedRaw
from cart_etl.validate.report import FileSummary
from cart_etl.validate.rules import RULES
from cart_etl.validate.staged import (
    StgDemographics,
    StgDrug,
    StgInfusion,
    StgMeasurement,
    StgOxygen,
    StgVasopressor,
    implausible,
    infusion_dose_consistent,
)

MODELS: dict[str, type[pa.DataFrameModel]] = {
    "vitals": StgMeasurement,
    "labs": StgMeasurement,
    "oxygen": StgOxygen,
    "drugs": StgDrug,
    "demographics": StgDemographics,
    "infusion": StgInfusion,
    "vasopressors": StgVasopressor,
}
# Timestamp columns per entity whose recovery (serial, alternate format, offset) is reported.
DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "vitals": ("at",),
    "labs": ("at",),
    "oxygen": ("at",),
    "drugs": ("at",),
    **{
        e: tuple(k for k, v in spec.items() if v in ("date", "datetime"))
        for e, spec in CAST_SPECS.items()
    },
}


@dataclass
class ValidationOutcome:
    """Accepted staged frames, quarantined cases, warnings and per-file accounting."""

    accepted: dict[str, pl.DataFrame]
    quarantined: list[FailureCase]
    warnings: list[FailureCase]
    files: list[FileSummary] = field(default_factory=list)


def validate_bucket(
    raw: CheckedRaw,
    staged_in: dict[str, pl.DataFrame],
    ctx: StagingContext,
    *,
    response_window: tuple[int, int],
    study_window: tuple[date, date] | None = None,
    allow_reinfusion: bool = False,
) -> ValidationOutcome:
    """Run the staged-layer and cross-file rules over one bucket of staged frames.

    ``raw``: the bucket after the raw-layer checks (``validate.raw.check_raw_bucket``);
    ``staged_in``: ``stage.bucket.stage_bucket`` of it. Order: cast failures -> pandera
    models -> cross-file rules (orphans, infusions, per-kg doses against the accepted
    infusion weight, day-28 window, follow-up order) -> data-quality warnings on what was
    accepted. ``response_window``: study days of a day-28 assessment
    (``derive/derivation.yaml`` ``response.window_days``). Every raw record ends accepted
    or quarantined (tested per file).
    """
    cases: list[FailureCase] = list(raw.extractor_rejects) + list(raw.duplicates)
    accepted: dict[str, pl.DataFrame] = {}
    deduped = raw.deduped
    frames = raw.frames

    def check(entity: str, staged: pl.DataFrame) -> pl.DataFrame:
        nonlocal cases
        spec = CAST_SPECS.get(entity)
        if spec:
            staged, failed = cast_failures(staged, {k: v for k, v in spec.items() if v != "text"})
            cases += failed
        model = MODELS.get(entity)
        if model is not None:
            result = validate_frame(model, staged)
            cases += result.quarantined
            staged = result.accepted
        return staged

    # Contradicting register rows (one study id, two MRNs; one MRN, two study ids; two sexes)
    # are quarantined together before any of them is checked: none is kept silently.
    register, register_cases = crossfile.filter_register_conflicts(
        staged_in["demographics"], tuple(CAST_SPECS["demographics"])
    )
    cases += register_cases
    patients = check("demographics", register)
    infusion = check("infusion", staged_in["infusion"])
    registered = deduped["demographics"].select("source", "patient_key")
    infusion, c1 = crossfile.filter_orphans(infusion, patients, registered)
    infusion, c2 = crossfile.filter_extra_infusions(infusion, allow_reinfusion=allow_reinfusion)
    infusion, c3 = crossfile.filter_infusion_dates(
        infusion, patients, window=study_window, timezone=ctx.timezone
    )
    cases += c1 + c2 + c3
    accepted["demographics"], accepted["infusion"] = patients, infusion
    # A dose in mg/kg becomes mg with the weight of the patient's accepted infusion.
    weights = infusion.select("patient_key", "weight_kg").unique("patient_key", keep="first")
    staged = {e: staged_in[e] for e in BUCKET_ENTITIES}
    staged["drugs"] = stg_drug_doses(staged["drugs"], weights)
    for entity, staged_table in staged.items():
        checked, orphan_cases = crossfile.filter_orphans(
            check(entity, staged_table), patients, registered
        )
        cases += orphan_cases
        if entity in ("drugs", "vasopressors"):
            time_raw = "at_raw" if entity == "drugs" else "start_raw"
            checked, more = crossfile.filter_without_infusion(
                checked, infusion, patients, deduped["infusion"], raw_col=time_raw
            )
            cases += more
        if entity == "response":
            checked, more = crossfile.filter_response_window(
                checked, infusion, window=response_window, timezone=ctx.timezone
            )
            cases += more
        if entity == "follow_up":
            checked, more = crossfile.filter_followup_order(checked)
            cases += more
        accepted[entity] = checked
    warnings = [w for entity, table in accepted.items() for w in _warnings(entity, table, ctx)]
    rejected_merged = [
        # A merged row keeps its first member's (file, row): match on those, not on the keys
        # (staging has replaced the text keys by typed values).
        deduped[e].join(
            accepted[e].select("source", "file", "row"), on=["source", "file", "row"], how="anti"
        )
        for e in PARTIAL_KEYS
        if "_members" in deduped[e].columns
    ]
    files = _accounting(frames, accepted, cases, warnings, rejected_merged)
    return ValidationOutcome(accepted, cases, warnings, files)


def _warn(rec: dict, rule_id: str, field: str, value: object) -> FailureCase:  # type: ignore[type-arg]
    return case_for(rec, rule_id, field, value, f"{field}={value!r}: {RULES[rule_id].checks}")


def _warnings(entity: str, table: pl.DataFrame, ctx: StagingContext) -> list[FailureCase]:
    """Data-quality warnings on accepted rows: every recovered defect is reported, none silent."""
    if table.is_empty():
        return []
    out: list[FailureCase] = []
    exprs: dict[str, pl.Expr] = {}
    ctx = ctx.narrow(table)
    for col in DATE_COLUMNS.get(entity, ()):
        raw = f"{col}_raw"
        if raw in table.columns:
            exprs[f"_date_{col}"] = date_recovery(ctx, pl.col(raw))
    # Text columns whose normalisation is reported (coded columns are kept as written).
    raw_cols = [c for c in table.columns if c.endswith("_raw")] + [
        c
        for c in ("item_code", "test_code", "drug_code", "device_code", "specimen_id")
        if c in table.columns
    ]
    number_cols = [
        k
        for k, v in CAST_SPECS.get(entity, {}).items()
        if v == "number" and f"{k}_raw" in table.columns
    ]
    for col in number_cols:
        exprs[f"_comma_{col}"] = has_decimal_comma(pl.col(f"{col}_raw"))
    for col in raw_cols:
        exprs[f"_text_{col}"] = text_was_normalised(pl.col(col))
    if entity in ("vitals", "labs"):
        exprs["_implausible"] = implausible()
    if entity == "infusion":
        exprs["_dose_off"] = ~infusion_dose_consistent()
    flagged = table.with_columns(**exprs) if exprs else table
    # Only rows carrying a flag are walked in Python; millions of clean rows stay vectorised.
    flag_cols = [
        pl.col(c).is_not_null() if c.startswith("_date_") else pl.col(c).fill_null(False)
        for c in exprs
    ]
    flag_cols += [
        pl.col(c).fill_null(False)
        for c in ("has_decimal_comma", "is_unit_converted", "is_unit_inferred", "is_dose_per_kg")
        if c in flagged.columns
    ]
    if flag_cols:
        flagged = flagged.filter(pl.any_horizontal(flag_cols))
    for rec in flagged.iter_rows(named=True):
        for col in DATE_COLUMNS.get(entity, ()):
            kind = rec.get(f"_date_{col}")
            if kind:
                out.append(_warn(rec, f"date.{kind}", col, rec.get(f"{col}_raw")))
        for col in raw_cols:
            if rec.get(f"_text_{col}"):
                out.append(_warn(rec, "text.normalised", col.removesuffix("_raw"), rec.get(col)))
        if rec.get("has_decimal_comma"):
            out.append(_warn(rec, "number.decimal_comma", "value", rec.get("value_raw")))
        for col in number_cols:
            if rec.get(f"_comma_{col}"):
                out.append(_warn(rec, "number.decimal_comma", col, rec.get(f"{col}_raw")))
        if rec.get("is_unit_converted"):
            field_name = "dose" if entity == "drugs" else "unit"
            shown = rec.get("dose_raw") if entity == "drugs" else rec.get("unit_raw")
            out.append(_warn(rec, "unit.converted", field_name, shown))
        if rec.get("is_unit_inferred"):
            out.append(_warn(rec, "unit.inferred", "unit", rec.get("unit_raw")))
        if rec.get("is_dose_per_kg"):
            out.append(_warn(rec, "drug.dose.per_kg", "dose", rec.get("dose_raw")))
        if rec.get("_dose_off"):
            out.append(
                _warn(rec, "infusion.dose.consistency", "cells_total", rec.get("cells_total_raw"))
            )
        if rec.get("_implausible"):
            out.append(_warn(rec, "measurement.value.implausible", "value", rec.get("value_raw")))
    return out


def _base_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """(source, file, input row) of every record; a merged record stands for all its members."""
    if frame.is_empty():
        return pl.DataFrame(schema={"source": pl.String, "file": pl.String, "row": pl.String})
    if "_members" in frame.columns:
        exploded = frame.select("source", "_members").explode("_members")
        parts = (
            exploded.get_column("_members")
            .str.split_exact("\x1f", 1)
            .struct.rename_fields(["file", "row"])
        )
        frame = exploded.select("source").with_columns(parts.struct.unnest())
    # Several records can come from one input row: a wide row (row "12:temp") or a FHIR
    # resource (row "<id>#component1"); the input row is what a data manager looks up.
    return frame.select("source", "file", pl.col("row").str.replace(r"(#|:).*$", "")).unique()


def _accounting(
    frames: dict[str, pl.DataFrame],
    accepted: dict[str, pl.DataFrame],
    cases: list[FailureCase],
    warnings: list[FailureCase],
    rejected_merged: list[pl.DataFrame] | None = None,
) -> list[FileSummary]:
    """Per (source, file): input rows, rows loaded, rows quarantined (any record of the row
    failed), and rows unaccounted for (must be 0: nothing is dropped silently)."""

    schema = {"source": pl.String, "file": pl.String, "row": pl.String}

    def rows_of(frames_: list[pl.DataFrame]) -> pl.DataFrame:
        parts = [_base_rows(f) for f in frames_ if not f.is_empty()]
        return pl.concat(parts).unique() if parts else pl.DataFrame(schema=schema)

    seen = rows_of(list(frames.values()))
    ok = rows_of(list(accepted.values())).with_columns(_ok=pl.lit(True))
    case_rows = pl.DataFrame(
        [(c.source, c.file, c.row) for c in cases], schema=schema, orient="row"
    ).with_columns(pl.col("row").str.replace(r"(#|:).*$", ""))
    bad = (
        pl.concat([case_rows, rows_of(rejected_merged or [])])
        .unique()
        .with_columns(_bad=pl.lit(True))
    )
    table = (
        pl.concat([seen, bad.select(list(schema))])
        .unique()
        .join(ok, on=list(schema), how="left")
        .join(bad, on=list(schema), how="left")
        .with_columns(pl.col("_ok").fill_null(False), pl.col("_bad").fill_null(False))
        .group_by("source", "file")
        .agg(
            rows_in=pl.len(),
            quarantined=pl.col("_bad").sum(),
            accepted=(pl.col("_ok") & ~pl.col("_bad")).sum(),
            unaccounted=(~pl.col("_ok") & ~pl.col("_bad")).sum(),
        )
        .sort("source", "file")
    )
    warned: Counter[tuple[str, str]] = Counter((w.source, w.file) for w in warnings)
    return [
        FileSummary(
            source=r["source"],
            file=r["file"],
            rows_in=int(r["rows_in"]),
            accepted=int(r["accepted"]),
            quarantined=int(r["quarantined"]),
            warnings=warned[(r["source"], r["file"])],
            unaccounted=int(r["unaccounted"]),
        )
        for r in table.iter_rows(named=True)
    ]
