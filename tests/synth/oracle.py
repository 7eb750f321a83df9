"""Independent re-derivation of the truth columns from canonical records (README conventions).

Written from the README rules only, not from the generator's construction, so that a
test comparing it with ``truth/patients.csv`` proves the raw signals *produce* the truth.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cart_etl.synth.model import ClinicalRecord

FEVER_C = 38.0
EPISODE_GAP = timedelta(hours=48)
ONSET_WINDOW_DAYS = 14
LOW_FLOW_MAX = 6.0
HIGH_FLOW_DEVICES = {"high_flow_nasal_cannula", "face_mask", "non_rebreather", "venturi"}
POSITIVE_PRESSURE = {"cpap", "bipap", "mechanical_ventilation"}
MASKING_DRUGS = {
    "tocilizumab",
    "methylprednisolone",
    "dexamethasone",
    "prednisone",
    "hydrocortisone",
}
MP_FACTOR = {
    "methylprednisolone": 1.0,
    "dexamethasone": 16 / 3,
    "prednisone": 0.8,
    "prednisolone": 0.8,
    "hydrocortisone": 0.2,
}


def _age(birth, on) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def sbp_threshold(age: int) -> float:
    """Hypotension: SBP < 90 mmHg from 10 years; < 70 + 2 x age for 1-9 years (PALS)."""
    return 90.0 if age >= 10 else 70.0 + 2 * age


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def derive_crs(record: ClinicalRecord) -> dict[str, object]:
    """max grade, onset study day and duration (days) of CRS; None when not derivable."""
    inf = record.infusion
    assert inf is not None
    day0 = inf.at.date()
    age = _age(record.demographics.birth_date, day0)
    temps = [(v.at, v.value) for v in record.vitals if v.item == "temp" and v.at >= inf.at]
    if not any(0 <= (t.date() - day0).days <= ONSET_WINDOW_DAYS for t, _ in temps):
        return {"max_crs_grade": None, "crs_onset_day": None, "crs_duration_days": None}
    fevers = sorted(t for t, v in temps if v >= FEVER_C)
    hypo = sorted(
        v.at
        for v in record.vitals
        if v.item == "sbp" and v.at >= inf.at and v.value < sbp_threshold(age)
    )
    o2 = sorted(o.at for o in record.oxygen if o.at >= inf.at and o.device != "room_air")
    vaso = [(x.start, x.stop) for x in record.vasopressors if x.stop >= inf.at]
    # Sign intervals: point signs are (t, t); vasopressors span start..stop.
    signs = sorted(
        [(t, t, "fever") for t in fevers]
        + [(t, t, "other") for t in hypo + o2]
        + [(s, e, "other") for s, e in vaso]
    )
    episodes: list[tuple[datetime, datetime]] = []
    current: list[datetime] | None = None
    for start, end, kind in signs:
        if current is not None and start <= current[1] + EPISODE_GAP:
            current[1] = max(current[1], end)
            continue
        if current is not None:
            episodes.append((current[0], current[1]))
            current = None
        if kind == "fever":
            current = [start, end]
    if current is not None:
        episodes.append((current[0], current[1]))
    crs = [(s, e) for s, e in episodes if (s.date() - day0).days <= ONSET_WINDOW_DAYS]
    if not crs:
        return {"max_crs_grade": 0, "crs_onset_day": None, "crs_duration_days": None}
    grade = max(_episode_grade(record, s, e, age) for s, e in crs)
    onset, end = crs[0]
    return {
        "max_crs_grade": grade,
        "crs_onset_day": (onset.date() - day0).days,
        "crs_duration_days": round((end - onset).total_seconds() / 86400, 2),
    }


def _episode_grade(record: ClinicalRecord, onset: datetime, end: datetime, age: int) -> int:
    febrile_hours = {
        _hour(v.at)
        for v in record.vitals
        if v.item == "temp" and v.value >= FEVER_C and onset <= v.at <= end
    }
    hypo_hours = {
        _hour(v.at) for v in record.vitals if v.item == "sbp" and v.value < sbp_threshold(age)
    }
    masks = sorted(
        d.at
        for d in record.drugs
        if d.drug in MASKING_DRUGS and d.route != "IT" and onset <= d.at <= end
    )
    oxygen = sorted((o.at, o.device, o.flow_l_min) for o in record.oxygen)
    times = {v.at for v in record.vitals if onset <= v.at <= end} | {
        o.at for o in record.oxygen if onset <= o.at <= end
    }
    times |= {x.start for x in record.vasopressors if onset <= x.start <= end}
    best = 1
    for t in sorted(times):
        febrile = _hour(t) in febrile_hours
        masked = bool(masks) and masks[0] <= t
        if not (febrile or masked):
            continue
        running = [x.drug for x in record.vasopressors if x.start <= t <= x.stop]
        catechol = [d for d in running if d != "vasopressin"]
        hyp = 4 if len(catechol) >= 2 else 3 if running else 2 if _hour(t) in hypo_hours else 0
        state = [o for o in oxygen if o[0] <= t]
        oxy = 0
        if state and state[-1][1] != "room_air":
            _, device, flow = state[-1]
            if device in POSITIVE_PRESSURE:
                oxy = 4
            elif device in HIGH_FLOW_DEVICES or (flow or 0) > LOW_FLOW_MAX:
                oxy = 3
            else:
                oxy = 2
        best = max(best, hyp, oxy)
    return best


def derive_all(record: ClinicalRecord) -> dict[str, object]:
    """Every truth column derivable from one record."""
    demo = record.demographics
    inf = record.infusion
    out: dict[str, object] = {"study_id": demo.study_id, "is_infused": inf is not None}
    if inf is None:
        out.update(
            exclusion_reason="not_infused",
            is_included=False,
            age_years=_age(demo.birth_date, demo.screening_date),
        )
        return out
    day0 = inf.at.date()
    fu = record.follow_up
    end = fu.death_date or fu.last_contact_date
    crs = derive_crs(record)
    temps_0_14 = any(
        v.item == "temp" and v.at >= inf.at and (v.at.date() - day0).days <= 14
        for v in record.vitals
    )
    response_ok = (
        record.response is not None and 21 <= (record.response.at.date() - day0).days <= 35
    )
    if (end - day0).days < 28:
        exclusion = "followup_lt_28d"
    elif not temps_0_14 or not response_ok:
        exclusion = "data_lost"
    else:
        exclusion = None
    toci = [d for d in record.drugs if d.drug == "tocilizumab"]
    steroid = sum(
        d.dose * MP_FACTOR[d.drug]
        for d in record.drugs
        if d.drug in MP_FACTOR and d.route in ("IV", "PO") and 0 <= (d.at.date() - day0).days <= 28
    )
    response = None
    if record.response is not None:
        r = record.response
        response = {"PR": "pr", "NR": "nr"}.get(r.morphology) or (
            "mrd_neg_cr" if r.mrd_pct < 0.01 else "mrd_pos_cr"
        )
    progression_or_death = [d for d in (fu.progression_date, fu.death_date) if d is not None]
    pfs_end = min(progression_or_death) if progression_or_death else fu.last_contact_date
    out.update(
        exclusion_reason=exclusion,
        is_included=exclusion is None,
        is_toci=bool(toci),
        age_years=_age(demo.birth_date, day0),
        cart_dose_1e6_per_kg=inf.dose_1e6_per_kg,
        toci_doses=len(toci),
        toci_cumulative_mg=sum(d.dose for d in toci),
        steroid_mp_equiv_mg=round(steroid, 2),
        response_day28=response,
        os_days=(end - day0).days,
        os_event=fu.death_date is not None,
        pfs_days=(pfs_end - day0).days,
        pfs_event=bool(progression_or_death),
        serious_infection=any(i.ctcae_grade >= 3 for i in record.infections),
        has_icans=(any(a.grade >= 1 for a in record.icans) if record.icans else None)
        if temps_0_14
        else None,
        max_icans_grade=(max((a.grade for a in record.icans), default=0) if record.icans else None)
        if temps_0_14
        else None,
        **crs,
    )
    return out
