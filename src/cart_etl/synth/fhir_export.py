"""Former module of the FHIR writer, kept so that existing imports of its names still work.

The writer is now the :mod:`cart_etl.synth.fhir` package (``fhir.writer.FhirWriter``, code
tables in ``fhir.codes``, defects in :mod:`cart_etl.synth.defects.fhir`). This module only
re-exports the names that code outside ``synth`` imports from here
(tests/extract/fhir/test_extract.py); it can go once that import points at
``cart_etl.synth.fhir.codes``.
"""

from cart_etl.synth.defects.fhir import DEFECT_KINDS
from cart_etl.synth.fhir.codes import (
    CTCAE_GRADE_SYSTEM,
    DIAGNOSIS_CODINGS,
    DRUG_RXNORM,
    LAB_LOINC,
    LOCAL_CODES,
    LOCAL_SYSTEM,
    LOINC,
    LOINC_CODES,
    OXYGEN_DEVICES,
    OXYGEN_THERAPY_SNOMED,
    RXNORM,
    SNOMED,
    STUDY_ID_SYSTEM,
    UUID_NAMESPACE,
    V2_0203,
    VITAL_LOINC,
)
from cart_etl.synth.fhir.writer import FhirWriter

__all__ = [
    "CTCAE_GRADE_SYSTEM",
    "DEFECT_KINDS",
    "DIAGNOSIS_CODINGS",
    "DRUG_RXNORM",
    "LAB_LOINC",
    "LOCAL_CODES",
    "LOCAL_SYSTEM",
    "LOINC",
    "LOINC_CODES",
    "OXYGEN_DEVICES",
    "OXYGEN_THERAPY_SNOMED",
    "RXNORM",
    "SNOMED",
    "STUDY_ID_SYSTEM",
    "UUID_NAMESPACE",
    "V2_0203",
    "VITAL_LOINC",
    "FhirWriter",
]
