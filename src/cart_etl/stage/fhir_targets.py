"""Recognition targets compiled to SQL: ``fhir/targets.yaml`` -> one SELECT per output.

A target (``vital``, ``lab``, ``cart_infusion`` ...) says which view columns fill which
canonical columns (``cart_etl.contract.ENTITY_COLUMNS``); this module checks the file
against the views' columns and the contract and writes the SQL that
``cart_etl.stage.fhir_concepts`` runs. It also holds how the views relate (resource shape,
not concepts): the coding sources of each view and the reference joins its targets read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cart_etl.contract import ENTITY_COLUMNS
from cart_etl.errors import MappingError
from cart_etl.extract.fhir.views import KEYED_VIEWS

# How the views relate (resource shape, not concepts): the coding sources of each view and
# the reference joins its targets may read ("specimen.accession", "medication.lot", ...).
CODINGS: Final[dict[str, list[tuple[str, str]]]] = {
    # view -> [(element, SQL yielding key, element, position, system, code, display)]
    "observation": [
        ("code", "SELECT key, element, position, system, code, display FROM v_observation_coding")
    ],
    "medication_administration": [
        (
            "medication",
            "SELECT key, element, position, system, code, display "
            "FROM v_medication_administration_coding",
        ),
        (
            "medication",
            "SELECT a.key, 'medication' AS element, 1000 + c.position AS position, "
            "c.system, c.code, c.display FROM v_medication_administration a "
            "JOIN v_medication_coding c ON c.key = " + "{med_key}",
        ),
    ],
    "procedure": [
        ("code", "SELECT key, element, position, system, code, display FROM v_procedure_coding")
    ],
    "device_use_statement": [
        (
            "device",
            "SELECT s.key, 'device' AS element, c.position, c.system, c.code, c.display "
            "FROM v_device_use_statement s JOIN v_device_coding c ON c.key = CASE WHEN "
            "starts_with(s.device_reference, '#') THEN s.key || s.device_reference "
            "ELSE s.device_key END",
        )
    ],
    "condition": [
        ("code", "SELECT key, element, position, system, code, display FROM v_condition_coding")
    ],
}
MED_KEY: Final = (
    "CASE WHEN starts_with(a.medication_reference, '#') THEN a.key || a.medication_reference "
    "ELSE a.medication_key END"
)
JOINS: Final[dict[str, dict[str, str]]] = {
    "observation": {"specimen": "LEFT JOIN v_specimen specimen ON specimen.key = v.specimen_key"},
    "medication_administration": {
        "medication": "LEFT JOIN v_medication medication ON medication.key = "
        + MED_KEY.replace("a.", "v.")
    },
    "procedure": {
        "device": "LEFT JOIN (SELECT key, first(system ORDER BY position) AS system, "
        "first(code ORDER BY position) AS code FROM v_device_coding GROUP BY key) device "
        "ON device.key = v.used_reference_key"
    },
}
# The views recognition reads (one row per resource) and their resource type.
RESOURCE_TYPE: Final = {
    v: KEYED_VIEWS[v]
    for v in (
        "patient",
        "observation",
        "medication_administration",
        "procedure",
        "device_use_statement",
        "condition",
    )
}
STATUS_COLUMN: Final = {"condition": "verification_status"}


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _column(name: str, view_columns: set[str], where: str) -> str:
    """A view column (or ``join.column``) as nullable text."""
    if name == "$system":
        return "v._system"
    if name == "$code":
        return "v._code"
    if name == "$display":
        return "v._display"
    if name == "$study_id":
        return "sid.study_id"
    if "." in name:
        alias, col = name.split(".", 1)
        return f"nullif(CAST({alias}.{col} AS VARCHAR), '')"
    if name not in view_columns:
        raise MappingError(
            f"fhir/targets.yaml {where}: {name!r} is not a column of the view.",
            fix=f"use one of {sorted(view_columns)}.",
        )
    return f"nullif(CAST(v.{name} AS VARCHAR), '')"


def _spec(raw: Any, cols: set[str], where: str) -> str:
    """One column spec of targets.yaml -> a SQL expression (text or NULL)."""
    if isinstance(raw, str):
        return _column(raw, cols, where)
    if isinstance(raw, list):
        parts = [_spec(p, cols, where) for p in raw]
        return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
    if isinstance(raw, dict) and "concat" in raw:
        parts = [_spec(p, cols, where) for p in raw["concat"]]
        return f"nullif(concat_ws('', {', '.join(parts)}), '')"
    if isinstance(raw, dict) and "regex" in raw and "from" in raw:
        re.compile(raw["regex"])
        src = _spec(raw["from"], cols, where)
        return f"nullif(regexp_extract({src}, {quote(raw['regex'])}, 1), '')"
    if isinstance(raw, dict) and "value" in raw and "if" in raw:
        test = _predicate(raw["if"], cols, where)
        return f"CASE WHEN {test} THEN {_spec(raw['value'], cols, where)} END"
    if isinstance(raw, dict) and "component" in raw:
        system, _, code = str(raw["component"]).rpartition("|")
        value = raw.get("value", "value_quantity_value")
        unit = (
            f" AND coalesce(c.value_quantity_code, c.value_quantity_unit) = {quote(raw['unit'])}"
            if "unit" in raw
            else ""
        )
        return (
            f"(SELECT nullif(CAST(first(c.{value} ORDER BY c.component) AS VARCHAR), '') "
            f"FROM v_observation_component c WHERE c.key = v.key "
            f"AND c.code_system = {quote(system)} AND c.code_code = {quote(code)}{unit})"
        )
    raise MappingError(
        f"fhir/targets.yaml {where}: cannot read the column spec {raw!r}.",
        fix="use a view column, a list, {concat}, {regex, from}, {value, if} or {component}.",
    )


def _predicate(raw: Any, cols: set[str], where: str) -> str:
    if not isinstance(raw, dict) or "col" not in raw:
        raise MappingError(
            f"fhir/targets.yaml {where}: a `when` test needs `col`.",
            fix="write {col: <view column>, present|regex|not_regex: ...}.",
        )
    value = _spec(raw["col"], cols, where)
    if "present" in raw:
        return f"({value} IS {'NOT ' if raw['present'] else ''}NULL)"
    if "regex" in raw:
        return f"coalesce(regexp_matches({value}, {quote(raw['regex'])}), false)"
    if "not_regex" in raw:
        return f"NOT coalesce(regexp_matches({value}, {quote(raw['not_regex'])}), false)"
    raise MappingError(
        f"fhir/targets.yaml {where}: unknown test {raw!r}.", fix="use present, regex or not_regex."
    )


@dataclass(frozen=True)
class _Output:
    entity: str
    select: str  # SQL yielding (key, row, <entity columns>)
    when: str


@dataclass(frozen=True)
class Target:
    view: str
    name: str
    element: str
    outputs: tuple[_Output, ...]
    reject: str | None
    ignore: str | None


def compile_targets(spec: Mapping[str, Any], view_columns: Mapping[str, set[str]]) -> list[Target]:
    targets: list[Target] = []
    for view, by_target in (spec.get("views") or {}).items():
        cols = view_columns.get(view)
        if cols is None:
            raise MappingError(
                f"fhir/targets.yaml names the view {view!r}, which fhir/views does not define.",
                fix=f"use one of {sorted(view_columns)}.",
            )
        elements = [e for e, _ in CODINGS.get(view, [])]
        for name, body in (by_target or {}).items():
            where = f"views.{view}.{name}"
            outputs = []
            for i, out in enumerate(body.get("outputs") or []):
                entity = out.get("entity")
                if entity not in ENTITY_COLUMNS:
                    raise MappingError(
                        f"fhir/targets.yaml {where}.outputs[{i}]: unknown entity {entity!r}.",
                        fix=f"use one of {sorted(ENTITY_COLUMNS)}.",
                    )
                unknown = set(out.get("columns") or {}) - set(ENTITY_COLUMNS[entity])
                if unknown:
                    raise MappingError(
                        f"fhir/targets.yaml {where}.outputs[{i}]: {sorted(unknown)} are not "
                        f"columns of {entity}.",
                        fix=f"use {list(ENTITY_COLUMNS[entity])}.",
                    )
                when = " AND ".join(_predicate(w, cols, where) for w in out.get("when") or [])
                outputs.append(_output(view, entity, out, cols, where, when or "true"))
            otherwise = body.get("otherwise") or {}
            targets.append(
                Target(
                    view,
                    name,
                    body.get("element") or (elements[0] if elements else ""),
                    tuple(outputs),
                    None if "ignore" in otherwise else otherwise.get("reject", "no output applies"),
                    otherwise.get("ignore"),
                )
            )
    return targets


def _output(
    view: str, entity: str, out: Mapping[str, Any], cols: set[str], where: str, when: str
) -> _Output:
    columns = out.get("columns") or {}
    component = out.get("components")
    if component:
        # Panel: one row per component whose code maps to `component`; values from it.
        comp_cols = {
            "value_quantity_value",
            "value_quantity_code",
            "value_quantity_unit",
            "value_quantity_comparator",
            "value_string",
            "value_integer",
            "value_boolean",
            "value_concept_code",
            "value_concept_text",
            "value_concept_display",
            "value_datetime",
        }
        exprs = []
        for col in ENTITY_COLUMNS[entity]:
            raw = columns.get(col)
            if raw is None:
                exprs.append(f"NULL AS {col}")
                continue
            sql = _spec(raw, cols | comp_cols, where)
            for c in comp_cols:  # component columns come from the component row
                sql = sql.replace(f"v.{c}", f"cv.{c}")
            sql = sql.replace("v._system", "cc.system").replace("v._code", "cc.code")
            exprs.append(f"{sql} AS {col}")
        select = (
            "SELECT v.key, coalesce(v.id, v.key) || '#component' || cv.component AS row, "
            + ", ".join(exprs)
            + ", {extra} FROM {base} JOIN v_observation_component cv ON cv.key = v.key "
            "JOIN (SELECT key, component, system, code FROM v_observation_component_coding k "
            "JOIN _cmap m ON m.source_system = k.system AND m.source_code = k.code "
            f"WHERE m.target = {quote(component)} QUALIFY row_number() OVER "
            "(PARTITION BY key, component ORDER BY position) = 1) cc "
            "ON cc.key = v.key AND cc.component = cv.component"
        )
        return _Output(entity, select, when)
    exprs = [
        f"{_spec(columns[c], cols, where)} AS {c}" if c in columns else f"NULL AS {c}"
        for c in ENTITY_COLUMNS[entity]
    ]
    select = (
        "SELECT v.key, coalesce(v.id, v.key) AS row, " + ", ".join(exprs) + ", {extra} FROM {base}"
    )
    return _Output(entity, select, when)


# -- running -------------------------------------------------------------------------------
