"""Survival and outcomes of the plans: OS/PFS days and events, causes of death.

The 45 analysed patients of the reference cohort get death and progression times
re-drawn one at a time until the log-rank p-values match the paper (OS 0.273, PFS 0.350);
patients outside the analysis and registry patients draw theirs from the reference
distributions. Every outcome is censored at the data cut.
"""

from __future__ import annotations

import numpy as np

from cart_etl.synth.calibrate.plan import DATA_CUT, FOLLOWUP_LT_28D, PatientPlan
from cart_etl.synth.solver import logrank_p


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


def assign_followup(rng: np.random.Generator, cohort: list[PatientPlan]) -> None:
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
        draw_outcome(rng, plan)


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


def draw_outcome(rng: np.random.Generator, plan: PatientPlan) -> None:
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
