"""Vectorised casts from raw export text to typed values (polars expressions, no row loops).

Casting never guesses: a value that does not parse becomes null, and the staged pandera
model then quarantines the row with the raw text and the fix. The rules below are the
ones a data manager can predict from the site mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

# Excel's 1900 date system counts days from 1899-12-30 (the Lotus leap-year bug included).
EXCEL_EPOCH = datetime(1899, 12, 30)  # noqa: DTZ001 - a calendar origin, not a moment
_ROUND = {"day": "1d", "minute": "1m", "second": "1s"}
_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)$"
# A timestamp outside these years is not a clinical date of this study but data shifted into
# the column (a cell count, a weight, an MRN): it does not parse (and never overflows).
MIN_YEAR, MAX_YEAR = 1900, 2999
# An Excel serial is a plain day count (no sign, no exponent) from 1 up to 2100-12-31: a
# larger number in a date column is other data, a digits-only date is never a serial.
_SERIAL = r"^\d{1,5}(\.\d+)?$"
EXCEL_SERIAL_MIN, EXCEL_SERIAL_MAX = 1, 73415  # up to 2100-12-31 (the result must be >= 1900)
_DECIMAL_COMMA = r"^([+-]?\d+),(\d+)$"


def normalise_text(expr: pl.Expr) -> pl.Expr:
    """Unicode NFKC (full-width digits/letters -> ASCII, ℃ -> °C) then strip; '' -> null."""
    text = expr.str.normalize("NFKC").str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def parse_number(expr: pl.Expr) -> pl.Expr:
    """Text -> Float64: NFKC, strip, one decimal comma between digits -> point; else null.

    '38,6' is read as 38.6 because the exports never use thousands separators in numeric
    result cells (a site that does must declare it; see the mapping's decimal_separator).
    """
    text = normalise_text(expr).str.replace(_DECIMAL_COMMA, "${1}.${2}")
    return pl.when(text.str.contains(_NUMBER)).then(text.cast(pl.Float64, strict=False))


def has_decimal_comma(expr: pl.Expr) -> pl.Expr:
    """True where the raw text used a decimal comma (kept as a provenance flag)."""
    return normalise_text(expr).str.contains(_DECIMAL_COMMA).fill_null(False)


def excel_serial_days(text: pl.Expr) -> pl.Expr:
    """Normalised text -> its Excel serial day count (Float64) when it can be one, else null.

    Only plain decimals between ``EXCEL_SERIAL_MIN`` and ``EXCEL_SERIAL_MAX`` + 1 (a year
    1900-2100): ``-5`` (1899-12-24), ``19640106`` (a digits-only date, year 55672) or a cell
    count shifted into the column are not dates.
    """
    days = pl.when(text.str.contains(_SERIAL)).then(text.cast(pl.Float64, strict=False))
    return pl.when(days.is_between(EXCEL_SERIAL_MIN, EXCEL_SERIAL_MAX + 1, closed="left")).then(
        days
    )


def _in_years(parsed: pl.Expr) -> pl.Expr:
    """``parsed`` where its year is within MIN_YEAR..MAX_YEAR, else null."""
    return pl.when(parsed.dt.year().is_between(MIN_YEAR, MAX_YEAR)).then(parsed)


def parse_local_datetime(
    expr: pl.Expr,
    formats: Sequence[str],
    *,
    timezone: str,
    excel_serial: bool = True,
    precision: str = "second",
) -> pl.Expr:
    """Text -> Datetime(us, UTC) trying each declared format in order, then Excel serials.

    Formats with ``%z`` keep their offset; naive ones are wall time in ``timezone`` (the site
    timezone). Slash formats are whatever the mapping declares (day-first at Chinese sites):
    nothing is guessed. A bare number is an Excel serial day count when ``excel_serial``,
    rounded to the column's declared ``precision`` ("day", "minute" or "second") because a
    serial stores 1/86 400 of a day in binary floating point (44260.604167 -> 14:30:00.029).
    Only serials 1..73415 (years 1900-2100, ``excel_serial_days``) are read; a digits-only
    date (``19640106``) parses only where the mapping declares ``%Y%m%d``. A parsed year
    outside 1900-2999 is null: the column holds other data. Never raises or panics on text.
    """
    text = normalise_text(expr)
    candidates: list[pl.Expr] = []
    for fmt in formats:
        if "%z" in fmt:
            parsed = _in_years(
                text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False, exact=True)
            )
        else:
            parsed = (
                _in_years(text.str.strptime(pl.Datetime("us"), fmt, strict=False, exact=True))
                .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC")
            )
        candidates.append(parsed)
    if excel_serial:
        serial = excel_serial_days(text)
        as_local = pl.lit(EXCEL_EPOCH).dt.cast_time_unit("us") + pl.duration(
            milliseconds=(serial * 86_400_000).round(0).cast(pl.Int64, strict=False)
        )
        as_local = _in_years(as_local.dt.round(_ROUND[precision]))
        candidates.append(
            as_local.dt.replace_time_zone(
                timezone, ambiguous="earliest", non_existent="null"
            ).dt.convert_time_zone("UTC")
        )
    return pl.coalesce(candidates)


def parse_iso_datetime(expr: pl.Expr, *, timezone: str) -> pl.Expr:
    """FHIR/ISO 8601 text (date, date-time with or without offset, 'Z') -> Datetime(us, UTC)."""
    return parse_local_datetime(
        expr.str.replace(r"Z$", "+00:00"),
        [
            "%Y-%m-%dT%H:%M:%S%.f%z",
            "%Y-%m-%dT%H:%M:%S%z",
            "%Y-%m-%dT%H:%M%z",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d",
        ],
        timezone=timezone,
        excel_serial=False,
    )
