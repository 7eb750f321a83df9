"""Staging: canonical raw frames -> typed frames (rename, cast, map codes, convert units only).

One ``stg_<entity>()`` per canonical entity. Each keeps the raw text beside the typed
value (``*_raw``) so that quarantine messages and provenance show what the source wrote,
and flags every silent-looking change (``is_unit_converted``, ``is_unit_inferred``,
``has_decimal_comma``). Nothing is dropped here: rows that do not cast end with nulls and
the staged pandera models (``cart_etl.validate.staged``) quarantine them with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import polars as pl

from cart_etl.mappings import plausibility
from cart_etl.stage.casts import (
    excel_serial_days,
    has_decimal_comma,
    normalise_text,
    parse_local_datetime,
    parse_number,
)

ISO_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)


@dataclass(frozen=True, slots=True)
class DateFormats:
    """How one input file writes timestamps (from its site mapping entry)."""

    formats: tuple[str, ...]
    precision: str = "second"
    excel_serial: bool = True


@dataclass(frozen=True)
class StagingContext:
    """Everything staging needs to know about a source, built from its mapping.

    Attributes:
        timezone: IANA zone of naive timestamps.
        dates: date formats by raw ``file`` value; files not listed use ISO 8601.
        concepts: ``(system, normalised code) -> canonical key`` for items, tests, drugs.
        units: normalised printed unit -> UCUM code.
        default_units: canonical key -> UCUM used when the unit cell is blank and the
            mapping declares exactly one unit for the item (flagged ``is_unit_inferred``).
        oxygen_devices: ``(regex, device)`` in match order, applied to normalised text.
        flow_regex: regex whose first group is the charted flow in L/min.
    """

    timezone: str
    dates: Mapping[str, DateFormats] = field(default_factory=dict)
    concepts: Mapping[tuple[str, str], str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    default_units: Mapping[str, str] = field(default_factory=dict)
    oxygen_devices: tuple[tuple[str, str], ...] = ()
    flow_regex: str = r"(\d+(?:\.\d+)?)\s*L/min"
    # FHIR sends JSON numbers: a decimal comma there is a malformed resource, not a habit.
    allow_decimal_comma: bool = True
    iso_fallback: bool = True  # parse files without declared formats as ISO 8601

    def narrow(self, df: pl.DataFrame, file_col: str = "file") -> StagingContext:
        """The context restricted to the files present in ``df``.

        polars evaluates every when/then branch on every row, so parsing a frame with the
        formats of all files of a site would cost one strptime per format per file.
        """
        present = (
            set(df.get_column(file_col).unique().to_list()) if file_col in df.columns else set()
        )
        dates = {f: spec for f, spec in self.dates.items() if f in present}
        return replace(self, dates=dates, iso_fallback=bool(present - set(dates)) or not present)


def canonical_units() -> dict[str, str]:
    """canonical measurement key -> its canonical UCUM unit."""
    return {k: v["unit"] for k, v in plausibility()["measurements"].items()}


def parse_timestamps(
    df: pl.DataFrame, ctx: StagingContext, columns: Mapping[str, str]
) -> pl.DataFrame:
    """Add parsed timestamp columns (``out: raw``) to a bulk frame, fast path first.

    Every row is parsed with its file's primary format only; the few rows that fail (Excel
    serials, alternate formats, missing offsets: defects) are re-parsed with all declared
    formats. Same result as ``_parse_at`` with every format, several times faster on
    millions of clean rows because polars evaluates every when/then branch on every row.
    """
    ctx = ctx.narrow(df)
    primary = replace(
        ctx,
        dates={
            f: replace(s, formats=s.formats[:1], excel_serial=False) for f, s in ctx.dates.items()
        },
    )
    out = df.with_columns(
        [_parse_at(primary, pl.col(raw)).alias(name) for name, raw in columns.items()]
    )
    retry = pl.any_horizontal(
        [
            pl.col(name).is_null() & normalise_text(pl.col(raw)).is_not_null()
            for name, raw in columns.items()
        ]
    )
    failed = out.with_row_index("_ix").filter(retry)
    if failed.is_empty():
        return out
    fixed = failed.with_columns(
        [_parse_at(ctx, pl.col(raw)).alias(name) for name, raw in columns.items()]
    )
    return (
        out.with_row_index("_ix")
        .update(fixed.select("_ix", *columns), on="_ix", how="left")
        .drop("_ix")
    )


def _parse_at(ctx: StagingContext, raw: pl.Expr, file_col: str = "file") -> pl.Expr:
    """Per-file declared formats; files without a declaration are ISO 8601 (FHIR, SQL dumps)."""
    iso = (
        parse_local_datetime(
            raw.str.replace(r"Z$", "+00:00"), ISO_FORMATS, timezone=ctx.timezone, excel_serial=False
        )
        if ctx.iso_fallback
        else pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    )
    expr: pl.Expr | None = None
    for file, spec in ctx.dates.items():
        parsed = parse_local_datetime(
            raw,
            spec.formats,
            timezone=ctx.timezone,
            excel_serial=spec.excel_serial,
            precision=spec.precision,
        )
        if expr is None:
            expr = pl.when(pl.col(file_col) == file).then(parsed)
        else:
            expr = expr.when(pl.col(file_col) == file).then(parsed)  # type: ignore[attr-defined]
    return iso if expr is None else expr.otherwise(iso)  # type: ignore[attr-defined]


def date_recovery(ctx: StagingContext, raw: pl.Expr, file_col: str = "file") -> pl.Expr:
    """How a timestamp that did not match its file's primary format was read, else null.

    'excel_serial' (a number in the serial range, where the file may hold serials),
    'timezone_assumed' (the primary format has an offset and the text has none) or
    'alternate_format' (a declared alternate). These are recovered defects: the value is
    kept and the row carries a data-quality warning.
    """
    text = normalise_text(raw)
    expr: pl.Expr = pl.lit(None, dtype=pl.String)
    for file, spec in ctx.dates.items():
        primary = spec.formats[0]
        parsed = text.str.strptime(
            pl.Datetime("us"), primary.replace("%z", ""), strict=False, exact=True
        )
        if "%z" in primary:
            primary_ok = text.str.strptime(
                pl.Datetime("us", "UTC"), primary, strict=False, exact=True
            ).is_not_null()
            naive_ok = parsed.is_not_null()
        else:
            primary_ok = parsed.is_not_null()
            naive_ok = pl.lit(False)
        kind = (
            pl.when(text.is_null() | primary_ok)
            .then(None)
            .when(excel_serial_days(text).is_not_null() & pl.lit(spec.excel_serial))
            .then(pl.lit("excel_serial"))
            .when(naive_ok)
            .then(pl.lit("timezone_assumed"))
            .otherwise(pl.lit("alternate_format"))
        )
        expr = pl.when(pl.col(file_col) == file).then(kind).otherwise(expr)
    return expr


def text_was_normalised(raw: pl.Expr) -> pl.Expr:
    """True for full-width ASCII forms (U+FF01-FF5E, ideographic space) or stray spaces.

    Compatibility symbols that NFKC also rewrites (℃ -> °C, µ -> μ) are how labs print
    units, not data-entry slips, so they are not reported.
    """
    spaced = raw != raw.str.strip_chars()
    fullwidth = raw.str.contains("[\uff01-\uff5e\u3000]")
    return (spaced | fullwidth).fill_null(False)


def _concept(ctx: StagingContext, system: str, code: str) -> pl.Expr:
    """Look up (system, NFKC-normalised code) in the context's concept map."""
    keys = pl.concat_str([pl.col(system), pl.lit("\x1f"), normalise_text(pl.col(code))])
    mapping = {f"{s}\x1f{c}": v for (s, c), v in ctx.concepts.items()}
    return keys.replace_strict(mapping, default=None, return_dtype=pl.String)


def _unit(ctx: StagingContext, raw: pl.Expr) -> pl.Expr:
    """Printed unit -> UCUM; UCUM codes pass through (FHIR already sends UCUM)."""
    text = normalise_text(raw)
    known = dict(ctx.units)
    known.update({u: u for u in set(ctx.units.values())})
    return text.replace_strict(known, default=None, return_dtype=pl.String)


def _convert(value: pl.Expr, from_unit: pl.Expr, to_unit: pl.Expr) -> pl.Expr:
    """value in ``from_unit`` -> ``to_unit`` with the conversion table; null if unknown."""
    out: pl.Expr = pl.lit(None, dtype=pl.Float64)
    for pair, spec in plausibility()["conversions"].items():
        src, dst = pair.split("->")
        converted = value * spec["factor"] + spec["offset"]
        out = pl.when((from_unit == src) & (to_unit == dst)).then(converted).otherwise(out)
    return pl.when(from_unit == to_unit).then(value).otherwise(out)


def stg_measurements(df: pl.DataFrame, ctx: StagingContext, *, code: str) -> pl.DataFrame:
    """Vital signs or lab results: one row per measurement, canonical unit.

    Grain: one row per raw row. ``code`` is the code column prefix ("item" for vitals,
    "test" for labs). The canonical unit per item comes from the plausibility file; the
    source unit is the printed unit mapped to UCUM, or, when the cell is blank, the single
    unit the mapping declares for the item (``is_unit_inferred``).
    """
    ctx = ctx.narrow(df)
    # Materialise each step once: eager polars does not share sub-expressions between columns.
    framed = df.rename({"at": "at_raw", "value": "value_raw", "unit": "unit_raw"}).with_columns(
        item=_concept(ctx, f"{code}_system", f"{code}_code"),
        _unit_text=normalise_text(pl.col("unit_raw")),
        has_decimal_comma=has_decimal_comma(pl.col("value_raw")),
    )
    framed = framed.with_columns(
        unit=pl.col("item").replace_strict(canonical_units(), default=None, return_dtype=pl.String),
        _inferred=pl.col("item").replace_strict(
            dict(ctx.default_units), default=None, return_dtype=pl.String
        ),
        _printed=_unit(ctx, pl.col("_unit_text")),
        _number=parse_number(pl.col("value_raw")),
    )
    blank = pl.col("_unit_text").is_null()
    framed = framed.with_columns(
        source_unit=pl.when(blank).then(pl.col("_inferred")).otherwise(pl.col("_printed")),
        is_unit_inferred=blank & pl.col("_inferred").is_not_null(),
    )
    number = pl.col("_number")
    if not ctx.allow_decimal_comma:
        number = pl.when(pl.col("has_decimal_comma")).then(None).otherwise(number)
    staged = framed.with_columns(
        value=_convert(number, pl.col("source_unit"), pl.col("unit")).round(4),
        is_unit_converted=(pl.col("source_unit") != pl.col("unit")).fill_null(False),
    ).drop("_unit_text", "_inferred", "_printed", "_number")
    return parse_timestamps(staged, ctx, {"at": "at_raw"})


def stg_oxygen(df: pl.DataFrame, ctx: StagingContext) -> pl.DataFrame:
    """Oxygen chartings: device category by the mapping's patterns, flow parsed from text.

    Grain: one row per charting. Device strings are matched after NFKC normalisation in the
    declared order (first match wins), so "面罩" does not capture "储氧面罩" when the
    non-rebreather pattern is listed first.
    """
    ctx = ctx.narrow(df)
    text = normalise_text(pl.col("device_code"))
    device: pl.Expr = pl.lit(None, dtype=pl.String)
    for pattern, name in reversed(ctx.oxygen_devices):
        device = pl.when(text.str.contains(pattern)).then(pl.lit(name)).otherwise(device)
    # A coded device (FHIR: SNOMED in device_system/device_code) wins over text patterns.
    coded = _concept(ctx, "device_system", "device_code")
    flow_from_text = parse_number(text.str.extract(ctx.flow_regex, 1))
    framed = df.with_columns(at_raw=pl.col("at"), device_raw=pl.col("device_code")).drop("at")
    return parse_timestamps(framed, ctx, {"at": "at_raw"}).with_columns(
        device=pl.coalesce([coded, device]),
        flow_l_min=pl.coalesce([parse_number(pl.col("flow_l_min")), flow_from_text]),
    )


# ---- small tables: one cast spec per entity ------------------------------------------------------
# kind: "datetime" | "date" | "number" | "integer" | "text" | "code" (mapped by ctx.values
# under "<entity>.<field>"; unmapped text stays null so validation can say which value failed).
CAST_SPECS: dict[str, dict[str, str]] = {
    "demographics": {
        "study_id": "text",
        "sex": "code",
        "birth_date": "date",
        "diagnosis_date": "date",
        "screening_date": "date",
        "height_cm": "number",
        "weight_kg": "number",
        "is_high_risk": "code",
        "risk_genetics": "text",
        "lines_of_therapy": "integer",
        "prior_allo_sct": "code",
        "marrow_blasts_pct": "number",
    },
    "infusion": {
        "at": "datetime",
        "product": "text",
        "lot": "text",
        "cells_total": "number",
        "dose_1e6_per_kg": "number",
        "weight_kg": "number",
        "donor_derived": "code",
    },
    "vasopressors": {
        "start": "datetime",
        "stop": "datetime",
        "rate": "number",
        "rate_unit": "text",
    },
    "response": {
        "at": "datetime",
        "morphology": "code",
        "marrow_blasts_pct": "number",
        "mrd_pct": "code_or_number",
    },
    "follow_up": {
        "last_contact_date": "date",
        "progression_date": "date",
        "death_date": "date",
        "death_cause": "text",
    },
    "infections": {
        "onset_date": "date",
        "site": "text",
        "organism": "text",
        "ctcae_grade": "integer",
    },
    "icans": {"at": "datetime", "ice_score": "integer", "grade": "integer"},
    "recorded_crs": {"at": "datetime", "grade": "integer", "scale": "text"},
}


@dataclass(frozen=True)
class ValueMaps:
    """Local code -> canonical value per ``"<entity>.<field>"`` (from the site/FHIR mapping)."""

    maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def expr(self, key: str, raw: pl.Expr) -> pl.Expr:
        table = dict(self.maps.get(key, {}))
        return normalise_text(raw).replace_strict(table, default=None, return_dtype=pl.String)


def _cast(ctx: StagingContext, values: ValueMaps, entity: str, name: str, kind: str) -> pl.Expr:
    raw = pl.col(f"{name}_raw")
    if kind in ("datetime", "date"):
        parsed = _parse_at(ctx, raw)
        if kind == "date":
            return parsed.dt.convert_time_zone(ctx.timezone).dt.date()
        return parsed
    if kind == "number":
        return parse_number(raw)
    if kind == "integer":
        number = parse_number(raw)
        # A whole number Int64 holds (2**53: exact in Float64); a larger one is other data
        # (field.parse), never an overflow error.
        whole = (number == number.round(0)) & (number.abs() < 2.0**53)
        return pl.when(whole).then(number.cast(pl.Int64, strict=False))
    if kind == "code":
        return values.expr(f"{entity}.{name}", raw)
    if kind == "code_or_number":
        # MRD "阴性" (not detected) maps to 0; numbers pass through as text for staging.
        mapped = values.expr(f"{entity}.{name}", raw)
        return pl.coalesce([mapped.cast(pl.Float64, strict=False), parse_number(raw)])
    return normalise_text(raw)


def stg_table(
    df: pl.DataFrame, ctx: StagingContext, values: ValueMaps, entity: str
) -> pl.DataFrame:
    """Cast one small canonical table by its spec; raw text kept as ``<field>_raw``."""
    ctx = ctx.narrow(df)
    spec = CAST_SPECS[entity]
    renamed = df.rename({name: f"{name}_raw" for name in spec})
    return renamed.with_columns(
        [_cast(ctx, values, entity, name, kind).alias(name) for name, kind in spec.items()]
    )


def stg_demographics(df: pl.DataFrame, ctx: StagingContext, values: ValueMaps) -> pl.DataFrame:
    """Patient register. Grain: one row per screened patient."""
    return stg_table(df, ctx, values, "demographics")


def dose_text_units() -> dict[str, str]:
    """Units a dose text cell may carry -> UCUM (``validation/plausibility.yaml``)."""
    return {str(k): str(v) for k, v in plausibility()["dose_text_units"].items()}


def dose_text_pattern(units: Mapping[str, str]) -> str:
    """``<number><unit>`` with the units longest first (so ``mg/kg`` is not read as ``mg``)."""
    alternatives = "|".join(re.escape(u) for u in sorted(units, key=len, reverse=True))
    return rf"^([+-]?\d+(?:\.\d+)?)\s*({alternatives})$"


def stg_drugs(df: pl.DataFrame, ctx: StagingContext, values: ValueMaps) -> pl.DataFrame:
    """Administrations with the dose as written, parsed. Grain: one row per administration.

    The dose is either a number + unit column (FHIR ``dosage.dose``) or one text cell
    ("400mg", "0.4g", "300μg", "8mg/kg"): ``source_dose`` + ``source_unit``. The dose in
    the drug's canonical unit needs the patient's weight for mg/kg doses, which only the
    accepted infusion gives: ``stg_drug_doses`` adds it after the register checks.
    """
    ctx = ctx.narrow(df)
    text_units = dose_text_units()
    pattern = dose_text_pattern(text_units)
    text = normalise_text(pl.col("dose_raw"))
    from_text_value = parse_number(text.str.extract(pattern, 1))
    from_text_unit = text.str.extract(pattern, 2).replace_strict(
        text_units, default=None, return_dtype=pl.String
    )
    has_unit_col = normalise_text(pl.col("dose_unit_raw")).is_not_null()
    value = pl.when(has_unit_col).then(parse_number(pl.col("dose_raw"))).otherwise(from_text_value)
    unit = pl.when(has_unit_col).then(_unit(ctx, pl.col("dose_unit_raw"))).otherwise(from_text_unit)
    staged = df.rename(
        {"at": "at_raw", "dose": "dose_raw", "dose_unit": "dose_unit_raw", "route": "route_raw"}
    ).with_columns(
        drug=_concept(ctx, "drug_system", "drug_code"),
        source_dose=value,
        source_unit=unit,
        route=values.expr("drugs.route", pl.col("route_raw")),
    )
    return parse_timestamps(staged, ctx, {"at": "at_raw"})


def stg_drug_doses(drugs: pl.DataFrame, weights: pl.DataFrame) -> pl.DataFrame:
    """The dose in each drug's canonical unit (mg, or μg for G-CSF).

    g/μg are converted; mg/kg is multiplied by the patient's infusion weight (``weights``:
    patient_key, weight_kg) and rounded to the mg, flagged ``is_dose_per_kg``. A mg/kg dose
    without a weight keeps its number (quarantined by the ``StgDrug`` model, ``drug.dose.unit``).
    """
    drug_units = {k: v["unit"] for k, v in plausibility()["drugs"].items()}
    staged = drugs.join(weights.select("patient_key", "weight_kg"), on="patient_key", how="left")
    per_kg = pl.col("source_unit") == "mg/kg"
    target = pl.col("drug").replace_strict(drug_units, default=None, return_dtype=pl.String)
    absolute = pl.when(per_kg).then((pl.col("source_dose") * pl.col("weight_kg")).round(0))
    absolute_unit = pl.when(per_kg).then(pl.lit("mg")).otherwise(pl.col("source_unit"))
    return staged.with_columns(
        dose=_convert(pl.coalesce([absolute, pl.col("source_dose")]), absolute_unit, target).round(
            4
        ),
        dose_unit=target,
        is_dose_per_kg=per_kg.fill_null(False),
        is_unit_converted=(absolute_unit != target).fill_null(False),
    )


def stg_vasopressors(df: pl.DataFrame, ctx: StagingContext, values: ValueMaps) -> pl.DataFrame:
    """Vasopressor infusions. Grain: one row per infusion interval."""
    return stg_table(df, ctx, values, "vasopressors").with_columns(
        drug=_concept(ctx, "drug_system", "drug_code"),
        rate_unit=_unit(ctx, pl.col("rate_unit_raw")),
    )
