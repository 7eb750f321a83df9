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
