"""Clinical rules as data, read through :mod:`cart_etl.mappings` (site folders layered).

``crs_rules`` (ASTCT 2019 grading), ``steroid_rules`` (MP equivalents), ``toci_label``
(tocilizumab label limits) and ``derivation_rules`` (windows, gaps, thresholds, drug
classes of ``mappings/derive/derivation.yaml``). Each is read once per mapping set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from cart_etl.errors import MappingError
from cart_etl.mappings import Mappings, active


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


@dataclass(frozen=True, slots=True)
class TocilizumabLabel:
    """Tocilizumab label limits for CRS (Actemra/Kymriah USPI; crs_grading.md section 5, C1-C3).

    8 mg/kg (12 mg/kg under 30 kg) per dose, at most 800 mg per dose, at most 3 doses in
    24 h and 4 in total; kept in ``mappings/validation/plausibility.yaml``.
    """

    label_max_mg_per_dose: float
    alert_mg_per_kg_ge30: float
    alert_mg_per_kg_lt30: float
    max_doses_24h: int
    max_doses_total: int


@dataclass(frozen=True, slots=True)
class DerivationRules:
    """Windows, gaps and thresholds of the derivations (``mappings/derive/derivation.yaml``)."""

    response_window_days: tuple[int, int]
    response_target_day: int
    mrd_negative_below_pct: float
    remission_morphology: tuple[str, ...]
    icans_window_days: tuple[int, int]
    serious_infection_min_ctcae: int
    il6_after_first_toci: tuple[timedelta, timedelta]
    min_follow_up_days: int
    icans_gap: timedelta
    oxygen_run_gap: timedelta
    room_air_device: str
    toci_regimen_gap: timedelta
    admission_days: int
    drug_classes: dict[str, str]
    crs_treatment_classes: tuple[str, ...]


def _mistyped(rel: str, exc: Exception) -> MappingError:
    return MappingError(
        f"Rule file {rel} lacks or mistypes {exc}",
        fix=f"compare it with mappings/{rel} in the repository (a site override must keep "
        "the same keys and types).",
    )


def crs_rules(mappings: Mappings | None = None) -> CrsRules:
    """Load the ASTCT 2019 grading rules (once per mapping set)."""
    return _crs_rules(mappings or active())


@cache
def _crs_rules(m: Mappings) -> CrsRules:
    d = m.load("grading/crs_astct2019.json")
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
        raise _mistyped("grading/crs_astct2019.json", exc) from exc


def steroid_rules(mappings: Mappings | None = None) -> SteroidRules:
    """Load the corticosteroid MP-equivalent table: factor = MP reference dose / drug dose."""
    return _steroid_rules(mappings or active())


@cache
def _steroid_rules(m: Mappings) -> SteroidRules:
    d = m.load("drugs/corticosteroid_equivalents.yaml")
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
        raise _mistyped("drugs/corticosteroid_equivalents.yaml", exc) from exc


def toci_label(mappings: Mappings | None = None) -> TocilizumabLabel:
    """Read the tocilizumab label limits from the plausibility rules."""
    return _toci_label(mappings or active())


@cache
def _toci_label(m: Mappings) -> TocilizumabLabel:
    d = m.load("validation/plausibility.yaml")
    try:
        t = d["drugs"]["tocilizumab"]
        return TocilizumabLabel(
            label_max_mg_per_dose=float(t["label_max_per_dose"]),
            alert_mg_per_kg_ge30=float(t["alert_mg_per_kg_above"]["weight_ge_30kg"]),
            alert_mg_per_kg_lt30=float(t["alert_mg_per_kg_above"]["weight_lt_30kg"]),
            max_doses_24h=int(t["max_doses_24h"]),
            max_doses_total=int(t["max_doses_total"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _mistyped("validation/plausibility.yaml", exc) from exc


def _int(value: object) -> int:
    """A whole number from a rule file; a boolean or a fraction is a mistyped value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TypeError(f"{value!r} is not a whole number")
    return int(value)


def _days(pair: list[int]) -> tuple[int, int]:
    lo, hi = pair
    return _int(lo), _int(hi)


def derivation_rules(mappings: Mappings | None = None) -> DerivationRules:
    """Read the derivation windows, gaps and thresholds (``derive/derivation.yaml``)."""
    return _derivation_rules(mappings or active())


@cache
def _derivation_rules(m: Mappings) -> DerivationRules:
    d = m.load("derive/derivation.yaml")
    try:
        response, outcomes, periods = d["response"], d["outcomes"], d["periods"]
        il6_lo, il6_hi = outcomes["il6_after_first_toci_hours"]
        classes = dict(d["drug_classes"])
        crs_treatment = tuple(classes.pop("crs_treatment"))
        return DerivationRules(
            response_window_days=_days(response["window_days"]),
            response_target_day=_int(response["target_day"]),
            mrd_negative_below_pct=float(response["mrd_negative_below_pct"]),
            remission_morphology=tuple(str(m) for m in response["remission_morphology"]),
            icans_window_days=_days(outcomes["icans_window_days"]),
            serious_infection_min_ctcae=_int(outcomes["serious_infection_min_ctcae"]),
            il6_after_first_toci=(timedelta(hours=il6_lo), timedelta(hours=il6_hi)),
            min_follow_up_days=_int(d["exclusions"]["min_follow_up_days"]),
            icans_gap=timedelta(hours=float(periods["icans_gap_hours"])),
            oxygen_run_gap=timedelta(hours=float(periods["oxygen_run_gap_hours"])),
            room_air_device=str(periods["room_air_device"]),
            toci_regimen_gap=timedelta(hours=float(periods["toci_regimen_gap_hours"])),
            admission_days=_int(periods["admission_days"]),
            drug_classes={str(k): str(v) for k, v in classes.items()},
            crs_treatment_classes=crs_treatment,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _mistyped("derive/derivation.yaml", exc) from exc


@dataclass(frozen=True, slots=True)
class ClinicalRules:
    """Every rule set a derivation reads, from one mapping set."""

    crs: CrsRules
    steroids: SteroidRules
    label: TocilizumabLabel
    derivation: DerivationRules


def clinical_rules(mappings: Mappings | None = None) -> ClinicalRules:
    """The grading, steroid, label and derivation rules of ``mappings`` (default: active)."""
    m = mappings or active()
    return ClinicalRules(crs_rules(m), steroid_rules(m), toci_label(m), derivation_rules(m))
