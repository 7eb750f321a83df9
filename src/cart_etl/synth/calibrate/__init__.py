"""Patient-level plans for the reference cohort, calibrated to Zhou et al. 2025.

``plan`` defines ``PatientPlan`` and the study calendar, ``cohort`` builds the calibrated
61-patient reference cohort with the ``table2`` and ``outcomes`` solvers, and ``registry``
draws uncalibrated plans for larger registries. The public names are re-exported here,
where code outside ``synth`` imports them from.
"""

from cart_etl.synth.calibrate.cohort import build_reference_cohort
from cart_etl.synth.calibrate.outcomes import draw_outcome
from cart_etl.synth.calibrate.plan import (
    DATA_CUT,
    DATA_LOST,
    ENROL_END,
    ENROL_START,
    FOLLOWUP_LT_28D,
    NOT_INFUSED,
    PatientPlan,
)
from cart_etl.synth.calibrate.registry import draw_patient_plan

__all__ = [
    "DATA_CUT",
    "DATA_LOST",
    "ENROL_END",
    "ENROL_START",
    "FOLLOWUP_LT_28D",
    "NOT_INFUSED",
    "PatientPlan",
    "build_reference_cohort",
    "draw_outcome",
    "draw_patient_plan",
]
