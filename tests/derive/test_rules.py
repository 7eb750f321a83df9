"""Rule loaders (``cart_etl.derive.rules``): the values of the default rule files and a
site folder layered over them through ``cart_etl.mappings.Mappings.open(root, site=...)``.

Expected defaults are worked out by hand from the sources the rule files cite: ASTCT 2019
(Lee 2019; fever >= 38.0 C), PALS hypotension (E6: < 70 + 2 x age at 1-9 y, < 90 from 10 y),
Meikle & Tyler 1977 (MP 4 mg = dexamethasone 0.75 = prednisone 5 = hydrocortisone 20),
the Actemra/Kymriah USPI and C2 (800 mg per dose, <= 3 doses in 24 h, <= 4 in total;
alerts 8.4 / 12.6 mg/kg), F2 (MRD < 0.01 %), the paper (day 28, follow-up >= 28 days) and
the README (response window 21-35, ICANS days 0-28, IL-6 24-72 h).
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from cart_etl.derive.rules import (
    clinical_rules,
    crs_rules,
    derivation_rules,
    steroid_rules,
    toci_label,
)
from cart_etl.errors import MappingError
from cart_etl.mappings import Mappings

ROOT = Path(__file__).resolve().parents[2] / "mappings"


def site(tmp_path: Path, files: dict[str, str]) -> Mappings:
    """A site folder: site.yaml (copy of the example site) plus override files."""
    folder = tmp_path / "site"
    folder.mkdir()
    shutil.copy(ROOT / "sites" / "example_wide_en.yaml", folder / "site.yaml")
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    return Mappings.open(ROOT, site=folder)


def test_01_crs_rules_defaults():
    r = crs_rules(Mappings.open(ROOT))
    assert r.fever_c == 38.0  # ASTCT 2019: temperature >= 38.0 C
    assert (r.adult_from_age, r.adult_sbp_below) == (10, 90.0)  # PALS (E6)
    assert (r.child_sbp_base, r.child_sbp_per_year) == (70.0, 2.0)
    assert r.max_gap_hours == 48.0  # README "Episode": < 48 h apart = one episode
    assert r.onset_window_days == 14  # CRS when onset on day 0-14
    assert r.min_febrile_grade == 1
    assert "room_air" in r.no_support_devices
    assert {"tocilizumab", "dexamethasone", "methylprednisolone"} <= r.masking_drugs
    assert "IT" in r.masking_excluded_routes


def test_02_steroid_rules_defaults():
    r = steroid_rules(Mappings.open(ROOT))
    assert r.factors["methylprednisolone"] == 1.0
    assert r.factors["dexamethasone"] == pytest.approx(16 / 3)  # 4 / 0.75 = 5.333
    assert r.factors["prednisone"] == pytest.approx(0.8)  # 4 / 5
    assert r.factors["prednisolone"] == pytest.approx(0.8)
    assert r.factors["hydrocortisone"] == pytest.approx(0.2)  # 4 / 20
    assert r.systemic_routes == frozenset({"IV", "PO"})  # intrathecal not systemic
    assert (r.first_day, r.last_day) == (0, 28)


def test_03_tocilizumab_label_defaults():
    r = toci_label(Mappings.open(ROOT))
    assert r.label_max_mg_per_dose == 800.0  # Actemra USPI: max 800 mg per dose
    assert (r.alert_mg_per_kg_ge30, r.alert_mg_per_kg_lt30) == (8.4, 12.6)  # 8 / 12 + 5 %
    assert (r.max_doses_24h, r.max_doses_total) == (3, 4)  # C2; Kymriah USPI


def test_04_derivation_rules_defaults():
    r = derivation_rules(Mappings.open(ROOT))
    assert r.response_window_days == (21, 35)
    assert r.response_target_day == 28
    assert r.mrd_negative_below_pct == 0.01  # F2: MRD < 10^-4
    assert r.remission_morphology == ("CR", "CRi")
    assert r.icans_window_days == (0, 28)
    assert r.serious_infection_min_ctcae == 3
    assert r.il6_after_first_toci == (timedelta(hours=24), timedelta(hours=72))
    assert r.min_follow_up_days == 28  # paper Figure 1
    assert r.admission_days == 28
    assert r.room_air_device == "room_air"
    assert r.drug_classes["tocilizumab"] == "anti_il6"
    assert r.drug_classes["dexamethasone"] == "corticosteroid"
    assert "crs_treatment" not in r.drug_classes
    assert set(r.crs_treatment_classes) == {"anti_il6", "corticosteroid", "vasopressor"}


def test_05_site_override_of_one_derivation_key_keeps_the_others(tmp_path):
    """Deep merge: the site changes periods.icans_gap_hours only."""
    m = site(tmp_path, {"derive/derivation.yaml": "periods:\n  icans_gap_hours: 36\n"})
    r = derivation_rules(m)
    assert r.icans_gap == timedelta(hours=36)
    assert r.toci_regimen_gap == timedelta(hours=72)
    assert r.oxygen_run_gap == timedelta(hours=24)
    assert r.response_window_days == (21, 35)
    # The defaults are not changed by the site's mapping set.
    assert derivation_rules(Mappings.open(ROOT)).icans_gap == timedelta(hours=48)


def test_06_site_override_of_a_steroid_equivalent(tmp_path):
    """crs_grading.md 6.1 sensitivity: dexamethasone 0.8 mg = MP 4 mg gives factor 5.0."""
    m = site(
        tmp_path,
        {"drugs/corticosteroid_equivalents.yaml": "equivalent_dose_mg:\n  dexamethasone: 0.8\n"},
    )
    r = steroid_rules(m)
    assert r.factors["dexamethasone"] == pytest.approx(5.0)
    assert r.factors["prednisone"] == pytest.approx(0.8)


def test_07_site_override_of_the_tocilizumab_alert(tmp_path):
    text = "drugs:\n  tocilizumab:\n    alert_mg_per_kg_above: {weight_lt_30kg: 13.0}\n"
    r = toci_label(site(tmp_path, {"validation/plausibility.yaml": text}))
    assert (r.alert_mg_per_kg_ge30, r.alert_mg_per_kg_lt30) == (8.4, 13.0)
    assert r.label_max_mg_per_dose == 800.0


def test_08_site_override_of_the_crs_grading_json(tmp_path):
    text = json.dumps({"hypotension_threshold": {"adult_from_age_years": 13}})
    r = crs_rules(site(tmp_path, {"grading/crs_astct2019.json": text}))
    assert (r.adult_from_age, r.adult_sbp_below, r.fever_c) == (13, 90.0, 38.0)


def test_09_clinical_rules_bundles_one_mapping_set(tmp_path):
    m = site(tmp_path, {"derive/derivation.yaml": "exclusions:\n  min_follow_up_days: 30\n"})
    c = clinical_rules(m)
    assert c.derivation.min_follow_up_days == 30
    assert c.crs.fever_c == 38.0
    assert c.steroids.factors["hydrocortisone"] == pytest.approx(0.2)
    assert c.label.max_doses_total == 4


@pytest.mark.parametrize(
    ("rel", "text", "loader"),
    [
        ("derive/derivation.yaml", "response:\n  target_day: day 28\n", derivation_rules),
        ("derive/derivation.yaml", "response:\n  window_days: [21]\n", derivation_rules),
        ("derive/derivation.yaml", "periods:\n  icans_gap_hours: 48h\n", derivation_rules),
        (
            "drugs/corticosteroid_equivalents.yaml",
            "equivalent_dose_mg:\n  dexamethasone: 0\n",
            steroid_rules,
        ),
        (
            "validation/plausibility.yaml",
            "drugs:\n  tocilizumab:\n    max_doses_24h: three\n",
            toci_label,
        ),
        ("grading/crs_astct2019.json", '{"fever": {"min_temperature_c": "hot"}}', crs_rules),
    ],
)
def test_10_mistyped_site_value_raises_mapping_error(tmp_path, rel, text, loader):
    with pytest.raises(MappingError, match=rel):
        loader(site(tmp_path, {rel: text}))


def test_11_boolean_for_an_integer_grade_is_mistyped(tmp_path):
    text = "outcomes:\n  serious_infection_min_ctcae: true\n"
    with pytest.raises(MappingError):
        derivation_rules(site(tmp_path, {"derive/derivation.yaml": text}))
