"""The CRS episode of a plan: its signals in minutes from onset, before they are charted.

``build_episode`` lays out the fever, hypotension, oxygen and vasopressor intervals and the
tocilizumab and steroid doses that yield the plan's maximum grade, onset and duration
under the README conventions (ASTCT 2019 grading with fever masking, signs < 48 h apart
chained into one episode); patterns: simple, single reading, masked and biphasic fever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cart_etl.synth.calibrate.plan import PatientPlan
from cart_etl.synth.model import (
    OxygenDevice,
)

DEX_TO_MP = 16 / 3  # 0.75 mg dexamethasone = 4 mg methylprednisolone (Meikle & Tyler 1977)


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
