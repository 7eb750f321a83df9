"""Turn a patient plan into charted signals, doses and assessments (the raw clinical course).

The plan says *what* a correct pipeline must derive (grade, onset, duration, doses);
this module writes the vital signs, oxygen chartings, vasopressor infusions, drug
administrations, labs and assessments that *produce* it under the conventions in the
README (ASTCT 2019 grading with fever masking, onset = first fever >= 38.0 °C after
the infusion, duration = first fever to last CRS sign, signs < 48 h apart chained
into one episode). Nothing here copies a derived value into the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np

from cart_etl.synth.calibrate import FOLLOWUP_LT_28D, PatientPlan
from cart_etl.synth.model import (
    SITE_TZ,
    ClinicalRecord,
    Demographics,
    DrugAdministration,
    FollowUp,
    IcansAssessment,
    Infection,
    Infusion,
    LabResult,
    OxygenCharting,
    OxygenDevice,
    RecordedCrsGrade,
    ResponseAssessment,
    VasopressorInfusion,
    VitalSign,
)

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
DEX_TO_MP = 16 / 3  # 0.75 mg dexamethasone = 4 mg methylprednisolone (Meikle & Tyler 1977)

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
INFECTIONS = (
    ("lung", "Klebsiella pneumoniae"),
    ("bloodstream", "Escherichia coli"),
    ("lung", "Aspergillus fumigatus"),
    ("gallbladder", "Enterococcus faecium"),
    ("intestine", "Clostridioides difficile"),
    ("lung", "cytomegalovirus"),
)


@dataclass(slots=True)
class Episode:
    """The CRS signals of one patient, in minutes from onset (0 = first fever)."""

    fever: list[tuple[int, int]] = field(default_factory=list)
    forced_fever: set[int] = field(default_factory=set)
    hypotension: list[tuple[int, int]] = field(default_factory=list)
    oxygen: list[tuple[int, int, OxygenDevice, float | None]] = field(default_factory=list)
    vasopressors: list[tuple[int, int, str, float, str]] = field(default_factory=list)
    toci: list[tuple[int, int]] = field(default_factory=list)  # (minute, mg)
    steroids: list[tuple[int, str, float]] = field(default_factory=list)  # (minute, drug, mg)

    def chart_minutes(self) -> set[int]:
        """Minutes that must be charting times so every boundary is visible."""
        marks: set[int] = set(self.forced_fever)
        for s, e in self.fever + self.hypotension:
            marks.update((s, e))
        for s, e, *_ in self.oxygen:
            marks.update((s, e))
        for s, _e, *_ in self.vasopressors:
            marks.add(s)
        return marks


def _u(rng: np.random.Generator, lo: float, hi: float) -> int:
    return round(rng.uniform(lo, hi))


def _mp_split(rng: np.random.Generator, total: float) -> list[tuple[str, float]]:
    """Split a methylprednisolone-equivalent total into dexamethasone/MP doses that sum exactly."""
    doses: list[tuple[str, float]] = []
    remainder = round(total)
    if remainder >= 60 and rng.random() < 0.45:
        k = int(rng.integers(1, remainder // 40 + 1))
        if 0 < remainder - 40 * k < 10:
            k -= 1
        doses += [("dexamethasone", 7.5)] * k
        remainder -= 40 * k
    if remainder > 0:
        n = max(1, round(remainder / 40))
        base = remainder // n
        parts = [base] * n
        parts[0] += remainder - base * n
        doses += [("methylprednisolone", float(p)) for p in parts]
    return doses


def build_episode(plan: PatientPlan, rng: np.random.Generator) -> Episode:
    """Signals that yield the plan's grade, onset and duration (times from onset, minutes)."""
    ep = Episode()
    grade = plan.crs_grade or 0
    end = int(plan.crs_duration_min or 0)
    mech = plan.crs_mechanism
    if grade == 0:
        return ep
    if plan.crs_pattern == "single_reading" or end == 0:
        ep.fever.append((0, 0))
        ep.forced_fever.add(0)
        return ep

    drugs_first = _u(rng, 60, 600)  # tocilizumab/steroids mostly within 12 h of onset
    masked = plan.crs_pattern == "masked"
    biphasic = plan.crs_pattern == "biphasic"
    if grade == 1:
        ep.fever.append((0, end))
        ep.forced_fever.update((0, end))
    elif masked:
        fever_end = drugs_first + _u(rng, 120, 360)
        ep.fever.append((0, fever_end))
        ep.forced_fever.update((0, fever_end))
        start = fever_end + _u(rng, 180, 600)
        stop = min(end, start + max(360, _u(rng, 0.3 * (end - start), 0.7 * (end - start))))
        _support(ep, mech, start, stop, peak=None, rng=rng)
        _tail(ep, stop, end, rng)
    else:
        if biphasic:
            first_end = _u(rng, 12 * 60, 28 * 60)
            ep.fever.append((0, first_end))
            second = first_end + _u(rng, 20 * 60, 36 * 60)
            ep.fever.append((second, end))
            ep.forced_fever.update((0, first_end, second, end))
            window_end = first_end
        else:
            fever_end = end if rng.random() < 0.45 else max(360, _u(rng, 0.35 * end, 0.8 * end))
            fever_end = min(fever_end, end)
            ep.fever.append((0, fever_end))
            ep.forced_fever.update((0, fever_end))
            window_end = fever_end
        start = _u(rng, min(60, window_end // 3), max(61, window_end // 3))
        stop = min(end, start + max(240, _u(rng, 0.2 * (end - start), 0.6 * (end - start))))
        if biphasic:
            stop = min(stop, window_end)
        peak = min(start + 60, stop)
        ep.forced_fever.add(peak)
        _support(ep, mech, start, stop, peak=peak, rng=rng)
        if not biphasic and ep.fever[-1][1] < end:
            _tail(ep, stop, end, rng)
    _treatments(ep, plan, drugs_first, end, rng)
    return ep


def _support(
    ep: Episode, mech: str, start: int, stop: int, *, peak: int | None, rng: np.random.Generator
) -> None:
    """Hypotension / oxygen / vasopressor signs that set the maximum grade."""
    if mech == "hypotension":
        ep.hypotension.append((start, stop))
    elif mech == "low_flow_o2":
        ep.oxygen.append((start, stop, "nasal_cannula", float(rng.choice([2.0, 3.0, 4.0, 5.0]))))
    elif mech == "nasal_cannula_7l":
        # ASTCT: nasal cannula above 6 L/min is high flow (grade 3), whatever the device name.
        ep.oxygen.append((start, stop, "nasal_cannula", 7.0))
    elif mech == "high_flow_o2":
        ep.oxygen.append(
            (start, stop, "high_flow_nasal_cannula", float(rng.choice([30.0, 40.0, 50.0])))
        )
    elif mech == "face_mask":
        ep.oxygen.append((start, stop, "face_mask", float(rng.choice([6.0, 8.0, 10.0]))))
    elif mech == "bipap":
        ep.oxygen.append((start, stop, "bipap", None))
    elif mech in ("norepinephrine", "ne_plus_vasopressin", "two_vasopressors"):
        ep.hypotension.append((start, start))
        ep.vasopressors.append(
            (start, stop, "norepinephrine", round(float(rng.uniform(0.05, 0.3)), 2), "ug/kg/min")
        )
        inner_start, inner_stop = start + 30, max(start + 31, stop - 30)
        if peak is not None:
            inner_start = min(inner_start, peak)
        if mech == "ne_plus_vasopressin":
            # Vasopressin added to one catecholamine stays grade 3 (ASTCT footnote).
            ep.vasopressors.append((inner_start, inner_stop, "vasopressin", 0.03, "U/min"))
        elif mech == "two_vasopressors":
            ep.vasopressors.append((inner_start, inner_stop, "dopamine", 5.0, "ug/kg/min"))


def _tail(ep: Episode, after: int, end: int, rng: np.random.Generator) -> None:
    """Low-flow oxygen from the end of the grading sign to the last sign at ``end``."""
    if end <= after:
        return
    start = min(end, after + _u(rng, 30, 120))
    ep.oxygen.append((start, end, "nasal_cannula", float(rng.choice([1.0, 2.0, 3.0]))))


def _treatments(
    ep: Episode, plan: PatientPlan, first: int, end: int, rng: np.random.Generator
) -> None:
    """Tocilizumab doses (>= 8 h apart) and steroid doses inside the episode."""
    t = first
    for mg in plan.toci_mg:
        ep.toci.append((t, mg))
        t += _u(rng, 8 * 60, 14 * 60)
    steroid_start: int = first if not plan.toci_mg else first + _u(rng, 120, 720)
    steroid_start = min(steroid_start, max(first, end - 60))
    doses = _mp_split(rng, plan.steroid_mp_mg)
    t = steroid_start
    for drug, dose in doses:
        ep.steroids.append((t, drug, dose))
        t += _u(rng, 6 * 60, 12 * 60)


# ---- charting --------------------------------------------------------------------------------


def _at(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=SITE_TZ)


def _mask(minutes: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    """True where a minute lies in any closed interval."""
    out = np.zeros(len(minutes), dtype=bool)
    for start, stop in intervals:
        out |= (minutes >= start) & (minutes <= stop)
    return out


def simulate(plan: PatientPlan, seed: int) -> ClinicalRecord:
    """The full clinical record of one planned patient (deterministic for seed + index)."""
    rng = np.random.default_rng([seed, 2, plan.index])
    demo = _demographics(plan, rng)
    follow = _follow_up(plan, rng)
    record = ClinicalRecord(demographics=demo, infusion=None, follow_up=follow)
    record.labs.extend(_screening_labs(plan, demo, rng))
    if not plan.is_infused or plan.infusion_date is None:
        return record
    infusion_at = _at(plan.infusion_date, int(rng.integers(9, 15)), int(rng.integers(0, 60)))
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
        _chart(record, plan, episode, infusion_at, onset_at, last_day, rng)
    _drugs(record, plan, episode, infusion_at, onset_at, rng)
    _labs(record, plan, episode, infusion_at, onset_at, last_day, rng)
    _assessments(record, plan, infusion_at, onset_at, rng)
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


def _chart(
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
        _at(admission + timedelta(days=d), hh, int(jitter[d, k]))
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


def _drugs(
    record: ClinicalRecord,
    plan: PatientPlan,
    ep: Episode,
    infusion_at: datetime,
    onset_at: datetime,
    rng: np.random.Generator,
) -> None:
    for minute, mg in ep.toci:
        record.drugs.append(
            DrugAdministration(
                onset_at + minute * MIN, "tocilizumab", float(mg), "IV", "CRS", key=True
            )
        )
    for minute, drug, dose in ep.steroids:
        record.drugs.append(
            DrugAdministration(onset_at + minute * MIN, drug, dose, "IV", "CRS", key=True)  # type: ignore[arg-type]
        )
    if plan.icans_grade >= 3:
        # Intrathecal dexamethasone for ICANS: recorded, excluded from the systemic total.
        day = onset_at + 3 * DAY
        for k in range(2):
            record.drugs.append(
                DrugAdministration(day + k * DAY, "dexamethasone", 5.0, "IT", "ICANS", key=True)
            )
    if plan.is_included and rng.random() < 0.1 and (plan.os_days or 0) > 45:
        # Prednisone for prolonged cytopenia after day 28: outside the CRS steroid window.
        start = infusion_at + int(rng.integers(35, 42)) * DAY
        for k in range(5):
            record.drugs.append(
                DrugAdministration(start + k * DAY, "prednisone", 20.0, "PO", "cytopenia", key=True)
            )
    daily = 150.0 if plan.weight_kg < 45 else 300.0
    first = infusion_at.date() + timedelta(days=int(rng.integers(5, 10)))
    for k in range(plan.gcsf_days):
        record.drugs.append(
            DrugAdministration(
                _at(first + timedelta(days=k), 9, 0), "gcsf", daily, "SC", "neutropenia", key=True
            )
        )
    record.drugs.sort(key=lambda d: d.at)


def _screening_labs(
    plan: PatientPlan, demo: Demographics, rng: np.random.Generator
) -> list[LabResult]:
    at = _at(demo.screening_date, 8, int(rng.integers(0, 50)))
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


def _labs(
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
        at = _at(infusion_at.date() + timedelta(days=d), 6, int(rng.integers(0, 50)))
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


def _icans_pattern(grade: int, days: int) -> list[int]:
    """Daily ICANS grades: rise to the peak (reached even when the course is short), then ease."""
    if not grade or not days:
        return []
    peak = min(days - 1, grade - 1)
    return [max(1, grade - abs(peak - i)) for i in range(days)]


def _assessments(
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
                IcansAssessment(_at(day0 + timedelta(days=d), 8, 0), ice_for[grade], grade)
            )
        if plan.recorded_grade is not None:
            when = onset_at + 36 * HOUR if plan.crs_grade else infusion_at + 14 * DAY
            record.recorded_crs = RecordedCrsGrade(when, plan.recorded_grade)
    if plan.response is not None:
        at = _at(day0 + timedelta(days=int(rng.integers(26, 31))), 9, 30)
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
