"""The defect catalogue: every kind of injected defect, and the record of one injection.

``DefectKind`` says what a defect looks like in the tabular site export and what a correct
validator must do with it (recover or quarantine); ``DefectRecord`` is one row of
``truth/defects.csv``, naming the file, row, field and the original and injected values of
a cell the site or FHIR writer changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal


@dataclass(frozen=True, slots=True)
class DefectRecord:
    file: str  # path relative to the synth output dir, e.g. "fhir/bundles/CART-001.json"
    row: str  # CSV: 1-based data row number (header excluded); FHIR: resource id or "line N"
    field: str  # column name, or FHIR element path e.g. "Observation.subject"
    kind: str  # defect kind id, e.g. "fhir_missing_subject"
    original_value: str
    injected_value: str
    study_id: str


Disposition = Literal["recover", "quarantine"]


@dataclass(frozen=True, slots=True)
class DefectKind:
    """One kind of defect a tabular site export may contain, and how to handle it."""

    id: str
    description: str
    disposition: Disposition  # what a correct validator must do with the affected row
    validator_action: str
    weight: float  # relative frequency among the kinds eligible for a row


_KINDS: Final = (
    DefectKind(
        "excel_serial_date",
        "A date cell holds its Excel serial number (days since 1899-12-30 in local wall time, "
        "1900 date system): an integer in date-only columns, 6 decimals in date-time columns, "
        "a numeric cell instead of a date cell in .xlsx files.",
        "recover",
        "Detect a bare number in a date column, convert it from the 1900 date system, round to "
        "the column's precision (day, minute or second) and localise to the site timezone.",
        1.0,
    ),
    DefectKind(
        "mixed_date_format",
        "A date written in another format than the file's own, e.g. '05/03/2021 14:20' "
        "(day-first) or '2021年03月05日'; every variant used is listed per file as "
        "alternate_datetime_formats in the site mapping.",
        "recover",
        "Parse with the declared format, then with each declared alternate in order; slash "
        "variants are day-first. Never guess month-first.",
        2.0,
    ),
    DefectKind(
        "timezone_less",
        "A LIS ISO-8601 timestamp without its '+08:00' offset.",
        "recover",
        "Interpret a naive timestamp as wall time of the site's declared timezone.",
        3.0,
    ),
    DefectKind(
        "future_date",
        "A date shifted forward by whole decades (at least +10 years, to 2035 or later), i.e. "
        "after any plausible extraction date. Only on rows that no derived truth depends on.",
        "quarantine",
        "Reject the row (date after the data cut-off) into quarantine; never repair it by "
        "subtracting years.",
        1.0,
    ),
    DefectKind(
        "fahrenheit_temperature",
        "A body temperature charted in degrees Fahrenheit with unit '℉' (exact decimal "
        "conversion of the Celsius value).",
        "recover",
        "Convert by the unit column, (F - 32) * 5 / 9, and round to 0.1 °C; keep provenance.",
        3.0,
    ),
    DefectKind(
        "dose_unit_g",
        "A dose written in grams, e.g. '0.4g' instead of '400mg'.",
        "recover",
        "Parse number and unit; convert g to mg (x 1000) with decimal arithmetic.",
        3.0,
    ),
    DefectKind(
        "dose_unit_mg_per_kg",
        "A tocilizumab dose written as its prescription per kg ('8mg/kg', '4mg/kg' or "
        "'12mg/kg'); only where the administered dose equals round(prescription * infusion "
        "weight), so the absolute dose is recoverable.",
        "recover",
        "Multiply by the patient's infusion weight (the weight column of the CAR-T infusion "
        "file) and round to the mg.",
        3.0,
    ),
    DefectKind(
        "crp_mg_dl",
        "A CRP result divided by 10 and reported with unit 'mg/dL'.",
        "recover",
        "Convert by the unit column: mg/dL to mg/L is x 10.",
        3.0,
    ),
    DefectKind(
        "decimal_comma",
        "A decimal comma in a numeric cell, e.g. '38,6' (the CSV cell is quoted).",
        "recover",
        "In numeric columns replace a single ',' between digits by '.'.",
        2.0,
    ),
    DefectKind(
        "missing_unit",
        "A blank unit cell on a row whose item has exactly one declared unit (default_unit in "
        "the site mapping). Only on rows that no derived truth depends on.",
        "quarantine",
        "Quarantine the row, or fill the declared default unit and flag the value as inferred; "
        "never guess a unit for an item with several possible units.",
        2.0,
    ),
    DefectKind(
        "impossible_value",
        "A physiologically impossible value: body temperature x 10 (e.g. '371' for 37.1) or a "
        "negative laboratory concentration. Only on rows that no derived truth depends on.",
        "quarantine",
        "Range-check every measurement and quarantine out-of-range rows; never rescale.",
        1.0,
    ),
    DefectKind(
        "duplicated_row",
        "An exact duplicate of a data row inserted right after it. Its DefectRecord names the "
        "inserted row, field '*', original_value '' and the row's cells joined by ','.",
        "recover",
        "Drop rows identical (after normalisation) to an earlier row of the same file.",
        3.0,
    ),
    DefectKind(
        "mrn_typo",
        "An MRN with two adjacent digits swapped, so it no longer matches the patient "
        "register. Only on rows that no derived truth depends on.",
        "quarantine",
        "Quarantine rows whose patient key is not in the register; never fuzzy-match MRNs.",
        1.0,
    ),
    DefectKind(
        "trailing_space",
        "Leading and/or trailing spaces around a cell value.",
        "recover",
        "Apply NFKC normalisation and strip every cell before mapping.",
        2.0,
    ),
    DefectKind(
        "fullwidth_chars",
        "Full-width digits, Latin letters or hyphens in a cell, e.g. '３８.５' or "
        "'白细胞介素－６(ＩＬ－６)'.",
        "recover",
        "Apply NFKC normalisation (full-width to ASCII) before mapping.",
        1.0,
    ),
)

DEFECT_CATALOGUE: Final[dict[str, DefectKind]] = {k.id: k for k in _KINDS}
"""Every defect kind the tabular site writers inject, keyed by id (documented in the docs)."""

QUARANTINE_KINDS: Final = frozenset(k.id for k in _KINDS if k.disposition == "quarantine")

# Two quarantined rows of one item closer than this would open a gap in the series that
# could hide a threshold crossing, so the planner keeps them apart.
QUARANTINE_SPACING: Final = timedelta(hours=24)
