"""Second FHIR stage: flat view rows + the concept map -> the canonical raw frames.

The SQL-on-FHIR views (``mappings/fhir/views``) flatten resources by shape and know no
concept. Here ``fhir/concept_map.csv`` (rows ``source_system, source_code, target, item``;
the shape of OMOP's source_to_concept_map) says which coding is which *target*, and
``fhir/targets.yaml`` says how a target fills the entity columns of
``cart_etl.contract.ENTITY_COLUMNS``. Everything runs as DuckDB SQL over the view tables.

Per resource, the coding that decides is the first of the view's elements, specific codes
before a system-wide ``*`` row, then the coding's position. Every resource of the input ends
in one outcome (``FhirReport``): *emitted* (>= 1 row), *rejected* (a Rejected names resource,
field and reason: excluded status, unresolvable subject, a target's ``otherwise: reject``)
or *out of scope* (a type or code the cohort does not need, counted per type and code, never
quarantined).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import polars as pl

from cart_etl.contract import RawBatch, Rejected, conform
from cart_etl.errors import MappingError, StoreError
from cart_etl.extract.fhir.concept_map import concept_rows
from cart_etl.extract.fhir.views import extract_views, load_flat, view_tables, write_flat
from cart_etl.mappings import Mappings
from cart_etl.stage.fhir_targets import (
    CODINGS,
    JOINS,
    MED_KEY,
    RESOURCE_TYPE,
    STATUS_COLUMN,
    Target,
    compile_targets,
    quote,
)

SOURCE: Final = "fhir"
RULE_MISSING_SUBJECT: Final = "fhir.missing_subject"
RULE_STATUS: Final = "fhir.status_excluded"
RULE_NO_OUTPUT: Final = "fhir.no_matching_output"


@dataclass
class FhirReport:
    """What the FHIR extraction read and what became of it (filled while the stream runs)."""

    mode: str
    files: list[str] = field(default_factory=list)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    resources_by_type: Counter[str] = field(default_factory=Counter)
    rows_by_entity: Counter[str] = field(default_factory=Counter)
    rejected_by_rule: Counter[str] = field(default_factory=Counter)
    out_of_scope: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    excluded_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    not_in_cohort: int = 0
    entries_without_resource: int = 0
    seconds: float = 0.0

    @property
    def resources(self) -> int:
        """Resources (and unparseable lines/files) accounted for."""
        return sum(sum(c.values()) for c in self.outcomes.values())

    @property
    def medication_orders(self) -> int:
        """MedicationRequest resources counted as orders (never doses)."""
        return sum(n for (t, _, _), n in self.out_of_scope.items() if t == "MedicationRequest")

    def totals(self) -> Counter[str]:
        """Outcome counts over all files."""
        total: Counter[str] = Counter()
        for counts in self.outcomes.values():
            total.update(counts)
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the run report."""
        return {
            "mode": self.mode,
            "files": len(self.files),
            "resources": self.resources,
            "outcomes": dict(self.totals()),
            "resources_by_type": dict(self.resources_by_type),
            "rows_by_entity": dict(self.rows_by_entity),
            "rejected_by_rule": dict(self.rejected_by_rule),
            "out_of_scope": [
                {"resource_type": t, "code": c, "reason": r, "count": n}
                for (t, c, r), n in self.out_of_scope.most_common()
            ],
            "excluded_status": [
                {"resource_type": t, "status": s, "count": n}
                for (t, s), n in self.excluded_status.most_common()
            ],
            "not_in_cohort": self.not_in_cohort,
            "entries_without_resource": self.entries_without_resource,
            "seconds": round(self.seconds, 3),
        }


def staging_concepts(mappings: Mappings) -> dict[tuple[str, str], str]:
    """(system, code) -> canonical item for staging (rows with an ``item``)."""
    return {(r.system, r.code): r.item for r in concept_rows(mappings) if r.item}


# -- SQL building ---------------------------------------------------------------------------


def _view_columns(con: duckdb.DuckDBPyConnection, views: Sequence[str]) -> dict[str, set[str]]:
    return {v: {r[0] for r in con.execute(f"DESCRIBE v_{v}").fetchall()} for v in views}


class Recogniser:
    """Runs the second stage over the view tables of ``con`` (``v_<view name>``)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        mappings: Mappings,
        report: FhirReport,
        *,
        study_id_system: str | None = None,
    ) -> None:
        self.con = con
        self.report = report
        spec = mappings.load("fhir/targets.yaml")
        self.spec = spec
        patient = spec.get("patient") or {}
        self.study_id_system = study_id_system or patient.get("study_id_system", "")
        self.mrn = patient.get("mrn_type") or {}
        self.status: dict[str, dict[str, str]] = spec.get("status") or {}
        self.context_only: dict[str, str] = spec.get("context_only") or {}
        views = view_tables(con)
        self.targets = compile_targets(spec, _view_columns(con, views))
        rows = concept_rows(mappings)
        known = {t.name for t in self.targets}
        for r in rows:
            if r.target not in known:
                raise MappingError(
                    f"fhir/concept_map.csv maps {r.system}|{r.code} to the unknown target "
                    f"{r.target!r}.",
                    fix=f"use one of {sorted(known)}.",
                )
        cmap = pl.DataFrame(
            {
                "source_system": [r.system for r in rows],
                "source_code": [r.code for r in rows],
                "target": [r.target for r in rows],
            },
            schema=dict.fromkeys(("source_system", "source_code", "target"), pl.String),
        )
        con.register("_cmap_frame", cmap.to_arrow())
        con.execute("CREATE OR REPLACE TEMP TABLE _cmap AS SELECT * FROM _cmap_frame")
        con.unregister("_cmap_frame")

    def run(self) -> Iterator[RawBatch | Rejected]:
        """Every entity frame and every rejection; the report is filled as it goes."""
        started = time.perf_counter()
        self._lives: dict[str, set[str]] = {}  # table -> targets it holds
        self._patients()
        self._recognise()
        for view in RESOURCE_TYPE:
            yield from self._gate(view)
        for target in self.targets:
            yield from self._emit(target)
        self._account()
        self.report.seconds += time.perf_counter() - started

    # -- steps

    def _patients(self) -> None:
        mr_sys, mr_code = quote(self.mrn.get("system", "")), quote(self.mrn.get("code", "MR"))
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _patients AS
            SELECT p.key, coalesce(p.id, p.key) AS patient_id,
                   coalesce(s.value, p.id, p.key) AS study_id
            FROM v_patient p LEFT JOIN (
                SELECT key, first(value ORDER BY position) AS value FROM v_patient_identifier
                WHERE system = {quote(self.study_id_system)} AND nullif(value, '') IS NOT NULL
                  AND NOT (coalesce(type_system, '') = {mr_sys} AND type_code = {mr_code})
                GROUP BY key) s ON s.key = p.key
            """
        )

    def _recognise(self) -> None:
        """``_codings`` (every coding of every resource, with the element's rank) and
        ``_rec(view, key, target, system, code, display)``: the deciding coding."""
        order = {t.name: i for i, t in enumerate(self.targets)}
        parts = []
        for view, sources in CODINGS.items():
            elements = list(dict.fromkeys(e for e, _ in sources))
            for _, template in sources:
                sql = template.replace("{med_key}", MED_KEY)
                parts.append(
                    f"SELECT {quote(view)} AS view, k.key, k.element, k.position, k.system, "
                    f"k.code, k.display, {_case(elements, 'k.element')} AS erank FROM ({sql}) k"
                )
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE _codings AS {' UNION ALL '.join(parts)}")
        tgt = pl.DataFrame(
            {
                "view": [t.view for t in self.targets],
                "target": [t.name for t in self.targets],
                "element": [t.element for t in self.targets],
                "rank": [order[t.name] for t in self.targets],
            }
        )
        self.con.register("_tgt_frame", tgt.to_arrow())
        self.con.execute("CREATE OR REPLACE TEMP TABLE _tgt AS SELECT * FROM _tgt_frame")
        self.con.unregister("_tgt_frame")
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE _rec AS SELECT k.view, k.key, m.target, k.system, "
            "k.code, k.display FROM _codings k "
            "JOIN _cmap m ON m.source_system = k.system "
            "AND (m.source_code = k.code OR m.source_code = '*') "
            "JOIN _tgt t ON t.view = k.view AND t.target = m.target AND t.element = k.element "
            "QUALIFY row_number() OVER (PARTITION BY k.view, k.key ORDER BY k.erank, "
            "CASE WHEN m.source_code = '*' THEN 1 ELSE 0 END, k.position) = 1"
        )
        self.con.execute(
            "INSERT INTO _rec SELECT 'patient', key, 'patient', NULL, NULL, NULL FROM v_patient"
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE _gone (view VARCHAR, key VARCHAR, rule VARCHAR)"
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE _done (view VARCHAR, key VARCHAR, outcome VARCHAR, "
            "reason VARCHAR)"
        )

    def _gate(self, view: str) -> Iterator[Rejected]:
        """Excluded status and unresolvable subject of recognised resources."""
        rtype = RESOURCE_TYPE[view]
        if view == "patient":
            return
        status_col = STATUS_COLUMN.get(view, "status")
        excluded = self.status.get(view, self.status.get("default", {}))
        listed = ", ".join(quote(str(k)) for k in excluded) or "NULL"
        # Only the resources that fail a gate come back to Python.
        rows = self.con.execute(
            f"""
            WITH n AS (SELECT count(*) AS n_patients FROM _patients)
            SELECT v.key, coalesce(v.id, v.key), r.file, CAST(v.{status_col} AS VARCHAR),
                   v.patient_key, v.subject_reference, v.subject_identifier, v.has_subject,
                   n.n_patients, p.key IS NOT NULL AS resolved
            FROM v_{view} v JOIN _rec x ON x.view = {quote(view)} AND x.key = v.key
            CROSS JOIN n
            LEFT JOIN _res r ON r.resource_type = {quote(rtype)} AND r._key = v.key
            LEFT JOIN _patients p ON p.key = v.patient_key
            WHERE CAST(v.{status_col} AS VARCHAR) IN ({listed})
               OR (p.key IS NULL AND NOT (n.n_patients = 0 AND v.patient_key IS NOT NULL))
            """
        ).fetchall()
        for key, row, file, status, patient_key, ref, ident, has, n_patients, resolved in rows:
            reason = excluded.get(status) if status else None
            if reason is not None:
                self.report.excluded_status[(rtype, status)] += 1
                yield self._reject(
                    view,
                    key,
                    file,
                    row,
                    "status",
                    status,
                    RULE_STATUS,
                    f"{rtype} status {status!r}: {reason}",
                )
                continue
            if resolved or (n_patients == 0 and patient_key):
                continue
            why = _subject_problem(ref, ident, has)
            yield self._reject(
                view, key, file, row, "subject", ref or "", RULE_MISSING_SUBJECT, f"{rtype}: {why}"
            )

    def _reject(
        self,
        view: str,
        key: str,
        file: str | None,
        row: str,
        field: str,
        value: str,
        rule: str,
        message: str,
    ) -> Rejected:
        self.con.execute("INSERT INTO _gone VALUES (?, ?, ?)", [view, key, rule])
        self.report.rejected_by_rule[rule] += 1
        return Rejected(SOURCE, file or "", row, field, value, rule, message)

    def _live(self, view: str) -> str:
        """``_live_<view>``: the view's rows of recognised resources that passed the gates,
        with the deciding coding (``_target, _system, _code, _display``); built once per
        view, so each target reads it without a join."""
        table = f"_live_{view}"
        if table not in self._lives:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT v.*, r.target AS _target, "
                f"r.system AS _system, r.code AS _code, r.display AS _display FROM v_{view} v "
                f"JOIN _rec r ON r.view = {quote(view)} AND r.key = v.key WHERE r.key NOT IN "
                f"(SELECT key FROM _gone WHERE view = {quote(view)})"
            )
            self._lives[table] = {
                str(t)
                for (t,) in self.con.execute(f"SELECT DISTINCT _target FROM {table}").fetchall()
            }
        return table

    def _emit(self, target: Target) -> Iterator[RawBatch | Rejected]:
        view, rtype = target.view, RESOURCE_TYPE[target.view]
        if target.name not in self._lives[self._live(view)]:
            return  # no resource of this target in the input
        joins = " ".join(JOINS.get(view, {}).values())
        base = (
            f"{self._live(view)} v "
            + (
                "JOIN _patients sid ON sid.key = v.key "
                if view == "patient"
                else "LEFT JOIN _patients pk ON pk.key = v.patient_key "
            )
            + f"LEFT JOIN _res f ON f.resource_type = {quote(rtype)} AND f._key = v.key "
            + joins
        )
        patient = (
            "sid.patient_id" if view == "patient" else "coalesce(pk.patient_id, v.patient_key)"
        )
        emitted = "_emitted"
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {emitted} (key VARCHAR)")
        for out in target.outputs:
            select = out.select.replace("{base}", base).replace(
                "{extra}", f"{patient} AS _patient, f.file AS _file"
            )
            # One execution inside DuckDB; the keys stay there, the rows go to polars.
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE _out AS {select} "
                f"WHERE v._target = {quote(target.name)} AND {out.when}"
            )
            self.con.execute(f"INSERT INTO {emitted} SELECT DISTINCT key FROM _out")
            frame = pl.from_arrow(self.con.sql("SELECT * EXCLUDE (key) FROM _out").to_arrow_table())
            assert isinstance(frame, pl.DataFrame)
            if frame.is_empty():
                continue
            frame = frame.with_columns(pl.lit(SOURCE).alias("source")).rename(
                {"_file": "file", "_patient": "patient_key"}
            )
            self.report.rows_by_entity[out.entity] += frame.height
            yield RawBatch(out.entity, conform(out.entity, frame), frame.height)
        # Recognised resources with no output: the target's `otherwise`.
        leftovers = self.con.execute(
            f"SELECT v.key, coalesce(v.id, v.key), f.file, v._code FROM {self._live(view)} v "
            f"LEFT JOIN _res f ON f.resource_type = {quote(rtype)} AND f._key = v.key "
            f"WHERE v._target = {quote(target.name)} "
            f"AND v.key NOT IN (SELECT key FROM {emitted})"
        ).fetchall()
        ignored = []
        for key, row, file, code in leftovers:
            if target.ignore is not None:
                ignored.append((view, key, "out_of_scope", target.ignore))
                continue
            yield self._reject(
                view,
                key,
                file,
                row,
                target.name,
                code or "",
                RULE_NO_OUTPUT,
                f"{rtype} {target.name}: {target.reject}",
            )
        if ignored:
            self.con.executemany("INSERT INTO _done VALUES (?, ?, ?, ?)", ignored)
        self.con.execute(
            f"INSERT INTO _done SELECT DISTINCT {quote(view)}, key, 'emitted', NULL FROM {emitted}"
        )

    def _account(self) -> None:
        """One outcome per input resource: emitted, rejected or out of scope (with the reason
        and, for an unrecognised code, the resource's first coding ``system|code``)."""
        report = self.report
        view_of = " ".join(f"WHEN {quote(t)} THEN {quote(v)}" for v, t in RESOURCE_TYPE.items())
        rows = self.con.execute(
            f"""
            WITH res AS (
                SELECT file, resource_type, _key, CASE resource_type {view_of} END AS view
                FROM _res
            ), first_coding AS (
                SELECT view, key, system || '|' || code AS label FROM _codings
                QUALIFY row_number() OVER (PARTITION BY view, key ORDER BY erank, position) = 1
            )
            SELECT res.file, res.resource_type,
                   CASE WHEN g.key IS NOT NULL THEN 'rejected'
                        WHEN d.outcome = 'emitted' THEN 'emitted'
                        ELSE 'out_of_scope' END AS outcome,
                   d.reason, rec.key IS NULL AS unrecognised, res.view IS NOT NULL AS viewed,
                   CASE WHEN rec.key IS NULL THEN coalesce(fc.label, '') ELSE '' END AS label,
                   count(*)
            FROM res
            LEFT JOIN (SELECT DISTINCT view, key FROM _gone) g
                ON g.view = res.view AND g.key = res._key
            LEFT JOIN (SELECT view, key, min(outcome) AS outcome, min(reason) AS reason
                       FROM _done GROUP BY ALL) d ON d.view = res.view AND d.key = res._key
            LEFT JOIN _rec rec ON rec.view = res.view AND rec.key = res._key
            LEFT JOIN first_coding fc ON fc.view = res.view AND fc.key = res._key
            GROUP BY ALL
            """
        ).fetchall()
        for file, rtype, outcome, done_reason, unrecognised, viewed, label, n in rows:
            report.outcomes.setdefault(file, Counter())[outcome] += n
            report.resources_by_type[rtype] += n
            if outcome != "out_of_scope":
                continue
            reason = done_reason
            if unrecognised:
                reason = self.context_only.get(rtype) or (
                    "code not in fhir/concept_map.csv"
                    if viewed
                    else "resource type not needed by the cohort"
                )
            report.out_of_scope[(rtype, label, reason or "")] += n


def _case(elements: list[str], column: str) -> str:
    if not elements:
        return "0"
    whens = " ".join(f"WHEN {quote(e)} THEN {i}" for i, e in enumerate(elements))
    return f"CASE {column} {whens} ELSE 99 END"


_LITERAL: Final = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")


def _subject_problem(ref: str | None, identifier: str | None, has_subject: bool | None) -> str:
    """Why a subject reference names no Patient of the input (FHIR R4 References, 2.3.0)."""
    if not has_subject:
        return "the resource has no subject"
    if not ref and identifier:
        return "subject is a logical (identifier) reference; it is not resolved"
    if not ref:
        return "subject has no reference"
    if ref.startswith("#"):
        return "subject is a contained Patient, which has no identity outside it"
    literal = _LITERAL.search(ref)
    if literal is not None and literal.group(1) != "Patient":
        return f"subject {ref} is not a Patient"
    if ref.startswith("urn:"):
        return f"subject {ref} matches no entry of the bundle"
    return f"subject {ref} is not a Patient of this input"


def recognise(
    con: duckdb.DuckDBPyConnection,
    mappings: Mappings,
    report: FhirReport,
    *,
    study_id_system: str | None = None,
) -> Iterator[RawBatch | Rejected]:
    """The canonical raw frames of the view tables in ``con`` (see module docstring)."""
    return Recogniser(con, mappings, report, study_id_system=study_id_system).run()


class FhirStream:
    """The extract stream of a FHIR source: the loader's rejections, then the recognised
    frames (``RawBatch``) and rejections; ``report`` is complete once it is consumed."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        mappings: Mappings,
        *,
        files: Sequence[str],
        rejected: Sequence[Rejected],
        mode: str = "fast",
        not_in_cohort: int = 0,
        entries_without_resource: int = 0,
        study_id_system: str | None = None,
        cleanup: Callable[[], None] | None = None,
        location: Path = Path(),
        memory_limit: str = "the limit",
    ) -> None:
        self.con, self.mappings, self.rejected = con, mappings, list(rejected)
        self.cleanup = cleanup
        self.location, self.memory_limit = location, memory_limit
        self.study_id_system = study_id_system
        self.report = FhirReport(mode=mode, files=list(files))
        self.report.not_in_cohort = not_in_cohort
        self.report.entries_without_resource = entries_without_resource

    def __iter__(self) -> Iterator[RawBatch | Rejected]:
        try:
            yield from self._items()
        except duckdb.OutOfMemoryException as exc:
            raise _out_of_memory(self.location, self.memory_limit, exc) from None
        finally:
            if self.cleanup is not None:
                self.cleanup()

    def _items(self) -> Iterator[RawBatch | Rejected]:
        for case in self.rejected:
            self.report.outcomes.setdefault(case.file, Counter())["rejected"] += 1
            self.report.rejected_by_rule[case.rule_id] += 1
            yield case
        yield from recognise(
            self.con, self.mappings, self.report, study_id_system=self.study_id_system
        )


_IN_MEMORY_BYTES: Final = 256 << 20


def _out_of_memory(path: Path, limit: str, exc: Exception) -> StoreError:
    """DuckDB ran out of its memory limit while flattening: the fix, not a traceback."""
    return StoreError(
        f"Reading the FHIR input {path} needed more memory than DuckDB may use ({limit}): "
        f"{str(exc).splitlines()[0]}",
        fix="raise CART_ETL_DUCKDB_MEMORY (e.g. CART_ETL_DUCKDB_MEMORY=4GB), or split the "
        "export into smaller deliveries.",
    )


def open_fhir(
    path: Path,
    mappings: Mappings,
    *,
    mode: str = "fast",
    memory_limit: str = "1GB",
    study_id_system: str | None = None,
) -> FhirStream:
    """FHIR input (or, with ``mode="flat"``, a folder of per-view Parquet files) -> views in
    a scratch DuckDB file -> the recognised stream. The scratch folder is removed when the
    stream has been consumed (or closed).

    Raises:
        SourceError: the input cannot be read.
        MappingError: a view, the targets or the concept map are invalid.
    """
    scratch = Path(tempfile.mkdtemp(prefix="cart_etl_fhir_"))
    # Small inputs in memory (fast); large ones in a scratch database file, which DuckDB
    # pages out past the memory limit, so a whole-hospital export stays bounded.
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else (path.stat().st_size if path.exists() else 0)
    )
    con = duckdb.connect(str(scratch / "views.duckdb") if size > _IN_MEMORY_BYTES else ":memory:")

    def cleanup() -> None:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)

    try:
        con.execute(f"SET memory_limit = {quote(memory_limit)}")
        con.execute(f"SET temp_directory = {quote(str(scratch / 'spill'))}")
        if mode == "flat":
            flat = load_flat(path, mappings, con)
        else:
            flat = extract_views(path, mappings, con, mode=mode, study_id_system=study_id_system)
    except duckdb.OutOfMemoryException as exc:
        cleanup()
        raise _out_of_memory(path, memory_limit, exc) from None
    except BaseException:
        cleanup()
        raise
    return FhirStream(
        con,
        mappings,
        files=flat.files,
        rejected=flat.rejected,
        mode=mode,
        not_in_cohort=flat.not_in_cohort,
        entries_without_resource=flat.entries_without_resource,
        study_id_system=study_id_system,
        cleanup=cleanup,
        location=path,
        memory_limit=memory_limit,
    )


def flatten(path: Path, mappings: Mappings, out: Path) -> tuple[list[Path], int]:
    """Run every view over the FHIR input and write ``out/<view>.parquet``; (files, number of
    inputs the loader rejected). Cohort selection is left to the reading run."""
    scratch = Path(tempfile.mkdtemp(prefix="cart_etl_flatten_"))
    con = duckdb.connect(str(scratch / "views.duckdb"))
    try:
        flat = extract_views(path, mappings, con, cohort_first=False)
        names = view_tables(con)
        return write_flat(con, names, out), len(flat.rejected)
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
