"""Charts the nursing flowsheet of a simulated course: vital signs, oxygen and vasopressors.

Routine rounds every 4 h from admission (day -3), every 2 h around CRS, and a charting at
every boundary of a CRS sign, so each sign the grading needs is visible; temperatures
follow the fever intervals (and a late infection fever), blood pressure the hypotension
and vasopressor intervals, SpO2 the oxygen intervals.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from cart_etl.synth.calibrate.plan import PatientPlan
from cart_etl.synth.course.clock import DAY, HOUR, MIN, wall_time
from cart_etl.synth.course.episode import Episode
from cart_etl.synth.model import (
    ClinicalRecord,
    OxygenCharting,
    VasopressorInfusion,
    VitalSign,
)


def _mask(minutes: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    """True where a minute lies in any closed interval."""
    out = np.zeros(len(minutes), dtype=bool)
    for start, stop in intervals:
        out |= (minutes >= start) & (minutes <= stop)
    return out


def chart(
    record: ClinicalRecord,
    plan: PatientPlan,
    ep: Episode,
    infusion_at: datetime,
    onset_at: datetime,
    last: datetime,
    rng: np.random.Generator,
) -> None:
    """Nursing flowsheet: q4h routine, q2h during CRS, every boundary of a sign charted."""
    admission = (infusion_at - 3 * DAY).date()
    n_days = (last.date() - admission).days + 1
    jitter = rng.integers(0, 25, size=(n_days, 6))
    times: set[datetime] = {
        wall_time(admission + timedelta(days=d), hh, int(jitter[d, k]))
        for d in range(n_days)
        for k, hh in enumerate((2, 6, 10, 14, 18, 22))
    }
    grade = plan.crs_grade or 0
    end = int(plan.crs_duration_min or 0)
    if grade:
        t = onset_at - 4 * HOUR
        while t <= onset_at + (end + 24 * 60) * MIN:
            times.add(t)
            t += 2 * HOUR
        times.update(onset_at + m * MIN for m in ep.chart_minutes())
    if plan.pre_infusion_fever:
        times.add(infusion_at - 2 * HOUR)  # lymphodepletion fever, charted before the infusion
    chart = sorted(t for t in times if t <= last)
    n = len(chart)
    # Minutes from onset (None-equivalent: a huge negative number when there is no CRS).
    minute = np.array([int((t - onset_at) / MIN) for t in chart]) if grade else np.full(n, -(10**9))
    in_fever = _mask(minute, ep.fever)
    forced = np.isin(minute, list(ep.forced_fever)) if ep.forced_fever else np.zeros(n, dtype=bool)
    febrile = in_fever & (forced | (rng.random(n) < 0.8))
    if plan.pre_infusion_fever:
        febrile |= np.array([infusion_at - 3 * HOUR <= t < infusion_at for t in chart], dtype=bool)
    infection = _infection_fever_window(record, plan, infusion_at, onset_at, end)
    if infection:
        febrile |= np.array([infection[0] <= t <= infection[1] for t in chart], dtype=bool)
    temp = np.where(febrile, rng.uniform(38.1, 39.9, n), rng.uniform(36.2, 37.6, n)).round(1)
    if grade == 0:
        near = (rng.random(n) < 0.01) & np.array([t > infusion_at for t in chart], dtype=bool)
        temp = np.where(near, 37.8, temp)  # near-threshold reading, not fever
    hypo = _mask(minute, ep.hypotension)
    on_vaso = _mask(minute, [(a, b) for a, b, *_ in ep.vasopressors])
    sbp = np.where(
        hypo,
        rng.uniform(76, 87, n),
        np.where(on_vaso, rng.uniform(92, 108, n), rng.uniform(100, 132, n)),
    ).round()
    dbp = (sbp * rng.uniform(0.55, 0.68, n)).round()
    hr = np.where(febrile, rng.uniform(105, 135, n), rng.uniform(68, 98, n)).round()
    device_idx = np.full(n, -1)
    for i, (a, b, _dev, _flow) in enumerate(ep.oxygen):
        device_idx = np.where((minute >= a) & (minute <= b), i, device_idx)
    spo2 = np.where(device_idx >= 0, rng.uniform(91, 96, n), rng.uniform(96, 99.5, n)).round()
    key = (minute >= -240) & (minute <= end + 24 * 60)
    o2_on = False
    vitals = record.vitals
    for i, t in enumerate(chart):
        k = bool(key[i])
        vitals.append(VitalSign(t, "temp", float(temp[i]), key=k or bool(febrile[i])))
        vitals.append(VitalSign(t, "sbp", float(sbp[i]), key=k or bool(hypo[i])))
        vitals.append(VitalSign(t, "dbp", float(dbp[i])))
        vitals.append(VitalSign(t, "hr", float(hr[i])))
        vitals.append(VitalSign(t, "spo2", float(spo2[i])))
        if device_idx[i] >= 0:
            _a, _b, dev, flow = ep.oxygen[int(device_idx[i])]
            record.oxygen.append(OxygenCharting(t, dev, flow, key=True))
            o2_on = True
        elif o2_on:
            record.oxygen.append(OxygenCharting(t, "room_air", None, key=True))
            o2_on = False
    for s, e, drug, rate, unit in ep.vasopressors:
        record.vasopressors.append(
            VasopressorInfusion(onset_at + s * MIN, onset_at + e * MIN, drug, rate, unit, key=True)  # type: ignore[arg-type]
        )


def _infection_fever_window(
    record: ClinicalRecord, plan: PatientPlan, infusion_at: datetime, onset_at: datetime, end: int
) -> tuple[datetime, datetime] | None:
    """Fever from a serious infection after day 15, >= 72 h after CRS ended (not CRS)."""
    if not plan.serious_infection:
        return None
    crs_end = onset_at + end * MIN if plan.crs_grade else infusion_at
    start = max(infusion_at + 16 * DAY, crs_end + 80 * HOUR)
    if start > infusion_at + 26 * DAY:
        return None
    return start, start + 30 * HOUR
