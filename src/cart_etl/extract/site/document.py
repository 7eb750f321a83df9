"""The site mapping document (``mappings/sites/<site>.yaml``) as pydantic models.

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
  :data:`cart_etl.contract.ENTITY_COLUMNS`; a coded ``name`` (``item``, ``test``,
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

Every model forbids unknown keys; a near miss of a known key (``feild``) is reported with
the key it resembles. The exceptions are free-form by design: the lookup tables of a spec
(mapping-valued keys that are no near miss) and the attributes of an item (``loinc``,
``default_unit`` ...). Values are not coerced (``strict``): ``header_row: "2"`` is an error.
:mod:`cart_etl.extract.site.parse` turns the first error into a :class:`MappingError`
naming the YAML file, the key path and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator

from cart_etl.extract.site.entries import FILE_FORMATS, FileEntry, Node, SpecEntry, TableEntry, Text
from cart_etl.extract.site.messages import invalid
from cart_etl.extract.site.spec import SourceKind

__all__ = ["PatientLinkDecl", "SiteDocument", "SourceDecl"]

TextNormalization = Literal["NFKC_strip"]


class SourceDecl(Node):
    """``source:``: how the site delivers its data (must agree with files/tables)."""

    what: ClassVar[str] = "source: {kind: files | sql}"
    kind: SourceKind = Field(description="files | sql")


class PatientLinkDecl(Node):
    """``patient_link:``: the register linking the study id to the hospital MRN."""

    what: ClassVar[str] = "patient_link: {file, study_id_column, mrn_column}"
    file: Text = Field(description="<the register file, as declared under files/tables>")
    study_id_column: Text = Field(description="<its column holding the study id>")
    mrn_column: Text = Field(description="<its column holding the MRN (its patient_key)>")
    note: str | None = None


class SiteDocument(Node):
    """A whole site mapping: the site, its timezone, and its files or its tables."""

    what: ClassVar[str] = "a site mapping"
    site: Text = Field(description="<the site name, the source provenance value>")
    timezone: Text = Field(description="<the IANA timezone of the export, e.g. Asia/Shanghai>")
    text_normalization: TextNormalization = "NFKC_strip"
    synthetic: bool | None = None
    decimal_separator: str | None = None
    codings: dict[str, str] | None = Field(None, description="{name: uri}")
    patient_link: PatientLinkDecl | None = None
    source: SourceDecl | None = None
    files: dict[Text, FileEntry] | None = Field(None, description="<name>: <spec>")
    tables: dict[Text, TableEntry] | None = Field(None, description="<name>: <spec>")
    note: str | None = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_section(cls, data: Any) -> Any:
        """Files and tables together are refused before either is read."""
        if isinstance(data, Mapping) and "files" in data and "tables" in data:
            raise _no_section()
        return data

    @field_validator("files", "tables", mode="before")
    @classmethod
    def _section(cls, value: Any, info: ValidationInfo) -> Any:
        """A section that is present holds specs (``files:`` alone is no delivery)."""
        if value is None:
            what = f"{info.field_name}: <name>: <spec>"
            raise invalid(f"expected {what} (a mapping), got None", f"write {what}.")
        return value

    @field_validator("timezone", mode="before")
    @classmethod
    def _iana(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value  # the type check words it
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise invalid(
                f"{value!r} is not an IANA timezone", "use e.g. 'Asia/Shanghai'."
            ) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """One section, agreeing with ``source.kind``, and a register that is declared."""
        section = self.section
        entries = self.entries
        if not entries:
            raise invalid("no entries", f"declare at least one entry under {section}.", section)
        if self.source is not None and self.source.kind != self.kind:
            raise invalid(
                f"{self.source.kind!r} does not match the '{section}' section",
                "use kind: files with 'files:' and kind: sql with 'tables:'.",
                "source.kind",
            )
        if self.files is not None:
            for name, entry in self.files.items():
                fmt = entry.file_format(name)
                if fmt not in FILE_FORMATS:
                    raise invalid(
                        f"{fmt!r} is not allowed",
                        f"use one of: {', '.join(FILE_FORMATS)}.",
                        f"files.{name}.format",
                    )
        if self.patient_link is not None:
            self._check_link(self.patient_link, entries)
        return self

    @property
    def kind(self) -> SourceKind:
        """``files`` or ``sql``, from the section present."""
        return "files" if self.files is not None else "sql"

    @property
    def section(self) -> str:
        """The section holding the specs: ``files`` or ``tables``."""
        return "files" if self.files is not None else "tables"

    @property
    def entries(self) -> Mapping[str, SpecEntry]:
        """The file or table specs, in YAML order."""
        if self.files is not None:
            return self.files
        if self.tables is not None:
            return self.tables
        raise _no_section()

    def _check_link(self, link: PatientLinkDecl, entries: Mapping[str, SpecEntry]) -> None:
        """The register is a declared spec whose patient key is the MRN column."""
        spec = entries.get(link.file)
        if spec is None:
            raise invalid(
                f"{link.file!r} is not declared under {self.section}",
                f"use one of: {', '.join(entries)}.",
                "patient_link.file",
            )
        where = f"{self.section}.{link.file}"
        for key in ("study_id_column", "mrn_column"):
            column = getattr(link, key)
            if column not in spec.columns:
                raise invalid(
                    f"{column!r} is not a column of {where}",
                    f"use one of: {', '.join(spec.columns)}.",
                    f"patient_link.{key}",
                )
        if link.mrn_column != spec.patient_key:
            raise invalid(
                f"{link.mrn_column!r} is not the patient_key of {where} ({spec.patient_key!r})",
                "make the register's patient_key its MRN column.",
                "patient_link.mrn_column",
            )


def _no_section() -> Exception:
    return invalid(
        "declare exactly one of 'files' (a delivery as files) or 'tables' (a database)",
        "keep one of the two sections.",
    )
