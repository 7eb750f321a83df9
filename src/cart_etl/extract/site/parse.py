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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from cart_etl.config import Settings
from cart_etl.errors import ConfigurationError, MappingError
from cart_etl.extract.site.plan import plan_outputs
from cart_etl.extract.site.spec import (
    DEFAULT_ENCODING,
    DEFAULT_ITEM_TABLE,
    ColumnSpec,
    FileSpec,
    PatientLink,
    SiteMapping,
    SourceKind,
    display_path,
)
from cart_etl.extract.site.validator import Ctx, column_spec, item_specs

__all__ = ["available_sites", "load_site_mapping", "parse_site_mapping"]

LAYOUTS: Final[tuple[str, ...]] = ("flat", "long", "wide")
FILE_FORMATS: Final[tuple[str, ...]] = ("csv", "xlsx")
QUOTING: Final[tuple[str, ...]] = ("minimal", "all", "nonnumeric", "none")
TEXT_NORMALIZATIONS: Final[tuple[str, ...]] = ("NFKC_strip",)
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
_LINK_KEYS: Final = frozenset({"file", "study_id_column", "mrn_column", "note"})


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
            f"{display_path(path)}: not UTF-8 text (byte {exc.start}).", fix="save it as UTF-8."
        ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(
            f"{display_path(path)}: invalid YAML: {exc}".replace("\n", " "),
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
            f"Unknown site {text!r}: no {display_path(path)}.",
            fix=f"use one of: {', '.join(sites) or '(none)'}, or add {display_path(path)}.",
        )
    return path


def parse_site_mapping(raw: Any, path: Path) -> SiteMapping:
    """Validate an already-parsed YAML document (``path`` is used in messages only)."""
    ctx = Ctx(path)
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


def _timezone(ctx: Ctx, value: Any) -> str:
    """An IANA timezone name."""
    name = ctx.text(value, "timezone")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ctx.fail(
            "timezone", f"{name!r} is not an IANA timezone", "use e.g. 'Asia/Shanghai'."
        ) from exc
    return name


def _source_kind(ctx: Ctx, top: Mapping[str, Any]) -> tuple[SourceKind, str]:
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
    ctx: Ctx, raw: Any, files: Mapping[str, FileSpec], section: str
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


def _file_spec(
    ctx: Ctx, site: str, kind: SourceKind, section: str, name: Any, raw: Any
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
        str(col): column_spec(ctx, col, value, f"{where}.columns.{col}")
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
        item_specs(ctx, lookups.get(item_table), f"{where}.{item_table}", columns, item_column)
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
    outputs = plan_outputs(ctx.path, site, base)
    if not outputs:
        raise ctx.fail(
            f"{where}.columns",
            "no column maps to a canonical entity",
            "give at least one column a field such as 'vitals[].at'.",
        )
    return replace(base, outputs=outputs)


def _reading(
    ctx: Ctx, kind: SourceKind, name: str, spec: Mapping[str, Any], where: str
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


def _order_by(ctx: Ctx, spec: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """SQL row order columns (empty: primary key, then rowid)."""
    raw = spec.get("order_by") or ()
    cols = [raw] if isinstance(raw, str) else list(raw)
    return tuple(c for c in (ctx.text(v, f"{where}.order_by") for v in cols) if c)


def _check_encoding(ctx: Ctx, encoding: str, where: str) -> None:
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


def _one_char(ctx: Ctx, value: Any, where: str) -> str:
    """A single-character delimiter or quote."""
    if not isinstance(value, str) or len(value) != 1:
        raise ctx.fail(where, f"{value!r} is not one character", 'use e.g. "," or ";".')
    return value


def _column_ref(ctx: Ctx, value: Any, columns: Mapping[str, ColumnSpec], where: str) -> str:
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
    ctx: Ctx, value: Any, columns: Mapping[str, ColumnSpec], where: str
) -> str | None:
    """A key naming one of the declared columns, or None when absent."""
    return None if value is None else _column_ref(ctx, value, columns, where)


def _check_lookups(
    ctx: Ctx, columns: Mapping[str, ColumnSpec], lookups: Mapping[str, Any], where: str
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
