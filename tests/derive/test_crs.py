"""CRS derivations on hand-made cases (expected values from the ASTCT 2019 table, Lee 2019,
as summarised in reference/crs_grading.md section 1, and the README conventions)."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cart_etl.derive import crs
from cart_etl.derive.rules import crs_rules
from cart_etl.derive.timeline import derive_timeline
from tests.derive.frames import DRUG_SCHEMA, T0, TS, TZ, VASO_SCHEMA, h

RULES = crs_rules()


def timeline(age_birth_year: int = 1980) -> pl.DataFrame:
    demo = pl.DataFrame(
        {
            "patient_key": ["p"],
            "study_id": ["S-1"],
            "birth_date": [datetime(age_birth_year, 1, 1).date()],
            "screening_date": [datetime(2021, 2, 1).date()],
        }
    )
    inf = pl.DataFrame(
        {"patient_key": ["p"], "at": [T0]}, schema={"patient_key": pl.String, "at": TS}
    )
    return derive_timeline(demo, inf, TZ, RULES)


def vitals(*rows: tuple[float, str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [("p", item, value, h(t)) for t, item, value in rows],
        schema={"patient_key": pl.String, "item": pl.String, "value": pl.Float64, "at": TS},
        orient="row",
    )


def oxygen(*rows: tuple[float, str, float | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [("p", device, flow, h(t)) for t, device, flow in rows],
        schema={"patient_key": pl.String, "device": pl.String, "flow_l_min": pl.Float64, "at": TS},
        orient="row",
    )


def vaso(*rows: tuple[float, float, str]) -> pl.DataFrame:
    return pl.DataFrame(
        [("p", drug, h(a), h(b), 0.1, "ug/kg/min", "vasopressors.csv", "1") for a, b, drug in rows],
        schema=VASO_SCHEMA,
        orient="row",
    )


def drugs(*rows: tuple[float, str, str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            ("p", drug, route, dose, "mg", 70.0, h(t), "mar.xlsx", str(i), None)
            for i, (t, drug, route, dose) in enumerate(rows)
        ],
        schema=DRUG_SCHEMA,
        orient="row",
    )


def derive(v=None, o=None, va=None, d=None, birth_year: int = 1980) -> pl.DataFrame:
    tl = timeline(birth_year)
    v = v if v is not None else vitals()
    o = o if o is not None else oxygen()
    va = va if va is not None else vaso()
    d = d if d is not None else drugs()
    signs = crs.derive_crs_signs(tl, v, o, va, RULES)
    episodes = crs.derive_crs_episodes(signs, RULES)
    graded = crs.derive_crs_grades(episodes, tl, v, o, va, d, RULES, TZ)
    return crs.derive_episode_timing(graded, tl, d, RULES, TZ).sort("episode_number")


def test_fever_alone_is_grade_1():
    ep = derive(vitals((2, "temp", 38.4), (3, "sbp", 120)))
    assert ep.get_column("max_grade").to_list() == [1]
    assert ep.get_column("grade_mechanism").to_list() == ["fever"]


def test_single_febrile_reading_has_duration_zero():
    ep = derive(vitals((5, "temp", 38.0)))
    assert ep.get_column("duration_days").to_list() == [0.0]


def test_37_9_is_not_fever():
    assert derive(vitals((5, "temp", 37.9))).is_empty()


def test_fever_before_infusion_is_ignored():
    """Lymphodepletion fever on day 0 before the CAR-T infusion is not CRS (README)."""
    assert derive(vitals((-2, "temp", 38.6))).is_empty()


def test_hypotension_same_hour_without_vasopressor_is_grade_2():
    ep = derive(vitals((10, "temp", 38.5), (10.5, "sbp", 85)))
    assert ep.get_column("max_grade").to_list() == [2]
    assert ep.get_column("grade_mechanism").to_list() == ["hypotension"]


def test_paediatric_hypotension_threshold():
    """Age 5: SBP < 70 + 2x5 = 80 mmHg; 85 is not hypotension (PALS, crs_grading.md E6)."""
    ep = derive(vitals((10, "temp", 38.5), (10.5, "sbp", 85)), birth_year=2015)
    assert ep.get_column("max_grade").to_list() == [1]


@pytest.mark.parametrize(
    ("device", "flow", "grade"),
    [
        ("nasal_cannula", 2.0, 2),
        ("nasal_cannula", 6.0, 2),  # low flow is <= 6 L/min (paper Table 1 read as <=)
        ("nasal_cannula", 7.0, 3),  # > 6 L/min is high flow (R3)
        ("high_flow_nasal_cannula", 40.0, 3),
        ("face_mask", 8.0, 3),
        ("non_rebreather", 10.0, 3),
        ("venturi", None, 3),
        ("cpap", None, 4),
        ("bipap", None, 4),
        ("mechanical_ventilation", None, 4),
        ("room_air", None, 1),
    ],
)
def test_hypoxia_grade_by_device_and_flow(device, flow, grade):
    ep = derive(vitals((10, "temp", 38.5), (11, "temp", 38.2)), oxygen((10.2, device, flow)))
    assert ep.get_column("max_grade").to_list() == [grade]


@pytest.mark.parametrize(
    ("pressors", "grade"),
    [
        (["vasopressin"], 3),  # vasopressin alone counts as one vasopressor
        (["norepinephrine"], 3),
        (["norepinephrine", "vasopressin"], 3),  # one vasopressor with vasopressin
        (["norepinephrine", "epinephrine"], 4),  # multiple (excluding vasopressin)
    ],
)
def test_vasopressor_grades(pressors, grade):
    rows = [(9.5 + i * 0.1, 20.0, drug) for i, drug in enumerate(pressors)]
    ep = derive(vitals((10, "temp", 38.5), (10, "sbp", 80)), va=vaso(*rows))
    assert ep.get_column("max_grade").to_list() == [grade]


def test_masking_by_tocilizumab_keeps_grading_without_fever():
    """After tocilizumab in the episode, hypoxia grades without fever (ASTCT footnote R4)."""
    v = vitals((10, "temp", 38.5), (30, "temp", 36.8), (30, "sbp", 110))
    o = oxygen((29.5, "face_mask", 8.0), (31, "room_air", None))
    d = drugs((12, "tocilizumab", "IV", 560.0))
    assert derive(v, o, d=d).get_column("max_grade").to_list() == [3]
    # Without the drug the afebrile face mask hour does not count.
    assert derive(v, o).get_column("max_grade").to_list() == [1]


def test_intrathecal_steroid_does_not_mask():
    v = vitals((10, "temp", 38.5), (30, "temp", 36.8), (30, "sbp", 110))
    o = oxygen((29.5, "face_mask", 8.0), (31, "room_air", None))
    d = drugs((12, "dexamethasone", "IT", 5.0))
    assert derive(v, o, d=d).get_column("max_grade").to_list() == [1]


def test_biphasic_fever_within_48h_is_one_episode():
    ep = derive(vitals((10, "temp", 38.5), (20, "temp", 38.1), (60, "temp", 38.3)))
    assert ep.height == 1
    assert ep.get_column("duration_days").to_list() == [round(50 / 24, 2)]


def test_gap_over_48h_splits_episodes_and_day_15_fever_is_not_crs():
    ep = derive(vitals((10, "temp", 38.5), (70, "temp", 38.3), (24 * 16, "temp", 38.9)))
    assert ep.get_column("episode_number").to_list() == [1, 2, 3]
    assert ep.get_column("is_crs").to_list() == [True, True, False]
    assert ep.get_column("onset_day").to_list()[-1] == 16


def test_oxygen_after_fever_extends_duration():
    ep = derive(vitals((10, "temp", 38.5)), oxygen((40, "nasal_cannula", 2.0)))
    assert ep.get_column("duration_hours").to_list() == [30.0]


def test_time_to_first_tocilizumab():
    d = drugs((13.5, "tocilizumab", "IV", 480.0))
    ep = derive(vitals((10, "temp", 38.5), (20, "temp", 38.4)), d=d)
    assert ep.get_column("hours_onset_to_first_toci").to_list() == [3.5]


# --- properties ---------------------------------------------------------------------------

temps = st.lists(st.tuples(st.floats(0, 24 * 20), st.floats(36.0, 41.0)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(temps)
def test_episodes_do_not_overlap_and_durations_are_non_negative(readings):
    ep = derive(vitals(*[(t, "temp", v) for t, v in readings]))
    assert (ep.get_column("duration_hours") >= 0).all()
    ends = ep.get_column("end_at").to_list()
    onsets = ep.get_column("onset_at").to_list()
    assert all(onsets[i + 1] > ends[i] for i in range(len(ends) - 1))


DEVICE_ORDER = ["room_air", "nasal_cannula", "face_mask", "bipap"]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([None, ["norepinephrine"], ["norepinephrine", "epinephrine"]]),
    st.booleans(),
)
def test_grade_is_monotone_in_each_input(dev_a, dev_b, pressors, hypotensive):
    """Making one input more severe never lowers the grade."""
    low, high = sorted((dev_a, dev_b))

    def grade(device_rank: int, pressor_list) -> int:
        v = vitals((10, "temp", 38.5), (10, "sbp", 80 if hypotensive else 120))
        o = oxygen((9.8, DEVICE_ORDER[device_rank], 2.0))
        va = vaso(*[(9.5, 20.0, p) for p in (pressor_list or [])])
        return derive(v, o, va).get_column("max_grade").item()

    assert grade(low, pressors) <= grade(high, pressors)
    assert grade(low, None) <= grade(low, pressors)
