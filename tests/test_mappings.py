"""cart_etl.mappings: one root, a site folder layered over it, what a run applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cart_etl.derive.rules import derivation_rules, toci_label
from cart_etl.errors import ConfigurationError, MappingError
from cart_etl.mappings import RULE_FILES, Mappings, activate, active, deep_merge, plausibility

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "mappings"


def _site_folder(tmp_path: Path, overrides: dict[str, dict]) -> Path:
    folder = tmp_path / "my_site"
    folder.mkdir()
    shutil.copy(ROOT / "sites" / "example_wide_en.yaml", folder / "site.yaml")
    for rel, doc in overrides.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return folder


def test_01_deep_merge_dicts_merge_lists_and_scalars_replace():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    over = {"a": {"y": [3], "z": 4}, "c": 5}
    assert deep_merge(base, over) == {"a": {"x": 1, "y": [3], "z": 4}, "b": 2, "c": 5}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2}  # inputs untouched


def test_02_every_rule_file_exists_in_the_defaults():
    m = Mappings.open(ROOT)
    for rel in RULE_FILES:
        assert m.path(rel).is_file(), rel
        assert m.load(rel) is not None


def test_03_site_by_name_file_or_folder(tmp_path):
    by_name = Mappings.open(ROOT, site="tianjin_ref")
    assert by_name.site_file == ROOT / "sites" / "tianjin_ref.yaml" and by_name.site_dir is None
    by_file = Mappings.open(ROOT, site=str(ROOT / "sites" / "tianjin_ref.yaml"))
    assert by_file.site_file == by_name.site_file
    folder = _site_folder(tmp_path, {})
    by_folder = Mappings.open(ROOT, site=str(folder))
    assert by_folder.site_dir == folder and by_folder.site_file == folder / "site.yaml"


def test_04_unknown_site_names_the_choices_and_the_fix(tmp_path):
    with pytest.raises(ConfigurationError) as err:
        Mappings.open(ROOT, site="nosuch")
    assert "tianjin_ref" in err.value.one_line() and "site.yaml" in err.value.one_line()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="has no site.yaml"):
        Mappings.open(ROOT, site=str(tmp_path / "empty"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        Mappings.open(tmp_path / "no_root")


def test_05_site_override_is_layered_over_the_defaults(tmp_path):
    folder = _site_folder(
        tmp_path,
        {
            "validation/plausibility.yaml": {"measurements": {"temp": {"hard": [30, 38]}}},
            "derive/derivation.yaml": {"exclusions": {"min_follow_up_days": 90}},
        },
    )
    m = Mappings.open(ROOT, site=str(folder))
    temp = m.load("validation/plausibility.yaml")["measurements"]["temp"]
    assert temp["hard"] == [30, 38] and temp["unit"] == "Cel"  # merged, not replaced
    assert derivation_rules(m).min_follow_up_days == 90
    assert derivation_rules(m).response_window_days == (21, 35)  # default kept
    assert toci_label(m).label_max_mg_per_dose == 800


def test_06_active_mappings_reach_staging_only_inside_activate(tmp_path):
    folder = _site_folder(
        tmp_path, {"validation/plausibility.yaml": {"measurements": {"temp": {"hard": [30, 38]}}}}
    )
    m = Mappings.open(ROOT, site=str(folder))
    assert plausibility()["measurements"]["temp"]["hard"] == [30, 45]
    with activate(m):
        assert active() is m
        assert plausibility()["measurements"]["temp"]["hard"] == [30, 38]
    assert plausibility()["measurements"]["temp"]["hard"] == [30, 45]


def test_07_applied_lists_defaults_and_site_files_with_checksums(tmp_path):
    folder = _site_folder(
        tmp_path, {"validation/plausibility.yaml": {"measurements": {"temp": {"hard": [30, 38]}}}}
    )
    applied = Mappings.open(ROOT, site=str(folder)).applied()
    assert "mappings/validation/plausibility.yaml" in applied
    assert "site/validation/plausibility.yaml" in applied
    assert "site/site.yaml" in applied
    assert "mappings/fhir/concepts.yaml" not in applied  # FHIR files only for FHIR sources
    assert all(len(v) == 64 for v in applied.values())
    fhir = Mappings.open(ROOT).applied(fhir=True)
    assert {
        "mappings/fhir/concepts.yaml",
        "mappings/fhir/targets.yaml",
        "mappings/fhir/concept_map.csv",
        "mappings/fhir/views/observation.json",
    } <= set(fhir)


def test_08_broken_override_names_the_file(tmp_path):
    folder = _site_folder(tmp_path, {})
    (folder / "derive").mkdir()
    (folder / "derive" / "derivation.yaml").write_text("exclusions: [unclosed\n", encoding="utf-8")
    m = Mappings.open(ROOT, site=str(folder))
    with pytest.raises(MappingError, match=r"derivation\.yaml is not valid YAML"):
        m.load("derive/derivation.yaml")
    (folder / "derive" / "derivation.yaml").write_text(
        "exclusions: {min_follow_up_days: many}\n", encoding="utf-8"
    )
    with pytest.raises(MappingError, match="derive/derivation.yaml lacks or mistypes"):
        derivation_rules(Mappings.open(ROOT, site=str(folder)))
