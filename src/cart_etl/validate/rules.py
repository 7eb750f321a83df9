"""The named validation rules: one id, what it checks, and the fix a data manager applies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["quarantine", "warning"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A validation rule as documented in the README rule table."""

    rule_id: str
    entity: str
    field: str
    severity: Severity
    checks: str
    fix: str


_RULES: tuple[Rule, ...] = (
    Rule(
        "measurement.at.parse",
        "vitals/labs/oxygen",
        "at",
        "quarantine",
        "timestamp parses with the file's declared format, a declared alternate, an Excel serial or ISO 8601",
        "write the date in the format the site mapping declares (or add the format to alternate_datetime_formats)",
    ),
    Rule(
        "measurement.at.future",
        "vitals/labs/oxygen",
        "at",
        "quarantine",
        "timestamp is not after the extraction time",
        "correct the year of the charted time; future dates are never repaired automatically",
    ),
    Rule(
        "measurement.item.known",
        "vitals/labs",
        "item_code",
        "quarantine",
        "the local item/test name (or LOINC code) is in the site mapping",
        "add the name to the mapping's items/tests with its LOINC code",
    ),
    Rule(
        "measurement.value.numeric",
        "vitals/labs",
        "value",
        "quarantine",
        "the result is a number (after NFKC and decimal-comma normalisation)",
        "enter a numeric result; qualitative results belong in a text item",
    ),
    Rule(
        "measurement.unit.convertible",
        "vitals/labs",
        "unit",
        "quarantine",
        "the printed unit maps to UCUM and converts to the item's canonical unit (blank only when the item has one declared unit)",
        "fill the unit column, or declare the printed spelling under the mapping's units",
    ),
    Rule(
        "measurement.value.hard_range",
        "vitals/labs",
        "value",
        "quarantine",
        "the value in canonical units lies within the physically possible range (mappings/validation/plausibility.yaml)",
        "check for a missing decimal point or a wrong sign in the source system and re-export",
    ),
    Rule(
        "oxygen.device.known",
        "oxygen",
        "device_code",
        "quarantine",
        "the charted oxygen text matches one of the mapping's device patterns",
        "add the spelling to oxygen_devices in the site mapping",
    ),
    Rule(
        "oxygen.flow.hard_range",
        "oxygen",
        "flow_l_min",
        "quarantine",
        "charted flow is between 0 and 80 L/min",
        "correct the flow; > 80 L/min is not deliverable",
    ),
    Rule(
        "row.patient.known",
        "all",
        "patient_key",
        "quarantine",
        "the row's patient key exists in the patient register",
        "correct the MRN (a digit swap is common); never fuzzy-match",
    ),
    Rule(
        "row.patient.quarantined",
        "all",
        "patient_key",
        "quarantine",
        "the row's patient is in the register but the register row itself was quarantined",
        "fix the patient's register row (see its own quarantine reason); this row then loads",
    ),
    Rule(
        "row.duplicate",
        "all",
        "*",
        "quarantine",
        "the row is identical (after normalisation) to an earlier row of the same file",
        "remove the duplicated line from the export (kept once)",
    ),
)

_RULES += (
    Rule(
        "field.parse",
        "all small tables",
        "<field>",
        "quarantine",
        "a non-empty cell casts to its declared type (date, number, integer, mapped code)",
        "write the value in the declared format, or add the local code to the mapping's values",
    ),
    Rule(
        "field.range",
        "all small tables",
        "<field>",
        "quarantine",
        "the value is inside the field's allowed set or range (e.g. sex M/F, blasts 0-100 %, weight 2-500 kg)",
        "correct the value in the source system",
    ),
    Rule(
        "patient.dates.order",
        "demographics",
        "birth_date",
        "quarantine",
        "birth date < diagnosis date <= screening date",
        "check the three dates in the register; a swapped day/month is common",
    ),
    Rule(
        "date.future",
        "all",
        "<date>",
        "quarantine",
        "no date lies after the extraction date",
        "correct the year; future dates are never repaired automatically",
    ),
    Rule(
        "drug.known",
        "drugs",
        "drug_code",
        "quarantine",
        "the local drug name (or RxNorm code) is in the mapping",
        "add the drug name to the mapping's drugs with its RxNorm code",
    ),
    Rule(
        "drug.dose.parse",
        "drugs",
        "dose",
        "quarantine",
        "the dose reads as number + unit ('400mg', '0.4 g', '300μg', '8mg/kg') or number + unit column",
        "write the dose with its unit",
    ),
    Rule(
        "drug.dose.unit",
        "drugs",
        "dose",
        "quarantine",
        "the dose unit converts to the drug's canonical unit (mg/kg needs the patient's infusion weight)",
        "record the dose in mg (or μg for G-CSF), or record the infusion weight",
    ),
    Rule(
        "drug.dose.hard_range",
        "drugs",
        "dose",
        "quarantine",
        "0 < dose <= hard maximum per dose (tocilizumab 1200 mg; methylprednisolone 2000 mg; dexamethasone 100 mg; G-CSF 1200 μg)",
        "check the unit (g vs mg, mL vs mg) and re-export",
    ),
    Rule(
        "drug.toci.mg_per_kg_hard",
        "drugs",
        "dose",
        "quarantine",
        "tocilizumab dose / infusion weight <= 20 mg/kg",
        "check the weight and the dose unit",
    ),
)

_RULES += (
    Rule(
        "infusion.one_per_patient",
        "infusion",
        "at",
        "quarantine",
        "one CAR-T infusion per patient unless the site mapping declares re-infusions",
        "remove the duplicate infusion record, or declare allow_reinfusion in the mapping",
    ),
    Rule(
        "infusion.after_diagnosis",
        "infusion",
        "at",
        "quarantine",
        "infusion date is after the diagnosis date (birth < diagnosis < infusion)",
        "check the infusion and diagnosis dates",
    ),
    Rule(
        "infusion.study_window",
        "infusion",
        "at",
        "quarantine",
        "infusion date lies inside the configured study window",
        "check the date, or widen the study window in the run configuration",
    ),
    Rule(
        "response.window",
        "response",
        "at",
        "quarantine",
        "the 'day 28' assessment is on study day 21-35 after the patient's infusion",
        "record the assessment date; assessments outside 21-35 days are not day-28 responses",
    ),
    Rule(
        "drug.no_infusion",
        "drugs/vasopressors",
        "patient_key",
        "quarantine",
        "the patient of a drug administration or vasopressor infusion has an accepted CAR-T infusion (day 0 of its study day); the patient is not_infused otherwise",
        "add the patient's CAR-T infusion row to the delivery, or fix its quarantined infusion row; this row then loads",
    ),
    Rule(
        "followup.death_before_last_contact",
        "follow_up",
        "death_date",
        "quarantine",
        "death date is not before the last contact date",
        "correct the death or last-contact date",
    ),
)

_RULES += (
    Rule(
        "date.excel_serial",
        "all",
        "<date>",
        "warning",
        "a date cell held an Excel serial number; converted from the 1900 date system",
        "format the column as text dates in the source export",
    ),
    Rule(
        "date.alternate_format",
        "all",
        "<date>",
        "warning",
        "a date used a declared alternate format instead of the file's own",
        "export every date of the file in one format",
    ),
    Rule(
        "date.timezone_assumed",
        "all",
        "<date>",
        "warning",
        "a timestamp lacked its UTC offset; the site timezone was assumed",
        "export timestamps with their offset (+08:00)",
    ),
    Rule(
        "number.decimal_comma",
        "vitals/labs",
        "value",
        "warning",
        "a decimal comma was read as a decimal point",
        "export numbers with a decimal point",
    ),
    Rule(
        "text.normalised",
        "all",
        "<field>",
        "warning",
        "full-width characters or leading/trailing spaces were normalised (NFKC + strip)",
        "fix the cell in the source system (input-method full-width characters, stray spaces)",
    ),
    Rule(
        "unit.converted",
        "vitals/labs/drugs",
        "unit",
        "warning",
        "a value was converted to the canonical unit (°F -> °C, mg/dL -> mg/L, g -> mg); the original is kept",
        "none needed; unify units in the source system if possible",
    ),
    Rule(
        "unit.inferred",
        "vitals/labs",
        "unit",
        "warning",
        "a blank unit was filled with the item's only declared unit",
        "fill the unit column in the source export",
    ),
    Rule(
        "drug.dose.per_kg",
        "drugs",
        "dose",
        "warning",
        "a dose written per kg was multiplied by the patient's infusion weight and rounded to the mg",
        "record the administered dose in mg",
    ),
)

_RULES += (
    Rule(
        "vasopressor.known",
        "vasopressors",
        "drug_code",
        "quarantine",
        "the vasopressor name (or RxNorm code) is in the mapping",
        "add the agent to the mapping's vasopressor drugs with its RxNorm code",
    ),
    Rule(
        "vasopressor.interval",
        "vasopressors",
        "stop",
        "quarantine",
        "the infusion stops at or after it starts",
        "correct the start or stop time",
    ),
    Rule(
        "vasopressor.rate",
        "vasopressors",
        "rate",
        "quarantine",
        "0 < rate <= deliverable maximum in the agent's unit (norepinephrine/epinephrine 5, dopamine 50, phenylephrine 20 μg/kg/min; vasopressin 0.1 U/min)",
        "check the rate unit (μg/min vs μg/kg/min, U/h vs U/min) and the decimal point",
    ),
    Rule(
        "measurement.value.implausible",
        "vitals/labs",
        "value",
        "warning",
        "the value lies inside the physically possible range but outside the plausible one (``warn`` in mappings/validation/plausibility.yaml); it is kept",
        "check the charted value (a slipped digit, the wrong item or unit) and correct it in the source system if wrong",
    ),
    Rule(
        "infusion.dose.consistency",
        "infusion",
        "cells_total",
        "warning",
        "total cells / (weight x 10^6) agrees with the charted dose per kg within 5 %",
        "check the weight, the total cell count and the dose per kg on the infusion record",
    ),
    Rule(
        "extract.truncated_row",
        "all files",
        "*",
        "quarantine",
        "the file ends inside this row (no final line break with cells missing, or an unclosed quote on the last line): the file was cut off",
        "re-export or copy the file again completely",
    ),
    Rule(
        "extract.unbalanced_quote",
        "all files",
        "*",
        "quarantine",
        "no quote opened in a row stays open to the end of the file (the lines after it are read again as rows of their own)",
        "remove the stray quote, or double it inside a quoted cell, and re-export",
    ),
    Rule(
        "extract.control_character",
        "all files",
        "*",
        "quarantine",
        "no mapped cell holds a NUL byte or another C0 control character (tab, CR and LF excepted)",
        "remove the character in the source system and re-export (a NUL byte often means a binary or UTF-16 file, or a damaged copy)",
    ),
    Rule(
        "extract.cell_too_long",
        "all files",
        "*",
        "quarantine",
        "no mapped cell is longer than 32 767 characters (Excel's cell limit)",
        "check the row for a stray quote or an embedded document and re-export",
    ),
    Rule(
        "extract.duplicate_column",
        "all files",
        "*",
        "quarantine",
        "a mapped column named twice in the header holds the same value in both copies",
        "remove or rename the repeated column in the export",
    ),
)

_RULES += (
    Rule(
        "register.study_id.conflict",
        "demographics",
        "mrn",
        "quarantine",
        "a study id is registered with one MRN only (every row of a study id with two MRNs is quarantined; both MRNs are named in the validation report, redacted in the store)",
        "give each patient their own study id in the register, or correct the MRN of the wrong row",
    ),
    Rule(
        "register.mrn.conflict",
        "demographics",
        "study_id",
        "quarantine",
        "an MRN is registered under one study id only (every row of an MRN with two study ids is quarantined, both study ids named)",
        "keep one study id per patient in the register (a re-screened patient keeps the first)",
    ),
    Rule(
        "register.conflicting_facts",
        "demographics",
        "<field>",
        "quarantine",
        "a patient registered twice (same MRN and study id) has the same facts on both rows (both values of each differing field are named; never the name)",
        "remove the wrong register row, keeping the one with the correct facts",
    ),
    Rule(
        "register.study_id.is_mrn",
        "demographics",
        "mrn",
        "quarantine",
        "the study id is not an MRN of the register (it is the pseudonym the marts carry)",
        "write the patient's study id, not the MRN, in the study-id column",
    ),
)

RULES: dict[str, Rule] = {r.rule_id: r for r in _RULES}


def rule(rule_id: str) -> Rule:
    """Look up a rule by id (KeyError names the unknown id)."""
    return RULES[rule_id]
