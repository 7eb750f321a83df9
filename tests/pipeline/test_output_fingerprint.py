"""Marts, OMOP tables and case tables of the reference cohort match the checked-in hashes.

A restructuring must not change any output: ``tests/snapshots/pipeline/output_fingerprint.json``
holds the content hash of every table, for the site export and for FHIR. An intended
change of output refreshes it (``python -m tests.pipeline.fingerprint``) in the same commit,
and says why.
"""

from __future__ import annotations

import json

import pytest

from cart_etl.pipeline import RunResult
from tests.pipeline.fingerprint import SNAPSHOT, table_hashes


@pytest.mark.parametrize("kind", ["site", "fhir"])
def test_01_store_content_matches_snapshot(
    kind: str, site_run: RunResult, fhir_run: RunResult
) -> None:
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))[kind]
    result = site_run if kind == "site" else fhir_run
    got = table_hashes(result.store)
    assert sorted(got) == sorted(expected)
    changed = {t: (expected[t], got[t]) for t in expected if got[t] != expected[t]}
    assert not changed, f"store content changed: {sorted(changed)}"
