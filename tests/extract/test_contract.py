"""One conformance suite for every extractor: each yields contract frames and places every input.

To add an extractor (e.g. FHIR), write a factory ``(request) -> ExtractorCase`` that runs it
on its test input and says which input rows/resources it read, then append it to
``EXTRACTORS``. Factories may use any fixture through ``request.getfixturevalue``.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
import pytest

from cart_etl.contract import ENTITIES, PROVENANCE, RawBatch, Rejected, columns_of
from cart_etl.extract.readers.sql import extract_sql
from cart_etl.extract.site.export import extract_site_export
from cart_etl.extract.site.mapper import source_row
from cart_etl.extract.site.spec import SiteMapping
from cart_etl.mappings import Mappings
from cart_etl.stage.fhir_concepts import open_fhir
from tests.extract.conftest import MAPPINGS, WIDE_EXPORT, count_data_rows


@dataclass(frozen=True)
class ExtractorCase:
    """An extractor run on a test input, with the input rows it must account for."""

    records: list[RawBatch | Rejected]
    expected_inputs: Mapping[str, frozenset[str]]  # provenance `file` -> input row ids
    input_row: Callable[[str], str] = source_row  # provenance `row` -> input row id


ExtractorFactory = Callable[[pytest.FixtureRequest], ExtractorCase]


def _numbered(counts: Mapping[str, int]) -> dict[str, frozenset[str]]:
    """Row ids 1..n per file."""
    return {file: frozenset(str(n) for n in range(1, count + 1)) for file, count in counts.items()}


def _file_counts(export: Path, mapping: SiteMapping) -> dict[str, frozenset[str]]:
    return _numbered({name: count_data_rows(export / name, s) for name, s in mapping.files.items()})


def _table_counts(database: Path, mapping: SiteMapping) -> dict[str, frozenset[str]]:
    with sqlite3.connect(database) as conn:
        return _numbered(
            {
                s.table: conn.execute(f'SELECT COUNT(*) FROM "{s.table}"').fetchone()[0]
                for s in mapping.files.values()
            }
        )


def site_files(request: pytest.FixtureRequest) -> ExtractorCase:
    """The reference site export (GB18030/UTF-8 CSVs + XLSX) read from files."""
    export = request.getfixturevalue("tianjin_export")
    mapping = request.getfixturevalue("tianjin_mapping")
    return ExtractorCase(list(extract_site_export(export, mapping)), _file_counts(export, mapping))


def site_sql(request: pytest.FixtureRequest) -> ExtractorCase:
    """The same export from its SQLite copy."""
    database = request.getfixturevalue("tianjin_sqlite")
    mapping = request.getfixturevalue("tianjin_mapping")
    records = list(extract_sql(f"sqlite:///{database}", mapping))
    return ExtractorCase(records, _table_counts(database, mapping))


def wide_en_files(request: pytest.FixtureRequest) -> ExtractorCase:
    """The English wide-layout example site read from files."""
    mapping = request.getfixturevalue("wide_mapping")
    records = list(extract_site_export(WIDE_EXPORT, mapping))
    return ExtractorCase(records, _file_counts(WIDE_EXPORT, mapping))


def wide_en_sql(request: pytest.FixtureRequest) -> ExtractorCase:
    """The English example site from its SQLite copy."""
    database = request.getfixturevalue("wide_sqlite")
    mapping = request.getfixturevalue("wide_mapping")
    records = list(extract_sql(f"sqlite:///{database}", mapping, chunk_rows=5))
    return ExtractorCase(records, _table_counts(database, mapping))


def _fhir_resource_row(row: str) -> str:
    """FHIR provenance row -> resource id (component rows are "<id>#component<i>")."""
    return row.split("#", 1)[0]


def _fhir_expected(files: Mapping[str, list[tuple[str, str]]]) -> dict[str, frozenset[str]]:
    """Resource ids per file, minus the context-only types (Encounter): out of scope."""
    context_only = Mappings.open(MAPPINGS).load("fhir/targets.yaml")["context_only"]
    return {
        name: frozenset(rid for rtype, rid in resources if rtype not in context_only)
        for name, resources in files.items()
    }


def _open_fhir(folder: Path, mode: str = "fast") -> list[RawBatch | Rejected]:
    return list(open_fhir(folder, Mappings.open(MAPPINGS), mode=mode))


def _type_and_id(resource: dict[str, str]) -> tuple[str, str]:
    return resource["resourceType"], resource["id"]


def _bundle_resources(folder: Path) -> dict[str, list[tuple[str, str]]]:
    return {
        p.name: [_type_and_id(e["resource"]) for e in orjson.loads(p.read_bytes())["entry"]]
        for p in sorted(folder.glob("*.json"))
    }


def fhir_bundles(request: pytest.FixtureRequest) -> ExtractorCase:
    """The reference cohort's FHIR transaction Bundles (fast mode)."""
    folder = request.getfixturevalue("reference_cohort") / "fhir" / "bundles"
    records = request.getfixturevalue("reference_fhir")("bundles")[0]
    return ExtractorCase(records, _fhir_expected(_bundle_resources(folder)), _fhir_resource_row)


def fhir_ndjson(request: pytest.FixtureRequest) -> ExtractorCase:
    """The same resources as Bulk NDJSON (fast mode)."""
    folder = request.getfixturevalue("reference_cohort") / "fhir" / "ndjson"
    files = {
        p.name: [_type_and_id(orjson.loads(line)) for line in p.read_bytes().splitlines()]
        for p in sorted(folder.glob("*.ndjson"))
    }
    records = request.getfixturevalue("reference_fhir")("ndjson")[0]
    return ExtractorCase(records, _fhir_expected(files), _fhir_resource_row)


def fhir_bundles_strict(request: pytest.FixtureRequest) -> ExtractorCase:
    """Three Bundles (one malformed resource, one missing subject) in strict mode.

    Strict validates every resource with fhir.resources R4B (~5k resources/s): a sample.
    """
    cohort = request.getfixturevalue("reference_cohort")
    folder = request.getfixturevalue("tmp_path_factory").mktemp("fhir_strict")
    for name in ("CART-001.json", "CART-002.json", "CART-008.json"):
        shutil.copy(cohort / "fhir" / "bundles" / name, folder / name)
    records = _open_fhir(folder, mode="strict")
    return ExtractorCase(records, _fhir_expected(_bundle_resources(folder)), _fhir_resource_row)


EXTRACTORS: list[ExtractorFactory] = [
    site_files,
    site_sql,
    wide_en_files,
    wide_en_sql,
    fhir_bundles,
    fhir_ndjson,
    fhir_bundles_strict,
]


@pytest.fixture(scope="module", params=EXTRACTORS, ids=lambda f: f.__name__)
def case(request: pytest.FixtureRequest) -> ExtractorCase:
    """Each extractor, run once per module."""
    return request.param(request)


def _batches(case: ExtractorCase) -> list[RawBatch]:
    return [r for r in case.records if isinstance(r, RawBatch)]


def _rejected(case: ExtractorCase) -> list[Rejected]:
    return [r for r in case.records if isinstance(r, Rejected)]


def _all_rows(batches: Iterable[RawBatch]) -> pl.DataFrame:
    """source, file, row, entity of every record."""
    parts = [b.frame.select(*PROVENANCE[:3], pl.lit(b.entity).alias("entity")) for b in batches]
    return pl.concat(parts)


def test_01_returns_records(case: ExtractorCase) -> None:
    assert _batches(case)
    assert all(isinstance(r, RawBatch | Rejected) for r in case.records)
    assert sum(b.frame.height for b in _batches(case)) > 0


def test_02_columns_are_the_contract_columns(case: ExtractorCase) -> None:
    for batch in _batches(case):
        assert batch.entity in ENTITIES
        assert batch.frame.columns == list(columns_of(batch.entity))


def test_03_every_column_is_text(case: ExtractorCase) -> None:
    for batch in _batches(case):
        assert set(batch.frame.schema.values()) <= {pl.String}, batch.entity


def test_04_provenance_is_never_null(case: ExtractorCase) -> None:
    for batch in _batches(case):
        nulls = batch.frame.select(pl.col(c).null_count() for c in PROVENANCE).row(0)
        assert nulls == (0,) * len(PROVENANCE), batch.entity
    for rejected in _rejected(case):
        assert all([rejected.source, rejected.file, rejected.row, rejected.rule_id])


def test_05_source_file_row_entity_is_unique(case: ExtractorCase) -> None:
    rows = _all_rows(_batches(case))
    assert rows.height == rows.unique().height


def test_06_every_input_row_is_accounted_for(case: ExtractorCase) -> None:
    seen: dict[str, set[str]] = {file: set() for file in case.expected_inputs}
    for file, row in _all_rows(_batches(case)).select("file", "row").iter_rows():
        seen[file].add(case.input_row(row))
    for rejected in _rejected(case):
        seen[rejected.file].add(case.input_row(rejected.row))
    assert {f: frozenset(rows) for f, rows in seen.items()} == case.expected_inputs


def test_07_input_rows_cover_the_rows_behind_each_batch(case: ExtractorCase) -> None:
    # Site extractors count exactly the input rows behind a batch; an extractor may count
    # the rows it read before routing, which can only be more.
    for batch in _batches(case):
        rows = {case.input_row(r) for r in batch.frame["row"].to_list()}
        assert batch.input_rows >= len(rows), batch.entity
