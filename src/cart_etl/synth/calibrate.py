"""Patient-level plans for the reference cohort, calibrated to Zhou et al. 2025."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
from scipy import stats

from cart_etl.synth.solver import (
    Slot,
    fixed,
    group_slots,
    hill_climb,
    logrank_p,
    mann_whitney_p,
    two_group_objective,
)

DATA_CUT = date(2024, 6, 30)
ENROL_START = date(2020, 4, 8)
ENROL_END = date(2023, 10, 27)

# Exclusion reasons as written to truth/patients.csv (the order is the CONSORT order).
NOT_INFUSED = "not_infused"
FOLLOWUP_LT_28D = "followup_lt_28d"
DATA_LOST = "data_lost"

# How a patient's maximum CRS grade shows in the raw signals.
MECHANISMS_BY_GRADE: dict[int, tuple[str, ...]] = {
    0: ("none",),
    1: ("fever",),
    2: ("low_flow_o2", "hypotension"),
    3: ("norepinephrine", "high_flow_o2", "face_mask"),
    4: ("two_vasopressors", "bipap"),
}


@dataclass(slots=True)
class PatientPlan:
    """What one screened patient's raw records must make a correct pipeline derive.

    Times are relative to the infusion (hours) or to CRS onset (minutes); the course
    simulator turns this plan into charted signals, doses and assessments.
    """

    index: int
    study_id: str
    exclusion: str | None
    lost_kind: str | None  # "monitoring" | "response" for DATA_LOST
    is_toci: bool
    age_years: int
    sex: str
    is_high_risk: bool
    lines_of_therapy: int
    prior_allo_sct: bool
    marrow_blasts_pct: float
    cart_dose_1e6_per_kg: float
    weight_kg: float
    infusion_date: date | None
    crs_grade: int | None
    planned_date: date | None = None  # enrolment slot; the infusion date when infused
    crs_mechanism: str = "none"
    crs_pattern: str = "simple"  # simple | single_reading | masked | biphasic
    crs_onset_h: float | None = None  # hours after the infusion time
    crs_duration_min: int | None = None
    toci_mg: list[int] = field(default_factory=list)
    steroid_mp_mg: float = 0.0
    icans_grade: int = 0
    icans_days: int = 0
    response: str | None = None  # mrd_neg_cr | mrd_pos_cr | pr | nr
    serious_infection: bool = False
    os_days: int | None = None
    os_event: bool | None = None
    pfs_days: int | None = None
    pfs_event: bool | None = None
    death_cause: str | None = None
    gcsf_days: int = 0
    recorded_grade: int | None = None
    il6_falls: bool | None = None
    pre_infusion_fever: bool = False

    @property
    def is_infused(self) -> bool:
        return self.exclusion != NOT_INFUSED

    @property
    def is_included(self) -> bool:
        return self.exclusion is None

    @property
    def has_monitoring(self) -> bool:
        return self.is_infused and self.lost_kind != "monitoring"


def _counts_to_flags(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[rng.choice(n, size=k, replace=False)] = True
    return flags


def _expand(rng: np.random.Generator, counts: dict[str, int]) -> list[str]:
    items = [value for value, k in counts.items() for _ in range(k)]
    rng.shuffle(items)  # type: ignore[arg-type]
    return items


# ---- continuous Table 2 rows ------------------------------------------------------------


def _solve_table2_continuous(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Values per group (toci, non-toci) for each continuous Table 2 row."""
    solved: dict[str, list[np.ndarray]] = {}
    solved["age"] = hill_climb(
        rng,
        [group_slots(17, 42, 14, 67), group_slots(28, 32, 8, 61, pair_offset=1)],
        two_group_objective(0.033, 36),
        step=1,
        tol=0.002,
    )
    solved["dose"] = hill_climb(
        rng,
        [group_slots(17, 1.5, 0.3, 3.37), group_slots(28, 2.38, 0.15, 5.06, pair_offset=0.02)],
        two_group_objective(0.106, 2.1),
        step=0.01,
        tol=0.002,
    )
    # Table 2 reading: every toci patient received steroids (range 30-201) and 10
    # non-toci patients did (Results 3.2), so 18 non-toci zeros.
    solved["steroid"] = hill_climb(
        rng,
        [group_slots(17, 60, 30, 201), [fixed(0)] * 18 + [Slot(10, 80)] * 9 + [fixed(80)]],
        two_group_objective(0.004, 40),
        step=1,
        tol=0.002,
    )
    # Marrow blasts: category counts per group fix which slot lies in which band.
    toci_blasts = [
        fixed(0),
        *[Slot(0.5, 29.9)] * 7,
        fixed(34.15),
        *[Slot(34.15, 49.9)] * 2,
        *[Slot(50.5, 93.99)] * 5,
        fixed(93.99),
    ]
    non_blasts = [
        fixed(0),
        *[Slot(0.1, 17.7)] * 12,
        fixed(17.7),
        fixed(17.86),
        *[Slot(17.86, 29.9)] * 8,
        *[Slot(30.1, 49.9)] * 2,
        *[Slot(50.5, 96.65)] * 2,
        fixed(96.65),
    ]
    solved["blasts"] = hill_climb(
        rng, [toci_blasts, non_blasts], two_group_objective(None, 24.0), step=0.01, tol=0.0
    )
    return solved


def _lines_of_therapy(rng: np.random.Generator) -> list[np.ndarray]:
    """Integer lines (1-3): toci 2 (1-3); non-toci median 2.5, read with range 1-3.

    Counts (toci 3/8/6, non-toci 4/10/14 patients with 1/2/3 lines) were found by
    enumerating every split that keeps the printed medians: Mann-Whitney p = 0.394.
    """
    toci = np.array([1] * 3 + [2] * 8 + [3] * 6, dtype=float)
    non = np.array([1] * 4 + [2] * 10 + [3] * 14, dtype=float)
    rng.shuffle(toci)
    rng.shuffle(non)
    return [toci, non]


# ---- CRS durations -------------------------------------------------------------------------


def _solve_durations(
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Durations (days, 0.1 grid) and their grades, toci then non-toci with CRS.

    Targets: toci 6.1 (2-14), n = 17 (grades 2:8, 3:9); non-toci 5.5 (0-12), n = 24
    (grades 1:7, 2:11, 3:6); grade 3 shorter with tocilizumab (Mann-Whitney p < 0.05)
    and grade 1-2 not different (p > 0.05) (Figure 2B). The 0-day patient is grade 1
    (a single febrile reading).
    """
    toci_slots = group_slots(17, 6.1, 2.0, 14.0)
    non_slots = group_slots(24, 5.5, 0.0, 12.0, pair_offset=0.1)
    toci_grades = np.array([2] * 8 + [3] * 9)
    non_grades = np.array([1] * 7 + [2] * 11 + [3] * 6)
    rng.shuffle(toci_grades)
    rng.shuffle(non_grades)
    # Slot 0 holds the 0-day minimum: make it a grade-1 patient (swap, keeping counts).
    first_g1 = int(np.flatnonzero(non_grades == 1)[0])
    non_grades[0], non_grades[first_g1] = non_grades[first_g1], non_grades[0]
    state: dict[str, np.ndarray] = {"tg": toci_grades, "ng": non_grades}

    def objective(values: list[np.ndarray]) -> float:
        toci, non = values
        tg, ng = state["tg"], state["ng"]
        # One-sided so that the climber is pushed towards "shorter with tocilizumab".
        p3 = float(stats.mannwhitneyu(toci[tg == 3], non[ng == 3], alternative="less").pvalue)
        p12 = mann_whitney_p(toci[tg == 2], non[ng <= 2])
        score = max(0.0, p3 - 0.015) + max(0.0, 0.2 - p12)
        score += 0.05 * float(np.clip(non[ng == 1] - 4.0, 0, None).sum())  # grade 1 is short
        score += float(ng[0] != 1)
        return score

    values = [
        np.array([s.lo if s.fixed else round(rng.uniform(s.lo, s.hi), 1) for s in slots])
        for slots in (toci_slots, non_slots)
    ]
    free = [
        (g, i)
        for g, slots in enumerate((toci_slots, non_slots))
        for i, s in enumerate(slots)
        if not s.fixed
    ]
    best = objective(values)
    for _ in range(60_000):
        if best <= 0.0:
            break
        if rng.random() < 0.5:
            # Move a value within its slot (keeps medians and ranges as printed).
            g, i = free[int(rng.integers(len(free)))]
            slot = (toci_slots, non_slots)[g][i]
            old_value = values[g][i]
            values[g][i] = round(rng.uniform(slot.lo, slot.hi), 1)
            score = objective(values)
            if score <= best:
                best = score
            else:
                values[g][i] = old_value
        else:
            # Swap the grades of two patients of one group (slot 0 of non-toci stays grade 1).
            key = "tg" if rng.random() < 0.5 else "ng"
            labels = state[key]
            lo = 1 if key == "ng" else 0
            i, j = (int(x) for x in rng.integers(lo, len(labels), size=2))
            labels[i], labels[j] = labels[j], labels[i]
            score = objective(values)
            if score <= best:
                best = score
            else:
                labels[i], labels[j] = labels[j], labels[i]
    if best > 0.0:
        raise RuntimeError(
            f"CRS duration calibration did not converge ({best:.3f}): {values} {state}"
        )
    best_values = values
    return best_values[0], state["tg"], best_values[1], state["ng"]


# ---- survival ------------------------------------------------------------------------------


def _solve_survival(
    rng: np.random.Generator, in_toci: np.ndarray, followup_cap: np.ndarray, poor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OS/PFS days and events for the analysed patients: log-rank p 0.273 (OS), 0.350 (PFS).

    Death and progression times are exponential draws (worse for MRD+/PR), censored at
    the data cut; the climber re-draws one patient at a time until both p-values match.
    """
    n = len(in_toci)
    lost = rng.random(n) < 0.12
    censor = np.where(
        lost, np.maximum(60, (rng.random(n) * followup_cap).astype(int)), followup_cap
    )

    def draw(i: int) -> tuple[float, float]:
        death = 28 + rng.exponential(1500 if not poor[i] else 500)
        prog = 20 + rng.exponential(1100 if not poor[i] else 250)
        return death, prog

    death = np.zeros(n)
    prog = np.zeros(n)
    for i in range(n):
        death[i], prog[i] = draw(i)

    def outcome() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        os_days = np.minimum(np.round(death), censor)
        os_event = np.round(death) <= censor
        pfs_days = np.minimum(np.minimum(np.round(prog), os_days), censor)
        pfs_event = (np.round(prog) <= os_days) & (np.round(prog) <= censor) | os_event
        pfs_days = np.where(os_event & (np.round(prog) > os_days), os_days, pfs_days)
        return os_days, os_event, pfs_days, pfs_event

    def score() -> float:
        os_d, os_e, pfs_d, pfs_e = outcome()
        return abs(logrank_p(os_d, os_e, in_toci) - 0.273) + abs(
            logrank_p(pfs_d, pfs_e, in_toci) - 0.350
        )

    best = score()
    for _ in range(20_000):
        if best < 0.004:
            return outcome()
        i = int(rng.integers(n))
        old = death[i], prog[i]
        death[i], prog[i] = draw(i)
        new = score()
        if new <= best:
            best = new
        else:
            death[i], prog[i] = old
    raise RuntimeError(f"survival calibration did not converge ({best:.4f})")


def _solve_gcsf(rng: np.random.Generator, daily: np.ndarray, in_toci: np.ndarray) -> np.ndarray:
    """Days of G-CSF (days 0-28) so that total µg differs by group with p = 0.227 (Fig. 2D)."""
    slots = [Slot(0, 14)] * len(daily)

    def objective(values: list[np.ndarray]) -> float:
        total = values[0] * daily
        return abs(mann_whitney_p(total[in_toci], total[~in_toci]) - 0.227)

    return hill_climb(rng, [slots], objective, step=1, tol=0.003)[0].astype(int)


# ---- tocilizumab and steroids --------------------------------------------------------------


def _toci_courses(rng: np.random.Generator, durations_days: np.ndarray) -> list[list[int]]:
    """Per toci patient: doses in mg. Cumulative 480 (160-800) mg, 1-6 doses (Results 3.2).

    Doses are multiples of 40 mg (vials of 80/200/400 mg), at least 80 mg each; more
    doses go to longer episodes so that repeat doses 8 h apart fit inside the episode.
    """
    cumulative = hill_climb(rng, [group_slots(17, 480, 160, 800)], lambda v: 0.0, step=40, tol=0.0)[
        0
    ].astype(int)
    counts = np.array([1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 5, 6])
    # Pair counts with cumulative doses: many doses need a large cumulative and a long episode.
    order_need = np.argsort(cumulative + 40 * durations_days + rng.random(17))
    counts_sorted = np.sort(counts)
    courses: list[list[int]] = [[] for _ in range(17)]
    for rank, patient in enumerate(order_need):
        k = int(counts_sorted[rank])
        total = int(cumulative[patient])
        k = max(1, min(k, total // 80))
        base = (total // k) // 40 * 40
        doses = [base] * k
        remainder = total - base * k
        j = 0
        while remainder > 0:
            doses[j % k] += 40
            remainder -= 40
            j += 1
        courses[patient] = sorted(doses, reverse=True)
    return courses


# ---- the cohort ----------------------------------------------------------------------------


def _infusion_dates(rng: np.random.Generator, n: int) -> list[date]:
    span = (ENROL_END - ENROL_START).days
    return sorted(ENROL_START + timedelta(days=int(d)) for d in rng.integers(0, span, size=n))


def _weight_for_age(rng: np.random.Generator, age: int, sex: str) -> float:
    if age < 18:
        base = 8.0 + 2.9 * age if age < 14 else 45 + 2.5 * (age - 14)
    else:
        base = 66.0 if sex == "M" else 56.0
    return round(float(base * rng.uniform(0.85, 1.2)), 1)


def build_reference_cohort(seed: int) -> list[PatientPlan]:
    """The 61 screened patients, calibrated so the truth reproduces the paper.

    Flow (Results 3.1): 61 screened -> 1 progressed before infusion -> 60 infused ->
    4 follow-up < 28 days, 11 data lost -> 45 analysed (17 tocilizumab, 28 not).
    """
    rng = np.random.default_rng([seed, 1])
    cont = _solve_table2_continuous(rng)
    lines = _lines_of_therapy(rng)
    dur_toci, grade_toci, dur_non_crs, grade_non_crs = _solve_durations(rng)

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
                    weight_kg=_weight_for_age(rng, age, sex),
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
    _assign_followup(rng, cohort)
    return cohort


def _assign_treatment(
    rng: np.random.Generator,
    toci_pts: list[PatientPlan],
    non_pts: list[PatientPlan],
    steroid: list[np.ndarray],
) -> None:
    """Tocilizumab courses, steroid totals, ICANS, IL-6 response and G-CSF."""
    durations = np.array([p.crs_duration_min / 1440 for p in toci_pts])  # type: ignore[operator]
    for plan, course in zip(toci_pts, _toci_courses(rng, durations), strict=True):
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
    for plan, days in zip(everyone, _solve_gcsf(rng, daily, in_toci), strict=True):
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
        weight_kg=_weight_for_age(rng, age, sex),
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


def _assign_followup(rng: np.random.Generator, cohort: list[PatientPlan]) -> None:
    """OS/PFS for everyone infused; the analysed 45 are calibrated to the log-rank p-values."""
    analysed = [p for p in cohort if p.is_included]
    cap = np.array([(DATA_CUT - p.infusion_date).days for p in analysed])  # type: ignore[operator]
    poor = np.array([p.response in ("mrd_pos_cr", "pr", "nr") for p in analysed])
    in_toci = np.array([p.is_toci for p in analysed])
    os_d, os_e, pfs_d, pfs_e = _solve_survival(rng, in_toci, cap, poor)
    for plan, a, b, c, d in zip(analysed, os_d, os_e, pfs_d, pfs_e, strict=True):
        _set_outcome(rng, plan, int(a), bool(b), int(c), bool(d))
    for plan in cohort:
        if plan.is_included:
            continue
        _draw_outcome(rng, plan)


def _set_outcome(
    rng: np.random.Generator,
    plan: PatientPlan,
    os_days: int,
    os_event: bool,
    pfs_days: int,
    pfs_event: bool,
) -> None:
    plan.os_days, plan.os_event, plan.pfs_days, plan.pfs_event = (
        os_days,
        os_event,
        pfs_days,
        pfs_event,
    )
    if os_event:
        progressed = pfs_event and pfs_days < os_days
        if progressed:
            plan.death_cause = "disease progression"
        elif plan.serious_infection:
            plan.death_cause = "respiratory failure due to severe pneumonia"
        else:
            plan.death_cause = str(
                rng.choice(["disease progression", "cerebral hemorrhage", "sepsis"])
            )
        if plan.death_cause == "disease progression" and not progressed:
            # Death from progression implies a documented progression before it.
            plan.pfs_days = max(1, os_days - int(rng.integers(10, 40)))
            plan.pfs_event = True


def _draw_outcome(rng: np.random.Generator, plan: PatientPlan) -> None:
    """Outcomes for patients outside the analysis (and registry patients)."""
    if not plan.is_infused:
        return
    assert plan.infusion_date is not None
    cap = (DATA_CUT - plan.infusion_date).days
    if plan.exclusion == FOLLOWUP_LT_28D:
        end_of_crs = (plan.crs_onset_h or 0) / 24 + (plan.crs_duration_min or 0) / 1440
        days = int(min(27, max(8, np.ceil(end_of_crs) + rng.integers(3, 10))))
        died = bool(rng.random() < 0.5)
        plan.os_days, plan.os_event = days, died
        plan.pfs_days, plan.pfs_event = days, died
        plan.death_cause = "sepsis" if died else None
        return
    death = 28 + rng.exponential(1200)
    prog = 20 + rng.exponential(900)
    os_days = int(min(round(death), cap))
    os_event = round(death) <= cap
    pfs_days = int(min(round(prog), os_days))
    pfs_event = round(prog) <= os_days or os_event
    _set_outcome(rng, plan, max(os_days, 28), os_event, max(pfs_days, 1), pfs_event)
