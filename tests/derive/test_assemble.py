"""``cart_etl.derive.assemble.derive_all`` on one tiny infused patient and one patient who
was never infused, with every patient column worked out by hand.

Sources for the expected values: README "Truth columns and conventions" (time axis, CRS
episode, duration, ASTCT 2019 grade, steroids, response, OS/PFS, serious infection,
exclusions), ASTCT 2019 (Lee 2019) Table (grade 2 = hypotension not requiring
vasopressors), Meikle & Tyler 1977 (dexamethasone 0.75 mg = methylprednisolone 4 mg),
F2 / ELIANA (MRD < 0.01 % = negative). Staged frame columns follow
``cart_etl.validate.staged`` and ``cart_etl.stage.staging.CAST_SPECS``.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from cart_etl.contract import DETAIL_COLUMNS, EPISODE_COLUMNS, PATIENT_COLUMNS
from cart_etl.derive.assemble import derive_all
from cart_etl.derive.rules import clinical_rules
from tests.derive.frames import T0, TS, TZ, frame, h

MEASUREMENT = {
    "patient_key": pl.String,
    "item": pl.String,
    "value": pl.Float64,
    "at": TS,
    "unit": pl.String,
    "source_unit": pl.String,
}


def accepted() -> dict[str, pl.DataFrame]:
    """p: infused 2021-03-01 06:00 UTC (14:00 Shanghai), born 1990-06-15 (30 on day 0).
    q: screened, never infused, born 2000-02-01, screened on the 21st birthday.
    r: infused at the same instant, born 1950-01-01, afebrile, died on day 20."""
    # fmt: off
    demographics = frame(
        {
            "patient_key": pl.String, "study_id": pl.String, "sex": pl.String,
            "birth_date": pl.Date, "screening_date": pl.Date, "is_high_risk": pl.String,
            "lines_of_therapy": pl.Int64, "prior_allo_sct": pl.String,
            "marrow_blasts_pct": pl.Float64,
        },
        [
            ("p", "S-1", "F", date(1990, 6, 15), date(2021, 2, 1), "true",  3, "false", 45.0),
            ("q", "S-2", "M", date(2000, 2, 1),  date(2021, 2, 1), "false", 1, "true",  80.0),
            ("r", "S-3", "M", date(1950, 1, 1),  date(2021, 2, 1), "false", 2, "false", 10.0),
        ],
    )
    infusion = frame(
        {"patient_key": pl.String, "at": TS, "dose_1e6_per_kg": pl.Float64},
        [("p", T0, 1.0), ("r", T0, 2.0)],
    )
    vitals = frame(MEASUREMENT, [
        ("p", "temp", 38.5,  h(4),   "Cel",    "Cel"),     # 18:00 day 0: first fever
        ("p", "sbp",  85.0,  h(4.5), "mm[Hg]", "mm[Hg]"),  # same clock hour: hypotension
        ("p", "temp", 38.2,  h(28),  "Cel",    "Cel"),     # last CRS sign, day 1
        ("p", "temp", 36.8,  h(60),  "Cel",    "Cel"),
        ("r", "temp", 37.0,  h(10),  "Cel",    "Cel"),     # monitored, afebrile
    ])
    labs = frame(MEASUREMENT, [
        ("p", "il6",  150.0, h(5),   "pg/mL", "pg/mL"),   # last before the first dose
        ("p", "il6",  300.0, h(36),  "pg/mL", "pg/mL"),   # first 24-72 h after it
    ])
    oxygen = frame(
        {"patient_key": pl.String, "device": pl.String, "flow_l_min": pl.Float64, "at": TS},
        [],
    )
    drugs = frame(
        {
            "patient_key": pl.String, "drug": pl.String, "route": pl.String,
            "dose": pl.Float64, "dose_unit": pl.String, "weight_kg": pl.Float64, "at": TS,
            "file": pl.String, "row": pl.String, "indication": pl.String,
        },
        [
            ("p", "tocilizumab",   "IV", 560.0, "mg", 70.0, h(6),  "mar.xlsx", "1", None),
            ("p", "dexamethasone", "IV", 10.0,  "mg", 70.0, h(8),  "mar.xlsx", "2", None),
            ("p", "dexamethasone", "IT", 12.0,  "mg", 70.0, h(50), "mar.xlsx", "3", None),
        ],
    )
    vasopressors = frame(
        {
            "patient_key": pl.String, "drug": pl.String, "start": TS, "stop": TS,
            "rate": pl.Float64, "rate_unit": pl.String, "file": pl.String, "row": pl.String,
        },
        [],
    )
    response = frame(
        {"patient_key": pl.String, "at": TS, "morphology": pl.String, "mrd_pct": pl.Float64},
        [("p", h(28 * 24), "CR", 0.0)],
    )
    follow_up = frame(
        {
            "patient_key": pl.String, "last_contact_date": pl.Date,
            "progression_date": pl.Date, "death_date": pl.Date,
        },
        [
            ("p", date(2021, 9, 1),  None, None),
            ("r", date(2021, 3, 21), None, date(2021, 3, 21)),
        ],
    )
    infections = frame(
        {"patient_key": pl.String, "onset_date": pl.Date, "ctcae_grade": pl.Int64},
        [("p", date(2021, 3, 10), 3)],
    )
    icans = frame(
        {"patient_key": pl.String, "at": TS, "ice_score": pl.Int64, "grade": pl.Int64},
        [("p", h(48), 8, 1), ("r", h(30), 10, 0)],
    )
    recorded_crs = frame({"patient_key": pl.String, "grade": pl.Int64}, [("p", 2)])
    # fmt: on
    return {
        "demographics": demographics,
        "infusion": infusion,
        "vitals": vitals,
        "labs": labs,
        "oxygen": oxygen,
        "drugs": drugs,
        "vasopressors": vasopressors,
        "response": response,
        "follow_up": follow_up,
        "infections": infections,
        "icans": icans,
        "recorded_crs": recorded_crs,
    }


@pytest.fixture(scope="module")
def derived():
    return derive_all(accepted(), TZ, clinical_rules())


def patient(derived, key: str) -> dict:
    return derived.patient.filter(pl.col("patient_key") == key).row(0, named=True)


def test_01_frames_carry_the_mart_columns(derived):
    assert derived.patient.columns == ["patient_key", *PATIENT_COLUMNS]
    assert derived.patient_detail.columns == ["patient_key", *DETAIL_COLUMNS]
    assert derived.crs_episode.columns == ["patient_key", *EPISODE_COLUMNS]
    assert derived.patient.height == 3


def test_02_infused_patient_columns(derived):
    """p by hand:
    * age: born 1990-06-15, day 0 2021-03-01 before the birthday -> 30 completed years;
    * CRS: fever at 18:00 on day 0 -> onset day 0; SBP 85 < 90 in the same hour without a
      vasopressor -> grade 2 (ASTCT 2019); last sign (38.2 C) 24 h after the first fever ->
      duration 1.0 day;
    * tocilizumab 1 dose, 560 mg; steroids: dexamethasone 10 mg IV = 10 x 4 / 0.75 = 53.33 mg
      MP; the intrathecal 12 mg is excluded (README "Steroids");
    * ICANS grade 1 on day 2 (within 0-28);
    * day-28 marrow CR with MRD 0 -> mrd_neg_cr (F2);
    * last contact 2021-09-01, alive, no progression: OS = PFS = 184 days, censored
      (31+30+31+30+31+31 days from 1 March);
    * CTCAE grade 3 infection on day 9 -> serious.
    """
    assert patient(derived, "p") == {
        "patient_key": "p",
        "study_id": "S-1",
        "is_infused": True,
        "exclusion_reason": None,
        "is_included": True,
        "is_toci": True,
        "age_years": 30,
        "sex": "F",
        "is_high_risk": True,
        "lines_of_therapy": 3,
        "prior_allo_sct": False,
        "marrow_blasts_pct": 45.0,
        "cart_dose_1e6_per_kg": 1.0,
        "max_crs_grade": 2,
        "crs_onset_day": 0,
        "crs_duration_days": 1.0,
        "has_icans": True,
        "max_icans_grade": 1,
        "toci_doses": 1,
        "toci_cumulative_mg": 560.0,
        "steroid_mp_equiv_mg": 53.33,
        "response_day28": "mrd_neg_cr",
        "os_days": 184,
        "os_event": False,
        "pfs_days": 184,
        "pfs_event": False,
        "serious_infection": True,
    }


def test_03_never_infused_patient_columns(derived):
    """q: no infusion record -> not_infused (CONSORT first step); age on the screening date
    2021-02-01 = the 21st birthday -> 21; no derivable CRS, treatment or outcome values
    (README: an empty cell means not derivable)."""
    q = patient(derived, "q")
    assert (q["is_infused"], q["exclusion_reason"], q["is_included"], q["is_toci"]) == (
        False,
        "not_infused",
        False,
        False,
    )
    assert (q["age_years"], q["is_high_risk"], q["prior_allo_sct"]) == (21, False, True)
    for col in (
        "cart_dose_1e6_per_kg",
        "max_crs_grade",
        "crs_onset_day",
        "toci_doses",
        "steroid_mp_equiv_mg",
        "has_icans",
        "response_day28",
        "os_days",
        "os_event",
        "serious_infection",
    ):
        assert q[col] is None, col


def test_04_infused_patient_followed_less_than_28_days(derived):
    """r: died 2021-03-21 = day 20 < 28 -> followup_lt_28d (before data_lost although there
    is no day-28 marrow); temperature charted without fever -> max grade 0, no onset or
    duration; infused, so tocilizumab/steroid totals are 0 rather than empty; ICANS assessed
    with grade 0; OS = PFS = 20 days with an event (death); no infection -> not serious."""
    r = patient(derived, "r")
    assert {k: r[k] for k in PATIENT_COLUMNS if k not in ("sex", "marrow_blasts_pct")} == {
        "study_id": "S-3",
        "is_infused": True,
        "exclusion_reason": "followup_lt_28d",
        "is_included": False,
        "is_toci": False,
        "age_years": 71,
        "is_high_risk": False,
        "lines_of_therapy": 2,
        "prior_allo_sct": False,
        "cart_dose_1e6_per_kg": 2.0,
        "max_crs_grade": 0,
        "crs_onset_day": None,
        "crs_duration_days": None,
        "has_icans": False,
        "max_icans_grade": 0,
        "toci_doses": 0,
        "toci_cumulative_mg": 0.0,
        "steroid_mp_equiv_mg": 0.0,
        "response_day28": None,
        "os_days": 20,
        "os_event": True,
        "pfs_days": 20,
        "pfs_event": True,
        "serious_infection": False,
    }


def test_05_patient_detail(derived):
    """One CRS episode; recorded grade 2 agrees with the derived 2; first tocilizumab 2 h
    after the onset; IL-6 150 before vs 300 at 30 h after (E7: rose, not fell); one dose is
    within the label; no pre-infusion fever; no lost-data kind for an analysed patient."""
    d = derived.patient_detail.filter(pl.col("patient_key") == "p").row(0, named=True)
    assert d["infusion_date"] == date(2021, 3, 1)
    assert d["crs_episodes"] == 1
    assert (d["crs_grade_recorded"], d["recorded_grade_disagrees"]) == (2, False)
    assert d["crs_max_grade_mechanism"] == "hypotension"
    assert d["first_toci_at"] == h(6)
    assert d["hours_onset_to_first_toci"] == 2.0
    assert (d["toci_max_doses_in_24h"], d["toci_exceeds_course_limit"]) == (1, False)
    assert (d["il6_before_first_toci"], d["il6_after_first_toci"]) == (150.0, 300.0)
    assert d["il6_fell_after_toci"] is False
    assert (d["pre_infusion_fever"], d["lost_data_kind"]) == (False, None)
    assert d["last_contact_date"] == date(2021, 9, 1)


def test_06_lab_timeseries_hours_and_flags(derived):
    """Hours since the infusion and from the first tocilizumab dose (at 6 h); IL-6 > 7 pg/mL
    and SBP < 90 mmHg are flagged (plausibility.yaml flag ranges)."""
    ts = derived.lab_timeseries.filter(pl.col("patient_key") == "p").sort("measured_at")
    rows = ts.select("category", "item", "study_day", "hours_since_infusion", "flag").rows()
    assert rows == [
        ("vital", "temp", 0, 4.0, None),
        ("vital", "sbp", 0, 4.5, "low"),
        ("lab", "il6", 0, 5.0, "high"),
        ("vital", "temp", 1, 28.0, None),
        ("lab", "il6", 2, 36.0, "high"),  # 14:00 + 36 h = 02:00 two local days later
        ("vital", "temp", 3, 60.0, None),
    ]
    il6 = ts.filter(pl.col("item") == "il6").get_column("hours_from_first_toci").to_list()
    assert il6 == [-1.0, 30.0]


def test_07_treatment_rows_carry_study_id_and_steroid_counting(derived):
    t = derived.treatment.sort("start_at")
    assert t.select("study_id", "drug", "route", "counts_for_steroid_total").rows() == [
        ("S-1", "tocilizumab", "IV", False),
        ("S-1", "dexamethasone", "IV", True),
        ("S-1", "dexamethasone", "IT", False),
    ]
