"""Clinical flags on vital signs and labs (``cart_etl.derive.measurements``).

Expected values are worked out by hand from ``validation/plausibility.yaml``
``measurements.<item>.flag`` (sources in reference/crs_grading.md section 7: temperature
high > 40 / low < 35 Cel; adult SBP < 90 mmHg (E6); SpO2 < 92 %; O2 flow > 6 L/min is
high flow (ASTCT); IL-6 > 7 pg/mL; HLH-2004 sCD25 >= 2400 U/mL; CAR-T HLH ferritin
> 10 000; CTCAE v5 platelets < 25 (G4) and WBC < 1 (G4) / > 100 (G3)).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from cart_etl.derive.measurements import compute_clinical_flag, derive_col_clinical_flag
from cart_etl.mappings import Mappings, activate

ROOT = Path(__file__).resolve().parents[2] / "mappings"


def flags(rows: list[tuple[str, float | None]]) -> list[str | None]:
    df = pl.DataFrame(rows, schema={"item": pl.String, "value": pl.Float64}, orient="row")
    return derive_col_clinical_flag(df).get_column("flag").to_list()


@pytest.mark.parametrize(
    ("item", "value", "flag"),
    [
        ("temp", 40.0, None),  # high is > 40, not >= 40
        ("temp", 40.1, "high"),
        ("temp", 38.5, None),  # fever is a CRS sign, not a clinical flag
        ("temp", 35.0, None),
        ("temp", 34.9, "low"),
        ("sbp", 89.0, "low"),  # adult hypotension < 90 mmHg
        ("sbp", 90.0, None),
        ("sbp", 250.0, None),  # SBP has no high flag
        ("hr", 101.0, "high"),
        ("hr", 49.0, "low"),
        ("spo2", 91.0, "low"),
        ("spo2", 92.0, None),
        ("flow_l_min", 6.0, None),  # low-flow maximum 6 L/min (ASTCT, read as <=)
        ("flow_l_min", 6.5, "high"),
        ("il6", 7.0, None),
        ("il6", 7.5, "high"),
        ("ferritin", 10001.0, "high"),
        ("ferritin", 10000.0, None),
        ("plt", 24.0, "low"),
        ("wbc", 0.9, "low"),
        ("wbc", 101.0, "high"),
        ("dbp", 10.0, None),  # no flag range declared
        ("glucose", 999.0, None),  # not in plausibility.yaml
        ("temp", None, None),
    ],
)
def test_01_flag_per_plausibility_ranges(item, value, flag):
    assert flags([(item, value)]) == [flag]


def test_02_flags_are_per_item_in_one_frame():
    """A value that is high for one item (IL-6 50 > 7) is not flagged for another (HR 50 is
    not < 50)."""
    assert flags([("il6", 50.0), ("hr", 50.0), ("sbp", 50.0)]) == ["high", None, "low"]


def test_03_custom_column_names():
    df = pl.DataFrame({"code": ["temp", "sbp"], "val": [41.0, 120.0]})
    out = df.select(compute_clinical_flag("code", "val")).to_series().to_list()
    assert out == ["high", None]


def site_with_plausibility(tmp_path: Path, text: str) -> Mappings:
    folder = tmp_path / "site"
    (folder / "validation").mkdir(parents=True)
    shutil.copy(ROOT / "sites" / "example_wide_en.yaml", folder / "site.yaml")
    (folder / "validation" / "plausibility.yaml").write_text(text, encoding="utf-8")
    return Mappings.open(ROOT, site=folder)


def test_04_site_override_of_a_flag_range_applies_to_its_run_only(tmp_path):
    """A site lowering the temperature high flag to 39.5 flags 39.8 in its own run; the
    defaults (> 40) do not."""
    m = site_with_plausibility(tmp_path, "measurements:\n  temp: {flag: {high: 39.5}}\n")
    with activate(m):
        assert flags([("temp", 39.8), ("temp", 34.0)]) == ["high", "low"]  # low 35 kept
    assert flags([("temp", 39.8)]) == [None]


def test_05_low_wins_when_a_site_range_overlaps(tmp_path):
    """Docstring: should a site's ranges overlap (low above high), the low test wins. With a
    site range low 120 / high 100, HR 110 is both > 100 and < 120."""
    m = site_with_plausibility(tmp_path, "measurements:\n  hr: {flag: {low: 120, high: 100}}\n")
    with activate(m):
        assert flags([("hr", 110.0)]) == ["low"]
