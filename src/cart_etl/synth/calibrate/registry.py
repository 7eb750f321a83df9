"""Uncalibrated patient plans drawn from the reference distributions (one patient at a time).

``draw_patient_plan`` gives the excluded patients of the reference cohort and every
patient of a registry larger than 61 (``--patients N``): toci group, age, sex, weight,
blasts, CRS grade and course, doses, ICANS, response and, for registry patients, an
exclusion drawn at the reference cohort's rates.
"""

from __future__ import annotations

import numpy as np

from cart_etl.synth.calibrate.plan import (
    DATA_LOST,
    FOLLOWUP_LT_28D,
    MECHANISMS_BY_GRADE,
    NOT_INFUSED,
    PatientPlan,
)


def weight_for_age(rng: np.random.Generator, age: int, sex: str) -> float:
    if age < 18:
        base = 8.0 + 2.9 * age if age < 14 else 45 + 2.5 * (age - 14)
    else:
        base = 66.0 if sex == "M" else 56.0
    return round(float(base * rng.uniform(0.85, 1.2)), 1)


def draw_patient_plan(rng: np.random.Generator, *, index: int) -> PatientPlan:
    """One patient drawn from the reference distributions (not calibrated to the paper).

    Used for the excluded patients of the reference cohort and for registries larger
    than 61 (``--patients N``).
    """
    is_toci = bool(rng.random() < 17 / 45)
    age = int(np.clip(rng.normal(38 if is_toci else 33, 15), 8, 70))
    sex = "M" if rng.random() < 0.53 else "F"
    blasts = float(np.round(np.clip(rng.gamma(1.1, 30 if is_toci else 20), 0, 97), 2))
    if is_toci:
        grade = int(rng.choice([2, 3], p=[8 / 17, 9 / 17]))
    else:
        grade = int(rng.choice([0, 1, 2, 3], p=[4 / 28, 7 / 28, 11 / 28, 6 / 28]))
    if rng.random() < 0.01:
        grade = 4
    duration = None if grade == 0 else int(rng.uniform(0.3, 10) * 1440)
    if grade == 1 and duration is not None:
        duration = min(duration, 4 * 1440)
    toci: list[int] = []
    if is_toci:
        n_doses = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
        toci = [int(rng.choice([160, 240, 320, 400, 480]))] * n_doses
        duration = max(duration or 0, (n_doses * 8 + 12) * 60)
    steroid = float(rng.integers(30, 200)) if is_toci or (grade >= 3) else 0.0
    plan = PatientPlan(
        index=index,
        study_id=f"CART-{index + 1:05d}" if index >= 0 else "",
        exclusion=None,
        lost_kind=None,
        is_toci=is_toci,
        age_years=age,
        sex=sex,
        is_high_risk=bool(rng.random() < 0.84),
        lines_of_therapy=int(rng.integers(1, 4)),
        prior_allo_sct=bool(rng.random() < 0.2),
        marrow_blasts_pct=blasts,
        cart_dose_1e6_per_kg=float(np.round(rng.uniform(0.15, 5.0), 2)),
        weight_kg=weight_for_age(rng, age, sex),
        infusion_date=None,
        crs_grade=grade,
        crs_mechanism=str(rng.choice(MECHANISMS_BY_GRADE[grade])),
        crs_onset_h=float(rng.uniform(6, 120)) if grade else None,
        crs_duration_min=duration,
        toci_mg=toci,
        steroid_mp_mg=steroid,
        icans_grade=int(rng.choice([0, 1, 2, 3], p=[0.9, 0.04, 0.03, 0.03])),
        response=str(
            rng.choice(["mrd_neg_cr", "mrd_pos_cr", "pr", "nr"], p=[0.85, 0.09, 0.03, 0.03])
        ),
        serious_infection=bool(rng.random() < 0.42),
        gcsf_days=int(rng.integers(0, 12)),
        il6_falls=bool(rng.random() < 0.6) if is_toci else None,
    )
    plan.icans_days = int(rng.integers(1, 8)) if plan.icans_grade else 0
    plan.recorded_grade = grade if rng.random() < 0.9 else None
    if index >= 0:
        plan.exclusion = _registry_exclusion(rng)
        if plan.exclusion == NOT_INFUSED:
            plan.crs_grade, plan.is_toci, plan.toci_mg, plan.steroid_mp_mg = None, False, [], 0.0
            plan.response, plan.crs_onset_h, plan.crs_duration_min = None, None, None
            plan.recorded_grade, plan.icans_grade, plan.il6_falls = None, 0, None
            plan.gcsf_days, plan.serious_infection = 0, False
        elif plan.exclusion == FOLLOWUP_LT_28D:
            plan.response, plan.icans_grade = None, 0  # followed too briefly to chart ICANS
            if plan.crs_duration_min:
                plan.crs_duration_min = min(plan.crs_duration_min, 5 * 1440)
        elif plan.exclusion == DATA_LOST:
            plan.lost_kind = "monitoring" if rng.random() < 0.5 else "response"
            if plan.lost_kind == "monitoring":
                plan.recorded_grade, plan.icans_grade = None, 0
            else:
                plan.response = None
    return plan


def _registry_exclusion(rng: np.random.Generator) -> str | None:
    u = rng.random()
    if u < 1 / 61:
        return NOT_INFUSED
    if u < 5 / 61:
        return FOLLOWUP_LT_28D
    if u < 16 / 61:
        return DATA_LOST
    return None
