"""The calibrated reference cohort: 61 screened patients whose truth reproduces the paper.

Flow (Results 3.1): 61 screened -> 1 progressed before infusion -> 60 infused -> 4
follow-up < 28 days, 11 data lost -> 45 analysed (17 tocilizumab, 28 not). The Table 2
solvers place the analysed patients' values, which are then assigned per group
(treatment, CRS detail, the physician's grade); the excluded patients are drawn, everyone
gets an enrolment date, and survival is calibrated last.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from cart_etl.synth.calibrate.outcomes import assign_followup
from cart_etl.synth.calibrate.plan import (
    DATA_LOST,
    ENROL_END,
    ENROL_START,
    FOLLOWUP_LT_28D,
    MECHANISMS_BY_GRADE,
    NOT_INFUSED,
    PatientPlan,
)
from cart_etl.synth.calibrate.registry import draw_patient_plan, weight_for_age
from cart_etl.synth.calibrate.table2 import (
    lines_of_therapy,
    solve_durations,
    solve_gcsf,
    solve_table2_continuous,
    toci_courses,
)


def _counts_to_flags(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[rng.choice(n, size=k, replace=False)] = True
    return flags


def _expand(rng: np.random.Generator, counts: dict[str, int]) -> list[str]:
    items = [value for value, k in counts.items() for _ in range(k)]
    rng.shuffle(items)  # type: ignore[arg-type]
    return items


def _infusion_dates(rng: np.random.Generator, n: int) -> list[date]:
    span = (ENROL_END - ENROL_START).days
    return sorted(ENROL_START + timedelta(days=int(d)) for d in rng.integers(0, span, size=n))


def build_reference_cohort(seed: int) -> list[PatientPlan]:
    """The 61 screened patients, calibrated so the truth reproduces the paper.

    Flow (Results 3.1): 61 screened -> 1 progressed before infusion -> 60 infused ->
    4 follow-up < 28 days, 11 data lost -> 45 analysed (17 tocilizumab, 28 not).
    """
    rng = np.random.default_rng([seed, 1])
    cont = solve_table2_continuous(rng)
    lines = lines_of_therapy(rng)
    dur_toci, grade_toci, dur_non_crs, grade_non_crs = solve_durations(rng)

    included: list[PatientPlan] = []
    group_sizes = {True: 17, False: 28}
    cat = {
        True: {"male": 8, "high_risk": 14, "allo": 3, "infection": 9},
        False: {"male": 16, "high_risk": 24, "allo": 6, "infection": 10},
    }
    responses = {
        True: {"mrd_neg_cr": 16, "mrd_pos_cr": 1},
        False: {"mrd_neg_cr": 24, "mrd_pos_cr": 3, "pr": 1},
    }
    for is_toci in (True, False):
        gi = 0 if is_toci else 1
        n = group_sizes[is_toci]
        male = _counts_to_flags(rng, n, cat[is_toci]["male"])
        high = _counts_to_flags(rng, n, cat[is_toci]["high_risk"])
        allo = _counts_to_flags(rng, n, cat[is_toci]["allo"])
        infection = _counts_to_flags(rng, n, cat[is_toci]["infection"])
        resp = _expand(rng, responses[is_toci])
        ages = rng.permutation(cont["age"][gi])
        blasts = rng.permutation(cont["blasts"][gi])
        doses = rng.permutation(cont["dose"][gi])
        line = lines[gi]
        # CRS grade and duration follow tumour burden within each group (Discussion:
        # "the determining factor that influenced the severity of CRS was tumor burden").
        if is_toci:
            grades, durs = grade_toci, dur_toci
        else:
            grades = np.concatenate([[0] * 4, grade_non_crs])
            durs = np.concatenate([[np.nan] * 4, dur_non_crs])
        burden_rank = np.argsort(np.argsort(blasts + rng.normal(0, 25, n)))
        crs_order = np.argsort(grades + rng.random(n) * 0.8, kind="stable")
        for k in range(n):
            j = int(crs_order[burden_rank[k]])
            sex = "M" if male[k] else "F"
            age = int(ages[k])
            included.append(
                PatientPlan(
                    index=-1,
                    study_id="",
                    exclusion=None,
                    lost_kind=None,
                    is_toci=is_toci,
                    age_years=age,
                    sex=sex,
                    is_high_risk=bool(high[k]),
                    lines_of_therapy=int(line[k]),
                    prior_allo_sct=bool(allo[k]),
                    marrow_blasts_pct=float(blasts[k]),
                    cart_dose_1e6_per_kg=float(doses[k]),
                    weight_kg=weight_for_age(rng, age, sex),
                    infusion_date=None,
                    crs_grade=int(grades[j]),
                    crs_duration_min=None if np.isnan(durs[j]) else round(float(durs[j]) * 1440),
                    response=str(resp[k]),
                    serious_infection=bool(infection[k]),
                )
            )
    toci_pts = [p for p in included if p.is_toci]
    non_pts = [p for p in included if not p.is_toci]
    _assign_treatment(rng, toci_pts, non_pts, cont["steroid"])
    _assign_crs_detail(rng, included)
    excluded = _excluded_patients(rng)
    everyone = included + excluded
    order = rng.permutation(len(everyone))
    dates = _infusion_dates(rng, len(everyone))
    cohort: list[PatientPlan] = []
    for position, idx in enumerate(order):
        plan = everyone[int(idx)]
        plan.index = position
        plan.study_id = f"CART-{position + 1:03d}"
        plan.planned_date = dates[position]
        plan.infusion_date = dates[position] if plan.is_infused else None
        cohort.append(plan)
    assign_followup(rng, cohort)
    return cohort


def _assign_treatment(
    rng: np.random.Generator,
    toci_pts: list[PatientPlan],
    non_pts: list[PatientPlan],
    steroid: list[np.ndarray],
) -> None:
    """Tocilizumab courses, steroid totals, ICANS, IL-6 response and G-CSF."""
    durations = np.array([p.crs_duration_min / 1440 for p in toci_pts])  # type: ignore[operator]
    for plan, course in zip(toci_pts, toci_courses(rng, durations), strict=True):
        plan.toci_mg = course
        # Tocilizumab is prescribed per kg (8 mg/kg label, 4 mg/kg low dose): where the
        # first dose fits an adult weight, the patient weighs exactly dose/8 or dose/4 kg.
        fits = [course[0] / k for k in (8, 4) if 40 <= course[0] / k <= 90]
        if plan.age_years >= 16 and fits and rng.random() < 0.7:
            plan.weight_kg = fits[0]
    # Steroids: larger totals to higher grades (toci); non-toci steroid-only patients are
    # 1 grade-1, 3 grade-2 and all 6 grade-3 (Results 3.2).
    toci_ster = np.sort(steroid[0])
    by_grade = sorted(toci_pts, key=lambda p: (p.crs_grade or 0) + rng.random() * 1.5)
    for plan, value in zip(by_grade, toci_ster, strict=True):
        plan.steroid_mp_mg = float(value)
    non_ster = np.sort(steroid[1][steroid[1] > 0])
    g1 = [p for p in non_pts if p.crs_grade == 1][:1]
    g2 = [p for p in non_pts if p.crs_grade == 2][:3]
    g3 = [p for p in non_pts if p.crs_grade == 3]
    for plan, value in zip(g1 + g2 + g3, non_ster, strict=True):
        plan.steroid_mp_mg = float(value)
    # ICANS: 2 patients, both toci (Table 2); one grade 3 for 7 days (Results 3.2).
    g3_toci = [p for p in toci_pts if p.crs_grade == 3]
    g3_toci[0].icans_grade, g3_toci[0].icans_days = 3, 7
    g3_toci[1].icans_grade, g3_toci[1].icans_days = 1, 2
    # IL-6 after the first tocilizumab dose: 10 fell, 7 still rising (Results 3.3).
    falls = _counts_to_flags(rng, 17, 10)
    for plan, fall in zip(toci_pts, falls, strict=True):
        plan.il6_falls = bool(fall)
    everyone = toci_pts + non_pts
    daily = np.array([150.0 if p.weight_kg < 45 else 300.0 for p in everyone])
    in_toci = np.array([p.is_toci for p in everyone])
    for plan, days in zip(everyone, solve_gcsf(rng, daily, in_toci), strict=True):
        plan.gcsf_days = int(days)


def _assign_crs_detail(rng: np.random.Generator, plans: list[PatientPlan]) -> None:
    """Onset, mechanism of the maximum grade, fever pattern and the physician's grade."""
    for plan in plans:
        grade = plan.crs_grade
        if grade is None:
            continue
        plan.crs_onset_h = float(rng.uniform(6, 120)) if grade else None
        plan.crs_mechanism = str(rng.choice(MECHANISMS_BY_GRADE[grade]))
        plan.recorded_grade = grade
    crs = [p for p in plans if p.crs_grade]
    zero_day = [p for p in crs if p.crs_duration_min == 0]
    for plan in zero_day:
        plan.crs_pattern = "single_reading"
    # Fever masked by tocilizumab/steroids: the max-grade sign comes after defervescence.
    masked = [p for p in crs if (p.toci_mg or p.steroid_mp_mg) and (p.crs_grade or 0) >= 2]
    masked = [p for p in masked if (p.crs_duration_min or 0) >= 2 * 1440]
    for plan in rng.permutation(np.array(masked, dtype=object))[:5]:
        plan.crs_pattern = "masked"
    biphasic = [
        p for p in crs if p.crs_pattern == "simple" and (p.crs_duration_min or 0) >= 4 * 1440
    ]
    for plan in rng.permutation(np.array(biphasic, dtype=object))[:3]:
        plan.crs_pattern = "biphasic"
    g3 = [p for p in crs if p.crs_grade == 3 and p.crs_pattern != "masked"]
    if g3:  # the NC > 6 L/min edge case (ASTCT: high flow) appears at least once
        g3[0].crs_mechanism = "nasal_cannula_7l"
        g3[-1].crs_mechanism = "ne_plus_vasopressin"
    # Two patients with a fever before the infusion on day 0 (not CRS onset).
    for plan in rng.permutation(np.array(plans, dtype=object))[:2]:
        plan.pre_infusion_fever = True
    # The physician's grade: missing for a few, disagreeing with the signals for 3.
    recorded = [p for p in plans if p.crs_grade is not None]
    for plan in rng.permutation(np.array(recorded, dtype=object))[:6]:
        plan.recorded_grade = None
    disagree = [p for p in recorded if p.recorded_grade is not None and (p.crs_grade or 0) >= 2]
    for plan in rng.permutation(np.array(disagree, dtype=object))[:3]:
        # Usual error: NC 7 L/min or masked hypoxia called grade 2; low-flow O2 missed.
        plan.recorded_grade = (plan.crs_grade or 0) - 1


def _excluded_patients(rng: np.random.Generator) -> list[PatientPlan]:
    """16 excluded: 1 not infused, 4 follow-up < 28 d, 11 data lost (6 monitoring, 5 response)."""
    kinds = (
        [(NOT_INFUSED, None)]
        + [(FOLLOWUP_LT_28D, None)] * 4
        + [(DATA_LOST, "monitoring")] * 6
        + [(DATA_LOST, "response")] * 5
    )
    plans = []
    for exclusion, lost in kinds:
        plan = draw_patient_plan(rng, index=-1)
        plan.exclusion, plan.lost_kind = exclusion, lost
        if exclusion == NOT_INFUSED:
            plan.crs_grade, plan.is_toci, plan.toci_mg, plan.steroid_mp_mg = None, False, [], 0.0
            plan.response, plan.gcsf_days, plan.recorded_grade, plan.crs_onset_h = (
                None,
                0,
                None,
                None,
            )
            plan.crs_duration_min, plan.icans_grade, plan.il6_falls = None, 0, None
            plan.serious_infection = False
        if exclusion == FOLLOWUP_LT_28D:
            plan.response, plan.icans_grade = None, 0
            plan.crs_duration_min = (
                min(plan.crs_duration_min or 0, 5 * 1440) if plan.crs_grade else None
            )
        if lost == "monitoring":
            plan.recorded_grade, plan.icans_grade = None, 0
        if lost == "response":
            plan.response = None
        plans.append(plan)
    return plans
