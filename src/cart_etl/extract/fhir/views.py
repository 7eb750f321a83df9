"""FHIR R4 -> flat view tables: the SQL-on-FHIR v2 ViewDefinitions of ``fhir/views`` run by
DuckDB (``cart_etl.extract.fhir.sof``) over the resources of the input.

Three ways in, one result (tables ``v_<view name>`` plus ``_res``, the resources to account
for: file, type, key):

- Bulk NDJSON / Bundles (``extract_views``): resources loaded by
  ``extract.fhir.resources``; duplicates of one (type, key) are read once and the repeats
  rejected (``fhir.duplicate_resource``); strict mode also validates each resource with the
  ``fhir.resources`` R4B models (``fhir.resources`` defaults to R5).
- A folder of per-view Parquet files (``load_flat``): the same view files run by another
  engine (Pathling/Spark, ``docs/scale-out.md``) or by ``write_flat``.

Cohort selection for whole-hospital exports: only patients with CAR-T administration
evidence are flattened (``cohort_first``): a first pass runs the procedure /
medication-administration coding views, keeps the patients whose codes map to the
``cart_infusion`` target, and the remaining resources of other patients are counted as
*not in cohort* and never flattened.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb

from cart_etl.contract import Rejected
from cart_etl.errors import MappingError, SourceError
from cart_etl.extract.fhir.cohort import cohort_patients, select_cohort_in_views
from cart_etl.extract.fhir.resources import (
    RULE_INVALID,
    SOURCE,
    load_resources,
)
from cart_etl.extract.fhir.sof import ViewDefinitionError, materialize_view
from cart_etl.mappings import Mappings

log = logging.getLogger(__name__)

RULE_DUPLICATE: Final = "fhir.duplicate_resource"
VIEWS_DIR: Final = "fhir/views"


def view_files(mappings: Mappings) -> dict[str, Path]:
    """name -> ViewDefinition file: the defaults, a profile's file of the same name replaces it
    and a profile may add views."""
    found: dict[str, Path] = {}
    for folder in [mappings.root / VIEWS_DIR] + (
        [mappings.site_dir / VIEWS_DIR] if mappings.site_dir else []
    ):
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                found[path.stem] = path
    if not found:
        raise MappingError(
            f"No ViewDefinitions under {mappings.root / VIEWS_DIR}.",
            fix="restore mappings/fhir/views from the repository.",
        )
    return found


def read_view(path: Path) -> dict[str, Any]:
    """One ViewDefinition file, checked to be a view named after its file."""
    try:
        view = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MappingError(
            f"{path} is not a readable JSON ViewDefinition: {exc}",
            fix="fix the JSON (the error names line and column).",
        ) from None
    if not isinstance(view, dict) or view.get("resourceType") != "ViewDefinition":
        raise MappingError(
            f"{path} is not a ViewDefinition.", fix='write {"resourceType": "ViewDefinition", ...}.'
        )
    if view.get("name") != path.stem:
        raise MappingError(
            f"{path}: the view's name {view.get('name')!r} differs from its file name.",
            fix=f'set "name": "{path.stem}" (tables are named after the view).',
        )
    return view


@dataclass
class FlatViews:
    """The view tables in ``con`` and what the loading rejected."""

    con: duckdb.DuckDBPyConnection
    files: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    entries_without_resource: int = 0
    not_in_cohort: int = 0


def extract_views(
    path: Path,
    mappings: Mappings,
    con: duckdb.DuckDBPyConnection,
    *,
    mode: str = "fast",
    cohort_first: bool = True,
    study_id_system: str | None = None,
) -> FlatViews:
    """Load the FHIR input under ``path`` and run every view into ``v_<name>`` tables.

    Raises:
        SourceError: the input cannot be read.
        MappingError: a view is invalid (the message names the view and the column).
    """
    if mode not in ("fast", "strict"):
        raise SourceError(f"Unknown FHIR mode {mode!r}.", fix="use fast or strict.")
    spec = mappings.load("fhir/targets.yaml")
    loaded = load_resources(path, con, bundle_types=spec.get("bundle_types") or [])
    flat = FlatViews(con, loaded.files, loaded.rejected, loaded.entries_without_resource)
    flat.rejected.extend(_dedupe(con))
    if mode == "strict":
        flat.rejected.extend(_strict(con))
    views = {name: read_view(p) for name, p in view_files(mappings).items()}
    if cohort_first:
        flat.not_in_cohort = (
            cohort_patients(con, views, mappings, _run, study_id_system=study_id_system) or 0
        )
    run_all(con, views, "resources")
    return flat


def run_all(con: duckdb.DuckDBPyConnection, views: dict[str, dict[str, Any]], source: str) -> None:
    """Every view into its ``v_<name>`` table, two at a time: DuckDB plans each view for
    ~0.1 s on one core, so two cursors overlap one view's planning with another's scan
    (measured on the reference cohort: 3.1 s -> 1.7 s on 2 cores). The tables do not depend
    on the order; the first error is raised after the others finish."""
    # The Observation views are the large ones: started first so that they overlap.
    order = sorted(views, key=lambda n: views[n].get("resource") != "Observation")

    def one(name: str) -> None:
        cursor = con.cursor()
        try:
            _run(cursor, name, views[name], source)
        finally:
            cursor.close()

    workers = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, name) for name in order]
    for future in futures:
        future.result()


# View (as canonical JSON) -> the columns of its table: a view over a resource type the
# input does not hold is created empty from here instead of planning its SQL again (DuckDB
# needs ~0.1 s to plan each view, whatever the data; small deliveries lack most types).
_EMPTY_TABLES: dict[str, list[tuple[str, str]]] = {}


def _run(con: duckdb.DuckDBPyConnection, name: str, view: dict[str, Any], source: str) -> None:
    """One view into the table ``v_<name>``, computed inside DuckDB (rows never pass
    through Python)."""
    table = f"v_{name}"
    key = json.dumps(view, sort_keys=True)
    held = con.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {source} WHERE resource_type = ? LIMIT 1)",
        [view.get("resource")],
    ).fetchone()
    if not (held and held[0]) and key in _EMPTY_TABLES:
        columns = ", ".join(f'"{c}" {t}' for c, t in _EMPTY_TABLES[key])
        con.execute(f'CREATE OR REPLACE TABLE "{table}" ({columns})')
        return
    try:
        materialize_view(con, view, table, source=source, references="refs")
    except ViewDefinitionError as exc:
        raise MappingError(
            f"fhir/views/{name}.json: {exc}",
            fix="correct the view (SQL on FHIR v2 ViewDefinition).",
        ) from None
    if key not in _EMPTY_TABLES:
        _EMPTY_TABLES[key] = [
            (str(r[0]), str(r[1])) for r in con.execute(f'DESCRIBE "{table}"').fetchall()
        ]


def _dedupe(con: duckdb.DuckDBPyConnection) -> list[Rejected]:
    """Keep the first copy of each (type, key); the repeats are rejected, named by file."""
    found = con.execute(
        "SELECT count(*) - count(DISTINCT (resource_type, _key, contained_in)) FROM resources "
        "WHERE _key IS NOT NULL"
    ).fetchone()
    rows: list[tuple[str, str, str, str]] = []
    if found and found[0]:
        rows = con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _ranked AS SELECT *, row_number() OVER (
                PARTITION BY resource_type, _key, contained_in ORDER BY file, pos) AS copy,
                first(file) OVER (PARTITION BY resource_type, _key, contained_in
                    ORDER BY file, pos ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
                    AS first_file
            FROM resources;
            SELECT file, coalesce(id, _key, pos), resource_type, first_file FROM _ranked
            WHERE copy > 1 AND contained_in IS NULL AND _key IS NOT NULL
            """
        ).fetchall()
        con.execute(
            "CREATE OR REPLACE TABLE resources AS SELECT * EXCLUDE (copy, first_file) "
            "FROM _ranked WHERE copy = 1 OR _key IS NULL"
        )
        con.execute("DROP TABLE _ranked")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _res AS SELECT file, pos, resource_type, _key FROM "
        "resources WHERE contained_in IS NULL"
    )
    return [
        Rejected(
            SOURCE,
            file,
            row,
            "id",
            row,
            RULE_DUPLICATE,
            f"{rtype}/{row} was already read from {first}; this copy is not read again",
        )
        for file, row, rtype, first in rows
    ]


def _strict(con: duckdb.DuckDBPyConnection) -> list[Rejected]:
    """Validate every resource with the R4B models; the invalid ones leave ``resources``."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    rejected: list[Rejected] = []
    bad: list[tuple[str, str]] = []
    cursor = con.execute(
        "SELECT file, coalesce(id, pos), resource_type, _key, resource FROM resources "
        "WHERE contained_in IS NULL"
    )
    while batch := cursor.fetchmany(10_000):
        for file, row, rtype, key, text in batch:
            try:
                model = get_fhir_model_class(rtype)
                model.model_validate_json(text)
            except KeyError:
                problem = ("resourceType", rtype or "", f"{rtype!r} is not an R4B resource type")
            except ValidationError as exc:
                err = exc.errors()[0]
                element = ".".join(str(p) for p in err.get("loc", ())) or "(resource)"
                problem = (element, str(err.get("input", ""))[:200], str(err.get("msg", "")))
            except ValueError as exc:
                problem = ("(resource)", "", str(exc))
            else:
                continue
            element, value, message = problem
            bad.append((rtype, key))
            rejected.append(
                Rejected(
                    SOURCE,
                    file,
                    row,
                    element,
                    value,
                    RULE_INVALID,
                    f"{rtype}/{row} is not valid FHIR R4B at {element}: {message}",
                )
            )
    if bad:
        con.execute("CREATE OR REPLACE TEMP TABLE _bad (resource_type VARCHAR, key VARCHAR)")
        con.executemany("INSERT INTO _bad VALUES (?, ?)", bad)
        con.execute(
            "DELETE FROM resources WHERE (resource_type, _key) IN (SELECT * FROM _bad) "
            "AND contained_in IS NULL"
        )
        # Accounted once, as rejected: not again as a resource of the input.
        con.execute("DELETE FROM _res WHERE (resource_type, _key) IN (SELECT * FROM _bad)")
    return rejected


def write_flat(con: duckdb.DuckDBPyConnection, names: Sequence[str], out: Path) -> list[Path]:
    """Each ``v_<name>`` table as ``out/<name>.parquet`` (the scale-out hand-over format)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        target = out / f"{name}.parquet"
        con.execute(f"COPY \"v_{name}\" TO '{target}' (FORMAT parquet)")
        written.append(target)
    return written


def load_flat(folder: Path, mappings: Mappings, con: duckdb.DuckDBPyConnection) -> FlatViews:
    """Per-view Parquet files (``<view name>.parquet`` or ``<view name>/*.parquet``, as
    Pathling and Spark write them) -> the same ``v_<name>`` tables as ``extract_views``.

    Raises:
        SourceError: a view's files are missing or lack a column of the view.
    """
    from cart_etl.extract.fhir.sof import view_columns

    views = {name: read_view(p) for name, p in view_files(mappings).items()}
    parts = []
    for name, view in views.items():
        single, many = folder / f"{name}.parquet", folder / name
        glob = str(single) if single.is_file() else str(many / "*.parquet")
        if not single.is_file() and not any(many.glob("*.parquet")):
            raise SourceError(
                f"{folder} has no Parquet file for the view {name!r}.",
                fix=f"run mappings/fhir/views/{name}.json and write {name}.parquet there.",
            )
        con.execute(f"CREATE OR REPLACE TABLE \"v_{name}\" AS SELECT * FROM read_parquet('{glob}')")
        have = {r[0] for r in con.execute(f'DESCRIBE "v_{name}"').fetchall()}
        missing = [c for c, _, _ in view_columns(view) if c not in have]
        if missing:
            raise SourceError(
                f"{glob}: columns {missing} of the view {name!r} are missing.",
                fix="write the Parquet files with the view files of this version.",
            )
        if name in KEYED_VIEWS:
            parts.append(
                f"SELECT '{name}.parquet' AS file, key AS pos, "
                f"'{KEYED_VIEWS[name]}' AS resource_type, "
                f'key AS _key FROM "v_{name}"'
            )
    not_in_cohort = select_cohort_in_views(con, mappings)
    con.execute("CREATE OR REPLACE TEMP TABLE _res AS " + " UNION ALL ".join(parts))
    flat = FlatViews(con, sorted(p.name for p in folder.iterdir()))
    flat.not_in_cohort = not_in_cohort
    return flat


# The one-row-per-resource views and their resource type: what a flat folder accounts for.
KEYED_VIEWS: Final = {
    "patient": "Patient",
    "observation": "Observation",
    "medication_administration": "MedicationAdministration",
    "procedure": "Procedure",
    "device_use_statement": "DeviceUseStatement",
    "condition": "Condition",
    "encounter": "Encounter",
    "medication_request": "MedicationRequest",
    "medication": "Medication",
    "specimen": "Specimen",
}


def view_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the views whose tables (``v_<name>``) exist in ``con``, sorted."""
    return [
        str(r[0])[2:]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'v\\_%' "
            "ESCAPE '\\' ORDER BY 1"
        ).fetchall()
    ]
