"""Records the assessments of a simulated course: ICANS, the CRS grade, response, infections.

Daily ICE score and ICANS grade to day 14, the physician's CRS grade (which may disagree
with the signals), the day-28 marrow response with MRD, and the infections (serious ones
at the plan's rate, grade 5 pneumonia when the patient died of it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from cart_etl.synth.calibrate.plan import PatientPlan
from cart_etl.synth.course.clock import DAY, HOUR, wall_time
from cart_etl.synth.model import (
    ClinicalRecord,
    IcansAssessment,
    Infection,
    RecordedCrsGrade,
    ResponseAssessment,
)

INFECTIONS = (
    ("lung", "Klebsiella pneumoniae"),
    ("bloodstream", "Escherichia coli"),
    ("lung", "Aspergillus fumigatus"),
    ("gallbladder", "Enterococcus faecium"),
    ("intestine", "Clostridioides difficile"),
    ("lung", "cytomegalovirus"),
)


def _icans_pattern(grade: int, days: int) -> list[int]:
    """Daily ICANS grades: rise to the peak (reached even when the course is short), then ease."""
    if not grade or not days:
        return []
    peak = min(days - 1, grade - 1)
    return [max(1, grade - abs(peak - i)) for i in range(days)]


def add_assessments(
    record: ClinicalRecord,
    plan: PatientPlan,
    infusion_at: datetime,
    onset_at: datetime,
    rng: np.random.Generator,
) -> None:
    """ICE/ICANS, the physician's CRS grade, day-28 response and infections."""
    day0 = infusion_at.date()
    if plan.has_monitoring:
        onset_day = (onset_at.date() - day0).days if plan.crs_grade else 3
        icans_start = onset_day + 2
        pattern = _icans_pattern(plan.icans_grade, plan.icans_days)
        ice_for = {0: 10, 1: 8, 2: 5, 3: 2, 4: 0}
        n_days = min(14, max(0, (record.follow_up.last_contact_date - day0).days - 1))
        for d in range(1, max(n_days, icans_start + len(pattern)) + 1):
            k = d - icans_start
            grade = pattern[k] if 0 <= k < len(pattern) else 0
            record.icans.append(
                IcansAssessment(wall_time(day0 + timedelta(days=d), 8, 0), ice_for[grade], grade)
            )
        if plan.recorded_grade is not None:
            when = onset_at + 36 * HOUR if plan.crs_grade else infusion_at + 14 * DAY
            record.recorded_crs = RecordedCrsGrade(when, plan.recorded_grade)
    if plan.response is not None:
        at = wall_time(day0 + timedelta(days=int(rng.integers(26, 31))), 9, 30)
        morphology, blasts, mrd = {
            "mrd_neg_cr": (
                "CR" if rng.random() < 0.75 else "CRi",
                round(float(rng.uniform(0, 3)), 1),
                0.0,
            ),
            "mrd_pos_cr": (
                "CR" if rng.random() < 0.6 else "CRi",
                round(float(rng.uniform(0.5, 4.5)), 1),
                round(float(rng.uniform(0.02, 2.5)), 2),
            ),
            "pr": ("PR", round(float(rng.uniform(6, 24)), 1), round(float(rng.uniform(3, 20)), 2)),
            "nr": (
                "NR",
                round(float(rng.uniform(30, 80)), 1),
                round(float(rng.uniform(20, 70)), 2),
            ),
        }[plan.response]
        record.response = ResponseAssessment(at, morphology, blasts, mrd)  # type: ignore[arg-type]
    if plan.serious_infection:
        site, organism = INFECTIONS[int(rng.integers(len(INFECTIONS)))]
        onset = day0 + timedelta(days=int(rng.integers(16, 24)))
        grade = 3
        if plan.death_cause and "pneumonia" in plan.death_cause and record.follow_up.death_date:
            site, organism, grade = "lung", "Klebsiella pneumoniae", 5
            onset = max(day0 + timedelta(days=1), record.follow_up.death_date - timedelta(days=10))
        record.infections.append(Infection(onset, site, organism, grade))
    elif rng.random() < 0.3:
        record.infections.append(
            Infection(
                day0 + timedelta(days=int(rng.integers(5, 60))),
                "upper respiratory tract",
                "rhinovirus",
                2,
            )
        )
