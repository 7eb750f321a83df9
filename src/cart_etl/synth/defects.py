"""Injected-defect bookkeeping shared by the synth export writers."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

import numpy as np


@dataclass(frozen=True, slots=True)
class DefectRecord:
    file: str  # path relative to the synth output dir, e.g. "fhir/bundles/CART-001.json"
    row: str  # CSV: 1-based data row number (header excluded); FHIR: resource id or "line N"
    field: str  # column name, or FHIR element path e.g. "Observation.subject"
    kind: str  # defect kind id, e.g. "fhir_missing_subject"
    original_value: str
    injected_value: str
    study_id: str


# --- catalogue ---------------------------------------------------------------------------------

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

FUTURE_MIN_YEAR: Final = 2035


# --- value transforms (pure) -------------------------------------------------------------------

_FULLWIDTH_SOURCE: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-"
_TO_FULLWIDTH: Final = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in _FULLWIDTH_SOURCE})
_SPACE_VARIANTS: Final = ("{} ", " {}", "{}  ", " {} ")
_EXCEL_EPOCH: Final = datetime(1899, 12, 30)  # noqa: DTZ001 - Excel serials are naive wall time


def nfkc_strip(text: str) -> str:
    """The normalisation a validator applies to every cell: NFKC, then strip."""
    return unicodedata.normalize("NFKC", text).strip()


def to_fullwidth(text: str) -> str:
    """Replace ASCII digits, Latin letters and '-' by their full-width forms."""
    return text.translate(_TO_FULLWIDTH)


def fullwidth_applies(text: str) -> bool:
    """True when ``to_fullwidth`` changes ``text`` and NFKC + strip restores it exactly."""
    return text != text.translate(_TO_FULLWIDTH) and nfkc_strip(text) == text


def pad_spaces(text: str, variant: int) -> str:
    """Surround ``text`` with spaces; ``variant`` picks one of four realistic paddings."""
    return _SPACE_VARIANTS[variant % len(_SPACE_VARIANTS)].format(text)


def pad_applies(text: str) -> bool:
    """True when padding ``text`` with spaces is undone exactly by NFKC + strip."""
    return text != "" and nfkc_strip(text) == text


SPACE_VARIANT_COUNT: Final = len(_SPACE_VARIANTS)


def digit_swap_positions(text: str) -> list[int]:
    """Positions ``i`` where ``text[i]`` and ``text[i + 1]`` are different digits."""
    return [
        i
        for i in range(len(text) - 1)
        if text[i].isdigit() and text[i + 1].isdigit() and text[i] != text[i + 1]
    ]


def swap_digits(text: str, pos: int) -> str:
    """Swap the characters at ``pos`` and ``pos + 1``."""
    return text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]


def decimal_comma(text: str) -> str:
    """Write the decimal point of a plain decimal number as a comma."""
    return text.replace(".", ",", 1)


def is_plain_decimal(text: str) -> bool:
    """True for strings like '38.6' or '-0.25' (digits, one point, no exponent)."""
    body = text[1:] if text.startswith("-") else text
    whole, point, frac = body.partition(".")
    return bool(point) and whole.isascii() and whole.isdigit() and frac.isdigit()


def scale_decimal(text: str, factor: Decimal) -> str:
    """Multiply a printed decimal exactly and print it without exponent or trailing zeros."""
    value = (Decimal(text) * factor).normalize()
    return format(value, "f")


def celsius_to_fahrenheit(text: str) -> str:
    """Exact decimal Fahrenheit of a printed Celsius value, e.g. '38.6' -> '101.48'."""
    value = (Decimal(text) * Decimal("1.8") + 32).normalize()
    return format(value, "f")


def excel_serial(when: datetime) -> float:
    """Excel 1900-system serial number of a naive local wall time."""
    return (when.replace(tzinfo=None) - _EXCEL_EPOCH).total_seconds() / 86400.0


def format_excel_serial(when: datetime, *, with_time: bool) -> str:
    """Serial number as a CSV cell: an integer for dates, 6 decimals (< 0.1 s) for times."""
    serial = excel_serial(when)
    return f"{serial:.6f}" if with_time else str(round(serial))


def shift_to_future(when: datetime) -> datetime | None:
    """Shift by whole decades to FUTURE_MIN_YEAR or later; None when Feb 29 has no twin."""
    years = 10
    while when.year + years < FUTURE_MIN_YEAR:
        years += 10
    try:
        return when.replace(year=when.year + years)
    except ValueError:
        return None


# --- planner -----------------------------------------------------------------------------------

Candidate = tuple[str, int]  # (kind id, column index; -1 for whole-row kinds)


class DefectPlanner:
    """Seeded decisions of which rows get which defect, with the quarantine spacing rule.

    All randomness comes from one dedicated ``numpy`` Generator seeded ``[seed, 777]`` and
    is consumed only here, so the clean export never depends on it. While some kind has not
    been injected yet and fewer than ``force_patients`` patients were seen, rows are also
    offered (at ``force_rate``) to the missing kinds only: small cohorts then still contain
    every kind, large ones keep the nominal rates.
    """

    def __init__(self, seed: int, *, force_patients: int = 50, force_rate: float = 0.5) -> None:
        """Create the planner.

        Args:
            seed: Cohort seed; the generator is seeded with ``[seed, 777]``.
            force_patients: Patients during which missing kinds are actively sought.
            force_rate: Per-row probability of offering a row to the missing kinds.
        """
        self._rng = np.random.default_rng([seed, 777])
        self._force_patients = force_patients
        self._force_rate = force_rate
        self._unseen = set(DEFECT_CATALOGUE)
        self._patient = -1
        self._quarantined: dict[tuple[str, str], list[datetime]] = {}

    @property
    def kinds_seen(self) -> frozenset[str]:
        """Kinds injected at least once so far."""
        return frozenset(DEFECT_CATALOGUE) - self._unseen

    def start_patient(self) -> None:
        """Begin the next patient: the quarantine spacing rule is per patient."""
        self._patient += 1
        self._quarantined.clear()

    def pick_rows(self, n_rows: int, rate: float, kinds: Collection[str]) -> list[tuple[int, bool]]:
        """Rows that should receive a defect, in order.

        Args:
            n_rows: Number of data rows of this patient in one file.
            rate: Nominal per-row defect probability of the file.
            kinds: Kinds this file can ever carry (decides whether forcing applies).

        Returns:
            ``(row index, forced_only)`` pairs; ``forced_only`` rows may only take a kind
            not injected yet.
        """
        if n_rows == 0:
            return []
        draws = self._rng.random(n_rows)
        forcing = self._patient < self._force_patients and not self._unseen.isdisjoint(kinds)
        threshold = max(rate, self._force_rate) if forcing else rate
        return [(int(i), bool(draws[i] >= rate)) for i in np.flatnonzero(draws < threshold)]

    def choose(self, candidates: Sequence[Candidate], *, forced_only: bool) -> Candidate | None:
        """Weighted choice of a kind, then a uniform choice among its columns."""
        if forced_only:
            candidates = [c for c in candidates if c[0] in self._unseen]
        if not candidates:
            return None
        kinds = list(dict.fromkeys(kind for kind, _ in candidates))
        # Plain Python: numpy's per-call overhead dwarfs these five-element sums.
        point = self._rng.random() * sum(DEFECT_CATALOGUE[k].weight for k in kinds)
        kind = kinds[-1]
        for k in kinds:
            point -= DEFECT_CATALOGUE[k].weight
            if point < 0:
                kind = k
                break
        columns = [c for c in candidates if c[0] == kind]
        return columns[self.variant(len(columns))]

    def variant(self, n: int) -> int:
        """Uniform integer in ``[0, n)`` (which padding, which alternate format, ...)."""
        if n <= 1:
            return 0
        return min(int(self._rng.random() * n), n - 1)

    def quarantine_allowed(self, item: tuple[str, str], when: datetime | None) -> bool:
        """True when no quarantine defect of this patient's ``item`` lies within 24 h."""
        if when is None:
            return False
        return all(abs(when - t) > QUARANTINE_SPACING for t in self._quarantined.get(item, ()))

    def mark(self, kind: str, item: tuple[str, str], when: datetime | None) -> None:
        """Record an injected defect (coverage, and spacing of quarantine kinds)."""
        self._unseen.discard(kind)
        if kind in QUARANTINE_KINDS and when is not None:
            self._quarantined.setdefault(item, []).append(when)
