"""Administers the drugs of a simulated course: tocilizumab, steroids, prednisone and G-CSF.

Tocilizumab and steroid doses come from the episode; ICANS grade >= 3 adds intrathecal
dexamethasone (excluded from the systemic steroid total), some analysed patients get
prednisone after day 28, and G-CSF runs daily for the plan's number of days.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from cart_etl.synth.calibrate.plan import PatientPlan
from cart_etl.synth.course.clock import DAY, MIN, wall_time
from cart_etl.synth.course.episode import Episode
from cart_etl.synth.model import (
    ClinicalRecord,
    DrugAdministration,
)


def add_drugs(
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
                wall_time(first + timedelta(days=k), 9, 0),
                "gcsf",
                daily,
                "SC",
                "neutropenia",
                key=True,
            )
        )
    record.drugs.sort(key=lambda d: d.at)
