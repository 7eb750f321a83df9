"""Map the rows of a file or table onto canonical entity frames, as the spec's plan says.

The mapper only places values (no cleaning): every input row becomes records of the
entities its spec plans, or a :class:`~cart_etl.contract.Rejected` saying why it
cannot be placed. File exports (:mod:`cart_etl.extract.site.export`) and SQL tables
(:mod:`cart_etl.extract.readers.sql`) share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from cart_etl.contract import RawBatch, Rejected, conform
from cart_etl.errors import MappingError
from cart_etl.extract.readers.cells import ROW_COLUMN, BadRow, unique_names
from cart_etl.extract.site.spec import FileSpec, Output, SiteMapping, normalize_key

__all__ = [
    "RULE_CELL_TOO_LONG",
    "RULE_CONTROL_CHARACTER",
    "RULE_DUPLICATE_COLUMN",
    "RULE_EMPTY_ROW",
    "RULE_MISSING_PATIENT_KEY",
    "RULE_NO_VALUES",
    "RULE_RAGGED_ROW",
    "RULE_TRUNCATED_ROW",
    "RULE_UNBALANCED_QUOTE",
    "RULE_UNKNOWN_ITEM",
    "WIDE_ROW_SEPARATOR",
    "duplicate_columns",
    "map_source_frame",
    "needed_columns",
    "ragged_rows",
    "resolve_columns",
    "select_mapped",
    "source_row",
    "split_duplicates",
]

WIDE_ROW_SEPARATOR: Final = ":"  # wide layouts: row = "<data row>:<item>"

RULE_UNKNOWN_ITEM: Final = "extract.unknown_item"
RULE_MISSING_PATIENT_KEY: Final = "extract.missing_patient_key"
RULE_EMPTY_ROW: Final = "extract.empty_row"
RULE_NO_VALUES: Final = "extract.no_values"
RULE_RAGGED_ROW: Final = "extract.ragged_row"
RULE_TRUNCATED_ROW: Final = "extract.truncated_row"
RULE_UNBALANCED_QUOTE: Final = "extract.unbalanced_quote"
RULE_CONTROL_CHARACTER: Final = "extract.control_character"
RULE_CELL_TOO_LONG: Final = "extract.cell_too_long"
RULE_DUPLICATE_COLUMN: Final = "extract.duplicate_column"

# Excel's own limit on a cell; a longer cell is an export fault (a runaway quote, a blob).
MAX_CELL_CHARS: Final = 32_767
# C0 control characters other than tab, line feed and carriage return (NUL first of all).
_CONTROL_PATTERN: Final = "[\x00-\x08\x0b\x0c\x0e-\x1f]"

_TARGET: Final = "__target__"
_ORDER: Final = ("__n__", "__k__")


def source_row(row: str) -> str:
    """The input data row a provenance ``row`` comes from ("12:Temp" -> "12")."""
    return row.split(WIDE_ROW_SEPARATOR, 1)[0]


def needed_columns(spec: FileSpec) -> list[str]:
    """Declared columns the extraction reads (private and unreferenced null-field ones are not)."""
    referenced = {c.unit_column for c in spec.columns.values()}
    referenced |= {spec.patient_key, spec.item_column, spec.value_column, spec.unit_column}
    return [
        name
        for name, col in spec.columns.items()
        if col.role != "private"
        and (col.role != "ignored" or col.item is not None or name in referenced)
    ]


def resolve_columns(
    header: Sequence[str], spec: FileSpec, label: str, mapping: SiteMapping
) -> dict[str, str]:
    """Mapping column -> frame column (exact header match, else after NFKC + strip).

    Raises:
        MappingError: a needed column is not in the header (names file, column, header).
    """
    names = unique_names(header)
    by_key: dict[str, str] = {}
    for name in names:
        by_key.setdefault(normalize_key(name), name)
    resolved: dict[str, str] = {}
    missing: list[str] = []
    for column in needed_columns(spec):
        found = column if column in names else by_key.get(normalize_key(column))
        if found is None:
            missing.append(column)
        else:
            resolved[column] = found
    if missing:
        raise MappingError(
            f"{label}: column(s) {', '.join(repr(m) for m in missing)} declared under "
            f"{spec.where}.columns in {mapping.display_path} are not in the header. "
            f"Columns found: {', '.join(repr(h) for h in header)}.",
            fix="rename the columns in the site mapping to the export's header, or re-export "
            "the file with the agreed columns.",
        )
    return resolved


def duplicate_columns(header: Sequence[str], resolved: Mapping[str, str]) -> dict[str, list[str]]:
    """Mapping column -> the other frame columns whose header cell is the same name.

    A header naming a mapped column twice (exactly or after NFKC + strip) is read from its
    first occurrence; :func:`split_duplicates` sets aside the rows where the copies differ.
    """
    names = unique_names(header)
    out: dict[str, list[str]] = {}
    for column, found in resolved.items():
        key = normalize_key(column)
        others = [
            n
            for n, cell in zip(names, header, strict=True)
            if n != found and normalize_key(cell) == key
        ]
        if others:
            out[column] = others
    return out


def split_duplicates(
    frame: pl.DataFrame,
    resolved: Mapping[str, str],
    duplicates: Mapping[str, list[str]],
    spec: FileSpec,
    mapping: SiteMapping,
    file: str,
) -> tuple[pl.DataFrame, list[Rejected]]:
    """Rows whose repeated header columns disagree, as Rejected (values not echoed: privacy)."""
    if not duplicates:
        return frame, []
    ctx = _MapCtx(spec, mapping, mapping.site, file)
    positions = {n: i for i, n in enumerate(frame.columns) if n != ROW_COLUMN}
    rejected: list[Rejected] = []
    differs = []
    for column, others in duplicates.items():
        found = resolved[column]
        diff = pl.any_horizontal(pl.col(found).ne_missing(pl.col(o)) for o in others)
        differs.append(diff)
        cells = ", ".join(str(positions[n]) for n in (found, *others))
        for (row,) in frame.filter(diff).select(ROW_COLUMN).iter_rows():
            rejected.append(
                ctx.reject(
                    row,
                    column,
                    "",
                    RULE_DUPLICATE_COLUMN,
                    f"{file}: row {row}: the header names column {column!r} more than once "
                    f"(header cells {cells}) and this row holds different values in them, so "
                    f"it is unknown which one is meant. Fix: remove or rename the repeated "
                    f"column in the export (or map it under {spec.where}.columns under its "
                    "own name).",
                )
            )
    return frame.filter(~pl.any_horizontal(differs)), rejected


def select_mapped(frame: pl.DataFrame, resolved: Mapping[str, str]) -> pl.DataFrame:
    """ROW_COLUMN plus the needed columns, renamed to the mapping's column names."""
    return frame.select(
        pl.col(ROW_COLUMN), *(pl.col(found).alias(name) for name, found in resolved.items())
    )


def map_source_frame(
    frame: pl.DataFrame, file_spec: FileSpec, mapping: SiteMapping, source: str, file: str
) -> list[RawBatch | Rejected]:
    """Map one chunk of a file/table onto canonical entity frames (no cleaning).

    Args:
        frame: ROW_COLUMN + the spec's needed columns (mapping names), all ``pl.String``.
        file_spec: The spec of the file or table the chunk comes from.
        mapping: The site mapping (named in messages).
        source: ``source`` provenance value (site name, or ``sql:<site>``).
        file: ``file`` provenance value (path in the export, or table name).

    Returns:
        One RawBatch per entity with rows, then a Rejected per row that cannot be placed:
        every mapped cell empty, no patient key, an unknown long-format item (routing looks
        the item up after NFKC + strip; the emitted code keeps the cell as written), or a
        wide row without any item value. ``RawBatch.input_rows`` is the number of input
        rows behind the batch's records (its height, except in wide layouts where one row
        yields a record per item).
    """
    ctx = _MapCtx(file_spec, mapping, source, file)
    frame, suspect = _drop_corrupt(frame, ctx)
    frame, rejected = _drop_unplaceable(frame, ctx)
    rejected = [*suspect, *rejected]
    mappers = {"flat": _map_flat, "long": _map_long, "wide": _map_wide}
    batches, more = mappers[file_spec.layout](frame, ctx)
    return [*batches, *rejected, *more]


@dataclass(frozen=True, slots=True)
class _MapCtx:
    """What every mapping step needs."""

    spec: FileSpec
    mapping: SiteMapping
    source: str
    file: str

    def reject(self, row: str, field: str, value: str, rule_id: str, message: str) -> Rejected:
        """A Rejected of this file."""
        return Rejected(self.source, self.file, row, field, value, rule_id, message)


def _drop_corrupt(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[pl.DataFrame, list[Rejected]]:
    """Set aside rows with a cell holding control characters (NUL ...) or over 32 767 chars.

    Such a cell is a fault of the export (binary data, a runaway quote); the value is not
    echoed (it may be huge or hold anything).
    """
    cells = [c for c in frame.columns if c != ROW_COLUMN]
    if not cells or frame.height == 0:
        return frame, []
    control = [pl.col(c).str.contains(_CONTROL_PATTERN).fill_null(False) for c in cells]
    long_ = [(pl.col(c).str.len_chars() > MAX_CELL_CHARS).fill_null(False) for c in cells]
    flags = frame.select(
        pl.col(ROW_COLUMN),
        pl.concat_list(control).alias("control"),
        pl.concat_list(long_).alias("long"),
    )
    bad = flags.filter(pl.col("control").list.any() | pl.col("long").list.any())
    if bad.height == 0:
        return frame, []
    rejected = []
    for row, control_flags, long_flags in bad.iter_rows():
        if any(control_flags):
            field = cells[control_flags.index(True)]
            rejected.append(
                ctx.reject(
                    row,
                    field,
                    "",
                    RULE_CONTROL_CHARACTER,
                    f"{ctx.file}: row {row}: column {field!r} holds a control character (a NUL "
                    "byte or another non-printing character), which is not text. Fix: remove "
                    "the character in the source system and re-export (a NUL byte often means "
                    "a binary or UTF-16 file, or a damaged copy).",
                )
            )
        else:
            field = cells[long_flags.index(True)]
            rejected.append(
                ctx.reject(
                    row,
                    field,
                    "",
                    RULE_CELL_TOO_LONG,
                    f"{ctx.file}: row {row}: column {field!r} holds more than {MAX_CELL_CHARS:,} "
                    "characters (Excel's cell limit); it is not a value. Fix: check the row "
                    "in the export for a stray quote or an embedded document and re-export.",
                )
            )
    keep = ~(pl.any_horizontal(control) | pl.any_horizontal(long_))
    return frame.filter(keep), rejected


def _drop_unplaceable(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[pl.DataFrame, list[Rejected]]:
    """Set aside blank rows and rows without a patient key (they belong to nobody)."""
    cells = [c for c in frame.columns if c != ROW_COLUMN]
    key = ctx.spec.patient_key
    blank = pl.all_horizontal(pl.col(c).is_null() for c in cells)
    no_key = pl.col(key).is_null()
    bad = frame.filter(blank | no_key)
    if bad.height == 0:
        return frame, []
    rejected = []
    for row, is_blank in bad.select(ROW_COLUMN, blank.alias("b")).iter_rows():
        if is_blank:
            rejected.append(
                ctx.reject(
                    row,
                    "*",
                    "",
                    RULE_EMPTY_ROW,
                    f"{ctx.file} row {row}: every mapped column is empty; nothing to extract. "
                    "Fix: remove blank rows from the export.",
                )
            )
        else:
            rejected.append(
                ctx.reject(
                    row,
                    key,
                    "",
                    RULE_MISSING_PATIENT_KEY,
                    f"{ctx.file} row {row}: the patient key column {key!r} is empty, so the "
                    "row belongs to no patient. Fix: fill in the MRN in the export.",
                )
            )
    return frame.filter(~(blank | no_key)), rejected


def _assign_exprs(output: Output) -> list[pl.Expr]:
    """Polars expressions filling the output's canonical columns."""
    exprs = []
    for a in output.assigns:
        if a.source is not None:
            expr = pl.col(a.source)
        elif a.when is not None:
            expr = pl.when(pl.col(a.when).is_not_null()).then(pl.lit(a.literal, pl.String))
        else:
            expr = pl.lit(a.literal, pl.String)
        exprs.append(expr.alias(a.column))
    return exprs


def _records(part: pl.DataFrame, output: Output, ctx: _MapCtx, row: pl.Expr) -> pl.DataFrame:
    """Provenance + the output's columns for the rows of ``part``."""
    return part.select(
        pl.lit(ctx.source, pl.String).alias("source"),
        pl.lit(ctx.file, pl.String).alias("file"),
        row.alias("row"),
        pl.col(ctx.spec.patient_key).alias("patient_key"),
        *_assign_exprs(output),
    )


def _map_flat(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[list[RawBatch], list[Rejected]]:
    """Every row becomes one record of each entity the file maps to."""
    if frame.height == 0:
        return [], []
    batches = [
        RawBatch(
            o.entity, conform(o.entity, _records(frame, o, ctx, pl.col(ROW_COLUMN))), frame.height
        )
        for o in ctx.spec.outputs
    ]
    return batches, []


def _map_long(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[list[RawBatch], list[Rejected]]:
    """Route each row to the entity of its item (looked up after NFKC + strip)."""
    spec = ctx.spec
    assert spec.item_column is not None
    items = frame.get_column(spec.item_column)
    # Few distinct item texts: normalise those in Python, route every row in polars.
    route = {
        text: item.target
        for text in items.drop_nulls().unique().to_list()
        if (item := spec.find_item(text)) is not None
    }
    routed = frame.with_columns(
        items.replace_strict(route, default=None, return_dtype=pl.String).alias(_TARGET)
    )
    batches = []
    for output in spec.outputs:
        part = routed.filter(pl.col(_TARGET) == output.entity)
        if part.height:
            records = _records(part, output, ctx, pl.col(ROW_COLUMN))
            batches.append(RawBatch(output.entity, conform(output.entity, records), part.height))
    unknown = routed.filter(pl.col(_TARGET).is_null()).select(ROW_COLUMN, spec.item_column)
    return batches, [_unknown_item(ctx, row, value) for row, value in unknown.iter_rows()]


def _unknown_item(ctx: _MapCtx, row: str, value: str | None) -> Rejected:
    """Rejected for a long-format row whose item is not in the mapping."""
    spec = ctx.spec
    column = spec.item_column or ""
    text = value or ""
    key = normalize_key(text)
    where = f"{spec.where}.{spec.item_table}"
    problem = (
        f"{column!r} is empty"
        if not key
        else f"{column!r} = {text!r} (looked up as {key!r} after NFKC + strip) is not an item "
        f"of the site mapping"
    )
    return ctx.reject(
        row,
        column,
        text,
        RULE_UNKNOWN_ITEM,
        f"{ctx.file} row {row}: {problem}, so the row cannot be routed to an entity. "
        f"Fix: add {key or '<item>'!r} with its target entity under {where} in "
        f"{ctx.mapping.display_path} (known: {', '.join(spec.items)}), or correct the export.",
    )


def _map_wide(frame: pl.DataFrame, ctx: _MapCtx) -> tuple[list[RawBatch], list[Rejected]]:
    """One record per item with a value in the row; rows with no item value are rejected."""
    spec = ctx.spec
    present = {
        o.item: pl.any_horizontal(pl.col(c).is_not_null() for c in o.present) for o in spec.outputs
    }
    batches = []
    for entity in spec.entities:
        outputs = [o for o in spec.outputs if o.entity == entity]
        parts = []
        for k, output in enumerate(outputs):
            part = frame.filter(present[output.item])
            row = pl.concat_str(pl.col(ROW_COLUMN), pl.lit(f"{WIDE_ROW_SEPARATOR}{output.item}"))
            records = conform(entity, _records(part, output, ctx, row))
            number = part.get_column(ROW_COLUMN).cast(pl.Int64).alias(_ORDER[0])
            parts.append(records.with_columns(number, pl.lit(k).alias(_ORDER[1])))
        records = pl.concat(parts).sort(list(_ORDER)).drop(_ORDER)
        if records.height:
            rows_in = frame.filter(pl.any_horizontal(present[o.item] for o in outputs)).height
            batches.append(RawBatch(entity, records, rows_in))
    empty = frame.filter(~pl.any_horizontal(present.values())).get_column(ROW_COLUMN)
    columns = ", ".join(c for o in spec.outputs for c in o.present)
    rejected = [
        ctx.reject(
            row,
            "*",
            "",
            RULE_NO_VALUES,
            f"{ctx.file} row {row}: none of the item columns ({columns}) has a value; "
            "nothing to extract. Fix: remove the row from the export or fill in its values.",
        )
        for row in empty.to_list()
    ]
    return batches, rejected


def ragged_rows(
    spec: FileSpec, mapping: SiteMapping, source: str, file: str, bad_rows: Iterable[BadRow]
) -> list[Rejected]:
    """Rejected for every row the reader could not align with the header."""
    ctx = _MapCtx(spec, mapping, source, file)
    return [_bad_row(ctx, bad) for bad in bad_rows]


def _bad_row(ctx: _MapCtx, bad: BadRow) -> Rejected:
    """Rejected for a row the reader could not align (cells are not echoed: privacy)."""
    delimiter = ctx.spec.delimiter
    rule, message = (
        RULE_RAGGED_ROW,
        (
            f"{ctx.file} row {bad.row}: {bad.fields} cells but the header has {bad.width}; the "
            f"cells cannot be aligned with the columns. Fix: quote cells containing the "
            f"delimiter {delimiter!r} in the export, or remove the extra cells."
        ),
    )
    if bad.kind == "truncated":
        rule, message = (
            RULE_TRUNCATED_ROW,
            (
                f"{ctx.file}: row {bad.row}: the file ends in the middle of this row ({bad.fields} "
                f"of {bad.width} cells, no final line break or an unclosed quote): the file was "
                "cut off. Fix: re-export or copy the file again completely."
            ),
        )
    elif bad.kind == "unbalanced_quote":
        rule, message = (
            RULE_UNBALANCED_QUOTE,
            (
                f"{ctx.file}: row {bad.row}: a quote opened in this row is never closed, so the "
                "row cannot be split into cells (the lines after it were read as rows of their "
                'own). Fix: remove the stray quote, or double it ("") inside a quoted cell, and '
                "re-export."
            ),
        )
    return ctx.reject(str(bad.row), "*", f"{bad.fields} fields", rule, message)
