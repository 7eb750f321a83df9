"""`cart-etl run`: extract -> validate -> derive -> stage -> marts -> OMOP, one transaction.

Order per run:
1. fingerprint the inputs (file checksums + rule/mapping files + package version); an
   unchanged fingerprint after a succeeded run is skipped (recorded as ``skipped``);
2. in ONE DuckDB transaction: validate the source bucket by bucket (patients hashed into
   buckets, see ``validate.run.validate_partitioned``), derive each bucket
   (``transform.derive``) and append the staged and derived frames to ``staging.*`` with the
   study id as the only patient key (MRNs never reach the store);
3. assign ``person_id`` (1.. in study-id order), build the marts, map OMOP CDM v5.4;
4. run the mart invariants and the post-load great-expectations suite; any failure rolls the
   transaction back (the previous store stays as it was) and is recorded in ``etl.runs``.
A killed process never commits, so the store keeps the previous run's data.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl

from cart_etl.config import Settings
from cart_etl.errors import FailureCase, SourceError
from cart_etl.extract.contract import ENTITIES
from cart_etl.load import duckdb_store as store
from cart_etl.load import marts as marts_mod
from cart_etl.transform.derive.assemble import Derived, derive_all
from cart_etl.transform.derive.rules import crs_rules, steroid_rules
from cart_etl.transform.derive.treatment import toci_label
from cart_etl.validate.run import ValidationOutcome

# Register identifiers that must never reach the store or the logs (redacted in cases).
IDENTIFYING_FIELDS = frozenset({"patient_key", "mrn", "name"})


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
    """One delivery: a site export folder / SQL URL with its site, or a FHIR folder."""

    location: str
    site: str | None = None
    fhir: bool = False
    fhir_mode: str = "fast"

    @property
    def kind(self) -> str:
        return "fhir" if self.fhir else "site"

    def describe(self) -> str:
        return f"fhir:{self.location}" if self.fhir else f"site:{self.site}:{self.location}"


def _files(location: str) -> list[Path]:
    path = Path(location)
    if "://" in location:
        return []
    if not path.exists():
        raise SourceError(
            f"Input {location} does not exist.", fix="pass the export folder written by the site."
        )
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def fingerprint(source: Source, settings: Settings) -> dict[str, str]:
    """Checksums of every input file and every rule file the run depends on."""
    sums = {
        str(
            p.relative_to(source.location) if p != Path(source.location) else p.name
        ): store.file_checksum(p)
        for p in _files(source.location)
    }
    rule_files = [
        settings.mappings_dir / "grading" / "crs_astct2019.json",
        settings.mappings_dir / "drugs" / "corticosteroid_equivalents.yaml",
        settings.mappings_dir / "validation" / "plausibility.yaml",
        settings.schemas_dir / "marts.sql",
        settings.schemas_dir / "omop_cdm_v54.sql",
    ]
    rule_files += sorted((settings.mappings_dir / ("fhir" if source.fhir else "sites")).glob("*"))
    rule_files += sorted((settings.mappings_dir / "omop").glob("*"))
    rules = {
        str(p.relative_to(settings.mappings_dir.parent)): store.file_checksum(p)
        for p in rule_files
        if p.is_file()
    }
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
    return {"_fingerprint": digest, **sums}


def _redact(case: FailureCase) -> FailureCase:
    """Drop MRNs/names from a case before it is stored (the row reference stays)."""
    if case.field not in IDENTIFYING_FIELDS or not case.value:
        return case
    return FailureCase(
        case.source,
        case.file,
        case.row,
        case.field,
        "<redacted>",
        case.rule_id,
        case.message.replace(case.value, "<redacted>"),
    )


def _printable(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns DuckDB can type from Arrow: all-null (untyped) columns become VARCHAR."""
    return frame.with_columns(pl.col(pl.Null).cast(pl.String))


class _Stager:
    """Append each validated bucket (staged + derived frames) to ``staging.*`` tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tz: str, settings: Settings) -> None:
        self.con = con
        self.tz = tz
        self.bucket = 0
        self.created: set[str] = set()
        self.rules = crs_rules(settings.mappings_dir)
        self.steroids = steroid_rules(settings.mappings_dir)
        self.label = toci_label(settings.mappings_dir)
        self.quarantined: list[FailureCase] = []
        self.warnings: list[FailureCase] = []

    def _append(self, table: str, frame: pl.DataFrame) -> None:
        arrow = _printable(frame).to_arrow()  # noqa: F841 - read by DuckDB's replacement scan
        if table not in self.created:
            self.con.execute(f"DROP TABLE IF EXISTS staging.{table}")
            self.con.execute(f"CREATE TABLE staging.{table} AS SELECT * FROM arrow")
            self.created.add(table)
        else:
            self.con.execute(f"INSERT INTO staging.{table} BY NAME SELECT * FROM arrow")

    def __call__(self, outcome: ValidationOutcome) -> None:
        accepted = outcome.accepted
        derived: Derived = derive_all(accepted, self.tz, self.rules, self.steroids, self.label)
        ids = accepted["demographics"].select("patient_key", "study_id").unique("patient_key")
        for entity in ENTITIES:  # every canonical entity is staged
            frame = accepted[entity]
            keep = [
                c
                for c in frame.columns
                if not c.endswith("_raw") and c not in ("source_right", "_members", "study_id")
            ]
            frame = (
                frame.select(keep)
                .join(ids, on="patient_key", how="inner")  # orphans were quarantined upstream
                .drop("patient_key")
                .with_columns(_bucket=pl.lit(self.bucket, pl.Int32))
            )
            self._append(entity, frame)
        for mart in marts_mod.DERIVED_MARTS:
            frame = getattr(derived, mart).drop("patient_key")
            self._append(f"d_{mart}", frame.with_columns(_bucket=pl.lit(self.bucket, pl.Int32)))
        self.quarantined += [_redact(c) for c in outcome.quarantined]
        self.warnings += [_redact(c) for c in outcome.warnings]
        self.bucket += 1


def _validate(source: Source, settings: Settings, stager: _Stager) -> None:
    from cart_etl.validate.validate import validate_fhir, validate_site

    if source.fhir:
        validate_fhir(
            Path(source.location),
            mode=source.fhir_mode,
            settings=settings,
            expectations=False,
            on_bucket=stager,
        )
    else:
        assert source.site is not None
        validate_site(
            source.location, source.site, settings=settings, expectations=False, on_bucket=stager
        )


def _last_success(con: duckdb.DuckDBPyConnection, digest: str) -> str | None:
    rows = con.execute(
        "SELECT run_id, input_checksums->>'_fingerprint' FROM etl.runs "
        "WHERE status = 'succeeded' ORDER BY started_at DESC LIMIT 1"
    ).fetchall()
    return rows[0][0] if rows and rows[0][1] == digest else None


def _row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = con.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
        "WHERE schema_name IN ('omop', 'marts') ORDER BY 1"
    ).fetchall()
    return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for (t,) in tables}


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
    say = on_stage or (lambda _msg: None)
    started = time.perf_counter()
    sums = fingerprint(source, settings)
    con = store.connect(store_path)
    con.execute(f"SET memory_limit = '{settings.duckdb_memory_limit}'")
    con.execute("SET preserve_insertion_order = false")  # marts are inserted with ORDER BY
    try:
        command = f"run {source.describe()}"
        previous = None if force else _last_success(con, sums["_fingerprint"])
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
                consort=_consort(con),
            )
        con.begin()
        run_ = store.start_run(con, command, sums)
        stager = _Stager(con, settings.site_timezone, settings)
        say("extract + validate + derive")
        _validate(source, settings, stager)
        if "demographics" not in stager.created:
            raise SourceError(  # noqa: TRY301 - rolled back by the handler below
                f"No register rows could be read from {source.location}.",
                fix="check the export folder and the site mapping.",
            )
        store.quarantine(con, run_, stager.quarantined)
        store.record_warnings(con, run_, stager.warnings)
        say("marts")
        con.execute(
            "CREATE OR REPLACE TABLE staging.person_map AS SELECT study_id, "
            "row_number() OVER (ORDER BY study_id)::BIGINT AS person_id "
            "FROM (SELECT DISTINCT study_id FROM staging.demographics)"
        )
        marts_mod.build_marts(con, settings.schemas_dir)
        say("omop")
        _load_omop(con, source, settings, stager.bucket)
        say("checks")
        failures = [f"{n}: {rule} ({c} rows)" for n, rule, c in marts_mod.check_invariants(con)]
        if expectations:
            from cart_etl.load.postload import run_postload_suite

            failures += [
                f"{r['table']}: {r['expectation']} ({r['unexpected_count']} unexpected)"
                for r in run_postload_suite(con)
                if not r["success"]
            ]
        counts = _row_counts(con)
        result = RunResult(
            run_.run_id,
            "failed" if failures else "succeeded",
            store_path,
            row_counts=counts,
            quarantined=len(stager.quarantined),
            warnings=len(stager.warnings),
            failures=failures,
            consort=_consort(con),
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
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # no transaction open
            con.rollback()
        raise
    finally:
        con.close()


def _consort(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int]]:
    try:
        return [
            (b, int(n))
            for b, n in con.execute(
                "SELECT box, patients FROM marts.consort ORDER BY step"
            ).fetchall()
        ]
    except duckdb.CatalogException:
        return []


def _load_omop(
    con: duckdb.DuckDBPyConnection, source: Source, settings: Settings, buckets: int
) -> None:
    """Map every bucket to OMOP CDM v5.4 (``cart_etl.load.omop``) and insert it."""
    from cart_etl.load.omop_loader import load_omop

    load_omop(
        con,
        source_name=source.site or "fhir",
        timezone=settings.site_timezone,
        buckets=buckets,
        schemas_dir=settings.schemas_dir,
    )


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
