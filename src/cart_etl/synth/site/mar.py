"""Writes the medication administration record (mar.xlsx): one row per administered dose.

Rows hold the time as a native Excel date-time (naive local wall time), the local drug
name, the dose with its unit glued on ('400mg', '300μg'), the local route and the
indication (known canonical values translated, other text as written).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Final

from cart_etl.synth.model import ClinicalRecord, DrugAdministration
from cart_etl.synth.site.cells import local_time, shortest_number
from cart_etl.synth.site.layouts import Event, Row
from cart_etl.synth.vocab import (
    DRUG_NAMES,
    DRUG_UNITS,
    INDICATION_NAMES,
    ROUTE_NAMES,
    TOCILIZUMAB_LABEL_MG_PER_KG,
    TOCILIZUMAB_LABEL_MG_PER_KG_UNDER_30KG,
)

# Canonical unit -> as printed. Explicit: the mapping's dose_units lists every synonym
# (μg with Greek mu, µg with the micro sign, ug) and the MAR prints only the Greek mu.
DOSE_UNIT_NAMES: Final = {"mg": "mg", "ug": "μg"}
# Tocilizumab is prescribed per kg (label 8 mg/kg, 12 mg/kg under 30 kg, both from
# plausibility.yaml; 4-8 mg/kg in the NCI 2016 protocol), so a MAR may chart the
# prescription instead of the absolute dose. The 4 mg/kg low dose is in no mapping.
TOCILIZUMAB_MG_PER_KG: Final = (
    TOCILIZUMAB_LABEL_MG_PER_KG,
    4,
    TOCILIZUMAB_LABEL_MG_PER_KG_UNDER_30KG,
)


def dose_text(admin: DrugAdministration) -> str:
    """Dose with the unit glued on, as the MAR prints it ('400mg', '300μg')."""
    return shortest_number(admin.dose) + DOSE_UNIT_NAMES[DRUG_UNITS[admin.drug]]


def per_kg_text(dose_mg: float, weight_kg: float) -> str | None:
    """'8mg/kg' (or 4 / 12) when that prescription times the weight rounds to the dose."""
    for per_kg in TOCILIZUMAB_MG_PER_KG:
        if dose_mg == round(per_kg * weight_kg):
            return f"{per_kg}mg/kg"
    return None


def mar_rows(mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
    """mar.xlsx rows, dates as naive local datetimes (native Excel date cells)."""
    events = sorted(record.drugs, key=attrgetter("at"))
    rows: list[Row] = [
        [
            mrn,
            local_time(ev.at).replace(tzinfo=None),
            DRUG_NAMES[ev.drug],
            dose_text(ev),
            ROUTE_NAMES[ev.route],
            INDICATION_NAMES.get(ev.indication, ev.indication),
        ]
        for ev in events
    ]
    return rows, list(events)
