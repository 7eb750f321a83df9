"""Shared fixtures: Hypothesis profiles and the generated reference cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from cart_etl.synth.generate import generate

settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "reference" / "paper" / "published_values.yaml"


@pytest.fixture(scope="session")
def reference_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default `cart-etl synth` output (61 patients, seed 2025, with defects)."""
    out = tmp_path_factory.mktemp("reference")
    generate(out, patients=61, seed=2025, defects=True)
    return out


@pytest.fixture(scope="session")
def clean_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cohort written with ``--no-defects``."""
    out = tmp_path_factory.mktemp("clean")
    generate(out, patients=61, seed=2025, defects=False)
    return out


@pytest.fixture(scope="session")
def reference_fhir(reference_cohort: Path):  # type: ignore[no-untyped-def]
    """``layout -> (items, report)``: the reference cohort's FHIR (``"bundles"`` or
    ``"ndjson"``) read once per session by ``open_fhir`` (fast mode), for the tests that
    only look at what it yields."""
    from cart_etl.mappings import Mappings
    from cart_etl.stage.fhir_concepts import open_fhir

    cache: dict[str, tuple[list[object], object]] = {}

    def read(layout: str) -> tuple[list[object], object]:
        if layout not in cache:
            stream = open_fhir(reference_cohort / "fhir" / layout, Mappings.open(REPO / "mappings"))
            cache[layout] = (list(stream), stream.report)
        return cache[layout]

    return read
