"""One reference cohort (seed 2025, with defects, with FHIR) loaded twice: site export and FHIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from cart_etl.pipeline import RunResult, Source, run
from cart_etl.synth.generate import generate


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run_cohort") / "cohort"
    generate(out)  # defaults: 61 patients, seed 2025, defects and FHIR on
    return out


@pytest.fixture(scope="session")
def site_run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    store = tmp_path_factory.mktemp("site_store") / "site.duckdb"
    return run(Source(str(cohort / "site_export"), "tianjin_ref"), store)


@pytest.fixture(scope="session")
def fhir_run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    store = tmp_path_factory.mktemp("fhir_store") / "fhir.duckdb"
    return run(Source(str(cohort / "fhir" / "ndjson"), fhir=True), store)
