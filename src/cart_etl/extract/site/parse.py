"""Load a site mapping (``mappings/sites/<site>.yaml``) into the typed specs the extractors read.

The YAML is validated by the models of :mod:`cart_etl.extract.site.document` (its format is
described there); each file or table spec then gets its extraction plan
(:mod:`cart_etl.extract.site.plan`). Every problem is a :class:`MappingError` naming the
YAML file, the key path and the fix.
"""

from __future__ import annotations

import codecs
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from cart_etl.config import Settings
from cart_etl.errors import ConfigurationError, MappingError
from cart_etl.extract.site.document import SiteDocument
from cart_etl.extract.site.entries import ColumnDecl, FileEntry, SpecEntry
from cart_etl.extract.site.messages import first_problem
from cart_etl.extract.site.plan import plan_outputs
from cart_etl.extract.site.spec import (
    ColumnSpec,
    FileSpec,
    PatientLink,
    SiteMapping,
    display_path,
    mapping_error,
)

__all__ = ["available_sites", "load_site_mapping", "parse_site_mapping"]


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
    """Validate an already-parsed YAML document (``path`` is used in messages only).

    Raises:
        MappingError: the document does not validate (the first problem is reported, an
            unknown key first since it often explains the others) or a spec has no
            consistent extraction plan.
    """
    try:
        doc = SiteDocument.model_validate(raw)
    except ValidationError as exc:
        where, problem, fix = first_problem(exc, SiteDocument)
        raise mapping_error(path, where, problem, fix) from exc
    files = {name: _file_spec(path, doc, name, entry) for name, entry in doc.entries.items()}
    link = doc.patient_link
    return SiteMapping(
        site=doc.site,
        path=path,
        kind=doc.kind,
        timezone=doc.timezone,
        text_normalization=doc.text_normalization,
        files=files,
        patient_link=None
        if link is None
        else PatientLink(link.file, link.study_id_column, link.mrn_column),
        codings=dict(doc.codings or {}),
        options=doc.model_dump(exclude_unset=True, exclude={"files", "tables", "patient_link"}),
    )


def _file_spec(path: Path, doc: SiteDocument, name: str, entry: SpecEntry) -> FileSpec:
    """The typed spec of one validated file/table entry, with its extraction plan."""
    where = f"{doc.section}.{name}"
    items = entry.items
    base = FileSpec(
        name=name,
        where=where,
        kind=doc.kind,
        patient_key=entry.patient_key,
        columns={col: _column_spec(col, decl) for col, decl in entry.columns.items()},
        layout=entry.layout,
        item_column=entry.item_column,
        value_column=entry.value_column,
        unit_column=entry.unit_column,
        item_table=entry.item_table,
        items=items,
        item_index={item.key: item for item in items.values()},
        lookups=entry.lookups,
        datetime_format=entry.datetime_format,
        alternate_datetime_formats=tuple(entry.alternate_datetime_formats or ()),
        options=entry.model_dump(exclude_unset=True, exclude={"columns", "lookups"}),
        **_reading(name, entry),
    )
    outputs = plan_outputs(path, doc.site, base)
    if not outputs:
        raise mapping_error(
            path,
            f"{where}.columns",
            "no column maps to a canonical entity",
            "give at least one column a field such as 'vitals[].at'.",
        )
    return replace(base, outputs=outputs)


def _reading(name: str, entry: SpecEntry) -> dict[str, Any]:
    """Format, codec and CSV dialect of a file, or the table name/order of a table."""
    order_by = tuple(entry.order_by)
    if not isinstance(entry, FileEntry):
        return {"format": "sql", "table": name, "order_by": order_by}
    return {
        "format": entry.file_format(name),
        "encoding": codecs.lookup(entry.encoding).name,
        "bom": entry.bom,
        "delimiter": entry.delimiter,
        "quotechar": None if entry.quoting == "none" else entry.quotechar,
        "header_row": entry.header_row,
        "sheet": entry.sheet,
        "table": entry.table or PurePosixPath(name).stem,
        "order_by": order_by,
    }


def _column_spec(name: str, decl: ColumnDecl) -> ColumnSpec:
    """One validated column: its parsed field, its other keys kept as options."""
    return ColumnSpec(
        name=name,
        field=decl.field,
        role=decl.role,
        targets=decl.targets,
        type=decl.type,
        item=decl.item,
        unit=decl.unit,
        unit_column=decl.unit_column,
        lookup=decl.lookup,
        options=decl.model_dump(exclude_unset=True, exclude={"field", "type", "item", "lookup"}),
    )
