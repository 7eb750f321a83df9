"""Fixtures of the FHIR writer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synth.fhir.records import example_records, write_records


@pytest.fixture(scope="package")
def clean_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three example records written without defects (``<tmp>/fhir``)."""
    out = tmp_path_factory.mktemp("synth") / "fhir"
    assert write_records(out, example_records()) == []
    return out
