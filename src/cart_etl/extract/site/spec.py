"""The typed specs of a site mapping: what the readers and the mapper consume.

:func:`cart_etl.extract.site.parse.load_site_mapping` builds them from the YAML; the
extraction plan of each file (:attr:`FileSpec.outputs`) comes from
:mod:`cart_etl.extract.site.plan`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Final, Literal

from cart_etl.contract import ENTITY_COLUMNS
from cart_etl.errors import MappingError

__all__ = [
    "Assign",
    "ColumnSpec",
    "FileSpec",
    "ItemSpec",
    "Output",
    "PatientLink",
    "SiteMapping",
    "Target",
    "display_path",
    "local_system",
    "mapping_error",
    "normalize_key",
    "unit_column_of",
]

SourceKind = Literal["files", "sql"]
Layout = Literal["flat", "long", "wide"]
ColumnRole = Literal["value", "patient_key", "private", "unit", "ignored"]

PATIENT_KEY_FIELD: Final = "demographics.mrn"
# Names are identifying and useless for the study: such columns are never extracted.
PRIVATE_FIELDS: Final[frozenset[str]] = frozenset({"demographics.name"})
UNIT_FIELD: Final = "unit"
LOCAL_SYSTEM: Final = "local"  # site-local code systems: local:<site>:<file>:<column>
DEFAULT_ITEM_TABLE: Final = "items"
DEFAULT_ENCODING: Final = "utf-8"
CODE_SUFFIX: Final = "_code"
SYSTEM_SUFFIX: Final = "_system"
UNIT_SUFFIX: Final = "_unit"


def normalize_key(text: str) -> str:
    """Routing form of a cell: Unicode NFKC, then stripped (never written to a frame)."""
    return unicodedata.normalize("NFKC", text).strip()


@dataclass(frozen=True, slots=True)
class Target:
    """Where a column's text goes in one entity."""

    entity: str
    column: str | None  # canonical column; None = the column only routes rows (long layouts)
    system_column: str | None = None  # coded fields: the *_system column to fill
    also_encodes: tuple[str, ...] = ()  # fields parsed from the same cell later ("a + b")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One source column (CSV/XLSX header or SQL column) and what it holds."""

    name: str
    field: str | None  # the canonical field expression as written in the YAML
    role: ColumnRole
    targets: Mapping[str, Target]  # entity -> target (role "value" only)
    type: str | None = None
    item: str | None = None  # wide layouts: the item this column charts
    unit: str | None = None  # a fixed unit of this column's values
    unit_column: str | None = None  # the column holding the unit of this column's values
    lookup: str | None = None  # name of a lookup table of the same file spec
    options: Mapping[str, Any] = dataclass_field(default_factory=dict)  # values, note, pattern, ...


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One entry of a long/wide item table: the local code and the entity it feeds."""

    code: str  # as written in the mapping (the text the export prints)
    key: str  # normalize_key(code): what a cell is matched on
    target: str
    attributes: Mapping[str, Any] = dataclass_field(
        default_factory=dict
    )  # loinc, default_unit, ...


@dataclass(frozen=True, slots=True)
class Assign:
    """One canonical column of an output: copied from a source column or a constant."""

    column: str
    source: str | None = None  # source column whose text is copied
    literal: str | None = None  # constant text (code systems, fixed units)
    when: str | None = None  # emit the literal only where this source column is non-empty


@dataclass(frozen=True, slots=True)
class Output:
    """One record stream a spec produces: an entity, and for wide layouts one item."""

    entity: str
    assigns: tuple[Assign, ...]
    item: str | None = None  # wide: the item code, appended to ``row`` as "<row>:<item>"
    present: tuple[str, ...] = ()  # wide: a record exists where one of these is non-empty


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A file or table of the site delivery: how to read it and what each column holds."""

    name: str  # path relative to the export dir, or the table name (sql mappings)
    where: str  # key path for messages, e.g. "files.vitals_flowsheet.csv"
    kind: SourceKind
    format: str  # csv | xlsx | sql
    table: str  # SQL table holding this file's rows
    patient_key: str
    columns: Mapping[str, ColumnSpec]
    layout: Layout = "flat"
    encoding: str = DEFAULT_ENCODING
    bom: bool | None = None
    delimiter: str = ","
    quotechar: str | None = '"'
    header_row: int = 1
    sheet: str | None = None
    order_by: tuple[str, ...] = ()
    item_column: str | None = None
    value_column: str | None = None
    unit_column: str | None = None
    item_table: str | None = None
    items: Mapping[str, ItemSpec] = dataclass_field(default_factory=dict)  # by code as written
    item_index: Mapping[str, ItemSpec] = dataclass_field(default_factory=dict)  # by normalised code
    lookups: Mapping[str, Mapping[str, Any]] = dataclass_field(default_factory=dict)
    datetime_format: str | None = None
    alternate_datetime_formats: tuple[str, ...] = ()
    outputs: tuple[Output, ...] = ()
    options: Mapping[str, Any] = dataclass_field(
        default_factory=dict
    )  # other keys as written (grain ...)

    @property
    def entities(self) -> tuple[str, ...]:
        """Entities this spec produces, in output order, without repeats."""
        return tuple(dict.fromkeys(o.entity for o in self.outputs))

    def find_item(self, text: str) -> ItemSpec | None:
        """The item a cell names (matched after NFKC + strip), or None."""
        return self.item_index.get(normalize_key(text))


@dataclass(frozen=True, slots=True)
class PatientLink:
    """The register: the only file linking the study id to the hospital MRN."""

    file: str
    study_id_column: str
    mrn_column: str


@dataclass(frozen=True, slots=True)
class SiteMapping:
    """A validated site mapping."""

    site: str
    path: Path
    kind: SourceKind
    timezone: str
    text_normalization: str
    files: Mapping[str, FileSpec]  # files or tables, in YAML order
    patient_link: PatientLink | None = None
    codings: Mapping[str, str] = dataclass_field(default_factory=dict)
    options: Mapping[str, Any] = dataclass_field(default_factory=dict)

    @property
    def display_path(self) -> str:
        """The YAML path as shown in messages (relative to the working directory if inside)."""
        return display_path(self.path)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def mapping_error(path: Path, where: str, problem: str, fix: str) -> MappingError:
    """The error of a mapping file: ``<file>: <key path>: <problem>.`` and the fix."""
    return MappingError(f"{display_path(path)}: {where}: {problem}.", fix=fix)


def local_system(site: str, spec: FileSpec, column: str) -> str:
    """The site-local code system of a column: local:<site>:<file>:<column>."""
    return f"{LOCAL_SYSTEM}:{site}:{spec.name}:{column}"


def unit_column_of(entity: str) -> str | None:
    """Where the unit of an entity's value goes: ``unit`` or its single ``*_unit`` column."""
    columns = ENTITY_COLUMNS[entity]
    if UNIT_FIELD in columns:
        return UNIT_FIELD
    units = [c for c in columns if c.endswith(UNIT_SUFFIX)]
    return units[0] if len(units) == 1 else None
