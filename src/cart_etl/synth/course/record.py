"""Turn a patient plan into its clinical record: the entry point of the course simulator.

The plan says *what* a correct pipeline must derive (grade, onset, duration, doses);
``simulate`` writes the register entry, infusion, vital signs, oxygen chartings,
vasopressor infusions, drug administrations, labs and assessments that *produce* it under
the conventions in the README (onset = first fever >= 38.0 °C after the infusion,
duration = first fever to last CRS sign). Nothing here copies a derived value into the
records.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import numpy as np

from cart_etl.synth.calibrate.plan import FOLLOWUP_LT_28D, PatientPlan
from cart_etl.synth.course.assessments import add_assessments
from cart_etl.synth.course.clock import DAY, wall_time
from cart_etl.synth.course.drugs import add_drugs
from cart_etl.synth.course.episode import build_episode
from cart_etl.synth.course.flowsheet import chart
from cart_etl.synth.course.labs import add_labs, screening_labs
from cart_etl.synth.model import (
    SITE_TZ,
    ClinicalRecord,
    Demographics,
    FollowUp,
    Infusion,
)

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍鹏辉建国志宇欣怡晨浩然子涵佳琪梓轩"

HIGH_RISK_GENETICS = (
    "BCR-ABL1 (Ph+)",
    "KMT2A重排",
    "TP53突变",
    "复杂核型",
    "Ph样 (CRLF2重排)",
    "IKZF1缺失",
    "低二倍体",
)
STANDARD_GENETICS = ("无高危遗传学异常", "ETV6-RUNX1", "高超二倍体")


def simulate(plan: PatientPlan, seed: int) -> ClinicalRecord:
    """The full clinical record of one planned patient (deterministic for seed + index)."""
    rng = np.random.default_rng([seed, 2, plan.index])
    demo = _demographics(plan, rng)
    follow = _follow_up(plan, rng)
    record = ClinicalRecord(demographics=demo, infusion=None, follow_up=follow)
    record.labs.extend(screening_labs(plan, demo, rng))
    if not plan.is_infused or plan.infusion_date is None:
        return record
    infusion_at = wall_time(plan.infusion_date, int(rng.integers(9, 15)), int(rng.integers(0, 60)))
    record.infusion = Infusion(
        at=infusion_at,
        product="CD19 CAR-T (4-1BB)",
        lot=f"CT{plan.infusion_date:%y%m%d}-{int(rng.integers(10, 99))}",
        cells_total=round(plan.cart_dose_1e6_per_kg * plan.weight_kg, 2) * 1e6,
        dose_1e6_per_kg=plan.cart_dose_1e6_per_kg,
        weight_kg=plan.weight_kg,
        donor_derived=bool(plan.prior_allo_sct and rng.random() < 0.5),
    )
    episode = build_episode(plan, rng)
    onset_at = infusion_at + timedelta(minutes=round((plan.crs_onset_h or 0) * 60))
    last_day = _last_monitored(plan, infusion_at, follow)
    if plan.has_monitoring:
        chart(record, plan, episode, infusion_at, onset_at, last_day, rng)
    add_drugs(record, plan, episode, infusion_at, onset_at, rng)
    add_labs(record, plan, episode, infusion_at, onset_at, last_day, rng)
    add_assessments(record, plan, infusion_at, onset_at, rng)
    return record


def _demographics(plan: PatientPlan, rng: np.random.Generator) -> Demographics:
    anchor = plan.planned_date or plan.infusion_date or date(2022, 1, 1)
    birth = anchor - timedelta(days=int(365.25 * plan.age_years + rng.integers(5, 360)))
    if (anchor.year - birth.year) - (
        (anchor.month, anchor.day) < (birth.month, birth.day)
    ) != plan.age_years:
        birth = date(anchor.year - plan.age_years - 1, anchor.month, 1) + timedelta(days=40)
    genetics = rng.choice(HIGH_RISK_GENETICS if plan.is_high_risk else STANDARD_GENETICS)
    height = (
        100 + 4.5 * plan.age_years if plan.age_years < 16 else (172 if plan.sex == "M" else 160)
    )
    name = SURNAMES[int(rng.integers(len(SURNAMES)))] + "".join(
        GIVEN[int(i)] for i in rng.integers(0, len(GIVEN), size=int(rng.integers(1, 3)))
    )
    return Demographics(
        study_id=plan.study_id,
        mrn=f"{anchor.year}{int(rng.integers(100000, 999999)):06d}",
        name=name,
        sex="M" if plan.sex == "M" else "F",
        birth_date=birth,
        diagnosis_date=anchor - timedelta(days=int(rng.integers(200, 1800))),
        screening_date=anchor - timedelta(days=int(rng.integers(14, 30))),
        height_cm=round(float(height * rng.uniform(0.96, 1.04)), 1),
        weight_kg=plan.weight_kg,
        is_high_risk=plan.is_high_risk,
        risk_genetics=str(genetics),
        lines_of_therapy=plan.lines_of_therapy,
        prior_allo_sct=plan.prior_allo_sct,
        marrow_blasts_pct=plan.marrow_blasts_pct,
    )


def _follow_up(plan: PatientPlan, rng: np.random.Generator) -> FollowUp:
    if plan.infusion_date is None:
        anchor = plan.planned_date or date(2022, 1, 1)
        progressed = anchor + timedelta(days=int(rng.integers(3, 12)))
        died = progressed + timedelta(days=int(rng.integers(30, 120)))
        return FollowUp(died, progressed, died, "disease progression")
    day0 = plan.infusion_date
    end = day0 + timedelta(days=int(plan.os_days or 0))
    death: date | None = end if plan.os_event else None
    progression: date | None = None
    progressed_first = (plan.pfs_days or 0) < (plan.os_days or 0)
    if plan.pfs_event and (progressed_first or not plan.os_event):
        progression = day0 + timedelta(days=int(plan.pfs_days or 0))
    return FollowUp(end, progression, death, plan.death_cause if death else None)


def _last_monitored(plan: PatientPlan, infusion_at: datetime, follow: FollowUp) -> datetime:
    """Charting runs to day 28, or to discharge/death when follow-up ends earlier."""
    stop = infusion_at + 28 * DAY
    last = datetime.combine(follow.last_contact_date, time(8, 0), tzinfo=SITE_TZ)
    if plan.exclusion == FOLLOWUP_LT_28D or last < stop:
        stop = min(stop, last)
    return stop
