"""Vocabularies the synth writers print, read from the mapping files the extractors read.

The site export must use exactly the local names, printed units and code values that
``mappings/sites/tianjin_ref.yaml`` describes; the FHIR output the code systems and LOINC,
RxNorm and SNOMED CT codes of ``mappings/fhir/*.yaml``; both the canonical UCUM units and
tocilizumab label doses of ``mappings/validation/plausibility.yaml``. This module loads
those files once (plain YAML, from ``Settings().mappings_dir``) into the dicts the writers
look up, keyed by the canonical codes of :mod:`cart_etl.synth.model`. Whatever a mapping
does not hold, or holds only as several synonyms where the writer needs one spelling,
stays explicit in the writer module that prints it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Final, TypeVar, get_args

import yaml

from cart_etl.config import Settings
from cart_etl.synth.model import Drug, LabTest, VitalItem

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)
T = TypeVar("T")

SITE_NAME: Final = "tianjin_ref"  # names the site mapping below, so it cannot come from it


def load_mapping(relative: str) -> dict[str, Any]:
    """One YAML file of the mappings folder, e.g. ``"fhir/concepts.yaml"``."""
    path = Settings().mappings_dir / relative
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected a mapping at the top level")
    return data


def _inverse(table: Mapping[K, V], what: str) -> dict[V, K]:
    """``{value: key}`` of a one-to-one table (refuses to drop a synonym silently)."""
    out = {value: key for key, value in table.items()}
    if len(out) != len(table):
        raise ValueError(f"{what}: values are not unique, cannot invert {dict(table)!r}")
    return out


def _only(values: list[T], what: str) -> T:
    """The single element of ``values``."""
    if len(values) != 1:
        raise ValueError(f"{what}: expected exactly one value, the mapping has {values!r}")
    return values[0]


def _range(text: str) -> tuple[float, float]:
    """A printed reference range such as ``"3.5-9.5"`` as ``(3.5, 9.5)``."""
    low, _, high = text.partition("-")
    return float(low), float(high)


_SITE_FILES: Final = load_mapping(f"sites/{SITE_NAME}.yaml")["files"]
_PLAUSIBILITY: Final = load_mapping("validation/plausibility.yaml")
_CONCEPTS: Final = load_mapping("fhir/concepts.yaml")
_FHIR: Final = load_mapping("fhir/targets.yaml")


def _concept_map() -> list[dict[str, str]]:
    """Rows of fhir/concept_map.csv (plain csv: synth stands apart from the pipeline)."""
    import csv

    path = Settings().mappings_dir / "fhir" / "concept_map.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


_CONCEPT_MAP: Final = _concept_map()

# Canonical (UCUM) units of the model's values (plausibility.yaml).
_MEASUREMENTS: Final = _PLAUSIBILITY["measurements"]
VITAL_UNITS: Final[dict[str, str]] = {k: _MEASUREMENTS[k]["unit"] for k in get_args(VitalItem)}
LAB_UNITS: Final[dict[str, str]] = {k: _MEASUREMENTS[k]["unit"] for k in get_args(LabTest)}
DRUG_UNITS: Final[dict[str, str]] = {k: _PLAUSIBILITY["drugs"][k]["unit"] for k in get_args(Drug)}
_TOCILIZUMAB_LABEL: Final = _PLAUSIBILITY["drugs"]["tocilizumab"]["label_mg_per_kg"]
TOCILIZUMAB_LABEL_MG_PER_KG: Final[int] = _TOCILIZUMAB_LABEL["weight_ge_30kg"]
TOCILIZUMAB_LABEL_MG_PER_KG_UNDER_30KG: Final[int] = _TOCILIZUMAB_LABEL["weight_lt_30kg"]

# Site export: patients.csv and cart_infusion.csv code columns (canonical -> printed).
_REGISTER: Final = _SITE_FILES["patients.csv"]["columns"]
SEX_NAMES: Final[dict[str, str]] = _inverse(_REGISTER["性别"]["values"], "性别")
RISK_NAMES: Final[dict[bool, str]] = _inverse(_REGISTER["危险分层"]["values"], "危险分层")
YES_NO: Final[dict[bool, str]] = _inverse(
    _REGISTER["既往异基因造血干细胞移植"]["values"], "既往异基因造血干细胞移植"
)
CELL_SOURCE_NAMES: Final[dict[bool, str]] = _inverse(  # keyed by Infusion.donor_derived
    _SITE_FILES["cart_infusion.csv"]["columns"]["细胞来源"]["values"], "细胞来源"
)

# vitals_flowsheet.csv: item names, their default (printed) units, the oxygen item.
_FLOWSHEET: Final = _SITE_FILES["vitals_flowsheet.csv"]["items"]
_VITAL_ITEMS: Final = {name: s for name, s in _FLOWSHEET.items() if s["target"] == "vitals"}
VITAL_ITEM_NAMES: Final[dict[str, str]] = {s["item"]: name for name, s in _VITAL_ITEMS.items()}
VITAL_UNIT_NAMES: Final[dict[str, str]] = {
    s["item"]: s["default_unit"] for s in _VITAL_ITEMS.values()
}
OXYGEN_ITEM_NAME: Final[str] = _only(
    [name for name, s in _FLOWSHEET.items() if s["target"] == "oxygen"], "oxygen item"
)
_TEMPERATURE: Final = _FLOWSHEET[VITAL_ITEM_NAMES["temp"]]
# units_allowed lists only the spellings the export prints: the default and one variant.
FAHRENHEIT_UNIT: Final[str] = _only(
    [u for u in _TEMPERATURE["units_allowed"] if u != _TEMPERATURE["default_unit"]], "temp unit"
)

# lab_results.csv: test names, default units, the CRP variant unit, reference ranges, flags.
_LIS: Final = _SITE_FILES["lab_results.csv"]
LAB_TEST_NAMES: Final[dict[str, str]] = {s["test"]: name for name, s in _LIS["tests"].items()}
LAB_UNIT_NAMES: Final[dict[str, str]] = {
    s["test"]: s["default_unit"] for s in _LIS["tests"].values()
}
_CRP: Final = _LIS["tests"][LAB_TEST_NAMES["crp"]]
CRP_ALT_UNIT: Final[str] = _only(
    [u for u in _CRP["units_allowed"] if u != _CRP["default_unit"]], "CRP unit"
)
# (low, high) printed in 参考范围; haemoglobin depends on sex (WS/T 405-2012 adult ranges).
LAB_REFERENCE_RANGES: Final[dict[str, tuple[float, float]]] = {
    test: _range(text) for test, text in _LIS["reference_ranges"].items() if isinstance(text, str)
}
HGB_REFERENCE_RANGES: Final[dict[str, tuple[float, float]]] = {
    sex: _range(text) for sex, text in _LIS["reference_ranges"]["hgb"].items()
}
_FLAGS: Final = _inverse(_LIS["columns"]["异常标识"]["values"], "异常标识")
FLAG_HIGH: Final[str] = _FLAGS["high"]
FLAG_LOW: Final[str] = _FLAGS["low"]

# mar.xlsx: sheet, drug, route and indication names.
_MAR: Final = _SITE_FILES["mar.xlsx"]
MAR_SHEET: Final[str] = _MAR["sheet"]
DRUG_NAMES: Final[dict[str, str]] = {s["drug"]: name for name, s in _MAR["drugs"].items()}
ROUTE_NAMES: Final[dict[str, str]] = {s["route"]: name for name, s in _MAR["routes"].items()}
# Free text: known canonical values are translated, anything else is written as is.
INDICATION_NAMES: Final[dict[str, str]] = _inverse(_MAR["indications"], "indications")

# vasopressors.csv: drug names and rate units. `units` holds NFKC synonyms (μ and µ), so the
# printed spelling is each drug's default_unit, the one unit the export writes for it.
_VASO: Final = _SITE_FILES["vasopressors.csv"]
VASOPRESSOR_NAMES: Final[dict[str, str]] = {s["drug"]: name for name, s in _VASO["drugs"].items()}
VASOPRESSOR_DEFAULT_UNITS: Final[dict[str, str]] = {
    s["drug"]: _VASO["units"][s["default_unit"]] for s in _VASO["drugs"].values()
}
RATE_UNIT_NAMES: Final[dict[str, str]] = _inverse(
    {s["default_unit"]: _VASO["units"][s["default_unit"]] for s in _VASO["drugs"].values()},
    "vasopressor default units",
)

# EMR extracts: MRD not detected, infection sites and causes of death (free text).
_MRD: Final = _SITE_FILES["response_day28.csv"]["columns"]["MRD(流式,%)"]["special_values"]
MRD_NEGATIVE: Final[str] = _only([text for text, value in _MRD.items() if value == 0], "MRD")
INFECTION_SITE_NAMES: Final[dict[str, str]] = _inverse(
    _SITE_FILES["infections.csv"]["sites"], "infection sites"
)
DEATH_CAUSE_NAMES: Final[dict[str, str]] = _inverse(
    _SITE_FILES["followup.csv"]["death_causes"], "death causes"
)

# FHIR: code-system URIs and the study id system (fhir/targets.yaml).
FHIR_SYSTEMS: Final[dict[str, str]] = dict(_FHIR["systems"])
STUDY_ID_SYSTEM: Final[str] = _FHIR["patient"]["study_id_system"]
MRN_TYPE: Final[tuple[str, str]] = (
    _FHIR["patient"]["mrn_type"]["system"],
    _FHIR["patient"]["mrn_type"]["code"],
)


def _items(alias: str) -> dict[str, str]:
    """``{code: canonical item}`` of the concept-map rows of one code system."""
    system = FHIR_SYSTEMS[alias]
    return {
        r["source_code"]: r["item"]
        for r in _CONCEPT_MAP
        if r["source_system"] == system
        and r["item"]
        and (alias != "local" or r["target"] == "oxygen_device")
    }


# FHIR: canonical key -> code (fhir/concept_map.csv maps code -> item).
LOINC_OF: Final[dict[str, str]] = _inverse(_items("loinc"), "loinc")  # vital items, lab tests
RXNORM_OF: Final[dict[str, str]] = _inverse(_items("rxnorm"), "rxnorm")  # drugs, vasopressors
LOCAL_DEVICE_CODE: Final[dict[str, str]] = _inverse(_items("local"), "local devices")
ROUTE_SNOMED_OF: Final[dict[str, str]] = _inverse(_CONCEPTS["values"]["drugs.route"], "routes")
GENDER: Final[dict[str, str]] = _inverse(_CONCEPTS["values"]["demographics.sex"], "sex")


def _rule_code(target: str, alias: str) -> str:
    """The one code of a system mapped to a target, e.g. the LOINC of ``height``."""
    system = FHIR_SYSTEMS[alias]
    codes = [
        r["source_code"]
        for r in _CONCEPT_MAP
        if r["target"] == target and r["source_system"] == system
    ]
    return _only(codes, f"{target} {alias}")


BODY_HEIGHT_LOINC: Final = _rule_code("height", "loinc")
BODY_WEIGHT_LOINC: Final = _rule_code("weight", "loinc")
O2_FLOW_LOINC: Final = _only(
    [
        r["source_code"]
        for r in _CONCEPT_MAP
        if r["target"] == "oxygen_flow" and r["source_display"] == "Inhaled oxygen flow rate"
    ],
    "oxygen flow",
)
CAUSE_OF_DEATH_LOINC: Final = _rule_code("cause_of_death", "loinc")
OXYGEN_THERAPY_SNOMED_CODE: Final = _rule_code("oxygen_therapy", "snomed")
ALL_SNOMED: Final = _rule_code("all_diagnosis", "snomed")
ALL_ICD10: Final = _rule_code("all_diagnosis", "icd10")
