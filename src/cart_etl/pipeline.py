"""The data path: extract -> partition -> per bucket: stage -> validate -> derive -> write;
then marts -> OMOP -> checks, in one DuckDB transaction.

``run()`` loads one delivery into the store; ``validate_only()`` (``cart-etl validate``)
stops after validation and writes nothing. Order per run:

1. resolve the mappings (defaults + the site or FHIR-profile folder, ``cart_etl.mappings``)
   and fingerprint the inputs and exactly the rule files applied; an unchanged fingerprint
   after a succeeded run is skipped (recorded as ``skipped``);
2. in ONE transaction, bucket by bucket (patients hashed into buckets so memory stays
   flat): raw-layer checks, staging, validation, derivation, and an append to
   ``staging.*`` with the study id as the only patient key (MRNs never reach the store);
3. assign ``person_id`` (1.. in study-id order), build the marts, map OMOP CDM v5.4;
4. run the mart invariants and the post-load great-expectations suite; any failure rolls the
   transaction back (the previous store stays as it was) and is recorded in ``etl.runs``.
A killed process never commits, so the store keeps the previous run's data.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import orjson

from cart_etl.config import Settings
from cart_etl.contract import RawBatch, Rejected
from cart_etl.derive.assemble import derive_all
from cart_etl.derive.rules import clinical_rules
from cart_etl.errors import FailureCase, SourceError
from cart_etl.load import duckdb_store as store
from cart_etl.load import marts as marts_mod
from cart_etl.load import runlog
from cart_etl.load.staging_writer import (
    Scrubber,
    StagingWriter,
    redact,
    register_identifiers,
)
from cart_etl.mappings import Mappings, activate
from cart_etl.stage.bucket import stage_bucket
from cart_etl.stage.context import context_from_fhir, context_from_site
from cart_etl.stage.fhir_concepts import open_fhir
from cart_etl.stage.staging import StagingContext, ValueMaps
from cart_etl.validate.partition import BUCKET_ROWS, Partition, RawBucket, merge_file_summaries
from cart_etl.validate.raw import check_raw_bucket
from cart_etl.validate.report import ValidationReport
from cart_etl.validate.run import ValidationOutcome, validate_bucket


@dataclass
class RunResult:
    """What a run did: status, counts, failures; ``exit_code`` for the CLI."""

    run_id: str
    status: str  # succeeded | failed | skipped
    store: Path
    seconds: float = 0.0
    row_counts: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    warnings: int = 0
    failures: list[str] = field(default_factory=list)
    consort: list[tuple[str, int]] = field(default_factory=list)
    message: str = ""

    @property
    def exit_code(self) -> int:
        """0 loaded (or skipped, unchanged input); 1 invariants/expectations failed."""
        return 1 if self.status == "failed" else 0


@dataclass(frozen=True)
class Source:
    """One delivery: a site export folder / SQL URL with its site, or a FHIR folder.

    ``site`` is a site name (``mappings/sites/``) or a site folder/file anywhere;
    ``fhir_profile`` a folder of FHIR overrides layered over ``mappings/``.
    """

    location: str
    site: str | None = None
    fhir: bool = False
    fhir_mode: str = "fast"
    fhir_profile: str | None = None

    @property
    def kind(self) -> str:
        return "fhir" if self.fhir else "site"

    def describe(self) -> str:
        return f"fhir:{self.location}" if self.fhir else f"site:{self.site}:{self.location}"


@dataclass
class Plan:
    """What the extract stage hands on: the raw stream and how to stage it.

    ``timezone`` is the source's zone (the site mapping's ``timezone:``, or the settings'
    site timezone for FHIR): staging parses naive timestamps in it and every study day and
    OMOP local date is computed in it.
    """

    source: Source
    mappings: Mappings
    stream: Iterable[RawBatch | Rejected]
    ctx: StagingContext
    values: ValueMaps
    expected_rows: int
    merge_partials: bool
    notes: Callable[[], list[str]] = field(default=lambda: [])
    fhir_report: Callable[[], dict[str, Any]] | None = None

    @property
    def timezone(self) -> str:
        return self.ctx.timezone


def open_mappings(source: Source, settings: Settings) -> Mappings:
    """The defaults of ``settings.mappings_dir`` with the source's site/profile folder over them."""
    if source.fhir:
        profile = Path(source.fhir_profile) if source.fhir_profile else None
        return Mappings.open(settings.mappings_dir, profile=profile)
    return Mappings.open(settings.mappings_dir, site=source.site)


def _input_rows(path: Path, bytes_per_row: int = 60) -> int:
    """Rough row count from the input size (CSV rows ~60 bytes, FHIR resources ~600)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) // bytes_per_row


def extract(source: Source, mappings: Mappings, settings: Settings) -> Plan:
    """Open the source's reader (site export, SQL database or FHIR) and its staging context.

    Raises:
        ConfigurationError: unknown site.
        MappingError: the site mapping is inconsistent.
        SourceError: the export (or database) cannot be read.
    """
    if source.fhir:
        ctx, values = context_from_fhir(settings.site_timezone, mappings)
        stream = open_fhir(
            Path(source.location),
            mappings,
            mode=source.fhir_mode,
            memory_limit=settings.duckdb_memory_limit,
        )

        def notes() -> list[str]:
            report = stream.report.to_dict()
            return [
                f"FHIR extraction mode: {source.fhir_mode}; {report['resources']} resources: "
                f"{report['outcomes']}; not in cohort: {report['not_in_cohort']}"
            ]

        rows = _input_rows(Path(source.location), bytes_per_row=600)
        return Plan(source, mappings, stream, ctx, values, rows, True, notes, stream.report.to_dict)
    from cart_etl.extract.readers.sql import extract_sql
    from cart_etl.extract.site.export import extract_site_export
    from cart_etl.extract.site.parse import load_site_mapping

    assert mappings.site_file is not None  # Mappings.open resolved the site
    site_mapping = load_site_mapping(mappings.site_file, mappings.root)
    ctx, values = context_from_site(site_mapping)
    if "://" in source.location:
        site_stream = extract_sql(source.location, site_mapping)
        return Plan(source, mappings, site_stream, ctx, values, BUCKET_ROWS, False)
    export = Path(source.location)
    site_stream = extract_site_export(export, site_mapping)
    return Plan(source, mappings, site_stream, ctx, values, _input_rows(export), False)


def stage_and_validate(
    bucket: RawBucket, plan: Plan, study_window: tuple[date, date] | None = None
) -> ValidationOutcome:
    """One bucket through the raw checks (``validate/raw``), staging (``stage/bucket``) and
    the staged and cross-file checks (``validate/run``)."""
    raw = check_raw_bucket(
        bucket.frames,
        extractor_rejects=bucket.extractor_rejects,
        merge_partials=plan.merge_partials,
    )
    staged = stage_bucket(raw.deduped, plan.ctx, plan.values)
    window = clinical_rules(plan.mappings).derivation.response_window_days
    return validate_bucket(raw, staged, plan.ctx, response_window=window, study_window=study_window)


def fingerprint(source: Source, mappings: Mappings, settings: Settings) -> dict[str, str]:
    """Checksums of every input file and of exactly the rule files the run applies.

    ``_fingerprint`` digests them with the package version and the source; the other keys
    (recorded in ``etl.runs.input_checksums``) are the input files by relative path and the
    rule files as ``rules:mappings/<rel>`` / ``rules:site/<rel>``.
    """
    sums = {
        str(
            p.relative_to(source.location) if p != Path(source.location) else p.name
        ): store.file_checksum(p)
        for p in _files(source.location)
    }
    rules = {f"rules:{k}": v for k, v in mappings.applied(fhir=source.fhir).items()}
    for name in ("marts.sql", "marts_invariants.yaml", "omop_cdm_v54.sql"):
        path = settings.schemas_dir / name
        if path.is_file():
            rules[f"rules:schemas/{name}"] = store.file_checksum(path)
    digest = hashlib.sha256(
        orjson.dumps(
            {
                "inputs": sums,
                "rules": rules,
                "version": version("cart_etl"),
                "source": source.describe(),
            },
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()
    return {"_fingerprint": digest, **mappings.describe(), **sums, **rules}


def _files(location: str) -> list[Path]:
    path = Path(location)
    if "://" in location:
        return []
    if not path.exists():
        raise SourceError(
            f"Input {location} does not exist.", fix="pass the export folder written by the site."
        )
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def run(
    source: Source,
    store_path: Path,
    *,
    settings: Settings | None = None,
    force: bool = False,
    expectations: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> RunResult:
    """Load one delivery into the store (see the module docstring for the stages).

    Raises:
        StoreLockedError: another process is writing the store.
        SourceError / MappingError / ConfigurationError: the input or its mapping is unusable.
    """
    settings = settings or Settings()
    mappings = open_mappings(source, settings)
    with activate(mappings):
        return _run(source, mappings, store_path, settings, force, expectations, on_stage)


def _run(
    source: Source,
    mappings: Mappings,
    store_path: Path,
    settings: Settings,
    force: bool,
    expectations: bool,
    on_stage: Callable[[str], None] | None,
) -> RunResult:
    say = on_stage or (lambda _msg: None)
    started = time.perf_counter()
    sums = fingerprint(source, mappings, settings)
    con = store.connect(store_path, inputs=[source.location])
    con.execute(f"SET memory_limit = '{settings.duckdb_memory_limit}'")
    con.execute("SET preserve_insertion_order = false")  # marts are inserted with ORDER BY
    command = f"run {source.describe()}"
    run_: store.Run | None = None
    try:
        previous = None if force else runlog.last_success(con, sums["_fingerprint"])
        if previous is not None:
            skipped = store.start_run(con, command, sums)
            store.finish_run(
                con, skipped, status="skipped", message=f"inputs unchanged since run {previous}"
            )
            return RunResult(
                skipped.run_id,
                "skipped",
                store_path,
                seconds=time.perf_counter() - started,
                message=f"inputs unchanged since run {previous}; nothing to do",
                consort=runlog.consort(con),
            )
        con.begin()
        run_ = store.start_run(con, command, sums)
        clinical = clinical_rules(mappings)
        writer = StagingWriter(con)
        quarantined: list[FailureCase] = []
        warnings: list[FailureCase] = []
        every_mrn: set[str] = set()
        say("extract + validate + derive")
        plan = extract(source, mappings, settings)
        with tempfile.TemporaryDirectory(prefix="cart_etl_run_") as spill:
            partition = Partition(
                plan.stream, expected_rows=plan.expected_rows, spill_dir=Path(spill)
            )
            for bucket in partition:
                outcome = stage_and_validate(bucket, plan)  # raw checks -> stage -> validate
                derived = derive_all(outcome.accepted, plan.timezone, clinical)
                # A site's patient key is the MRN (FHIR's is a resource id: issue #15).
                mrns = [] if source.fhir else register_identifiers(bucket.frames["demographics"])
                writer.write(outcome.accepted, derived, mrns)
                scrubber = Scrubber(mrns)
                quarantined += [redact(c, scrubber) for c in outcome.quarantined]
                warnings += [redact(c, scrubber) for c in outcome.warnings]
                every_mrn.update(mrns)
            scrubber = Scrubber(sorted(every_mrn, key=lambda k: (-len(k), k)))
            quarantined += [redact(c, scrubber) for c in partition.unplaced]
        if not writer.has_register:
            raise SourceError(  # noqa: TRY301 - rolled back by the handler below
                f"No register rows could be read from {source.location}.",
                fix="check the export folder and the site mapping.",
            )
        store.quarantine(con, run_, quarantined)
        store.record_warnings(con, run_, warnings)
        say("marts")
        con.execute(
            "CREATE OR REPLACE TABLE staging.person_map AS SELECT study_id, "
            "row_number() OVER (ORDER BY study_id)::BIGINT AS person_id "
            "FROM (SELECT DISTINCT study_id FROM staging.demographics)"
        )
        marts_mod.build_marts(con, settings.schemas_dir)
        say("omop")
        from cart_etl.load.omop_loader import load_omop

        load_omop(
            con,
            source_name=source.site or "fhir",
            timezone=plan.timezone,
            buckets=writer.buckets,
            schemas_dir=settings.schemas_dir,
        )
        say("checks")
        failures = [
            f"{n}: {rule} ({c} rows{_patients(marts_mod.violating_study_ids(con, n))})"
            for n, rule, c in marts_mod.check_invariants(con)
        ]
        if expectations:
            from cart_etl.load.postload import run_postload_suite

            failures += [
                f"{r['table']}: {r['expectation']} ({r['unexpected_count']} unexpected)"
                for r in run_postload_suite(con)
                if not r["success"]
            ]
        counts = runlog.row_counts(con)
        result = RunResult(
            run_.run_id,
            "failed" if failures else "succeeded",
            store_path,
            row_counts=counts,
            quarantined=len(quarantined),
            warnings=len(warnings),
            failures=failures,
            consort=runlog.consort(con),
        )
        if failures:
            con.rollback()
            failed = store.start_run(con, command, sums)
            store.finish_run(
                con, failed, status="failed", row_counts=counts, message="; ".join(failures)[:4000]
            )
            result.run_id = failed.run_id
        else:
            counts.update(quarantined=result.quarantined, warnings=result.warnings)
            store.finish_run(con, run_, status="succeeded", row_counts=counts)
            con.commit()
            con.execute("CHECKPOINT")
        result.seconds = time.perf_counter() - started
        return result  # noqa: TRY300 - the handler only rolls back and re-raises
    except BaseException as exc:
        with contextlib.suppress(duckdb.Error):  # no transaction open
            con.rollback()
        if store.is_disk_full(exc):  # e.g. the commit's write-ahead log or checkpoint
            con.close()
            raise store.disk_full_error(
                store_path, exc, run=run_, command=command, input_checksums=sums
            ) from exc
        raise
    finally:
        con.close()


def _patients(study_ids: list[str]) -> str:
    return f"; study ids {', '.join(study_ids)}" if study_ids else ""


def validate_only(
    source: Source,
    *,
    settings: Settings | None = None,
    expectations: bool = True,
    study_window: tuple[date, date] | None = None,
) -> tuple[ValidationOutcome, ValidationReport]:
    """``cart-etl validate``: extract -> partition -> stage -> validate (+ GX suites); no store.

    The outcome keeps the accepted frames when the extract is one bucket (small exports);
    a spilled extract keeps only the cases and the per-file accounting.

    Raises:
        ConfigurationError: unknown site.
        MappingError: the site mapping is inconsistent.
        SourceError: the export (or database) cannot be read.
    """
    settings = settings or Settings()
    mappings = open_mappings(source, settings)
    with activate(mappings):
        plan = extract(source, mappings, settings)
        results: list[dict[str, Any]] = []
        outcomes: list[ValidationOutcome] = []
        with tempfile.TemporaryDirectory(prefix="cart_etl_validate_") as spill:
            partition = Partition(
                plan.stream, expected_rows=plan.expected_rows, spill_dir=Path(spill)
            )
            for bucket in partition:
                outcome = stage_and_validate(bucket, plan, study_window)
                if expectations:
                    from cart_etl.validate.expectations import run_suites

                    results.extend(run_suites(outcome.accepted))
                if partition.buckets > 1:
                    outcome.accepted = {}  # keep memory flat: only the cases are kept
                outcomes.append(outcome)
        if partition.buckets == 1:
            total = outcomes[0]
        else:
            total = ValidationOutcome(
                {},
                list(partition.unplaced) + [c for o in outcomes for c in o.quarantined],
                [w for o in outcomes for w in o.warnings],
                merge_file_summaries([o.files for o in outcomes], partition.unplaced),
            )
        report = ValidationReport(
            source=source.location,
            site=None if source.fhir else source.site,
            files=total.files,
            quarantined=total.quarantined,
            warnings=total.warnings,
            expectations=_merge_expectations(results),
        )
        report.notes.extend(plan.notes())
        if plan.fhir_report is not None:
            report.fhir = plan.fhir_report()
        return total, report


def validate_site(
    location: Path | str, site: str, **options: Any
) -> tuple[ValidationOutcome, ValidationReport]:
    """``validate_only`` of a site export folder or SQLAlchemy URL."""
    return validate_only(Source(str(location), site), **options)


def validate_fhir(
    path: Path | str, *, mode: str = "fast", **options: Any
) -> tuple[ValidationOutcome, ValidationReport]:
    """``validate_only`` of FHIR R4 bundles or Bulk NDJSON (``mode`` fast or strict)."""
    return validate_only(Source(str(path), fhir=True, fhir_mode=mode), **options)


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


def summary_json(result: RunResult) -> dict[str, Any]:
    """Machine-readable run summary (``cart-etl run --json``)."""
    return {
        "run_id": result.run_id,
        "status": result.status,
        "store": str(result.store),
        "seconds": round(result.seconds, 2),
        "quarantined": result.quarantined,
        "warnings": result.warnings,
        "failures": result.failures,
        "consort": dict(result.consort),
        "row_counts": result.row_counts,
        "message": result.message,
    }
