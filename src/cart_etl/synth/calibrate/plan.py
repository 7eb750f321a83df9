"""The patient plan: what one screened patient's raw records must make a pipeline derive.

``PatientPlan`` holds the derived values (exclusion, CRS grade, onset and duration,
doses, response, survival) that the course simulator turns into charted signals; the
constants fix the study calendar (enrolment window, data cut), the exclusion reasons as
written to truth/patients.csv, and how each maximum CRS grade shows in the signals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

DATA_CUT = date(2024, 6, 30)
ENROL_START = date(2020, 4, 8)
ENROL_END = date(2023, 10, 27)

# Exclusion reasons as written to truth/patients.csv (the order is the CONSORT order).
NOT_INFUSED = "not_infused"
FOLLOWUP_LT_28D = "followup_lt_28d"
DATA_LOST = "data_lost"

# How a patient's maximum CRS grade shows in the raw signals.
MECHANISMS_BY_GRADE: dict[int, tuple[str, ...]] = {
    0: ("none",),
    1: ("fever",),
    2: ("low_flow_o2", "hypotension"),
    3: ("norepinephrine", "high_flow_o2", "face_mask"),
    4: ("two_vasopressors", "bipap"),
}


@dataclass(slots=True)
class PatientPlan:
    """What one screened patient's raw records must make a correct pipeline derive.

    Times are relative to the infusion (hours) or to CRS onset (minutes); the course
    simulator turns this plan into charted signals, doses and assessments.
    """

    index: int
    study_id: str
    exclusion: str | None
    lost_kind: str | None  # "monitoring" | "response" for DATA_LOST
    is_toci: bool
    age_years: int
    sex: str
    is_high_risk: bool
    lines_of_therapy: int
    prior_allo_sct: bool
    marrow_blasts_pct: float
    cart_dose_1e6_per_kg: float
    weight_kg: float
    infusion_date: date | None
    crs_grade: int | None
    planned_date: date | None = None  # enrolment slot; the infusion date when infused
    crs_mechanism: str = "none"
    crs_pattern: str = "simple"  # simple | single_reading | masked | biphasic
    crs_onset_h: float | None = None  # hours after the infusion time
    crs_duration_min: int | None = None
    toci_mg: list[int] = field(default_factory=list)
    steroid_mp_mg: float = 0.0
    icans_grade: int = 0
    icans_days: int = 0
    response: str | None = None  # mrd_neg_cr | mrd_pos_cr | pr | nr
    serious_infection: bool = False
    os_days: int | None = None
    os_event: bool | None = None
    pfs_days: int | None = None
    pfs_event: bool | None = None
    death_cause: str | None = None
    gcsf_days: int = 0
    recorded_grade: int | None = None
    il6_falls: bool | None = None
    pre_infusion_fever: bool = False

    @property
    def is_infused(self) -> bool:
        return self.exclusion != NOT_INFUSED

    @property
    def is_included(self) -> bool:
        return self.exclusion is None

    @property
    def has_monitoring(self) -> bool:
        return self.is_infused and self.lost_kind != "monitoring"
