"""Identifier systems, code systems and code tables of the FHIR output.

Codes and code-system URIs come from ``mappings/fhir/*.yaml`` through
:mod:`cart_etl.synth.vocab`, so the writer emits exactly what the FHIR extractor maps; the
human-readable displays, the site's own identifier and response systems and the HL7
terminology URIs are not in any mapping and are written here. ``UUID_NAMESPACE`` fixes
every resource id.
"""

from __future__ import annotations

import uuid
from typing import Final

from cart_etl.synth import vocab

STUDY_ID_SYSTEM: Final = vocab.STUDY_ID_SYSTEM
MRN_SYSTEM: Final = "https://tj-ref-hospital.example.cn/fhir/sid/mrn"
LOCAL_SYSTEM: Final = vocab.FHIR_SYSTEMS["local"]
RESPONSE_SYSTEM: Final = "https://cart-etl.example.org/fhir/CodeSystem/marrow-response"
CTCAE_GRADE_SYSTEM: Final = vocab.FHIR_SYSTEMS["ctcae_grade"]
LOINC: Final = vocab.FHIR_SYSTEMS["loinc"]
SNOMED: Final = vocab.FHIR_SYSTEMS["snomed"]
ICD10: Final = vocab.FHIR_SYSTEMS["icd10"]
RXNORM: Final = vocab.FHIR_SYSTEMS["rxnorm"]
UCUM: Final = vocab.FHIR_SYSTEMS["ucum"]
V2_0203, MRN_TYPE_CODE = vocab.MRN_TYPE
V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# Fixed forever: changing it changes every resource id of every synthetic cohort.
UUID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://cart-etl.example.org/fhir/synth")

# Vital item -> (LOINC, display); units come from vocab.VITAL_UNITS (already UCUM).
VITAL_LOINC: Final[dict[str, tuple[str, str]]] = {
    item: (vocab.LOINC_OF[item], display)
    for item, display in {
        "temp": "Body temperature",
        "sbp": "Systolic blood pressure",
        "dbp": "Diastolic blood pressure",
        "hr": "Heart rate",
        "spo2": "Oxygen saturation in Arterial blood by Pulse oximetry",
    }.items()
}
# Other LOINC concepts by local key -> (LOINC, display). The blood-pressure panel stays
# explicit: the mapping accepts two panel codes (85354-9, 55284-4), the writer emits one.
LOINC_CODES: Final[dict[str, tuple[str, str]]] = {
    "bp-panel": ("85354-9", "Blood pressure panel with all children optional"),
    "body-height": (vocab.BODY_HEIGHT_LOINC, "Body height"),
    "body-weight": (vocab.BODY_WEIGHT_LOINC, "Body weight"),
    "o2-flow": (vocab.O2_FLOW_LOINC, "Inhaled oxygen flow rate"),
    "cause-of-death": (
        vocab.CAUSE_OF_DEATH_LOINC,
        "Cause of death [US Standard Certificate of Death]",
    ),
}
# Lab test -> (LOINC, label). LOINC long names were not checked against a release, so the
# label goes into CodeableConcept.text instead of Coding.display (no display-mismatch noise).
LAB_LOINC: Final[dict[str, tuple[str, str]]] = {
    test: (vocab.LOINC_OF[test], label)
    for test, label in {
        "il6": "Interleukin-6 (IL-6), serum",
        "il10": "Interleukin-10 (IL-10), serum",
        "sil2r": "Soluble interleukin-2 receptor (sIL-2R), serum",
        "tnf_alpha": "Tumor necrosis factor alpha (TNF-α), serum",
        "ifn_gamma": "Interferon gamma (IFN-γ), serum",
        "crp": "C-reactive protein (CRP), serum",
        "ferritin": "Ferritin, serum",
        "wbc": "Leukocytes (WBC), blood",
        "anc": "Neutrophils, absolute count (ANC), blood",
        "plt": "Platelets, blood",
        "hgb": "Hemoglobin, blood",
        "marrow_blasts": "Blasts/100 leukocytes in Bone marrow",
    }.items()
}
# Local concepts (no suitable LOINC/SNOMED code) -> display. Explicit: the builders name
# these codes, and mappings/fhir/concept_map.csv (one row per code) names them by code.
LOCAL_CODES: Final[dict[str, str]] = {
    "risk-genetics": "Risk-defining genetic abnormality",
    "high-risk-genetics": "High-risk genetics",
    "lines-of-therapy": "Number of prior lines of therapy",
    "prior-allo-sct": "Prior allogeneic stem-cell transplant",
    "cart-infusion": "CD19 CAR-T cell infusion",
    "cart-dose-per-kg": "CAR-T dose per kg body weight",
    "cart-cells-total": "CAR-T cells infused, total",
    "day28-marrow-response": "Day-28 bone marrow response",
    "mrd-flow": "Minimal residual disease by flow cytometry",
    "last-contact": "Date of last contact",
    "disease-progression": "Disease progression",
    "ice-score": "Immune effector cell-associated encephalopathy (ICE) score",
    "icans-grade": "ICANS grade (ASTCT 2019)",
    "crs-grade-recorded": "CRS grade as recorded by the physician",
}
# B-ALL diagnosis codings: (system, code, label); the mapping's ICD-10-CM codes are not written.
DIAGNOSIS_CODINGS: Final[tuple[tuple[str, str, str], ...]] = (
    (SNOMED, vocab.ALL_SNOMED, "Acute lymphoblastic leukemia"),
    (ICD10, vocab.ALL_ICD10, "Acute lymphoblastic leukaemia"),
)
DIAGNOSIS_TEXT: Final = "B-cell acute lymphoblastic leukemia (B-ALL)"
OXYGEN_THERAPY_SNOMED: Final = (vocab.OXYGEN_THERAPY_SNOMED_CODE, "Oxygen therapy")
# Oxygen device -> (local code, display); room air is deliberately absent.
OXYGEN_DEVICES: Final[dict[str, tuple[str, str]]] = {
    device: (vocab.LOCAL_DEVICE_CODE[device], display)
    for device, display in {
        "nasal_cannula": "Nasal cannula",
        "high_flow_nasal_cannula": "High-flow nasal cannula",
        "face_mask": "Simple face mask",
        "non_rebreather": "Non-rebreather mask",
        "venturi": "Venturi mask",
        "cpap": "CPAP",
        "bipap": "BiPAP",
        "mechanical_ventilation": "Invasive mechanical ventilation",
    }.items()
}
# Drug / vasopressor -> (RxNorm ingredient, display).
DRUG_RXNORM: Final[dict[str, tuple[str, str]]] = {
    drug: (vocab.RXNORM_OF[drug], display)
    for drug, display in {
        "tocilizumab": "tocilizumab",
        "methylprednisolone": "methylprednisolone",
        "dexamethasone": "dexamethasone",
        "prednisone": "prednisone",
        "gcsf": "filgrastim",
        "norepinephrine": "norepinephrine",
        "dopamine": "dopamine",
        "epinephrine": "epinephrine",
        "phenylephrine": "phenylephrine",
        "vasopressin": "vasopressin",
    }.items()
}
# Route -> (SNOMED, display).
ROUTE_SNOMED: Final[dict[str, tuple[str, str]]] = {
    route: (vocab.ROUTE_SNOMED_OF[route], display)
    for route, display in {
        "IV": "Intravenous route",
        "PO": "Oral route",
        "SC": "Subcutaneous route",
        "IT": "Intrathecal route",
    }.items()
}
RESPONSE_CODES: Final[dict[str, str]] = {
    "CR": "Complete remission",
    "CRi": "Complete remission with incomplete hematologic recovery",
    "PR": "Partial remission",
    "NR": "No response",
}
CRS_SCALE_TEXT: Final[dict[str, str]] = {"ASTCT2019": "ASTCT 2019"}
# Vasopressor rate unit as stored in the model -> UCUM code.
RATE_UCUM: Final[dict[str, str]] = {"ug/kg/min": "ug/kg/min", "U/min": "U/min"}
# UCUM code -> human-readable Quantity.unit (falls back to the code itself).
UNIT_DISPLAY: Final[dict[str, str]] = {
    "Cel": "°C",
    "mm[Hg]": "mmHg",
    "/min": "/min",
    "10*9/L": "10^9/L",
    "10*6/kg": "10^6 cells/kg",
    "{cells}": "cells",
}
GENDER: Final[dict[str, str]] = vocab.GENDER
