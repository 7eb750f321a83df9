"""Canonical clinical record of one synthetic patient, shared by every export writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

SITE_TZ = ZoneInfo("Asia/Shanghai")

# Canonical vocabularies. Writers translate these into each export's local
# strings and codes; nothing else in the generator uses local names.
VitalItem = Literal["temp", "sbp", "dbp", "hr", "spo2"]
OxygenDevice = Literal[
    "room_air",
    "nasal_cannula",
    "high_flow_nasal_cannula",
    "face_mask",
    "non_rebreather",
    "venturi",
    "cpap",
    "bipap",
    "mechanical_ventilation",
]
LabTest = Literal[
    "il6",
    "il10",
    "sil2r",
    "tnf_alpha",
    "ifn_gamma",
    "crp",
    "ferritin",
    "wbc",
    "anc",
    "plt",
    "hgb",
    "marrow_blasts",
]
Drug = Literal[
    "tocilizumab",
    "methylprednisolone",
    "dexamethasone",
    "prednisone",
    "gcsf",
]
Vasopressor = Literal["norepinephrine", "dopamine", "epinephrine", "phenylephrine", "vasopressin"]
Route = Literal["IV", "PO", "SC", "IT"]

# Values are in canonical UCUM units per item (vocab.VITAL_UNITS, LAB_UNITS, DRUG_UNITS,
# read from mappings/validation/plausibility.yaml); writers may print local spellings.


@dataclass(frozen=True, slots=True)
class Demographics:
    """Register row: who the patient is and the baseline disease state at screening."""

    study_id: str
    mrn: str
    name: str
    sex: Literal["M", "F"]
    birth_date: date
    diagnosis_date: date
    screening_date: date
    height_cm: float
    weight_kg: float
    is_high_risk: bool
    risk_genetics: str
    lines_of_therapy: int
    prior_allo_sct: bool
    marrow_blasts_pct: float


@dataclass(frozen=True, slots=True)
class Infusion:
    """The CAR-T infusion (day 0). Dose is stored both ways, as sites chart it."""

    at: datetime
    product: str
    lot: str
    cells_total: float
    dose_1e6_per_kg: float
    weight_kg: float
    donor_derived: bool


@dataclass(frozen=True, slots=True)
class VitalSign:
    """One charted vital sign in canonical units (see vocab.VITAL_UNITS)."""

    at: datetime
    item: VitalItem
    value: float
    key: bool = False  # True when losing this row would change a truth column


@dataclass(frozen=True, slots=True)
class OxygenCharting:
    """One flowsheet entry of the oxygen support in use at that time."""

    at: datetime
    device: OxygenDevice
    flow_l_min: float | None
    key: bool = False


@dataclass(frozen=True, slots=True)
class LabResult:
    """One laboratory result (specimen collection time), canonical units (vocab.LAB_UNITS)."""

    at: datetime
    test: LabTest
    value: float
    key: bool = False


@dataclass(frozen=True, slots=True)
class DrugAdministration:
    """One administered dose (not an order), canonical unit (vocab.DRUG_UNITS)."""

    at: datetime
    drug: Drug
    dose: float
    route: Route
    indication: str
    key: bool = False


@dataclass(frozen=True, slots=True)
class VasopressorInfusion:
    """A continuous vasopressor infusion with start and stop."""

    start: datetime
    stop: datetime
    drug: Vasopressor
    rate: float
    rate_unit: str  # "ug/kg/min" or "U/min" (vasopressin)
    key: bool = False


@dataclass(frozen=True, slots=True)
class ResponseAssessment:
    """Day-28 marrow assessment: morphology plus MRD by flow cytometry."""

    at: datetime
    morphology: Literal["CR", "CRi", "PR", "NR"]
    marrow_blasts_pct: float
    mrd_pct: float  # 0.0 = not detected; MRD-negative means < 0.01 %


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Last known status."""

    last_contact_date: date
    progression_date: date | None
    death_date: date | None
    death_cause: str | None


@dataclass(frozen=True, slots=True)
class Infection:
    """A documented infection; serious = CTCAE grade >= 3."""

    onset_date: date
    site: str
    organism: str
    ctcae_grade: int


@dataclass(frozen=True, slots=True)
class IcansAssessment:
    """One ICANS assessment as recorded: ICE score (0-10) and ASTCT grade."""

    at: datetime
    ice_score: int | None
    grade: int


@dataclass(frozen=True, slots=True)
class RecordedCrsGrade:
    """The physician's CRS grade as written in the EMR (may disagree with signals)."""

    at: datetime
    grade: int
    scale: str = "ASTCT2019"


@dataclass(slots=True)
class ClinicalRecord:
    """Everything the hospital holds about one screened patient, in canonical form."""

    demographics: Demographics
    infusion: Infusion | None
    follow_up: FollowUp
    vitals: list[VitalSign] = field(default_factory=list)
    oxygen: list[OxygenCharting] = field(default_factory=list)
    labs: list[LabResult] = field(default_factory=list)
    drugs: list[DrugAdministration] = field(default_factory=list)
    vasopressors: list[VasopressorInfusion] = field(default_factory=list)
    response: ResponseAssessment | None = None
    infections: list[Infection] = field(default_factory=list)
    icans: list[IcansAssessment] = field(default_factory=list)
    recorded_crs: RecordedCrsGrade | None = None


def example_record() -> ClinicalRecord:
    """A small, complete record for writer tests (grade-3 CRS treated with tocilizumab)."""
    t0 = datetime(2021, 3, 5, 10, 30, tzinfo=SITE_TZ)
    h = timedelta(hours=1)
    demo = Demographics(
        study_id="CART-001",
        mrn="2021004817",
        name="测试患者",
        sex="F",
        birth_date=date(1985, 6, 2),
        diagnosis_date=date(2019, 11, 20),
        screening_date=date(2021, 2, 10),
        height_cm=162.0,
        weight_kg=58.0,
        is_high_risk=True,
        risk_genetics="BCR-ABL1 (Ph+)",
        lines_of_therapy=2,
        prior_allo_sct=False,
        marrow_blasts_pct=34.15,
    )
    inf = Infusion(
        at=t0,
        product="CD19 CAR-T (4-1BB)",
        lot="LOT-21-0305",
        cells_total=8.7e7,
        dose_1e6_per_kg=1.5,
        weight_kg=58.0,
        donor_derived=False,
    )
    onset = t0 + 30 * h
    vitals = [
        VitalSign(t0 - 2 * h, "temp", 36.6),
        VitalSign(t0 - 2 * h, "sbp", 118),
        VitalSign(t0 - 2 * h, "hr", 82),
        VitalSign(t0 - 2 * h, "spo2", 98),
        VitalSign(onset, "temp", 38.6, key=True),
        VitalSign(onset + 4 * h, "temp", 39.4),
        VitalSign(onset + 4 * h, "sbp", 84, key=True),
        VitalSign(onset + 30 * h, "temp", 36.9),
    ]
    oxygen = [
        OxygenCharting(onset + 4 * h, "high_flow_nasal_cannula", 40.0, key=True),
        OxygenCharting(onset + 50 * h, "nasal_cannula", 3.0, key=True),
        OxygenCharting(onset + 60 * h, "room_air", None),
    ]
    labs = [
        LabResult(onset + 1 * h, "il6", 1250.0),
        LabResult(onset + 1 * h, "crp", 86.4),
        LabResult(onset + 1 * h, "ferritin", 5400.0),
        LabResult(onset + 30 * h, "il6", 420.0),
    ]
    drugs = [
        DrugAdministration(onset + 5 * h, "tocilizumab", 464.0, "IV", "CRS", key=True),
        DrugAdministration(onset + 14 * h, "methylprednisolone", 40.0, "IV", "CRS", key=True),
        DrugAdministration(t0 + 10 * 24 * h, "gcsf", 300.0, "SC", "neutropenia"),
    ]
    vaso = [
        VasopressorInfusion(
            onset + 6 * h, onset + 20 * h, "norepinephrine", 0.1, "ug/kg/min", key=True
        )
    ]
    return ClinicalRecord(
        demographics=demo,
        infusion=inf,
        follow_up=FollowUp(date(2022, 8, 1), None, None, None),
        vitals=vitals,
        oxygen=oxygen,
        labs=labs,
        drugs=drugs,
        vasopressors=vaso,
        response=ResponseAssessment(t0 + 28 * 24 * h, "CR", 0.5, 0.0),
        infections=[Infection(date(2021, 3, 20), "lung", "Klebsiella pneumoniae", 3)],
        icans=[IcansAssessment(onset + 24 * h, 10, 0)],
        recorded_crs=RecordedCrsGrade(onset + 48 * h, 3),
    )
