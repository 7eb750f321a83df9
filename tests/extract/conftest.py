"""Shared fixtures of the extract tests: the reference export, its SQLite copy, the mappings."""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from cart_etl.contract import RawBatch, Rejected
from cart_etl.extract.readers.sql import load_site_export_into_sqlite
from cart_etl.extract.site.export import extract_site_export
from cart_etl.extract.site.parse import load_site_mapping, parse_site_mapping
from cart_etl.extract.site.spec import FileSpec, SiteMapping
from cart_etl.synth.generate import generate

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
CASES = REPO / "tests" / "cases"
WIDE_EXPORT = CASES / "site_wide_en"


@dataclass
class Extracted:
    """Everything one extraction yielded, with per-entity frames concatenated."""

    batches: list[RawBatch] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def frames(self) -> dict[str, pl.DataFrame]:
        """One frame per entity, batches concatenated in stream order."""
        parts: dict[str, list[pl.DataFrame]] = defaultdict(list)
        for batch in self.batches:
            parts[batch.entity].append(batch.frame)
        return {entity: pl.concat(frames) for entity, frames in parts.items()}


def collect(stream: Iterable[RawBatch | Rejected]) -> Extracted:
    """Drain an extract stream."""
    out = Extracted()
    for item in stream:
        if isinstance(item, RawBatch):
            out.batches.append(item)
        else:
            out.rejected.append(item)
    return out


def count_data_rows(path: Path, spec: FileSpec) -> int:
    """Data rows of an export file, counted independently of the extractor."""
    if spec.format == "xlsx":
        workbook = openpyxl.load_workbook(path, read_only=True)
        try:
            sheet = workbook[spec.sheet] if spec.sheet else workbook.worksheets[0]
            rows = [r for r in sheet.iter_rows(values_only=True) if any(v is not None for v in r)]
        finally:
            workbook.close()
        return len(rows) - spec.header_row
    # utf-8-sig: a BOM must not glue itself to the first header cell.
    encoding = "utf-8-sig" if spec.encoding == "utf-8" else spec.encoding
    with path.open(encoding=encoding, newline="") as fh:
        return sum(1 for _ in csv.reader(fh, delimiter=spec.delimiter)) - spec.header_row


def copy_export(source: Path, target: Path) -> Path:
    """A writable copy of an export directory."""
    shutil.copytree(source, target)
    return target


def mini_mapping(tmp_path: Path, encoding: str = "utf-8", layout: str = "flat") -> SiteMapping:
    """A one-file site: MRN, time and a free-text note into infusion.product."""
    raw = {
        "site": "mini",
        "timezone": "UTC",
        "files": {
            "notes.csv": {
                "encoding": encoding,
                "patient_key": "MRN",
                "columns": {
                    "MRN": {"field": "demographics.mrn"},
                    "时间": {"field": "infusion.at"},
                    "备注": {"field": "infusion.product"},
                    "姓名": {"field": "demographics.name"},
                },
            }
        },
    }
    return parse_site_mapping(raw, tmp_path / "mini.yaml")


@pytest.fixture(scope="session")
def tianjin_mapping() -> SiteMapping:
    """The reference site mapping."""
    return load_site_mapping("tianjin_ref", MAPPINGS)


@pytest.fixture(scope="session")
def wide_mapping() -> SiteMapping:
    """The English wide-layout example site."""
    return load_site_mapping("example_wide_en", MAPPINGS)


@pytest.fixture(scope="session")
def tianjin_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``site_export/`` of the reference cohort (61 patients, seed 2025, defects, no FHIR)."""
    out = tmp_path_factory.mktemp("tianjin_ref")
    generate(out, patients=61, seed=2025, defects=True, fhir=False)
    return out / "site_export"


@pytest.fixture(scope="session")
def tianjin_extracted(tianjin_export: Path, tianjin_mapping: SiteMapping) -> Extracted:
    """The reference export extracted from its files."""
    return collect(extract_site_export(tianjin_export, tianjin_mapping))


@pytest.fixture(scope="session")
def tianjin_sqlite(
    tianjin_export: Path, tianjin_mapping: SiteMapping, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A SQLite copy of the reference export (one TEXT table per file)."""
    path = tmp_path_factory.mktemp("sqlite") / "tianjin_ref.sqlite"
    load_site_export_into_sqlite(tianjin_export, tianjin_mapping, path)
    return path


@pytest.fixture(scope="session")
def wide_sqlite(wide_mapping: SiteMapping, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite copy of the English example export."""
    path = tmp_path_factory.mktemp("sqlite_wide") / "example_wide_en.sqlite"
    load_site_export_into_sqlite(WIDE_EXPORT, wide_mapping, path)
    return path
