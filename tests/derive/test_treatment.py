"""Drug administrations (``cart_etl.derive.treatment``) on hand-made MAR rows.

Expected values are worked out by hand from Meikle & Tyler 1977 (methylprednisolone 4 mg =
dexamethasone 0.75 mg = prednisone 5 mg = hydrocortisone 20 mg; reference/crs_grading.md
6.1), the tocilizumab label (Actemra/Kymriah USPI: 8 mg/kg, 12 mg/kg under 30 kg, at most
800 mg per dose, 4 doses in total; guideline C2: at most 3 doses in 24 h; alert at
8.4 / 12.6 mg/kg, ``validation/plausibility.yaml`` ``alert_mg_per_kg_above``) and the
README "Steroids" rule (systemic IV/PO doses on study days 0-28 count; intrathecal does not).
"""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cart_etl.derive.rules import derivation_rules, steroid_rules, toci_label
from cart_etl.derive.treatment import derive_treatment, derive_treatment_summary
from tests.derive.frames import DRUG_SCHEMA, TZ, VASO_SCHEMA, h, timeline


def drugs(*rows: tuple[str, float, str, str, float, float]) -> pl.DataFrame:
    """rows: (patient_key, hours after the infusion, drug, route, dose mg, weight kg)."""
    return pl.DataFrame(
        [
            (key, drug, route, dose, "mg", weight, h(t), "mar.xlsx", str(i), None)
            for i, (key, t, drug, route, dose, weight) in enumerate(rows)
        ],
        schema=DRUG_SCHEMA,
        orient="row",
    )


def vaso(*rows: tuple[str, float, float, str]) -> pl.DataFrame:
    """rows: (patient_key, start hour, stop hour, drug)."""
    return pl.DataFrame(
        [
            (key, drug, h(a), h(b), 0.1, "ug/kg/min", "vaso.csv", str(i))
            for i, (key, a, b, drug) in enumerate(rows)
        ],
        schema=VASO_SCHEMA,
        orient="row",
    )


def treat(d: pl.DataFrame, v: pl.DataFrame | None = None, *keys: str) -> pl.DataFrame:
    return derive_treatment(
        d,
        v if v is not None else vaso(),
        timeline(*keys),
        steroid_rules(),
        toci_label(),
        derivation_rules().drug_classes,
        TZ,
    )


@pytest.mark.parametrize(
    ("drug", "route", "dose", "mp"),
    [
        ("methylprednisolone", "IV", 80.0, 80.0),  # reference drug: factor 1
        ("dexamethasone", "IV", 10.0, 53.333333),  # 10 x 4 / 0.75 (Meikle & Tyler 1977)
        ("dexamethasone", "PO", 0.75, 4.0),  # 0.75 mg dexamethasone = 4 mg MP
        ("prednisone", "PO", 50.0, 40.0),  # 50 x 4 / 5
        ("prednisolone", "PO", 5.0, 4.0),  # 5 mg prednisolone = 4 mg MP
        ("hydrocortisone", "IV", 100.0, 20.0),  # 100 x 4 / 20
    ],
)
def test_01_mp_equivalents(drug, route, dose, mp):
    t = treat(drugs(("p", 30, drug, route, dose, 70.0)))
    assert t.get_column("mp_equiv_mg").item() == pytest.approx(mp)
    assert t.get_column("counts_for_steroid_total").to_list() == [True]
    assert t.get_column("drug_class").to_list() == ["corticosteroid"]


def test_02_intrathecal_dexamethasone_has_an_equivalent_but_is_not_counted():
    """README "Steroids": intrathecal dexamethasone for ICANS is recorded but excluded."""
    t = treat(drugs(("p", 30, "dexamethasone", "IT", 12.0, 70.0)))
    assert t.get_column("mp_equiv_mg").item() == pytest.approx(64.0)  # 12 x 4 / 0.75
    assert t.get_column("counts_for_steroid_total").to_list() == [False]


def test_03_steroid_count_window_is_study_days_0_to_28_inclusive():
    """Local dates in Shanghai (T0 = 14:00 on day 0): -15 h = 23:00 on day -1; -1 h = 13:00
    on day 0 (before the infusion, still day 0); 28 x 24 h = 14:00 on day 28; 28 x 24 + 9.5 h
    = 23:30 on day 28; 28 x 24 + 10.5 h = 00:30 on day 29 (README: days 0-28 count)."""
    # fmt: off
    t = treat(drugs(
        ("p", -15,             "prednisone", "PO", 50.0, 70.0),
        ("p", -1,              "prednisone", "PO", 50.0, 70.0),
        ("p", 28 * 24,         "prednisone", "PO", 50.0, 70.0),
        ("p", 28 * 24 + 9.5,   "prednisone", "PO", 50.0, 70.0),
        ("p", 28 * 24 + 10.5,  "prednisone", "PO", 50.0, 70.0),
    ))
    # fmt: on
    t = t.sort("start_at")
    assert t.get_column("study_day").to_list() == [-1, 0, 28, 28, 29]
    assert t.get_column("counts_for_steroid_total").to_list() == [False, True, True, True, False]


@pytest.mark.parametrize(
    ("dose", "weight", "exceeds"),
    [
        (800.0, 100.0, False),  # 800 mg = the label maximum, 8 mg/kg: allowed
        (840.0, 110.0, True),  # > 800 mg per dose although only 7.6 mg/kg (Actemra USPI)
        (580.0, 70.0, False),  # 8.29 mg/kg <= 8.4
        (600.0, 70.0, True),  # 8.57 mg/kg > 8.4 (>= 30 kg alert)
        (300.0, 25.0, False),  # 12 mg/kg under 30 kg is the label dose (<= 12.6)
        (320.0, 25.0, True),  # 12.8 mg/kg > 12.6 (< 30 kg alert)
        (300.0, 30.0, True),  # 30 kg is ">= 30 kg": 10 mg/kg > 8.4
        (300.0, 29.9, False),  # 29.9 kg is "< 30 kg": 10.03 mg/kg <= 12.6
        (400.0, None, False),  # no weight: only the 800 mg cap can be checked
    ],
)
def test_04_tocilizumab_dose_above_label(dose, weight, exceeds):
    t = treat(drugs(("p", 20, "tocilizumab", "IV", dose, weight)))
    assert t.get_column("exceeds_label_limit").to_list() == [exceeds]
    assert t.get_column("drug_class").to_list() == ["anti_il6"]


def test_05_dose_per_kg_and_classes_of_other_drugs_and_vasopressors():
    """560 mg / 70 kg = 8 mg/kg; G-CSF is a growth factor; an unmapped drug is 'other';
    a vasopressor is an IV infusion with its interval and no dose."""
    # fmt: off
    d = drugs(
        ("p", 20, "tocilizumab", "IV", 560.0, 70.0),
        ("p", 40, "gcsf",        "SC", 300.0, 70.0),
        ("p", 41, "paracetamol", "PO", 1000.0, 70.0),
    )
    # fmt: on
    t = treat(d, vaso(("p", 9, 11.5, "norepinephrine"))).sort("start_at")
    assert t.get_column("drug").to_list() == [
        "norepinephrine",
        "tocilizumab",
        "gcsf",
        "paracetamol",
    ]
    assert t.get_column("drug_class").to_list() == [
        "vasopressor",
        "anti_il6",
        "growth_factor",
        "other",
    ]
    assert t.get_column("dose_mg_per_kg").to_list()[1] == pytest.approx(8.0)
    norepi = t.row(0, named=True)
    assert (norepi["route"], norepi["start_at"], norepi["stop_at"]) == ("IV", h(9), h(11.5))
    assert norepi["dose"] is None
    assert norepi["counts_for_steroid_total"] is False
    # Started 23:00 on day 0 and ran past local midnight: the study day is the start's.
    assert norepi["study_day"] == 0


def test_06_dose_number_counts_per_patient_and_drug_in_time_order():
    # fmt: off
    d = drugs(
        ("p", 30, "tocilizumab",   "IV", 560.0, 70.0),
        ("p", 10, "tocilizumab",   "IV", 560.0, 70.0),
        ("p", 20, "dexamethasone", "IV", 10.0,  70.0),
        ("q", 50, "tocilizumab",   "IV", 400.0, 50.0),
    )
    # fmt: on
    t = treat(d, None, "p", "q").sort("patient_key", "drug", "start_at")
    assert t.select("patient_key", "drug", "start_at", "dose_number").rows() == [
        ("p", "dexamethasone", h(20), 1),
        ("p", "tocilizumab", h(10), 1),
        ("p", "tocilizumab", h(30), 2),
        ("q", "tocilizumab", h(50), 1),
    ]


def summary(d: pl.DataFrame, v: pl.DataFrame | None = None, *keys: str) -> pl.DataFrame:
    return derive_treatment_summary(treat(d, v, *keys), toci_label()).sort("patient_key")


def test_07_four_doses_q8h_are_within_the_label():
    """Doses at 0, 8, 16 and 24 h: 3 in any 24 h (C2: q8h, <= 3 in 24 h, so the 24 h
    window is half-open) and 4 in total (Kymriah USPI maximum): not above the label."""
    d = drugs(*[("p", t, "tocilizumab", "IV", 560.0, 70.0) for t in (0, 8, 16, 24)])
    s = summary(d)
    assert s.get_column("toci_doses").to_list() == [4]
    assert s.get_column("toci_cumulative_mg").to_list() == [2240.0]
    assert s.get_column("toci_max_doses_in_24h").to_list() == [3]
    assert s.get_column("toci_exceeds_course_limit").to_list() == [False]
    assert s.get_column("first_toci_at").to_list() == [h(0)]


def test_08_four_doses_q6h_exceed_three_in_24h():
    """0, 6, 12, 18 h: 4 doses in 24 h > 3 (C2)."""
    d = drugs(*[("p", t, "tocilizumab", "IV", 560.0, 70.0) for t in (0, 6, 12, 18)])
    s = summary(d)
    assert s.get_column("toci_max_doses_in_24h").to_list() == [4]
    assert s.get_column("toci_exceeds_course_limit").to_list() == [True]


def test_09_five_doses_twelve_hours_apart_exceed_four_in_total():
    """0, 12, 24, 36, 48 h: at most 2 in any half-open 24 h, but 5 > 4 in total (USPI)."""
    d = drugs(*[("p", t, "tocilizumab", "IV", 400.0, 70.0) for t in (0, 12, 24, 36, 48)])
    s = summary(d)
    assert s.get_column("toci_doses").to_list() == [5]
    assert s.get_column("toci_max_doses_in_24h").to_list() == [2]
    assert s.get_column("toci_exceeds_course_limit").to_list() == [True]


def test_10_patient_totals_steroids_gcsf_vasopressor_hours():
    """MP: dexamethasone 10 mg IV (53.333) + MP 80 mg IV (80) = 133.333; intrathecal
    dexamethasone and prednisone on day 30 are excluded (README "Steroids"). G-CSF 300 +
    300 ug. Vasopressors 2.5 h + 1 h. q has no tocilizumab: no course."""
    # fmt: off
    d = drugs(
        ("p", 12,      "dexamethasone",      "IV", 10.0,  70.0),
        ("p", 20,      "methylprednisolone", "IV", 80.0,  70.0),
        ("p", 60,      "dexamethasone",      "IT", 12.0,  70.0),
        ("p", 30 * 24, "prednisone",         "PO", 50.0,  70.0),
        ("p", 100,     "gcsf",               "SC", 300.0, 70.0),
        ("p", 124,     "gcsf",               "SC", 300.0, 70.0),
        ("p", 13,      "tocilizumab",        "IV", 560.0, 70.0),
        ("q", 50,      "prednisone",         "PO", 25.0,  40.0),
    )
    v = vaso(
        ("p", 10, 12.5, "norepinephrine"),
        ("p", 11, 12.0, "vasopressin"),
    )
    # fmt: on
    s = summary(d, v, "p", "q")
    p, q = s.row(0, named=True), s.row(1, named=True)
    assert p["steroid_mp_equiv_mg"] == pytest.approx(133.333333)
    assert p["gcsf_total_ug"] == 600.0
    assert p["vasopressor_hours"] == pytest.approx(3.5)
    assert (p["toci_doses"], p["toci_cumulative_mg"]) == (1, 560.0)
    assert q["steroid_mp_equiv_mg"] == pytest.approx(20.0)  # 25 x 0.8
    assert (q["toci_doses"], q["first_toci_at"], q["toci_exceeds_course_limit"]) == (
        None,
        None,
        None,
    )


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["methylprednisolone", "dexamethasone", "prednisone"]),
    st.floats(0.5, 500),
    st.floats(1, 5),
)
def test_11_mp_equivalent_is_linear_in_dose(drug, dose, k):
    """Moved from test_crs.py: the equivalent scales with the dose by the table's factor."""

    def mp(x: float) -> float:
        return treat(drugs(("p", 30, drug, "IV", x, 70.0))).get_column("mp_equiv_mg").item()

    assert mp(dose * k) == pytest.approx(k * mp(dose))
    assert mp(dose) == pytest.approx(dose * steroid_rules().factors[drug])
