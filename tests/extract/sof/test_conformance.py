"""The official SQL on FHIR v2 conformance suite (every ``shareable`` test of the vendored
tests/*.json, FHIR/sql-on-fhir-v2 at the commit in tests/data/sql-on-fhir-v2/PROVENANCE.md).

Experimental tests are reported by ``python -m tests.extract.sof.conformance_report``.
"""

from __future__ import annotations

import pytest

from tests.extract.sof.suite import Case, load_cases, run_case

SHAREABLE = [c for c in load_cases() if "shareable" in c.tags]


def test_suite_is_complete() -> None:
    assert len(SHAREABLE) == 123
    assert len({c.id for c in SHAREABLE}) == len(SHAREABLE)


@pytest.mark.parametrize("case", SHAREABLE, ids=[c.id for c in SHAREABLE])
def test_shareable(case: Case) -> None:
    passed, reason = run_case(case)
    assert passed, reason
