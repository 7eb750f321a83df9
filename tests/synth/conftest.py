"""Fixtures of the synth tests: the site export of the hand-made cohort, and its mapping."""

from __future__ import annotations

import pytest
import yaml

from tests.synth.site.records import MAPPING, Exports, write_site_export


@pytest.fixture(scope="session")
def site_exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    """The 24-patient cohort of tests/synth/site/records.py, written clean and with defects."""
    root = tmp_path_factory.mktemp("synth")
    clean_defects = write_site_export(root / "clean" / "site_export", defects=False)
    assert clean_defects == []
    defects = write_site_export(root / "dirty" / "site_export", defects=True)
    return Exports(root / "clean" / "site_export", root / "dirty" / "site_export", defects)


@pytest.fixture(scope="session")
def site_mapping() -> dict:
    """mappings/sites/tianjin_ref.yaml as plain YAML."""
    with MAPPING.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)
