"""Draws the laboratory results of a simulated course: screening labs, cytokines, counts.

Cytokines, CRP and ferritin every 2 days (daily during CRS) follow the plan's IL-6 peak;
blood counts twice weekly with a nadir on days 3-14; IL-6 just before and after the
first tocilizumab dose falls or rises as the plan says (Results 3.3).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from cart_etl.synth.calibrate.plan import PatientPlan
from cart_etl.synth.course.clock import DAY, HOUR, MIN, wall_time
from cart_etl.synth.course.episode import Episode
from cart_etl.synth.model import (
    ClinicalRecord,
    Demographics,
    LabResult,
)


def screening_labs(
    plan: PatientPlan, demo: Demographics, rng: np.random.Generator
) -> list[LabResult]:
    at = wall_time(demo.screening_date, 8, int(rng.integers(0, 50)))
    return [
        LabResult(at, "marrow_blasts", plan.marrow_blasts_pct, key=True),
        LabResult(at, "wbc", round(float(rng.uniform(1.5, 12)), 2)),
        LabResult(at, "anc", round(float(rng.uniform(0.5, 4)), 2)),
        LabResult(at, "plt", float(round(rng.uniform(20, 220)))),
        LabResult(at, "hgb", float(round(rng.uniform(70, 130)))),
    ]


def _il6_peak(grade: int, rng: np.random.Generator) -> float:
    return float(
        {0: rng.uniform(5, 20), 1: rng.uniform(40, 250), 2: rng.uniform(150, 1500)}.get(
            grade, rng.uniform(800, 8000)
        )
    )


def add_labs(
    record: ClinicalRecord,
    plan: PatientPlan,
    ep: Episode,
    infusion_at: datetime,
    onset_at: datetime,
    last: datetime,
    rng: np.random.Generator,
) -> None:
    """Cytokines, CRP, ferritin every 2 days (daily in CRS), blood counts twice weekly."""
    grade = plan.crs_grade or 0
    end_min = int(plan.crs_duration_min or 0)
    peak = _il6_peak(grade, rng)
    first_toci = onset_at + ep.toci[0][0] * MIN if ep.toci else None
    days = [*list(range(-2, 15, 2)), 21, 28]
    if grade:
        onset_day = (onset_at.date() - infusion_at.date()).days
        days += list(range(onset_day, onset_day + int(end_min / 1440) + 2))
    stop = max(last, infusion_at + 28 * DAY)
    for d in sorted(set(days)):
        at = wall_time(infusion_at.date() + timedelta(days=d), 6, int(rng.integers(0, 50)))
        if at > stop:
            continue
        if first_toci is not None and first_toci - 6 * HOUR < at < first_toci + 30 * HOUR:
            continue  # the pre/post tocilizumab samples below stand for this window
        rel = (at - onset_at) / DAY
        level = _cytokine_level(peak, rel, end_min / 1440, grade)
        record.labs.extend(_cytokine_panel(at, level, plan, rng))
        if d % 3 == 0 or d in (21, 28):
            record.labs.extend(_blood_counts(at, d, rng))
    if first_toci is not None and plan.il6_falls is not None:
        pre = round(peak * rng.uniform(0.6, 1.0), 1)
        post = round(pre * (rng.uniform(0.15, 0.7) if plan.il6_falls else rng.uniform(1.3, 4.0)), 1)
        pre_at, post_at = first_toci - 1 * HOUR, first_toci + 26 * HOUR
        record.labs.append(LabResult(pre_at, "il6", pre, key=True))
        record.labs.extend(x for x in _cytokine_panel(pre_at, pre, plan, rng) if x.test != "il6")
        record.labs.append(LabResult(post_at, "il6", post, key=True))
        record.labs.extend(
            x for x in _cytokine_panel(post_at, pre * 0.6, plan, rng) if x.test != "il6"
        )
    record.labs.sort(key=lambda x: x.at)


def _cytokine_level(peak: float, rel_days: float, duration_days: float, grade: int) -> float:
    if grade == 0 or rel_days < -0.5:
        return peak * 0.3 if grade == 0 else 4.0 + peak * 0.01
    if rel_days <= duration_days:
        return peak * (0.5 + 0.5 * np.exp(-abs(rel_days - 1)))
    return max(3.0, peak * np.exp(-(rel_days - duration_days)))


def _cytokine_panel(
    at: datetime, il6: float, plan: PatientPlan, rng: np.random.Generator
) -> list[LabResult]:
    level = max(1.5, il6)
    labs = [
        LabResult(at, "il6", round(level * rng.uniform(0.9, 1.1), 1)),
        LabResult(at, "il10", round(max(1.0, level * rng.uniform(0.05, 0.2)), 1)),
        LabResult(at, "sil2r", float(round(max(400, 800 + level * rng.uniform(2, 6))))),
        LabResult(at, "tnf_alpha", round(max(2.0, 4 + level * rng.uniform(0.005, 0.02)), 1)),
        LabResult(at, "crp", round(min(300.0, 2 + level * rng.uniform(0.05, 0.15)), 1)),
        LabResult(at, "ferritin", float(round(300 + level * rng.uniform(2, 8)))),
    ]
    if plan.index % 4 == 0:  # IFN-γ only in some patients (Figure 3 legend)
        labs.append(LabResult(at, "ifn_gamma", round(max(1.0, level * rng.uniform(0.02, 0.1)), 1)))
    return labs


def _blood_counts(at: datetime, day: int, rng: np.random.Generator) -> list[LabResult]:
    nadir = 0.2 if 3 <= day <= 14 else 1.0
    wbc = round(float(rng.uniform(0.4, 6.0) * nadir + 0.3), 2)
    return [
        LabResult(at, "wbc", wbc),
        LabResult(at, "anc", round(wbc * float(rng.uniform(0.3, 0.7)), 2)),
        LabResult(at, "plt", float(round(rng.uniform(15, 180) * (0.5 if 3 <= day <= 14 else 1)))),
        LabResult(at, "hgb", float(round(rng.uniform(65, 125)))),
    ]
