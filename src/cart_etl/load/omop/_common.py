"""Shared pieces of the OMOP mappers: column specs, person/visit joins, local time, keys."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.periods import derive_admission
from cart_etl.derive.rules import derivation_rules
from cart_etl.errors import MappingError
from cart_etl.load.omop_ddl import FIELDS_CSV, duckdb_type

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

_POLARS_TYPES: dict[str, pl.DataType] = {
    "BIGINT": pl.Int64(),
    "INTEGER": pl.Int32(),
    "VARCHAR": pl.String(),
    "DATE": pl.Date(),
    "TIMESTAMP": pl.Datetime("us"),
    "DOUBLE": pl.Float64(),
}

# DEVICE_EXPOSURE is one of the tables cart_etl writes but schemas/omop_v54_fields.csv (and
# therefore the generated DDL) does not carry it yet. Columns, order and NOT NULL copied from
# OHDSI/CommonDataModel inst/ddl/5.4/duckdb/OMOPCDM_duckdb_5.4_ddl.sql; types follow
# cart_etl.load.omop_ddl.duckdb_type (``*_id`` -> BIGINT).
DEVICE_EXPOSURE_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("device_exposure_id", "integer", True),
    ("person_id", "integer", True),
    ("device_concept_id", "integer", True),
    ("device_exposure_start_date", "date", True),
    ("device_exposure_start_datetime", "datetime", False),
    ("device_exposure_end_date", "date", False),
    ("device_exposure_end_datetime", "datetime", False),
    ("device_type_concept_id", "integer", True),
    ("unique_device_id", "varchar(255)", False),
    ("production_id", "varchar(255)", False),
    ("quantity", "integer", False),
    ("provider_id", "integer", False),
    ("visit_occurrence_id", "integer", False),
    ("visit_detail_id", "integer", False),
    ("device_source_value", "varchar(50)", False),
    ("device_source_concept_id", "integer", False),
    ("unit_concept_id", "integer", False),
    ("unit_source_value", "varchar(50)", False),
    ("unit_source_concept_id", "integer", False),
)


@dataclass(frozen=True)
class Column:
    """One CDM column: name, DuckDB type of the project DDL, NOT NULL."""

    name: str
    sql_type: str
    required: bool

    @property
    def dtype(self) -> pl.DataType:
        """The polars dtype that loads into ``sql_type`` through Arrow without a cast."""
        return _POLARS_TYPES[self.sql_type]


@cache
def table_columns(table: str) -> tuple[Column, ...]:
    """The columns of ``table`` in CDM order (field-level spec, as the DDL generator reads it)."""
    if table == "device_exposure":
        return tuple(Column(n, duckdb_type(t, n), req) for n, t, req in DEVICE_EXPOSURE_FIELDS)
    with FIELDS_CSV.open(encoding="utf-8", newline="") as fh:
        cols = tuple(
            Column(
                r["cdmFieldName"].lower(),
                duckdb_type(r["cdmDatatype"], r["cdmFieldName"].lower()),
                r["isRequired"].strip().lower() == "yes",
            )
            for r in csv.DictReader(fh)
            if r["cdmTableName"].lower() == table
        )
    if not cols:
        raise MappingError(f"{FIELDS_CSV}: no OMOP table {table!r}")
    return cols


def device_exposure_ddl(schema: str = "omop") -> str:
    """CREATE TABLE for DEVICE_EXPOSURE in the style of schemas/omop_cdm_v54.sql."""
    lines = [
        f"    {c.name} {c.sql_type}{' NOT NULL' if c.required else ''}"
        for c in table_columns("device_exposure")
    ]
    lines.append("    PRIMARY KEY (device_exposure_id)")
    return f"CREATE TABLE IF NOT EXISTS {schema}.device_exposure (\n" + ",\n".join(lines) + "\n);"


def conform(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """Exactly the CDM columns of ``table`` in order and dtype; absent columns are NULL.

    Raises MappingError if a NOT NULL column holds a null (a mapper bug, not a data error:
    the mappers drop or default such rows before this point).
    """
    cols = table_columns(table)
    missing = [pl.lit(None, c.dtype).alias(c.name) for c in cols if c.name not in frame.columns]
    out = frame.with_columns(missing).select([pl.col(c.name).cast(c.dtype) for c in cols])
    for c in cols:
        if c.required and out[c.name].null_count():
            raise MappingError(f"omop.{table}.{c.name}: {out[c.name].null_count()} nulls")
    return out


def empty(table: str) -> pl.DataFrame:
    """A zero-row frame of ``table``."""
    return pl.DataFrame(schema={c.name: c.dtype for c in table_columns(table)})


def entity(inp: OmopInput, name: str) -> pl.DataFrame | None:
    """The accepted frame of one entity, None when the source had none (or zero rows)."""
    frame = inp.accepted.get(name)
    return frame if frame is not None and frame.height else None


def with_person(inp: OmopInput, frame: pl.DataFrame) -> pl.DataFrame:
    """Replace ``patient_key`` by ``person_id`` (inner join on the accepted register).

    The patient key of a site export is the MRN: it is dropped here, with every ``*_raw``
    copy of it, so that no mapper can write it into a CDM column.
    """
    persons = inp.persons.select(
        pl.col("patient_key").cast(pl.String), pl.col("person_id").cast(pl.Int64)
    )
    drop = [c for c in frame.columns if c.startswith("patient_key")]
    return frame.join(persons, on="patient_key", how="inner").drop(drop)


def col_or(frame: pl.DataFrame, name: str, fallback: str | pl.Expr) -> pl.Expr:
    """``name`` if the frame has it (e.g. a ``*_raw`` verbatim copy), else ``fallback``."""
    if name in frame.columns:
        return pl.col(name)
    return pl.col(fallback) if isinstance(fallback, str) else fallback


def source_text(expr: pl.Expr, width: int = 50) -> pl.Expr:
    """A source value as written, outer whitespace removed, cut to the CDM varchar width."""
    return expr.cast(pl.String).str.strip_chars().str.slice(0, width)


def local_datetime(expr: pl.Expr, tz: str) -> pl.Expr:
    """Naive site-local wall-clock time of a UTC instant (CDM *_datetime columns)."""
    return expr.dt.convert_time_zone(tz).dt.replace_time_zone(None).cast(pl.Datetime("us"))


# Surrogate keys are person_id x ID_STRIDE + the row's rank within the person: a run maps
# patients bucket by bucket, and keys built this way do not depend on the bucketing (no
# collisions between buckets, same key for the same row whatever the bucket size).
ID_STRIDE = 10_000_000


def assign_ids(frame: pl.DataFrame, id_col: str, order: list[str]) -> pl.DataFrame:
    """Surrogate key by a stable sort on ``order`` (same input -> same ids).

    With a ``person_id`` column: person_id * ID_STRIDE + 1..n within the person; without
    one: 1..n.
    """
    ordered = frame.sort(order, nulls_last=True, maintain_order=True)
    if "person_id" not in ordered.columns:
        return ordered.with_row_index(id_col, offset=1).with_columns(pl.col(id_col).cast(pl.Int64))
    rank = pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("person_id")
    key = pl.col("person_id").cast(pl.Int64) * ID_STRIDE + rank
    return ordered.select(key.alias(id_col), pl.all())


def admission(inp: OmopInput) -> pl.DataFrame:
    """The CAR-T admission of each infused person: person_id, start/end date and datetime.

    The window is ``cart_etl.derive.periods.derive_admission`` (infusion to study day 28,
    earlier at death or last contact); start_datetime = the infusion time, local.
    """
    infusion = entity(inp, "infusion")
    schema = pl.Schema(
        {
            "person_id": pl.Int64(),
            "start_date": pl.Date(),
            "start_datetime": pl.Datetime("us"),
            "end_date": pl.Date(),
        }
    )
    if infusion is None:
        return pl.DataFrame(schema=schema)
    follow = entity(inp, "follow_up")
    window = derive_admission(
        with_person(inp, infusion),
        with_person(inp, follow) if follow is not None else None,
        "person_id",
        derivation_rules().admission_days,
        inp.timezone,
    )
    return window.select(
        "person_id",
        "start_date",
        start_datetime=local_datetime(pl.col("at"), inp.timezone),
        end_date="end_date",
    ).sort("person_id")


def attach_visit(inp: OmopInput, frame: pl.DataFrame, date_col: str) -> pl.DataFrame:
    """Add ``visit_occurrence_id`` when ``date_col`` lies in the person's CAR-T admission."""
    from cart_etl.load.omop.visit_occurrence import visit_keys

    visits = visit_keys(inp)
    joined = frame.join(visits, on="person_id", how="left")
    inside = (pl.col(date_col) >= pl.col("_v_start")) & (pl.col(date_col) <= pl.col("_v_end"))
    return joined.with_columns(
        visit_occurrence_id=pl.when(inside).then(pl.col("_v_id")).otherwise(None)
    ).drop("_v_start", "_v_end", "_v_id")
