"""Writes a patient's MedicationAdministrations: drug doses and vasopressor infusions.

A dose carries the RxNorm-coded drug, the time, the indication as reason text and the
dosage (SNOMED route, dose in the drug's canonical unit); a vasopressor infusion carries
its start and stop as ``effectivePeriod`` and its rate as ``dosage.rateQuantity``. Both
refer to the admission Encounter through ``context``.
"""

from __future__ import annotations

from cart_etl.synth.fhir.codes import RATE_UCUM
from cart_etl.synth.fhir.context import PatientContext
from cart_etl.synth.fhir.elements import DRUG_CC, ROUTE_CC, Json, qty
from cart_etl.synth.vocab import DRUG_UNITS


def add_drugs(p: PatientContext) -> None:
    """One MedicationAdministration per administered dose (RxNorm drug, SNOMED route)."""
    for i, d in enumerate(p.rec.drugs):
        body: Json = {
            "resourceType": "MedicationAdministration",
            "id": p.ids(f"drug/{i}"),
            "status": "completed",
            "medicationCodeableConcept": DRUG_CC[d.drug],
            "effectiveDateTime": d.at,
            "reasonCode": [{"text": d.indication}],
            "dosage": {"route": ROUTE_CC[d.route], "dose": qty(d.dose, DRUG_UNITS[d.drug])},
        }
        p.add("MedicationAdministration", body, p.med_refs)


def add_vasopressors(p: PatientContext) -> None:
    """One MedicationAdministration per continuous vasopressor infusion, with its rate."""
    for i, v in enumerate(p.rec.vasopressors):
        body: Json = {
            "resourceType": "MedicationAdministration",
            "id": p.ids(f"vasopressor/{i}"),
            "status": "completed",
            "medicationCodeableConcept": DRUG_CC[v.drug],
            "effectivePeriod": {"start": v.start, "end": v.stop},
            "dosage": {
                "route": ROUTE_CC["IV"],
                "rateQuantity": qty(v.rate, RATE_UCUM.get(v.rate_unit, v.rate_unit)),
            },
        }
        p.add("MedicationAdministration", body, p.med_refs)
