"""Field expressions of a site mapping column: ``vitals[].at | oxygen[].at``, ``a[].x + a[].y``."""

from __future__ import annotations

import re
from typing import Final

from cart_etl.contract import ENTITIES, ENTITY_COLUMNS
from cart_etl.extract.site.messages import invalid
from cart_etl.extract.site.spec import (
    CODE_SUFFIX,
    PATIENT_KEY_FIELD,
    PRIVATE_FIELDS,
    SYSTEM_SUFFIX,
    UNIT_FIELD,
    ColumnRole,
    Target,
)

__all__ = ["parse_field"]

_FIELD_PATH: Final = re.compile(
    r"^(?P<entity>[a-z_][a-z0-9_]*)(?:\[\])?(?:\.(?P<name>[a-z0-9_]+))?$"
)
_AT: Final = "field"  # errors are reported at the column's ``field`` key


def parse_field(raw: str | None) -> tuple[ColumnRole, dict[str, Target]]:
    """Role and per-entity targets of a field expression (``a[].x | b[].y + b[].z``)."""
    if raw is None:
        return "ignored", {}
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
        target = _resolve_path(first, allow_bare=True)
        if target.entity in targets:
            raise invalid(
                f"entity {target.entity!r} appears twice in {raw!r}",
                "give each entity one destination per column.",
                _AT,
            )
        also = tuple(_resolve_path(p).column or p for p in rest)
        targets[target.entity] = Target(
            target.entity, target.column, target.system_column, also_encodes=also
        )
    return "value", targets


def _resolve_path(path: str, *, allow_bare: bool = False) -> Target:
    """``entity[].name`` -> Target; coded names fill ``<name>_code`` and ``<name>_system``."""
    match = _FIELD_PATH.match(path)
    if match is None:
        raise invalid(
            f"{path!r} is not a field path", "write 'entity.name' or 'entity[].name'.", _AT
        )
    entity, name = match["entity"], match["name"]
    if entity not in ENTITY_COLUMNS:
        raise invalid(f"{entity!r} is not an entity", f"use one of: {', '.join(ENTITIES)}.", _AT)
    columns = ENTITY_COLUMNS[entity]
    if name is None:
        if not allow_bare:
            raise invalid(f"{path!r} names no column", f"use {entity}[].<column>.", _AT)
        return Target(entity, None)
    if name in columns:
        return Target(entity, name)
    if name + CODE_SUFFIX in columns:
        return Target(entity, name + CODE_SUFFIX, name + SYSTEM_SUFFIX)
    coded = [c.removesuffix(CODE_SUFFIX) for c in columns if c.endswith(CODE_SUFFIX)]
    raise invalid(
        f"{name!r} is not a column of {entity}",
        f"use one of: {', '.join([*columns, *coded])}.",
        _AT,
    )
