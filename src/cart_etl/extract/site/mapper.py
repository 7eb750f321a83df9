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
    "RULE_EMPTY_ROW",
    "RULE_MISSING_PATIENT_KEY",
    "RULE_NO_VALUES",
    "RULE_RAGGED_ROW",
    "RULE_UNKNOWN_ITEM",
    "WIDE_ROW_SEPARATOR",
    "map_source_frame",
    "needed_columns",
    "ragged_rows",
    "resolve_columns",
    "select_mapped",
    "source_row",
]

WIDE_ROW_SEPARATOR: Final = ":"  # wide layouts: row = "<data row>:<item>"

RULE_UNKNOWN_ITEM: Final = "extract.unknown_item"
RULE_MISSING_PATIENT_KEY: Final = "extract.missing_patient_key"
RULE_EMPTY_ROW: Final = "extract.empty_row"
RULE_NO_VALUES: Final = "extract.no_values"
RULE_RAGGED_ROW: Final = "extract.ragged_row"

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
    frame, rejected = _drop_unplaceable(frame, ctx)
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
    """Rejected for a row with more cells than the header (cells are not echoed: privacy)."""
    delimiter = ctx.spec.delimiter
    return ctx.reject(
        str(bad.row),
        "*",
        f"{bad.fields} fields",
        RULE_RAGGED_ROW,
        f"{ctx.file} row {bad.row}: {bad.fields} cells but the header has {bad.width}; the "
        f"cells cannot be aligned with the columns. Fix: quote cells containing the "
        f"delimiter {delimiter!r} in the export, or remove the extra cells.",
    )
