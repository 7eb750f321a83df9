"""Load and validate a declarative site mapping (``mappings/sites/<site>.yaml``) into typed specs.

A site mapping says where each canonical value sits in a hospital hand-over; the extractors
read nothing else, so a new site is a new YAML file, not new code. Structure::

    site: <name>                      # becomes the ``source`` provenance value
    timezone: <IANA zone>             # wall time of naive timestamps (used by validation)
    text_normalization: NFKC_strip    # how cells are normalised before any lookup
    patient_link: {file, study_id_column, mrn_column}   # the register (optional)
    source: {kind: files | sql}       # optional; must agree with the section below
    files:                            # a delivery as files ...
      <path relative to the export dir>: <spec>
    tables:                           # ... or as database tables (same specs, no encoding)
      <table name>: <spec>

A ``<spec>`` (file or table) holds:

* reading: ``format`` (csv | xlsx; from the suffix when absent), ``encoding`` (default
  utf-8; any ASCII-compatible Python codec such as gb18030), ``bom``, ``delimiter``,
  ``quotechar``, ``quoting`` (minimal | all | nonnumeric | none), ``header_row`` (1-based),
  ``sheet`` (xlsx), ``table`` (the SQL table holding this file, default: the file stem) and
  ``order_by`` (SQL: the columns giving the row order; default: primary key, then rowid);
* ``patient_key``: the column holding the hospital patient identifier (MRN);
* ``columns``: ``<header>: {field: <canonical field>, type: ..., ...}``. ``field`` is
  ``entity.name`` or ``entity[].name`` naming a column of
  :data:`cart_etl.extract.contract.ENTITY_COLUMNS`; a coded ``name`` (``item``, ``test``,
  ``drug``, ``device``) fills ``<name>_code`` with the cell and ``<name>_system`` with the
  site-local system ``local:<site>:<file>:<column>``. Alternatives per entity are joined
  by ``|`` (``vitals[].at | oxygen[].at``); ``a + b`` says the cell also encodes ``b``,
  which validation parses later. Special fields: ``demographics.mrn`` (the patient key,
  never an entity column), ``demographics.name`` (never extracted: names do not leave the
  extractor), ``unit`` (the unit of the row's value: ``unit`` or the entity's single
  ``*_unit`` column) and ``null`` (not extracted);
* ``layout``: ``flat`` (default: one record per row and entity), ``long`` (one charted
  item per row: ``item_column`` is looked up in the table named by that column's
  ``lookup`` (default ``items``) whose entries give the ``target`` entity) or ``wide`` (one
  row per charting time, one column per item: a column with ``item: <code>`` charts that
  entry of ``items``; ``unit_column: <header>`` names the column holding its unit, or
  ``unit: <text>`` gives a fixed one);
* any other mapping-valued key is a lookup table (``units``, ``drugs``, ``routes`` ...)
  kept verbatim for validation and staging.

Unknown keys are kept (validation and staging may read them), except near misses of known
keys (``feild``), which are errors. Every error is a :class:`MappingError` naming the YAML
file, the key path and the fix.
"""

from __future__ import annotations

import codecs
import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from cart_etl.config import Settings
from cart_etl.errors import ConfigurationError, MappingError
from cart_etl.extract.contract import ENTITIES, ENTITY_COLUMNS

__all__ = [
    "Assign",
    "ColumnSpec",
    "FileSpec",
    "ItemSpec",
    "Output",
    "PatientLink",
    "SiteMapping",
    "Target",
    "available_sites",
    "load_site_mapping",
    "normalize_key",
    "parse_site_mapping",
]

SourceKind = Literal["files", "sql"]
Layout = Literal["flat", "long", "wide"]
ColumnRole = Literal["value", "patient_key", "private", "unit", "ignored"]

LAYOUTS: Final[tuple[str, ...]] = ("flat", "long", "wide")
FILE_FORMATS: Final[tuple[str, ...]] = ("csv", "xlsx")
QUOTING: Final[tuple[str, ...]] = ("minimal", "all", "nonnumeric", "none")
TEXT_NORMALIZATIONS: Final[tuple[str, ...]] = ("NFKC_strip",)
COLUMN_TYPES: Final[frozenset[str]] = frozenset(
    {
        "string",
        "code",
        "date",
        "datetime",
        "number",
        "integer",
        "boolean",
        "by_item",
        "unit",
        "range",
        "dose_text",
        "oxygen_text",
    }
)

PATIENT_KEY_FIELD: Final = "demographics.mrn"
# Names are identifying and useless for the study: such columns are never extracted.
PRIVATE_FIELDS: Final[frozenset[str]] = frozenset({"demographics.name"})
UNIT_FIELD: Final = "unit"
LOCAL_SYSTEM: Final = "local"  # site-local code systems: local:<site>:<file>:<column>
DEFAULT_ITEM_TABLE: Final = "items"
DEFAULT_ENCODING: Final = "utf-8"

_TOP_KEYS: Final = frozenset(
    {
        "site",
        "synthetic",
        "timezone",
        "decimal_separator",
        "text_normalization",
        "codings",
        "patient_link",
        "files",
        "tables",
        "source",
        "note",
        "description",
    }
)
_SPEC_KEYS: Final = frozenset(
    {
        "format",
        "delimiter",
        "quotechar",
        "quoting",
        "line_terminator",
        "header_row",
        "encoding",
        "bom",
        "grain",
        "patient_key",
        "datetime_format",
        "datetime_format_without_offset",
        "precision",
        "alternate_datetime_formats",
        "layout",
        "item_column",
        "value_column",
        "unit_column",
        "columns",
        "sheet",
        "datetime_cells",
        "datetime_note",
        "table",
        "order_by",
        "note",
    }
)
_FILE_ONLY_KEYS: Final = frozenset(
    {"format", "delimiter", "quotechar", "quoting", "line_terminator", "encoding", "bom", "sheet"}
)
_COLUMN_KEYS: Final = frozenset(
    {
        "field",
        "type",
        "values",
        "unit",
        "unit_column",
        "lookup",
        "item",
        "note",
        "pattern",
        "special_values",
        "blank",
        "scale",
        "unmapped",
    }
)
_ITEM_KEYS: Final = frozenset({"target"})
_LINK_KEYS: Final = frozenset({"file", "study_id_column", "mrn_column", "note"})
_NEAR_MISS_CUTOFF: Final = 0.8
_FIELD_PATH: Final = re.compile(
    r"^(?P<entity>[a-z_][a-z0-9_]*)(?:\[\])?(?:\.(?P<name>[a-z0-9_]+))?$"
)
_CODE_SUFFIX: Final = "_code"
_SYSTEM_SUFFIX: Final = "_system"
_UNIT_SUFFIX: Final = "_unit"


def normalize_key(text: str) -> str:
    """Routing form of a cell: Unicode NFKC, then stripped (never written to a frame)."""
    return unicodedata.normalize("NFKC", text).strip()


# --- typed specs ---------------------------------------------------------------------------------


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
        return _display(self.path)


# --- loading -------------------------------------------------------------------------------------


def available_sites(mappings_dir: Path) -> list[str]:
    """Site names with a mapping under ``<mappings_dir>/sites``."""
    return sorted(p.stem for p in (mappings_dir / "sites").glob("*.yaml"))


def load_site_mapping(name_or_path: str | Path, mappings_dir: Path | None = None) -> SiteMapping:
    """Load and validate a site mapping by site name or YAML path.

    Args:
        name_or_path: A site name (``tianjin_ref`` -> ``<mappings_dir>/sites/tianjin_ref.yaml``)
            or a path to a YAML file.
        mappings_dir: Folder of mappings; defaults to ``Settings().mappings_dir``.

    Raises:
        ConfigurationError: the site or file does not exist.
        MappingError: the YAML is malformed or inconsistent.
    """
    if mappings_dir is None:
        mappings_dir = Settings().mappings_dir
    path = _mapping_path(name_or_path, mappings_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError(
            f"{_display(path)}: not UTF-8 text (byte {exc.start}).", fix="save it as UTF-8."
        ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(
            f"{_display(path)}: invalid YAML: {exc}".replace("\n", " "),
            fix="fix the YAML syntax at the position shown.",
        ) from exc
    return parse_site_mapping(raw, path)


def _mapping_path(name_or_path: str | Path, mappings_dir: Path) -> Path:
    """Resolve a site name or path; unknown names list the available sites."""
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or "/" in text or text.endswith(".yaml")
    if looks_like_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigurationError(
                f"Site mapping file {text} does not exist.", fix="check the path."
            )
        return path
    path = mappings_dir / "sites" / f"{text}.yaml"
    if not path.is_file():
        sites = available_sites(mappings_dir)
        raise ConfigurationError(
            f"Unknown site {text!r}: no {_display(path)}.",
            fix=f"use one of: {', '.join(sites) or '(none)'}, or add {_display(path)}.",
        )
    return path


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _Ctx:
    """Error reporting: every message starts with the YAML file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str, fix: str) -> MappingError:
        """A MappingError for key path ``where``."""
        return MappingError(f"{_display(self.path)}: {where}: {problem}.", fix=fix)

    def check_keys(self, raw: Mapping[str, Any], known: Iterable[str], where: str) -> None:
        """Refuse keys that look like typos of known keys (``feild`` for ``field``)."""
        known = sorted(known)
        for key in raw:
            if not isinstance(key, str):
                raise self.fail(
                    f"{where}.{key}", f"key {key!r} is not text", "quote the key in the YAML."
                )
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=_NEAR_MISS_CUTOFF)
            if close:
                raise self.fail(
                    f"{where}.{key}",
                    f"unknown key {key!r}",
                    f"did you mean {close[0]!r}? Known keys: {', '.join(known)}.",
                )

    def mapping(self, value: Any, where: str, what: str) -> Mapping[str, Any]:
        """``value`` as a mapping or an error."""
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected {what} (a mapping), got {value!r}", f"write {what}.")
        return value

    def text(self, value: Any, where: str) -> str:
        """``value`` as non-empty text or an error."""
        if not isinstance(value, str) or value == "":
            raise self.fail(where, f"expected text, got {value!r}", "write a non-empty string.")
        return value

    def optional_text(self, value: Any, where: str) -> str | None:
        """``value`` as non-empty text, or None when absent."""
        return None if value is None else self.text(value, where)

    def choice(self, value: Any, allowed: Iterable[str], where: str) -> str:
        """``value`` if it is one of ``allowed``."""
        allowed = tuple(allowed)
        if value not in allowed:
            raise self.fail(
                where, f"{value!r} is not allowed", f"use one of: {', '.join(allowed)}."
            )
        return str(value)


def parse_site_mapping(raw: Any, path: Path) -> SiteMapping:
    """Validate an already-parsed YAML document (``path`` is used in messages only)."""
    ctx = _Ctx(path)
    top = ctx.mapping(raw, "(top level)", "a site mapping")
    ctx.check_keys(top, _TOP_KEYS, "(top level)")
    site = ctx.text(top.get("site"), "site")
    timezone = _timezone(ctx, top.get("timezone"))
    normalization = ctx.choice(
        top.get("text_normalization", TEXT_NORMALIZATIONS[0]),
        TEXT_NORMALIZATIONS,
        "text_normalization",
    )
    kind, section = _source_kind(ctx, top)
    specs_raw = ctx.mapping(top[section], section, f"{section}: <name>: <spec>")
    if not specs_raw:
        raise ctx.fail(section, "no entries", f"declare at least one entry under {section}.")
    files = {
        str(name): _file_spec(ctx, site, kind, section, name, spec)
        for name, spec in specs_raw.items()
    }
    link = _patient_link(ctx, top.get("patient_link"), files, section)
    codings = top.get("codings") or {}
    ctx.mapping(codings, "codings", "codings: {name: uri}")
    options = {k: v for k, v in top.items() if k not in {"files", "tables", "patient_link"}}
    return SiteMapping(
        site=site,
        path=path,
        kind=kind,
        timezone=timezone,
        text_normalization=normalization,
        files=files,
        patient_link=link,
        codings=dict(codings),
        options=options,
    )


def _timezone(ctx: _Ctx, value: Any) -> str:
    """An IANA timezone name."""
    name = ctx.text(value, "timezone")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ctx.fail(
            "timezone", f"{name!r} is not an IANA timezone", "use e.g. 'Asia/Shanghai'."
        ) from exc
    return name


def _source_kind(ctx: _Ctx, top: Mapping[str, Any]) -> tuple[SourceKind, str]:
    """``files`` or ``sql`` from the section present (and ``source.kind`` when given)."""
    has_files, has_tables = "files" in top, "tables" in top
    if has_files == has_tables:
        raise ctx.fail(
            "(top level)",
            "declare exactly one of 'files' (a delivery as files) or 'tables' (a database)",
            "keep one of the two sections.",
        )
    kind: SourceKind = "files" if has_files else "sql"
    source = top.get("source")
    if source is not None:
        declared = ctx.mapping(source, "source", "source: {kind: files|sql}").get("kind")
        ctx.choice(declared, ("files", "sql"), "source.kind")
        if declared != kind:
            raise ctx.fail(
                "source.kind",
                f"{declared!r} does not match the '{'files' if has_files else 'tables'}' section",
                "use kind: files with 'files:' and kind: sql with 'tables:'.",
            )
    return kind, "files" if has_files else "tables"


def _patient_link(
    ctx: _Ctx, raw: Any, files: Mapping[str, FileSpec], section: str
) -> PatientLink | None:
    """The register declaration, checked against the file specs."""
    if raw is None:
        return None
    link = ctx.mapping(raw, "patient_link", "patient_link: {file, study_id_column, mrn_column}")
    ctx.check_keys(link, _LINK_KEYS, "patient_link")
    name = ctx.text(link.get("file"), "patient_link.file")
    spec = files.get(name)
    if spec is None:
        raise ctx.fail(
            "patient_link.file",
            f"{name!r} is not declared under {section}",
            f"use one of: {', '.join(files)}.",
        )
    out = []
    for key in ("study_id_column", "mrn_column"):
        column = ctx.text(link.get(key), f"patient_link.{key}")
        if column not in spec.columns:
            raise ctx.fail(
                f"patient_link.{key}",
                f"{column!r} is not a column of {spec.where}",
                f"use one of: {', '.join(spec.columns)}.",
            )
        out.append(column)
    if out[1] != spec.patient_key:
        raise ctx.fail(
            "patient_link.mrn_column",
            f"{out[1]!r} is not the patient_key of {spec.where} ({spec.patient_key!r})",
            "make the register's patient_key its MRN column.",
        )
    return PatientLink(file=name, study_id_column=out[0], mrn_column=out[1])


# --- file / table specs --------------------------------------------------------------------------


def _file_spec(
    ctx: _Ctx, site: str, kind: SourceKind, section: str, name: Any, raw: Any
) -> FileSpec:
    """Validate one file/table spec and build its extraction plan."""
    where = f"{section}.{name}"
    name = ctx.text(name, where)
    spec = ctx.mapping(raw, where, "a file spec")
    ctx.check_keys(spec, _SPEC_KEYS, where)
    reading = _reading(ctx, kind, name, spec, where)
    columns_raw = ctx.mapping(spec.get("columns"), f"{where}.columns", "columns: {header: spec}")
    if not columns_raw:
        raise ctx.fail(f"{where}.columns", "no columns", "map at least the patient key column.")
    columns = {
        str(col): _column_spec(ctx, col, value, f"{where}.columns.{col}")
        for col, value in columns_raw.items()
    }
    lookups = {str(k): v for k, v in spec.items() if k not in _SPEC_KEYS and isinstance(v, Mapping)}
    patient_key = _column_ref(ctx, spec.get("patient_key"), columns, f"{where}.patient_key")
    _check_lookups(ctx, columns, lookups, where)
    layout = ctx.choice(spec.get("layout", "flat"), LAYOUTS, f"{where}.layout")
    item_column = _optional_column_ref(
        ctx, spec.get("item_column"), columns, f"{where}.item_column"
    )
    value_column = _optional_column_ref(
        ctx, spec.get("value_column"), columns, f"{where}.value_column"
    )
    unit_column = _optional_column_ref(
        ctx, spec.get("unit_column"), columns, f"{where}.unit_column"
    )
    item_table = None
    if layout == "long":
        if item_column is None or value_column is None:
            raise ctx.fail(
                where,
                "a long layout needs item_column and value_column",
                "name the column holding the item and the one holding its value.",
            )
        item_table = columns[item_column].lookup or DEFAULT_ITEM_TABLE
    elif layout == "wide":
        item_table = DEFAULT_ITEM_TABLE
    items = (
        _items(ctx, lookups.get(item_table), f"{where}.{item_table}", columns, item_column)
        if item_table
        else {}
    )
    base = FileSpec(
        name=name,
        where=where,
        kind=kind,
        patient_key=patient_key,
        columns=columns,
        layout=layout,  # type: ignore[arg-type]  # checked by ctx.choice
        item_column=item_column,
        value_column=value_column,
        unit_column=unit_column,
        item_table=item_table,
        items=items,
        item_index={item.key: item for item in items.values()},
        lookups=lookups,
        datetime_format=spec.get("datetime_format"),
        alternate_datetime_formats=tuple(spec.get("alternate_datetime_formats") or ()),
        options={k: v for k, v in spec.items() if k != "columns" and k not in lookups},
        **reading,
    )
    outputs = _plan(ctx, site, base)
    if not outputs:
        raise ctx.fail(
            f"{where}.columns",
            "no column maps to a canonical entity",
            "give at least one column a field such as 'vitals[].at'.",
        )
    return replace(base, outputs=outputs)


def _reading(
    ctx: _Ctx, kind: SourceKind, name: str, spec: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Format, codec and CSV dialect of a file, or the table name/order of a table."""
    if kind == "sql":
        file_keys = sorted(_FILE_ONLY_KEYS & set(spec))
        if file_keys:
            raise ctx.fail(
                f"{where}.{file_keys[0]}",
                "a database table has no file format, encoding or CSV dialect",
                f"remove {file_keys[0]!r} (or deliver the data under 'files:').",
            )
        return {"format": "sql", "table": name, "order_by": _order_by(ctx, spec, where)}
    fmt = spec.get("format") or PurePosixPath(name).suffix.lstrip(".").lower()
    fmt = ctx.choice(fmt, FILE_FORMATS, f"{where}.format")
    encoding = ctx.text(spec.get("encoding", DEFAULT_ENCODING), f"{where}.encoding")
    _check_encoding(ctx, encoding, f"{where}.encoding")
    quoting = ctx.choice(spec.get("quoting", "minimal"), QUOTING, f"{where}.quoting")
    delimiter = _one_char(ctx, spec.get("delimiter", ","), f"{where}.delimiter")
    quotechar = None if quoting == "none" else _one_char(ctx, spec.get("quotechar", '"'), where)
    header_row = spec.get("header_row", 1)
    if not isinstance(header_row, int) or isinstance(header_row, bool) or header_row < 1:
        raise ctx.fail(
            f"{where}.header_row", f"{header_row!r} is not a row number", "use 1 or more."
        )
    table = ctx.text(spec.get("table", PurePosixPath(name).stem), f"{where}.table")
    bom = spec.get("bom")
    return {
        "format": fmt,
        "encoding": codecs.lookup(encoding).name,
        "bom": bom if isinstance(bom, bool) else None,
        "delimiter": delimiter,
        "quotechar": quotechar,
        "header_row": header_row,
        "sheet": ctx.optional_text(spec.get("sheet"), f"{where}.sheet"),
        "table": table,
        "order_by": _order_by(ctx, spec, where),
    }


def _order_by(ctx: _Ctx, spec: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """SQL row order columns (empty: primary key, then rowid)."""
    raw = spec.get("order_by") or ()
    cols = [raw] if isinstance(raw, str) else list(raw)
    return tuple(c for c in (ctx.text(v, f"{where}.order_by") for v in cols) if c)


def _check_encoding(ctx: _Ctx, encoding: str, where: str) -> None:
    """A known codec in which ASCII bytes stand for themselves (needed to split records)."""
    try:
        codecs.lookup(encoding)
        ok = '\n\r",;|\t'.encode(encoding) == b'\n\r",;|\t'
    except LookupError:
        ok = False
    if not ok:
        raise ctx.fail(
            where,
            f"{encoding!r} is not a known ASCII-compatible encoding",
            "use the Python codec name of the export, e.g. utf-8, gb18030, gbk, latin-1.",
        )


def _one_char(ctx: _Ctx, value: Any, where: str) -> str:
    """A single-character delimiter or quote."""
    if not isinstance(value, str) or len(value) != 1:
        raise ctx.fail(where, f"{value!r} is not one character", 'use e.g. "," or ";".')
    return value


def _column_ref(ctx: _Ctx, value: Any, columns: Mapping[str, ColumnSpec], where: str) -> str:
    """A key naming one of the declared columns."""
    name = ctx.text(value, where)
    if name not in columns:
        raise ctx.fail(
            where,
            f"{name!r} is not one of the declared columns",
            f"declare it under columns or use one of: {', '.join(columns)}.",
        )
    return name


def _optional_column_ref(
    ctx: _Ctx, value: Any, columns: Mapping[str, ColumnSpec], where: str
) -> str | None:
    """A key naming one of the declared columns, or None when absent."""
    return None if value is None else _column_ref(ctx, value, columns, where)


def _check_lookups(
    ctx: _Ctx, columns: Mapping[str, ColumnSpec], lookups: Mapping[str, Any], where: str
) -> None:
    """Every ``lookup:`` names a table of the same spec; every ``unit_column`` a column."""
    for col in columns.values():
        if col.lookup is not None and col.lookup not in lookups:
            raise ctx.fail(
                f"{where}.columns.{col.name}.lookup",
                f"{col.lookup!r} names no table of {where}",
                f"add {where}.{col.lookup} or use one of: {', '.join(lookups) or '(none)'}.",
            )
        if col.unit_column is not None and col.unit_column not in columns:
            raise ctx.fail(
                f"{where}.columns.{col.name}.unit_column",
                f"{col.unit_column!r} is not a declared column",
                f"declare {col.unit_column!r} under {where}.columns.",
            )


# --- columns and fields --------------------------------------------------------------------------


def _column_spec(ctx: _Ctx, name: Any, raw: Any, where: str) -> ColumnSpec:
    """One column: its field expression parsed, its options kept."""
    if not isinstance(name, str) or not name:
        raise ctx.fail(where, f"column name {name!r} is not text", "quote the header in the YAML.")
    if raw is None or isinstance(raw, str):
        raw = {"field": raw}  # shorthand: `header: entity.name` or `header: null`
    spec = ctx.mapping(raw, where, "a column spec {field: ..., type: ...}")
    ctx.check_keys(spec, _COLUMN_KEYS, where)
    type_ = spec.get("type")
    if type_ is not None and type_ not in COLUMN_TYPES:
        raise ctx.fail(
            f"{where}.type",
            f"{type_!r} is not a column type",
            f"use one of: {', '.join(sorted(COLUMN_TYPES))}.",
        )
    unit = spec.get("unit")
    unit_column = spec.get("unit_column")
    if unit is not None and unit_column is not None:
        raise ctx.fail(
            where,
            "both 'unit' and 'unit_column' are given",
            "use unit_column when the export prints the unit, a fixed unit otherwise.",
        )
    raw_field = spec.get("field")
    role, targets = _parse_field(ctx, raw_field, f"{where}.field")
    item = spec.get("item")
    if item is not None and not isinstance(item, str):
        raise ctx.fail(f"{where}.item", f"{item!r} is not text", "quote the item code.")
    return ColumnSpec(
        name=name,
        field=raw_field,
        role=role,
        targets=targets,
        type=type_,
        item=item,
        unit=None if unit is None else str(unit),
        unit_column=ctx.optional_text(unit_column, f"{where}.unit_column"),
        lookup=ctx.optional_text(spec.get("lookup"), f"{where}.lookup"),
        options={k: v for k, v in spec.items() if k not in {"field", "type", "item", "lookup"}},
    )


def _parse_field(ctx: _Ctx, raw: Any, where: str) -> tuple[ColumnRole, dict[str, Target]]:
    """Role and per-entity targets of a field expression (``a[].x | b[].y + b[].z``)."""
    if raw is None:
        return "ignored", {}
    if not isinstance(raw, str):
        raise ctx.fail(where, f"{raw!r} is not a field expression", "write e.g. 'vitals[].at'.")
    text = raw.strip()
    if text == PATIENT_KEY_FIELD:
        return "patient_key", {}
    if text in PRIVATE_FIELDS:
        return "private", {}
    if text == UNIT_FIELD:
        return "unit", {}
    targets: dict[str, Target] = {}
    for alternative in text.split("|"):
        first, *rest = (part.strip() for part in alternative.split("+"))
        target = _resolve_path(ctx, first, where, allow_bare=True)
        if target.entity in targets:
            raise ctx.fail(
                where,
                f"entity {target.entity!r} appears twice in {raw!r}",
                "give each entity one destination per column.",
            )
        also = tuple(_path_text(_resolve_path(ctx, p, where), p) for p in rest)
        targets[target.entity] = Target(
            target.entity, target.column, target.system_column, also_encodes=also
        )
    return "value", targets


def _path_text(target: Target, text: str) -> str:
    """The canonical column a '+' path names (its text when it only routes)."""
    return target.column or text


def _resolve_path(ctx: _Ctx, path: str, where: str, *, allow_bare: bool = False) -> Target:
    """``entity[].name`` -> Target; coded names fill ``<name>_code`` and ``<name>_system``."""
    match = _FIELD_PATH.match(path)
    if match is None:
        raise ctx.fail(
            where, f"{path!r} is not a field path", "write 'entity.name' or 'entity[].name'."
        )
    entity, name = match["entity"], match["name"]
    if entity not in ENTITY_COLUMNS:
        raise ctx.fail(where, f"{entity!r} is not an entity", f"use one of: {', '.join(ENTITIES)}.")
    columns = ENTITY_COLUMNS[entity]
    if name is None:
        if not allow_bare:
            raise ctx.fail(where, f"{path!r} names no column", f"use {entity}[].<column>.")
        return Target(entity, None)
    if name in columns:
        return Target(entity, name)
    if name + _CODE_SUFFIX in columns:
        return Target(entity, name + _CODE_SUFFIX, name + _SYSTEM_SUFFIX)
    coded = [c.removesuffix(_CODE_SUFFIX) for c in columns if c.endswith(_CODE_SUFFIX)]
    raise ctx.fail(
        where,
        f"{name!r} is not a column of {entity}",
        f"use one of: {', '.join([*columns, *coded])}.",
    )


def unit_column_of(entity: str) -> str | None:
    """Where the unit of an entity's value goes: ``unit`` or its single ``*_unit`` column."""
    columns = ENTITY_COLUMNS[entity]
    if UNIT_FIELD in columns:
        return UNIT_FIELD
    units = [c for c in columns if c.endswith(_UNIT_SUFFIX)]
    return units[0] if len(units) == 1 else None


# --- items ---------------------------------------------------------------------------------------


def _items(
    ctx: _Ctx,
    raw: Any,
    where: str,
    columns: Mapping[str, ColumnSpec],
    item_column: str | None,
) -> dict[str, ItemSpec]:
    """The item table of a long/wide spec, with each entry's target entity."""
    table = ctx.mapping(raw, where, "an item table {local code: {target: entity, ...}}")
    if not table:
        raise ctx.fail(where, "no items", "list the items the export charts.")
    routed = columns[item_column].targets if item_column else {}
    default = next(iter(routed)) if len(routed) == 1 else None
    items: dict[str, ItemSpec] = {}
    seen: dict[str, str] = {}
    for code, entry in table.items():
        at = f"{where}.{code}"
        if not isinstance(code, str):
            raise ctx.fail(at, f"item code {code!r} is not text", "quote it in the YAML.")
        attrs = ctx.mapping(entry if entry is not None else {}, at, "{target: entity, ...}")
        ctx.check_keys(attrs, _ITEM_KEYS, at)
        target = attrs.get("target", default)
        if target is None:
            choices = ", ".join(routed or ENTITIES)
            raise ctx.fail(
                f"{at}.target", "missing", f"name the entity it feeds: one of {choices}."
            )
        if target not in ENTITY_COLUMNS:
            raise ctx.fail(
                f"{at}.target",
                f"{target!r} is not an entity",
                f"use one of: {', '.join(ENTITIES)}.",
            )
        if item_column is not None and routed and target not in routed:
            raise ctx.fail(
                f"{at}.target",
                f"{target!r} is not routed by column {item_column!r} "
                f"(field {columns[item_column].field!r})",
                f"use one of: {', '.join(routed)}, or add '{target}' to that field.",
            )
        key = normalize_key(code)
        if key in seen:
            raise ctx.fail(
                at,
                f"{code!r} and {seen[key]!r} are the same item after NFKC + strip",
                "keep one of them.",
            )
        seen[key] = code
        rest = {k: v for k, v in attrs.items() if k != "target"}
        items[code] = ItemSpec(code=code, key=key, target=str(target), attributes=rest)
    return items


# --- extraction plan -----------------------------------------------------------------------------


def local_system(site: str, spec: FileSpec, column: str) -> str:
    """The site-local code system of a column: local:<site>:<file>:<column>."""
    return f"{LOCAL_SYSTEM}:{site}:{spec.name}:{column}"


def _plan(ctx: _Ctx, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """The outputs of a spec: what each entity record copies from which column."""
    private_items = [c for c in spec.columns.values() if c.role == "private" and c.item]
    if private_items:
        raise ctx.fail(
            f"{spec.where}.columns.{private_items[0].name}",
            "a private column cannot chart an item",
            "remove 'item' or the private field.",
        )
    planners = {"flat": _plan_flat, "long": _plan_long, "wide": _plan_wide}
    return planners[spec.layout](ctx, site, spec)


def _value_assigns(site: str, spec: FileSpec, col: ColumnSpec, entity: str) -> list[Assign]:
    """Assignments copying ``col`` into ``entity`` (plus the system of a coded field)."""
    target = col.targets.get(entity)
    if target is None or target.column is None:
        return []
    out = [Assign(target.column, source=col.name)]
    if target.system_column is not None:
        out.append(Assign(target.system_column, literal=local_system(site, spec, col.name)))
    return out


def _unit_assigns(spec: FileSpec, entity: str) -> list[Assign]:
    """Unit columns (field ``unit``) copied into the entity's unit column."""
    dest = unit_column_of(entity)
    units = [c for c in spec.columns.values() if c.role == "unit"]
    return [Assign(dest, source=c.name) for c in units] if dest else []


def _check_unique(ctx: _Ctx, spec: FileSpec, output: Output) -> Output:
    """Refuse two sources for one canonical column of an output."""
    seen: dict[str, Assign] = {}
    for assign in output.assigns:
        if assign.column in seen:
            first = seen[assign.column].source or "a constant"
            raise ctx.fail(
                f"{spec.where}.columns",
                f"{output.entity}.{assign.column} is filled by both {first!r} and "
                f"{assign.source or 'a constant'!r}"
                + (f" (item {output.item!r})" if output.item else ""),
                "map only one column to each canonical field.",
            )
        seen[assign.column] = assign
    return output


def _refuse_item_columns(ctx: _Ctx, spec: FileSpec) -> None:
    """``item:`` belongs to wide layouts only."""
    for col in spec.columns.values():
        if col.item is not None:
            raise ctx.fail(
                f"{spec.where}.columns.{col.name}.item",
                "'item' is only used by layout: wide",
                "remove it or set layout: wide.",
            )


def _refuse_bare_entities(ctx: _Ctx, spec: FileSpec, skip: str | None = None) -> None:
    """A bare entity (no column) only routes rows, on the item column of a long layout."""
    for col in spec.columns.values():
        bare = [t.entity for t in col.targets.values() if t.column is None]
        if bare and col.name != skip:
            raise ctx.fail(
                f"{spec.where}.columns.{col.name}.field",
                f"{bare[0]!r} names no column",
                "bare entities only route rows of layout: long item columns.",
            )


def _plan_flat(ctx: _Ctx, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """One record per row for every entity a column maps to."""
    _refuse_item_columns(ctx, spec)
    _refuse_bare_entities(ctx, spec)
    entities = dict.fromkeys(e for c in spec.columns.values() for e in c.targets)
    outputs = []
    for entity in entities:
        assigns = [a for c in spec.columns.values() for a in _value_assigns(site, spec, c, entity)]
        assigns += _unit_assigns(spec, entity)
        outputs.append(_check_unique(ctx, spec, Output(entity, tuple(assigns))))
    return tuple(outputs)


def _plan_long(ctx: _Ctx, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """One output per item target; rows are routed by the item column."""
    assert spec.value_column is not None  # checked by _file_spec
    _refuse_item_columns(ctx, spec)
    _refuse_bare_entities(ctx, spec, skip=spec.item_column)
    value = spec.columns[spec.value_column]
    outputs = []
    for entity in dict.fromkeys(item.target for item in spec.items.values()):
        if entity not in value.targets or value.targets[entity].column is None:
            code = next(i.code for i in spec.items.values() if i.target == entity)
            raise ctx.fail(
                f"{spec.where}.{spec.item_table}.{code}.target",
                f"{entity!r} has no destination in {spec.where}.columns.{value.name}.field "
                f"({value.field!r})",
                f"add '{entity}[].<column>' to that field or change the target.",
            )
        assigns = [a for c in spec.columns.values() for a in _value_assigns(site, spec, c, entity)]
        assigns += _unit_assigns(spec, entity)
        outputs.append(_check_unique(ctx, spec, Output(entity, tuple(assigns))))
    return tuple(outputs)


def _plan_wide(ctx: _Ctx, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """One output per item: shared columns plus the item's own value and unit columns."""
    _refuse_bare_entities(ctx, spec)
    by_item: dict[str, list[ColumnSpec]] = {}
    for col in spec.columns.values():
        if col.item is None:
            _check_shared_column(ctx, spec, col)
            continue
        if col.item not in spec.items:
            raise ctx.fail(
                f"{spec.where}.columns.{col.name}.item",
                f"{col.item!r} is not in {spec.where}.{DEFAULT_ITEM_TABLE}",
                f"add it there with its target, or use one of: {', '.join(spec.items)}.",
            )
        by_item.setdefault(col.item, []).append(col)
    outputs = []
    for item in spec.items.values():
        cols = by_item.get(item.code)
        if not cols:
            raise ctx.fail(
                f"{spec.where}.{DEFAULT_ITEM_TABLE}.{item.code}",
                "no column charts this item",
                f"add 'item: {item.code}' to its column or remove the entry.",
            )
        outputs.append(_check_unique(ctx, spec, _wide_output(ctx, site, spec, item, cols)))
    return tuple(outputs)


def _check_shared_column(ctx: _Ctx, spec: FileSpec, col: ColumnSpec) -> None:
    """A column without ``item:`` feeds every item of its entities (e.g. the charting time)."""
    where = f"{spec.where}.columns.{col.name}"
    targets = {item.target for item in spec.items.values()}
    unused = [entity for entity in col.targets if entity not in targets]
    if unused:
        raise ctx.fail(
            f"{where}.field",
            f"no item of {spec.where}.{DEFAULT_ITEM_TABLE} feeds {unused[0]!r}",
            f"map the column into one of: {', '.join(sorted(targets))}.",
        )
    referenced = {c.unit_column for c in spec.columns.values()}
    if col.role == "unit" and col.name not in referenced:
        raise ctx.fail(
            f"{where}.field",
            "a wide row has no single unit",
            f"reference it from its item column with unit_column: {col.name}.",
        )


def _wide_output(
    ctx: _Ctx, site: str, spec: FileSpec, item: ItemSpec, cols: list[ColumnSpec]
) -> Output:
    """The record one item of a wide row produces."""
    entity = item.target
    shared = [c for c in spec.columns.values() if c.item is None]
    assigns = [a for c in shared for a in _value_assigns(site, spec, c, entity)]
    for col in cols:
        assigns += _wide_value(ctx, site, spec, col, entity)
        assigns += _wide_unit(ctx, spec, col, entity)
    filled = {a.column for a in assigns}
    columns = ENTITY_COLUMNS[entity]
    code_column = next((c for c in columns if c.endswith(_CODE_SUFFIX)), None)
    if code_column is not None and code_column not in filled:
        # The item key is the code; its system names the first column charting the item.
        system = code_column.removesuffix(_CODE_SUFFIX) + _SYSTEM_SUFFIX
        assigns.append(Assign(code_column, literal=item.code))
        assigns.append(Assign(system, literal=local_system(site, spec, cols[0].name)))
    return Output(entity, tuple(assigns), item=item.code, present=tuple(c.name for c in cols))


def _wide_value(ctx: _Ctx, site: str, spec: FileSpec, col: ColumnSpec, entity: str) -> list[Assign]:
    """Where an item column's cell goes: its field, else the entity's ``value`` column."""
    where = f"{spec.where}.columns.{col.name}.field"
    if col.targets and entity not in col.targets:
        raise ctx.fail(
            where,
            f"item {col.item!r} feeds {entity!r} but the field names {', '.join(col.targets)}",
            f"map the column into {entity}.",
        )
    if col.targets:
        return _value_assigns(site, spec, col, entity)
    if "value" not in ENTITY_COLUMNS[entity]:
        raise ctx.fail(
            where,
            f"missing ({entity} has no 'value' column)",
            f"name the destination, e.g. '{entity}[].{ENTITY_COLUMNS[entity][0]}'.",
        )
    return [Assign("value", source=col.name)]


def _wide_unit(ctx: _Ctx, spec: FileSpec, col: ColumnSpec, entity: str) -> list[Assign]:
    """The unit of an item column: printed in ``unit_column`` or fixed by ``unit``."""
    if col.unit is None and col.unit_column is None:
        return []
    dest = unit_column_of(entity)
    if dest is None:
        raise ctx.fail(
            f"{spec.where}.columns.{col.name}", f"{entity} has no unit column", "remove the unit."
        )
    if col.unit_column is not None:
        return [Assign(dest, source=col.unit_column)]
    # A fixed unit describes the column's values: no value, no unit.
    return [Assign(dest, literal=col.unit, when=col.name)]
