"""Pure value transforms of the defects: full-width text, padding, digit swaps, units, dates.

Each function rewrites one printed cell value the way a defect of the catalogue does
(and the ``*_applies`` predicates say when the result is still exactly recoverable by the
normalisation a validator applies); none of them draws random numbers.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from decimal import Decimal
from typing import Final

FUTURE_MIN_YEAR: Final = 2035

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
