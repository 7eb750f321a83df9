"""Clinical rules as data: the ASTCT 2019 grading file and the corticosteroid equivalents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cart_etl.config import Settings
from cart_etl.errors import MappingError


@dataclass(frozen=True, slots=True)
class CrsRules:
    """Machine-readable ASTCT 2019 CRS grading (``mappings/grading/crs_astct2019.json``)."""

    version: str
    fever_c: float
    adult_from_age: int
    adult_sbp_below: float
    child_sbp_base: float
    child_sbp_per_year: float
    hypotension_grades: tuple[dict[str, Any], ...]
    hypoxia_grades: tuple[dict[str, Any], ...]
    no_support_devices: frozenset[str]
    masking_drugs: frozenset[str]
    masking_excluded_routes: frozenset[str]
    max_gap_hours: float
    oxygen_state_valid_hours: float
    onset_window_days: int
    monitoring_window_days: int
    min_febrile_grade: int


@dataclass(frozen=True, slots=True)
class SteroidRules:
    """Methylprednisolone-equivalent factors (mg MP per mg drug) and what counts."""

    factors: dict[str, float]
    systemic_routes: frozenset[str]
    first_day: int
    last_day: int


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise MappingError(
            f"Cannot read rule file {path}: {exc}", fix="restore it from the repository."
        ) from exc


@cache
def crs_rules(mappings_dir: Path | None = None) -> CrsRules:
    """Load the ASTCT 2019 grading rules (cached per mappings folder)."""
    root = mappings_dir or Settings().mappings_dir
    d = _read(root / "grading" / "crs_astct2019.json")
    try:
        hypo = d["hypotension_threshold"]
        return CrsRules(
            version=d["version"],
            fever_c=float(d["fever"]["min_temperature_c"]),
            adult_from_age=int(hypo["adult_from_age_years"]),
            adult_sbp_below=float(hypo["adult_sbp_below"]),
            child_sbp_base=float(hypo["child_sbp_base"]),
            child_sbp_per_year=float(hypo["child_sbp_per_year"]),
            hypotension_grades=tuple(d["hypotension_grades"]),
            hypoxia_grades=tuple(d["hypoxia_grades"]),
            no_support_devices=frozenset(d["no_support_devices"]),
            masking_drugs=frozenset(d["masking"]["drugs"]),
            masking_excluded_routes=frozenset(d["masking"]["excluded_routes"]),
            max_gap_hours=float(d["episode"]["max_gap_hours"]),
            oxygen_state_valid_hours=float(d["grading_resolution"]["oxygen_state_valid_hours"]),
            onset_window_days=int(d["episode"]["onset_window_days"]),
            monitoring_window_days=int(d["episode"]["monitoring_window_days"]),
            min_febrile_grade=int(d["minimum_grade_when_febrile"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MappingError(
            f"Grading file crs_astct2019.json lacks or mistypes {exc}",
            fix="compare it with the version in the repository.",
        ) from exc


@cache
def steroid_rules(mappings_dir: Path | None = None) -> SteroidRules:
    """Load the corticosteroid MP-equivalent table: factor = MP reference dose / drug dose."""
    root = mappings_dir or Settings().mappings_dir
    d = _read(root / "drugs" / "corticosteroid_equivalents.yaml")
    try:
        ref = float(d["equivalent_dose_mg"][d["reference_drug"]])
        first, last = d["count_days"]
        return SteroidRules(
            factors={k: ref / float(v) for k, v in d["equivalent_dose_mg"].items()},
            systemic_routes=frozenset(d["systemic_routes"]),
            first_day=int(first),
            last_day=int(last),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise MappingError(
            f"corticosteroid_equivalents.yaml lacks or mistypes {exc}",
            fix="compare it with the version in the repository.",
        ) from exc
