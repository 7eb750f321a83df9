"""Stage entry points: validate a site export, a SQL database or FHIR data without a store."""

from __future__ import annotations

from pathlib import Path

from cart_etl.config import Settings
from cart_etl.extract.site_mapping import load_site_mapping
from cart_etl.extract.sql import extract_sql
from cart_etl.extract.tabular import extract_site_export
from cart_etl.validate.context import context_from_site
from cart_etl.validate.report import ValidationReport
from cart_etl.validate.run import ValidationOutcome, collect, validate_raw


def _report(
    outcome: ValidationOutcome, source: str, site: str | None, *, expectations: bool
) -> ValidationReport:
    report = ValidationReport(
        source=source,
        site=site,
        files=outcome.files,
        quarantined=outcome.quarantined,
        warnings=outcome.warnings,
    )
    if expectations:
        from cart_etl.validate.expectations import run_suites

        report.expectations = run_suites(outcome.accepted)
    return report


def validate_site(
    source: Path | str, site: str, *, settings: Settings | None = None, expectations: bool = True
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
    frames, rejects = collect(stream)
    outcome = validate_raw(frames, ctx, values, extractor_rejects=rejects)
    return outcome, _report(outcome, text, site, expectations=expectations)


def validate_fhir(
    path: Path, *, mode: str = "fast", settings: Settings | None = None, expectations: bool = True
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
    frames, rejects = collect(stream)
    outcome = validate_raw(frames, ctx, values, extractor_rejects=rejects, merge_partials=True)
    report = _report(outcome, str(path), None, expectations=expectations)
    report.notes.append(
        f"FHIR extraction mode: {mode}; {stream.report.to_dict().get('resources', '')}"
    )
    return outcome, report
