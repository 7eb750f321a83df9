"""Stage entry points: validate a site export, a SQL database or FHIR data without a store."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

from cart_etl.config import Settings
from cart_etl.extract.contract import RawBatch, Rejected
from cart_etl.extract.site_mapping import load_site_mapping
from cart_etl.extract.sql import extract_sql
from cart_etl.extract.tabular import extract_site_export
from cart_etl.transform.staging import StagingContext, ValueMaps
from cart_etl.validate.context import context_from_site
from cart_etl.validate.report import ValidationReport
from cart_etl.validate.run import BUCKET_ROWS, ValidationOutcome, validate_partitioned


def _input_rows(path: Path, bytes_per_row: int = 60) -> int:
    """Rough row count from the input size (CSV rows ~60 bytes, FHIR resources ~600)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) // bytes_per_row


def _validate(
    stream: Iterable[RawBatch | Rejected],
    ctx: StagingContext,
    values: ValueMaps,
    expected_rows: int,
    *,
    expectations: bool,
    on_bucket: Callable[[ValidationOutcome], None] | None = None,
    **options: Any,
) -> tuple[ValidationOutcome, list[dict[str, Any]]]:
    """Validate (partitioned by patient when large) and run the GX suites bucket by bucket."""
    results: list[dict[str, Any]] = []

    def expect(outcome: ValidationOutcome) -> None:
        if expectations:
            from cart_etl.validate.expectations import run_suites

            results.extend(run_suites(outcome.accepted))
        if on_bucket is not None:
            on_bucket(outcome)  # e.g. the run derives and stages each bucket

    with tempfile.TemporaryDirectory(prefix="cart_etl_validate_") as spill:
        outcome = validate_partitioned(
            stream,
            ctx,
            values,
            expected_rows=expected_rows,
            spill_dir=Path(spill),
            on_bucket=expect,
            **options,
        )
    return outcome, _merge_expectations(results)


def _merge_expectations(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (table, expectation) across buckets: failed if any bucket failed."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        key = (r["table"], r["expectation"])
        if key not in merged:
            merged[key] = dict(r)
        else:
            merged[key]["success"] = merged[key]["success"] and r["success"]
            merged[key]["unexpected_count"] += r["unexpected_count"]
    return list(merged.values())


def _report(
    outcome: ValidationOutcome, source: str, site: str | None, expectations: list[dict[str, Any]]
) -> ValidationReport:
    return ValidationReport(
        source=source,
        site=site,
        files=outcome.files,
        quarantined=outcome.quarantined,
        warnings=outcome.warnings,
        expectations=expectations,
    )


def validate_site(
    source: Path | str,
    site: str,
    *,
    settings: Settings | None = None,
    expectations: bool = True,
    study_window: tuple[date, date] | None = None,
    on_bucket: Callable[[ValidationOutcome], None] | None = None,
) -> tuple[ValidationOutcome, ValidationReport]:
    """Extract and validate a site delivery (export folder, or a SQLAlchemy URL for ``kind: sql``).

    Raises:
        ConfigurationError: unknown site.
        MappingError: the site mapping is inconsistent.
        SourceError: the export (or database) cannot be read.
    """
    settings = settings or Settings()
    mapping = load_site_mapping(site, settings.mappings_dir)
    ctx, values = context_from_site(mapping)
    text = str(source)
    stream = (
        extract_sql(text, mapping) if "://" in text else extract_site_export(Path(source), mapping)
    )
    expected = _input_rows(Path(source)) if "://" not in text else BUCKET_ROWS
    outcome, expectations_run = _validate(
        stream,
        ctx,
        values,
        expected,
        expectations=expectations,
        on_bucket=on_bucket,
        study_window=study_window,
    )
    return outcome, _report(outcome, text, site, expectations_run)


def validate_fhir(
    path: Path,
    *,
    mode: str = "fast",
    settings: Settings | None = None,
    expectations: bool = True,
    study_window: tuple[date, date] | None = None,
    on_bucket: Callable[[ValidationOutcome], None] | None = None,
) -> tuple[ValidationOutcome, ValidationReport]:
    """Extract and validate FHIR R4 bundles or Bulk NDJSON (``mode`` fast or strict).

    Partial rows (one register row spread over Patient, Condition and Observations) are
    coalesced per patient before the register rules run.
    """
    from cart_etl.extract.fhir import extract_fhir
    from cart_etl.validate.context import context_from_fhir

    settings = settings or Settings()
    ctx, values = context_from_fhir(settings.site_timezone)
    stream = extract_fhir(path, mode=mode)  # type: ignore[arg-type]
    outcome, expectations_run = _validate(
        stream,
        ctx,
        values,
        _input_rows(path, bytes_per_row=600),
        expectations=expectations,
        merge_partials=True,
        study_window=study_window,
        on_bucket=on_bucket,
    )
    report = _report(outcome, str(path), None, expectations_run)
    report.notes.append(
        f"FHIR extraction mode: {mode}; {stream.report.to_dict().get('resources', '')}"
    )
    return outcome, report
