"""Models of one file or table entry of a site mapping: reading, columns, items, lookups.

The format is described in :mod:`cart_etl.extract.site.document`. Checks pydantic cannot
express (references between keys, field expressions, item routing) raise
:func:`~cart_etl.extract.site.messages.invalid` with the key path they concern.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar, Final, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from cart_etl.contract import ENTITIES, ENTITY_COLUMNS
from cart_etl.extract.site.fields import parse_field
from cart_etl.extract.site.messages import NODE, first_problem, invalid, known_keys, near_miss
from cart_etl.extract.site.spec import (
    DEFAULT_ENCODING,
    DEFAULT_ITEM_TABLE,
    ColumnRole,
    ItemSpec,
    Layout,
    Target,
    normalize_key,
)

__all__ = [
    "FILE_FORMATS",
    "ColumnDecl",
    "FileEntry",
    "ItemDecl",
    "Node",
    "SpecEntry",
    "TableEntry",
    "Text",
]

FileFormat = Literal["csv", "xlsx"]
Quoting = Literal["minimal", "all", "nonnumeric", "none"]
ColumnType = Literal[
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
]
Text = Annotated[str, Field(min_length=1)]

FILE_FORMATS: Final[tuple[str, ...]] = ("csv", "xlsx")
# In every ASCII-compatible codec these bytes stand for themselves (needed to split records).
_ASCII_PROBE: Final = '\n\r",;|\t'


class Node(BaseModel):
    """A mapping of the YAML: no unknown keys, no coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)
    what: ClassVar[str] = "a mapping"  # how the YAML writes this node, for messages


class ColumnDecl(Node):
    """One source column: ``<header>: {field: ..., type: ...}`` (or ``<header>: <field>``)."""

    what: ClassVar[str] = "a column spec {field: ..., type: ...}"
    field: str | None = None
    type: ColumnType | None = None
    values: dict[Any, Any] | None = None
    unit: str | None = None
    unit_column: Text | None = None
    lookup: Text | None = None
    item: str | None = None
    note: str | None = None
    pattern: str | None = None
    special_values: dict[Any, Any] | None = None
    blank: str | None = None
    scale: str | None = None
    unmapped: str | None = None
    _role: ColumnRole = PrivateAttr("ignored")
    _targets: dict[str, Target] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``header: entity.name`` and ``header: null`` stand for ``{field: ...}``."""
        return {"field": data} if data is None or isinstance(data, str) else data

    @field_validator("field", mode="before")
    @classmethod
    def _expression(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise invalid(f"{value!r} is not a field expression", "write e.g. 'vitals[].at'.")
        return value

    @field_validator("type", mode="before")
    @classmethod
    def _column_type(cls, value: Any) -> Any:
        types = get_args(ColumnType)
        if value is not None and value not in types:
            fix = f"use one of: {', '.join(sorted(types))}."
            raise invalid(f"{value!r} is not a column type", fix)
        return value

    @field_validator("unit", mode="before")
    @classmethod
    def _unit_text(cls, value: Any) -> Any:
        """A YAML number as unit (``unit: 1``) is its text."""
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return str(value) if numeric else value

    @model_validator(mode="after")
    def _parse_field(self) -> Self:
        if self.unit is not None and self.unit_column is not None:
            raise invalid(
                "both 'unit' and 'unit_column' are given",
                "use unit_column when the export prints the unit, a fixed unit otherwise.",
            )
        self._role, self._targets = parse_field(self.field)
        return self

    @property
    def role(self) -> ColumnRole:
        """What the column holds: values, the patient key, private text, units or nothing."""
        return self._role

    @property
    def targets(self) -> dict[str, Target]:
        """Entity -> where the column's text goes (role ``value`` only)."""
        return self._targets


class ItemDecl(Node):
    """One entry of an item table: ``<local code>: {target: <entity>, <attribute>: ...}``."""

    what: ClassVar[str] = "{target: entity, ...}"
    target: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)  # loinc, default_unit, ...

    @model_validator(mode="before")
    @classmethod
    def _attributes(cls, data: Any) -> Any:
        """Keys other than ``target`` (and its near misses) are the item's attributes."""
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            return data
        node: dict[Any, Any] = {}
        attributes: dict[str, Any] = {}
        for key, value in data.items():
            keep = key == "target" or not isinstance(key, str) or near_miss(key, ["target"])
            if keep:
                node[key] = value
            else:
                attributes[key] = value
        return {**node, "attributes": attributes}


_ITEMS: Final = TypeAdapter(dict[Text, ItemDecl], config=ConfigDict(strict=True))


class SpecEntry(Node):
    """What a file and a table spec share: patient key, columns, layout, items, lookups."""

    what: ClassVar[str] = "a file spec"
    patient_key: Text = Field(description="<the column holding the hospital MRN>")
    columns: dict[Text, ColumnDecl] = Field(description="{header: spec}")
    layout: Layout = "flat"
    item_column: Text | None = None
    value_column: Text | None = None
    unit_column: Text | None = None
    header_row: int = 1
    table: Text | None = None
    order_by: list[Text] = Field(default_factory=list)
    grain: str | None = None
    datetime_format: str | None = None
    datetime_format_without_offset: str | None = None
    precision: str | None = None
    alternate_datetime_formats: list[str] | None = None
    datetime_cells: str | None = None
    datetime_note: str | None = None
    note: str | None = None
    lookups: dict[str, dict[Any, Any]] = Field(default_factory=dict)
    _items: dict[str, ItemSpec] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _lookup_tables(cls, data: Any) -> Any:
        """Mapping-valued keys that are no (near miss of a) field are lookup tables."""
        if not isinstance(data, Mapping):
            return data
        cls._refuse_keys(data)
        known = known_keys(cls)
        node: dict[Any, Any] = {}
        lookups: dict[str, Any] = {}
        for key, value in data.items():
            table = (
                isinstance(key, str)
                and key not in known
                and isinstance(value, Mapping)
                and near_miss(key, known) is None
            )
            if table:
                lookups[key] = value
            elif key == "lookups":
                raise invalid("a lookup table must be a mapping", "write lookups: {...}.", key)
            else:
                node[key] = value
        return {**node, "lookups": lookups}

    @classmethod
    def _refuse_keys(cls, data: Mapping[Any, Any]) -> None:
        """Keys this kind of spec refuses with a message of its own (none here)."""

    @field_validator("header_row", mode="before")
    @classmethod
    def _row_number(cls, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise invalid(f"{value!r} is not a row number", "use 1 or more.")
        return value

    @field_validator("order_by", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        """``order_by: id`` is ``order_by: [id]``; null is no order."""
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _references(self) -> Self:
        """Column names, lookups and items referenced by the spec exist and agree."""
        if not self.columns:
            raise invalid("no columns", "map at least the patient key column.", "columns")
        self._column_ref(self.patient_key, "patient_key")
        self._check_lookups()
        for key in ("item_column", "value_column", "unit_column"):
            name = getattr(self, key)
            if name is not None:
                self._column_ref(name, key)
        if self.layout == "long" and (self.item_column is None or self.value_column is None):
            raise invalid(
                "a long layout needs item_column and value_column",
                "name the column holding the item and the one holding its value.",
            )
        table = self.item_table
        if table is not None:
            self._items = self._item_specs(table)
        return self

    @property
    def item_table(self) -> str | None:
        """The lookup table listing the items (long and wide layouts)."""
        if self.layout == "long" and self.item_column is not None:
            return self.columns[self.item_column].lookup or DEFAULT_ITEM_TABLE
        return DEFAULT_ITEM_TABLE if self.layout == "wide" else None

    @property
    def items(self) -> dict[str, ItemSpec]:
        """The items of the item table, by code as written."""
        return self._items

    def _column_ref(self, name: str, at: str) -> None:
        if name not in self.columns:
            raise invalid(
                f"{name!r} is not one of the declared columns",
                f"declare it under columns or use one of: {', '.join(self.columns)}.",
                at,
            )

    def _check_lookups(self) -> None:
        """Every ``lookup:`` names a table of the same spec; every ``unit_column`` a column."""
        for name, col in self.columns.items():
            if col.lookup is not None and col.lookup not in self.lookups:
                tables = ", ".join(self.lookups) or "(none)"
                raise invalid(
                    f"{col.lookup!r} names no table of {NODE}",
                    f"add {NODE}.{col.lookup} or use one of: {tables}.",
                    f"columns.{name}.lookup",
                )
            if col.unit_column is not None and col.unit_column not in self.columns:
                raise invalid(
                    f"{col.unit_column!r} is not a declared column",
                    f"declare {col.unit_column!r} under {NODE}.columns.",
                    f"columns.{name}.unit_column",
                )

    def _item_specs(self, table: str) -> dict[str, ItemSpec]:
        """The item table with each entry's target entity checked against the routing."""
        raw = self.lookups.get(table)
        if raw is None:
            what = "an item table {local code: {target: entity, ...}}"
            raise invalid(f"expected {what} (a mapping), got None", f"write {what}.", table)
        if not raw:
            raise invalid("no items", "list the items the export charts.", table)
        try:
            entries = _ITEMS.validate_python(raw)
        except ValidationError as exc:
            where, problem, fix = first_problem(exc, dict[str, ItemDecl])
            raise invalid(problem, fix, f"{table}.{where}") from None
        routed = self.columns[self.item_column].targets if self.item_column else {}
        default = next(iter(routed)) if len(routed) == 1 else None
        items: dict[str, ItemSpec] = {}
        seen: dict[str, str] = {}
        for code, entry in entries.items():
            at = f"{table}.{code}"
            target = entry.target if entry.target is not None else default
            if target is None:
                choices = ", ".join(routed or ENTITIES)
                raise invalid(
                    "missing", f"name the entity it feeds: one of {choices}.", f"{at}.target"
                )
            if target not in ENTITY_COLUMNS:
                raise invalid(
                    f"{target!r} is not an entity",
                    f"use one of: {', '.join(ENTITIES)}.",
                    f"{at}.target",
                )
            if self.item_column is not None and routed and target not in routed:
                raise invalid(
                    f"{target!r} is not routed by column {self.item_column!r} "
                    f"(field {self.columns[self.item_column].field!r})",
                    f"use one of: {', '.join(routed)}, or add '{target}' to that field.",
                    f"{at}.target",
                )
            key = normalize_key(code)
            if key in seen:
                raise invalid(
                    f"{code!r} and {seen[key]!r} are the same item after NFKC + strip",
                    "keep one of them.",
                    at,
                )
            seen[key] = code
            items[code] = ItemSpec(code=code, key=key, target=target, attributes=entry.attributes)
        return items


class FileEntry(SpecEntry):
    """A file of the delivery: how to read it, then the shared spec."""

    what: ClassVar[str] = "a file spec"
    format: FileFormat | None = None
    encoding: Text = DEFAULT_ENCODING
    bom: bool | None = None
    delimiter: str = ","
    quotechar: str | None = '"'
    quoting: Quoting = "minimal"
    line_terminator: str | None = None
    sheet: Text | None = None

    @field_validator("encoding", mode="before")
    @classmethod
    def _ascii_compatible(cls, value: Any) -> Any:
        """A known codec in which ASCII bytes stand for themselves (needed to split records)."""
        if not isinstance(value, str) or not value:
            return value  # the type check words it
        try:
            codecs.lookup(value)
            ok = _ASCII_PROBE.encode(value) == _ASCII_PROBE.encode("ascii")
        except LookupError:
            ok = False
        if not ok:
            raise invalid(
                f"{value!r} is not a known ASCII-compatible encoding",
                "use the Python codec name of the export, e.g. utf-8, gb18030, gbk, latin-1.",
            )
        return value

    @field_validator("delimiter", mode="before")
    @classmethod
    def _single_char(cls, value: Any) -> Any:
        return _one_char(value, "")

    @model_validator(mode="after")
    def _quote(self) -> Self:
        """The quote character matters unless quoting is none."""
        if self.quoting != "none":
            _one_char(self.quotechar, "quotechar")
        return self

    def file_format(self, name: str) -> str:
        """``format``, else the file name's suffix."""
        return self.format or PurePosixPath(name).suffix.lstrip(".").lower()


class TableEntry(SpecEntry):
    """A table of a database delivery: the shared spec, nothing about files."""

    what: ClassVar[str] = "a table spec"

    @classmethod
    def _refuse_keys(cls, data: Mapping[Any, Any]) -> None:
        file_keys = sorted(set(FileEntry.model_fields) - set(SpecEntry.model_fields))
        found = sorted(key for key in data if key in file_keys)
        if found:
            raise invalid(
                "a database table has no file format, encoding or CSV dialect",
                f"remove {found[0]!r} (or deliver the data under 'files:').",
                str(found[0]),
            )


def _one_char(value: Any, at: str) -> Any:
    """A single-character delimiter or quote."""
    if not isinstance(value, str) or len(value) != 1:
        raise invalid(f"{value!r} is not one character", 'use e.g. "," or ";".', at)
    return value
