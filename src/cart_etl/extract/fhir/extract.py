"""FHIR R4/R4B extractor: Bundles and Bulk NDJSON to canonical raw frames, driven by YAML."""

from __future__ import annotations

import gc
import gzip
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any, Final, Literal, cast

import orjson
import polars as pl
import yaml

from cart_etl.config import Settings
from cart_etl.contract import ENTITY_COLUMNS, RawBatch, Rejected, conform
from cart_etl.errors import ConfigurationError, MappingError, SourceError

__all__ = [
    "RULE_INVALID",
    "RULE_MISSING_SUBJECT",
    "RULE_NO_OUTPUT",
    "RULE_STATUS",
    "RULE_UNKNOWN_TYPE",
    "RULE_UNMAPPED",
    "RULE_UNPARSEABLE",
    "RULE_UNSUPPORTED_BUNDLE",
    "SOURCE",
    "FhirExtractReport",
    "FhirMapping",
    "FhirStream",
    "extract_fhir",
    "load_fhir_mapping",
]

log = logging.getLogger(__name__)

Json = dict[str, Any]
Mode = Literal["fast", "strict"]

SOURCE: Final = "fhir"
RULE_UNPARSEABLE: Final = "fhir.unparseable"
RULE_INVALID: Final = "fhir.invalid_resource"
RULE_MISSING_SUBJECT: Final = "fhir.missing_subject"
RULE_STATUS: Final = "fhir.status_excluded"
RULE_UNMAPPED: Final = "fhir.unmapped_code"
RULE_UNKNOWN_TYPE: Final = "fhir.unknown_resource_type"
RULE_NO_OUTPUT: Final = "fhir.no_matching_output"
RULE_UNSUPPORTED_BUNDLE: Final = "fhir.unsupported_bundle"

EMITTED: Final = "emitted"
REJECTED: Final = "rejected"
IGNORED: Final = "ignored"

DEFAULT_BATCH_ROWS: Final = 65_536
_SNIPPET: Final = 200  # characters of a bad value kept in a Rejected
_BUNDLE_SUFFIXES: Final = (".json", ".json.gz")
_NDJSON_SUFFIXES: Final = (".ndjson", ".ndjson.gz")
# "Patient/123", "http://server/fhir/Patient/123/_history/2" -> (type, id)
_LITERAL_REF: Final = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)
_LEADING_TYPE: Final = re.compile(r"[A-Za-z]+")
_STEP: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\]]*\])*)$")

# Path step kinds (small ints: compared in the hot loop).
_NAME, _INDEX, _CODING, _EQUALS, _DEREF = range(5)
Step = tuple[Any, ...]
Steps = tuple[Step, ...]


def _text(value: Any) -> str | None:
    """Render a JSON value as text: strings as written, JSON spelling for the rest."""
    kind = type(value)
    if kind is str:
        return cast(str, value)
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        # orjson parses JSON numbers to doubles; repr is the shortest text reading back to
        # the same double, i.e. the JSON text whenever the writer printed shortest round-trip
        # (orjson, Python, JavaScript). "36.60" or "1e2" come out as "36.6" and "100.0".
        return repr(value)
    return orjson.dumps(value).decode()


def _nonempty_str(value: Any) -> str | None:
    """The value if it is a non-empty string (ids and URLs of other types are ignored)."""
    return value if type(value) is str and value else None


def _snippet(value: Any) -> str:
    """A bounded text rendering of a bad value for a Rejected."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace").rstrip("\r\n")
    else:
        text = _text(value) or ""
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


def _has_coding(concept: Any, system: str, code: str) -> bool:
    """Whether a CodeableConcept carries the coding system|code."""
    if type(concept) is not dict:
        return False
    for coding in concept.get("coding") or ():
        if type(coding) is dict and coding.get("code") == code and coding.get("system") == system:
            return True
    return False


def _first(
    node: Any,
    steps: Steps,
    start: int,
    ctx: _Ctx,
    accept: Callable[[Any], bool] | None = None,
) -> Any:
    """First value reached from ``node`` along ``steps`` (lists: first element that yields one).

    ``accept`` narrows "first" to values it accepts (a regex column looks past notes that do
    not match). A list at the end of the path yields its first accepted element.
    """
    i, n = start, len(steps)
    while i < n:
        if node is None:
            return None
        step = steps[i]
        kind = step[0]
        if type(node) is list:
            if kind == _INDEX:
                idx = step[1]
                node = node[idx] if -len(node) <= idx < len(node) else None
                i += 1
                continue
            for element in node:
                found = _first(element, steps, i, ctx, accept)
                if found is not None:
                    return found
            return None
        if type(node) is not dict:
            return None
        if kind == _NAME:
            node = node.get(step[1])
        elif kind == _CODING:
            if not _has_coding(node.get("code"), step[1], step[2]):
                return None
        elif kind == _EQUALS:
            if _text(node.get(step[1])) != step[2]:
                return None
        elif kind == _DEREF:
            node = ctx.deref(node)
        elif step[1] != 0:  # an index on a single element: only [0] is that element
            return None
        i += 1
    if type(node) is list:
        for element in node:
            if element is not None and (accept is None or accept(element)):
                return element
        return None
    if node is None or (accept is not None and not accept(node)):
        return None
    return node


Spec = Callable[["_Ctx"], str | None]
Predicate = Callable[["_Ctx"], bool]


class _Ctx:
    """Per-resource state the column specs read (one instance reused for every resource)."""

    __slots__ = ("coding", "comp", "comp_coding", "res", "scope", "study_id")

    def __init__(self) -> None:
        self.res: Json = {}
        self.comp: Json = {}
        self.coding: Json = {}
        self.comp_coding: Json = {}
        self.study_id: str | None = None
        self.scope: _Scope = _EMPTY_SCOPE

    def deref(self, reference: Json) -> Any:
        """Target of a Reference: contained (``#id``) first, then the input's scope."""
        ref = reference.get("reference")
        if type(ref) is not str or not ref:
            return None
        if ref[0] == "#":
            for contained in self.res.get("contained") or ():
                if type(contained) is dict and contained.get("id") == ref[1:]:
                    return contained
            return None
        return self.scope.lookup(ref)


def _split_path(text: str) -> list[str]:
    """Split a dotted path on dots outside brackets (filters hold URIs with dots)."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "." and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_filter(body: str, systems: Mapping[str, str], where: str) -> Step:
    """One ``[...]`` filter: index, ``key=value`` or ``system|code`` (system may be an alias)."""
    if body.lstrip("-").isdigit():
        return (_INDEX, int(body))
    if "=" in body:
        key, value = body.split("=", 1)
        return (_EQUALS, key.strip(), value.strip())
    if "|" in body:
        system, code = body.split("|", 1)
        return (_CODING, systems.get(system, system), code)
    raise MappingError(
        f"Bad filter [{body}] in path {where!r}.", fix="use [0], [key=value] or [system|code]."
    )


def _compile_path(text: str, systems: Mapping[str, str]) -> Steps:
    """Compile ``a.b[0].c->d.e`` into steps."""
    steps: list[Step] = []
    for k, segment in enumerate(text.split("->")):
        if k:
            steps.append((_DEREF,))
        for part in _split_path(segment.strip()):
            match = _STEP.match(part.strip())
            if match is None:
                raise MappingError(
                    f"Cannot read path step {part!r} of {text!r}.",
                    fix="write FHIR element names joined by '.', filters in [], '->' to follow a "
                    "Reference.",
                )
            steps.append((_NAME, match.group(1)))
            for body in re.findall(r"\[([^\]]*)\]", match.group(2)):
                steps.append(_parse_filter(body, systems, text))
    return tuple(steps)


def _raw_getter(steps: Steps) -> Callable[[_Ctx], Any]:
    """Getter of the raw JSON value at a resource path (fast path for plain dotted names)."""
    if len(steps) == 1 and steps[0][0] == _NAME:
        key = steps[0][1]

        def one(ctx: _Ctx) -> Any:
            value = ctx.res.get(key)
            return _first(value, steps, 1, ctx) if type(value) is list else value

        return one
    if len(steps) == 2 and steps[0][0] == _NAME and steps[1][0] == _NAME:
        outer, inner = steps[0][1], steps[1][1]

        def two(ctx: _Ctx) -> Any:
            node = ctx.res.get(outer)
            if type(node) is dict:
                value = node.get(inner)
                if type(value) is not list:
                    return value
            elif node is None:
                return None
            return _first(ctx.res, steps, 0, ctx)

        return two
    return lambda ctx: _first(ctx.res, steps, 0, ctx)


def _path_spec(steps: Steps, on_component: bool) -> Spec:
    """Spec reading a path from the resource (or from the current component) as text."""
    if on_component:
        return lambda ctx: _text(_first(ctx.comp, steps, 0, ctx))
    get = _raw_getter(steps)

    def spec(ctx: _Ctx) -> str | None:
        value = get(ctx)
        return value if type(value) is str else _text(value)

    return spec


def _coalesce_spec(specs: Sequence[Spec]) -> Spec:
    """Spec yielding the first non-null of ``specs``."""

    def coalesce(ctx: _Ctx) -> str | None:
        for spec in specs:
            value = spec(ctx)
            if value is not None:
                return value
        return None

    return coalesce


def _regex_spec(paths: Sequence[tuple[Steps, bool]], pattern: re.Pattern[str]) -> Spec:
    """Spec yielding group 1 (or the match) of the first value along ``paths`` that matches."""

    def accept(value: Any) -> bool:
        text = _text(value)
        return text is not None and pattern.search(text) is not None

    def regex(ctx: _Ctx) -> str | None:
        for steps, on_component in paths:
            found = _first(ctx.comp if on_component else ctx.res, steps, 0, ctx, accept)
            if found is not None:
                match = pattern.search(_text(found) or "")
                if match is not None:
                    return match.group(1) if pattern.groups else match.group(0)
        return None

    return regex


def _concat_spec(specs: Sequence[Spec]) -> Spec:
    """Spec joining the non-null parts; null when every part is null."""

    def concat(ctx: _Ctx) -> str | None:
        parts = [v for v in (s(ctx) for s in specs) if v is not None]
        return "".join(parts) if parts else None

    return concat


_TOKENS: Final[dict[str, Spec]] = {
    "$code.system": lambda ctx: _text(ctx.coding.get("system")),
    "$code.code": lambda ctx: _text(ctx.coding.get("code")),
    "$code.display": lambda ctx: _text(ctx.coding.get("display")),
    "$component.system": lambda ctx: _text(ctx.comp_coding.get("system")),
    "$component.code": lambda ctx: _text(ctx.comp_coding.get("code")),
    "$study_id": lambda ctx: ctx.study_id,
}


def _path_list(raw: Any, systems: Mapping[str, str], where: str) -> list[tuple[Steps, bool]]:
    """Plain paths (string or list of strings) as (steps, is component-relative)."""
    items = raw if isinstance(raw, list) else [raw]
    out: list[tuple[Steps, bool]] = []
    for item in items:
        if not isinstance(item, str) or item.startswith("$"):
            raise MappingError(f"{where}: regex paths must be plain paths, got {item!r}.")
        on_component = item.startswith("@")
        out.append((_compile_path(item.lstrip("@"), systems), on_component))
    return out


def _compile_spec(raw: Any, systems: Mapping[str, str], where: str) -> Spec:
    """Compile a column spec of the mapping grammar (see mappings/fhir/default.yaml)."""
    if isinstance(raw, str):
        if raw.startswith("$"):
            try:
                return _TOKENS[raw]
            except KeyError:
                raise MappingError(
                    f"{where}: unknown token {raw!r}.", fix=f"use one of {sorted(_TOKENS)}."
                ) from None
        if raw.startswith("@"):
            return _path_spec(_compile_path(raw[1:], systems), on_component=True)
        return _path_spec(_compile_path(raw, systems), on_component=False)
    if isinstance(raw, list):
        return _coalesce_spec([_compile_spec(item, systems, where) for item in raw])
    if isinstance(raw, dict):
        if "const" in raw:
            constant = str(raw["const"])
            return lambda ctx: constant
        if "concat" in raw:
            return _concat_spec([_compile_spec(item, systems, where) for item in raw["concat"]])
        if "regex" in raw and "path" in raw:
            pattern = re.compile(str(raw["regex"]))
            return _regex_spec(_path_list(raw["path"], systems, where), pattern)
    raise MappingError(
        f"{where}: cannot read column spec {raw!r}.",
        fix="write a path, a list of specs, {const}, {concat: [...]} or {path, regex}.",
    )


def _compile_predicate(raw: Any, systems: Mapping[str, str], where: str) -> Predicate:
    """Compile one ``when`` condition."""
    if not isinstance(raw, dict) or "path" not in raw:
        raise MappingError(f"{where}: a `when` condition needs a `path`, got {raw!r}.")
    spec = _compile_spec(raw["path"], systems, where)
    if "present" in raw:
        wanted = bool(raw["present"])
        return lambda ctx: (spec(ctx) is not None) is wanted
    if "regex" in raw:
        pattern = re.compile(str(raw["regex"]))

        def matches(ctx: _Ctx) -> bool:
            value = spec(ctx)
            return value is not None and pattern.search(value) is not None

        return matches
    if "not_regex" in raw:
        anti = re.compile(str(raw["not_regex"]))

        def differs(ctx: _Ctx) -> bool:
            value = spec(ctx)
            return value is None or anti.search(value) is None

        return differs
    raise MappingError(f"{where}: a `when` condition needs present, regex or not_regex.")


CodeKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _CodeTable:
    """Codes of one dispatch: exact (system, code) pairs and whole systems ("*")."""

    exact: Mapping[CodeKey, Any]
    systems: Mapping[str, Any]

    def find(self, coding: Any) -> Any:
        """The entry for a Coding, exact codes first; None when unmapped."""
        if type(coding) is not dict:
            return None
        system = coding.get("system")
        hit = self.exact.get((system, coding.get("code")))  # type: ignore[arg-type]
        return hit if hit is not None else self.systems.get(system)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Output:
    """One canonical row template of a rule."""

    entity: str
    specs: tuple[Spec | None, ...]  # aligned with ENTITY_COLUMNS[entity]
    when: tuple[Predicate, ...]
    components: _CodeTable | None


@dataclass(frozen=True, slots=True)
class _Rule:
    """A mapping rule: which resources (type + codes) give which rows."""

    name: str
    resource: str
    label: str  # element holding the rule's code, named in Rejected.field
    outputs: tuple[_Output, ...]
    ignore_reason: str | None  # when no output applies: ignore with this reason, else reject
    reject_message: str
    check_duplicates: bool  # several outputs of one entity: their `when` must be exclusive


@dataclass(frozen=True, slots=True)
class _Dispatch:
    """Rules of one resource type sharing a code path."""

    label: str  # element named in Rejected.field
    where: str  # the code paths as written, for messages
    paths: tuple[Callable[[_Ctx], Any], ...]  # getters of the CodeableConcept, in order
    table: _CodeTable


@dataclass(frozen=True, slots=True)
class _TypePlan:
    """Everything the extractor knows about one mapped resource type."""

    always: _Rule | None
    dispatches: tuple[_Dispatch, ...]
    status: Callable[[_Ctx], Any]
    excluded: Mapping[str, str]
    subject: str


@dataclass(frozen=True)
class FhirMapping:
    """A compiled FHIR mapping (``mappings/fhir/default.yaml`` and its includes).

    Attributes:
        path: the main YAML file.
        systems: code-system aliases.
        study_id_system: default Patient.identifier system of the study id.
        mrn_type: (system, code) of the identifier type never used as a study id.
        bundle_types: Bundle.type values that are read.
        reference_targets: types indexed in memory when reading NDJSON.
        ignored: resource type -> why it is read but not extracted.
        rule_names: every rule, in dispatch order.
    """

    path: Path
    systems: Mapping[str, str]
    study_id_system: str
    mrn_type: tuple[str, str]
    bundle_types: frozenset[str]
    reference_targets: frozenset[str]
    ignored: Mapping[str, str]
    rule_names: tuple[str, ...]
    plans: Mapping[str, _TypePlan] = field(repr=False)

    @classmethod
    def load(cls, path: Path | None = None) -> FhirMapping:
        """Read and compile a mapping file (default: ``<mappings>/fhir/default.yaml``).

        Raises:
            MappingError: The file is missing, unreadable or inconsistent.
        """
        return _load_mapping((path or Settings().mappings_dir / "fhir" / "default.yaml").resolve())

    def mapped_codes(self) -> set[tuple[str, str, str]]:
        """(resource type, system, code) of every exactly mapped code, for coverage tests."""
        out: set[tuple[str, str, str]] = set()
        for rtype, plan in self.plans.items():
            for dispatch in plan.dispatches:
                out.update((rtype, s, c) for s, c in dispatch.table.exact)
        return out


def load_fhir_mapping(path: Path | None = None) -> FhirMapping:
    """Load a FHIR mapping; see FhirMapping.load."""
    return FhirMapping.load(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    """Parse one mapping file into a dict, with a MappingError naming the file."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(
            f"Cannot read FHIR mapping {path}: {exc.strerror}.", fix="check the path."
        ) from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"FHIR mapping {path} is not valid YAML: {exc}.") from exc
    if not isinstance(doc, dict):
        raise MappingError(f"FHIR mapping {path} must be a YAML mapping at the top level.")
    return doc


@cache
def _load_mapping(path: Path) -> FhirMapping:
    """Compile a mapping file and its includes (cached: mappings are immutable)."""
    doc = _read_yaml(path)
    systems: dict[str, str] = dict(doc.get("systems") or {})
    rules_raw: list[Any] = list(doc.get("rules") or [])
    for name in doc.get("includes") or []:
        extra = _read_yaml(path.parent / name)
        for alias, uri in (extra.get("systems") or {}).items():
            if systems.setdefault(alias, uri) != uri:
                raise MappingError(
                    f"System alias {alias!r} means {systems[alias]} in {path.name} but {uri} "
                    f"in {name}.",
                    fix="use one alias per code system.",
                )
        rules_raw += list(extra.get("rules") or [])
    patient = doc.get("patient") or {}
    mrn = patient.get("mrn_type") or {}
    ignored = {str(k): str(v) for k, v in (doc.get("ignored") or {}).items()}
    rules = [_compile_rule(raw, systems, k) for k, raw in enumerate(rules_raw)]
    plans = _build_plans(rules, rules_raw, doc, systems, ignored)
    return FhirMapping(
        path=path,
        systems=systems,
        study_id_system=str(patient.get("study_id_system") or ""),
        mrn_type=(
            systems.get(str(mrn.get("system")), str(mrn.get("system"))),
            str(mrn.get("code")),
        ),
        bundle_types=frozenset(doc.get("bundle_types") or ()),
        reference_targets=frozenset(doc.get("reference_targets") or ()),
        ignored=ignored,
        rule_names=tuple(r.name for r in rules),
        plans=plans,
    )


def _compile_output(raw: Any, systems: Mapping[str, str], where: str) -> _Output:
    """Compile one output of a rule."""
    entity = str(raw.get("entity")) if isinstance(raw, dict) else ""
    if entity not in ENTITY_COLUMNS:
        raise MappingError(
            f"{where}: unknown entity {entity!r}.", fix=f"use one of {list(ENTITY_COLUMNS)}."
        )
    columns = raw.get("columns") or {}
    unknown = set(columns) - set(ENTITY_COLUMNS[entity])
    if unknown:
        raise MappingError(
            f"{where}: columns {sorted(unknown)} are not part of {entity!r}.",
            fix=f"use {list(ENTITY_COLUMNS[entity])}.",
        )
    specs = tuple(
        _compile_spec(columns[c], systems, f"{where}.{c}") if c in columns else None
        for c in ENTITY_COLUMNS[entity]
    )
    when = tuple(_compile_predicate(p, systems, where) for p in raw.get("when") or ())
    components = raw.get("components")
    table = _code_table(components, True, systems, where) if components else None
    return _Output(entity, specs, when, table)


def _code_table(codes: Any, value: Any, systems: Mapping[str, str], where: str) -> _CodeTable:
    """{system alias: [codes] | "*"} -> a _CodeTable whose hits are ``value``."""
    exact: dict[CodeKey, Any] = {}
    whole: dict[str, Any] = {}
    if not isinstance(codes, dict):
        raise MappingError(f"{where}: codes must be a mapping of system -> list of codes.")
    for alias, listed in codes.items():
        system = systems.get(alias, alias)
        if listed == "*":
            whole[system] = value
        else:
            for code in listed:
                exact[(system, str(code))] = value
    return _CodeTable(exact, whole)


def _root_element(path: str) -> str:
    """First element name of a path ("medicationReference->code" -> "medicationReference")."""
    return re.split(r"->|\.|\[", path.lstrip("@"), maxsplit=1)[0]


def _compile_rule(raw: Any, systems: Mapping[str, str], index: int) -> _Rule:
    """Compile one rule (its code table is merged per type by _build_plans)."""
    if not isinstance(raw, dict) or not raw.get("resource") or not raw.get("outputs"):
        raise MappingError(f"Rule #{index + 1} needs `resource` and `outputs`, got {raw!r}.")
    name = str(raw.get("name") or f"rule-{index + 1}")
    outputs = tuple(
        _compile_output(o, systems, f"rule {name} output {k + 1}")
        for k, o in enumerate(raw["outputs"])
    )
    otherwise = raw.get("otherwise") or {}
    entities = [o.entity for o in outputs if o.components is None]
    code = raw.get("code") or "code"
    return _Rule(
        name=name,
        resource=str(raw["resource"]),
        label=_root_element(code[0] if isinstance(code, list) else str(code))
        if "codes" in raw
        else "",
        outputs=outputs,
        ignore_reason=str(otherwise["ignore"]) if "ignore" in otherwise else None,
        reject_message=str(otherwise.get("reject") or "none of its outputs' conditions hold"),
        check_duplicates=len(entities) != len(set(entities)),
    )


def _build_plans(
    rules: Sequence[_Rule],
    rules_raw: Sequence[Any],
    doc: Mapping[str, Any],
    systems: Mapping[str, str],
    ignored: Mapping[str, str],
) -> dict[str, _TypePlan]:
    """Group rules by resource type and code path into dispatch tables."""
    status_cfg = doc.get("status") or {}
    subject_cfg = doc.get("subject") or {}
    by_type: dict[str, list[tuple[_Rule, Any]]] = {}
    for rule, raw in zip(rules, rules_raw, strict=True):
        if rule.resource in ignored:
            raise MappingError(f"Rule {rule.name}: {rule.resource} is listed under `ignored`.")
        by_type.setdefault(rule.resource, []).append((rule, raw))
    plans: dict[str, _TypePlan] = {}
    for rtype, items in by_type.items():
        always = [rule for rule, raw in items if "codes" not in raw]
        if len(always) > 1 or (always and len(items) > 1):
            raise MappingError(
                f"{rtype}: a rule without `codes` must be the only rule of its type.",
                fix="give every rule of the type a `codes` table.",
            )
        status = status_cfg.get(rtype) or status_cfg.get("default") or {}
        plans[rtype] = _TypePlan(
            always=always[0] if always else None,
            dispatches=_dispatches(rtype, items, systems),
            status=_raw_getter(_compile_path(str(status.get("path") or "status"), systems)),
            excluded={str(k): str(v) for k, v in (status.get("excluded") or {}).items()},
            subject=str((subject_cfg.get("by_type") or {}).get(rtype) or "subject"),
        )
    return plans


def _dispatches(
    rtype: str, items: Sequence[tuple[_Rule, Any]], systems: Mapping[str, str]
) -> tuple[_Dispatch, ...]:
    """Merge the code tables of rules sharing a code path; duplicate codes are an error."""
    groups: dict[tuple[str, ...], tuple[dict[CodeKey, _Rule], dict[str, _Rule]]] = {}
    for rule, raw in items:
        if "codes" not in raw:
            continue
        code = raw.get("code") or "code"
        key = tuple(code) if isinstance(code, list) else (str(code),)
        exact, whole = groups.setdefault(key, ({}, {}))
        table = _code_table(raw["codes"], rule, systems, f"rule {rule.name}")
        for target, source in ((exact, table.exact), (whole, table.systems)):
            for k, hit in source.items():
                previous = target.setdefault(k, hit)  # type: ignore[arg-type]
                if previous is not hit:
                    raise MappingError(
                        f"{rtype} code {k} is mapped by both {previous.name} and {rule.name}.",
                        fix="map each code once; route by `when` inside one rule.",
                    )
    return tuple(
        _Dispatch(
            label=_root_element(key[0]),
            where=" or ".join(key),
            paths=tuple(_raw_getter(_compile_path(p, systems)) for p in key),
            table=_CodeTable(exact, whole),
        )
        for key, (exact, whole) in groups.items()
    )


class _Scope:
    """Where references resolve: one Bundle, or the NDJSON files of one input."""

    def __init__(self) -> None:
        # Subject reference -> result: a few patients, thousands of resources each.
        self._cache: dict[str, tuple[str | None, str]] = {}

    def lookup(self, ref: str) -> Json | None:
        """The resource a literal/urn reference points at, if it is in this scope."""
        return None

    def patient_key(self, subject: Any) -> tuple[str | None, str]:
        """(patient_key, "") for a resolvable Patient reference, else (None, why not)."""
        if type(subject) is not dict:
            return None, "the resource has no subject"
        ref = subject.get("reference")
        if type(ref) is not str or not ref:
            if subject.get("identifier"):
                return None, "subject is a logical (identifier) reference; it is not resolved"
            return None, "subject has no reference"
        if ref.startswith("#"):
            return None, "subject is a contained Patient, which has no identity outside it"
        hit = self._cache.get(ref)
        if hit is None:
            hit = self._cache[ref] = self._resolve_patient(ref)
        return hit

    def _resolve_patient(self, ref: str) -> tuple[str | None, str]:
        """Scope-specific part of patient_key."""
        return None, f"{ref} cannot be resolved"


class _BundleScope(_Scope):
    """References inside one Bundle: fullUrl (urn:uuid or absolute) or Type/id of an entry."""

    def __init__(self, entries: Sequence[Any]) -> None:
        super().__init__()
        self._entries = entries
        self._by_url: dict[str, Json] = {}
        self._by_type_id: dict[tuple[str, str], Json] = {}
        self._indexed = False
        # Subjects need only the Patients: one cheap pass instead of indexing ~10^3 entries
        # (the full index is built on the first other lookup, e.g. a medicationReference).
        self._patients: dict[str, str] = {}  # fullUrl or "Patient/<id>" -> patient_key
        for entry in entries:
            res = entry.get("resource") if type(entry) is dict else None
            if type(res) is not dict or res.get("resourceType") != "Patient":
                continue
            url, rid = _nonempty_str(entry.get("fullUrl")), _nonempty_str(res.get("id"))
            key = rid or url  # the same key _resource gives the Patient: id, else fullUrl
            if url and key:
                self._patients[url] = key
            if rid:
                self._patients[f"Patient/{rid}"] = rid
        self.has_patients = bool(self._patients)

    def _index(self) -> None:
        """Index every entry by fullUrl and by (type, id)."""
        self._indexed = True
        for entry in self._entries:
            res = entry.get("resource") if type(entry) is dict else None
            if type(res) is not dict:
                continue
            url = entry.get("fullUrl")
            if type(url) is str:
                self._by_url[url] = res
            rtype, rid = res.get("resourceType"), res.get("id")
            if type(rtype) is str and type(rid) is str:
                self._by_type_id[(rtype, rid)] = res

    def lookup(self, ref: str) -> Json | None:
        """Entry by fullUrl, else by Type/id."""
        if not self._indexed:
            self._index()
        hit = self._by_url.get(ref)
        if hit is None:
            literal = _LITERAL_REF.search(ref)
            if literal is not None:
                hit = self._by_type_id.get((literal.group(1), literal.group(2)))
        return hit

    def _resolve_patient(self, ref: str) -> tuple[str | None, str]:
        key = self._patients.get(ref)
        literal = _LITERAL_REF.search(ref)
        if key is None and literal is not None and literal.group(1) == "Patient":
            key = self._patients.get(f"Patient/{literal.group(2)}")
        if key is not None:
            return key, ""
        target = self.lookup(ref)
        if target is not None:  # an entry, but not a Patient (those matched above)
            return None, f"subject {ref} is a {target.get('resourceType')}, not a Patient"
        if ref.startswith("urn:") or literal is None:
            return None, f"subject {ref} matches no entry of the bundle"
        if literal.group(1) != "Patient":
            return None, f"subject {ref} is not a Patient"
        if self.has_patients:
            return None, f"subject {ref} is not a Patient of this bundle"
        # A bundle without any Patient (e.g. a searchset of Observations) has nothing to check
        # the id against: the literal reference is trusted.
        return literal.group(2), ""


class _NdjsonScope(_Scope):
    """References across the NDJSON files of one input (Patient ids + reference targets)."""

    def __init__(self, targets: frozenset[str]) -> None:
        super().__init__()
        self.patients: set[str] = set()
        self.targets: dict[tuple[str, str], Json] = {}
        self.target_types = targets

    def add(self, res: Json) -> None:
        """Remember a Patient id or a reference-target resource."""
        rtype, rid = res.get("resourceType"), res.get("id")
        if type(rid) is not str:
            return
        if rtype == "Patient":
            self.patients.add(rid)
            self._cache.clear()  # "trusted" answers given before this Patient may change
        elif rtype in self.target_types:
            self.targets[(rtype, rid)] = res

    def lookup(self, ref: str) -> Json | None:
        """A reference-target resource read earlier from this input."""
        literal = _LITERAL_REF.search(ref)
        if literal is None:
            return None
        return self.targets.get((literal.group(1), literal.group(2)))

    def _resolve_patient(self, ref: str) -> tuple[str | None, str]:
        literal = _LITERAL_REF.search(ref)
        if ref.startswith("urn:") or literal is None:
            return None, f"subject {ref} is not a Patient/<id> reference"
        if literal.group(1) != "Patient":
            return None, f"subject {ref} is not a Patient"
        pid = literal.group(2)
        if self.patients and pid not in self.patients:
            return None, f"subject {ref} is not a Patient of this input"
        # With no Patient file in the input (a lone Observation.ndjson) the id is trusted.
        return pid, ""


_EMPTY_SCOPE: Final = _Scope()


@dataclass
class FhirExtractReport:
    """What one extraction read and what became of it (filled while the stream is consumed).

    Every resource ends in exactly one outcome per file: ``emitted`` (>= 1 row),
    ``rejected`` (a Rejected names it) or ``ignored`` (a known type or answer that is not
    extracted, counted with its reason). Unparseable lines count as rejected.

    Attributes:
        mode: "fast" or "strict".
        files: input files in reading order (relative to the input root).
        outcomes: file -> outcome -> resources.
        resources_by_type: resources read per resourceType.
        rows_by_entity: canonical rows emitted per entity.
        rejected_by_rule: Rejected yielded per rule id.
        unmapped_codes: (resource type, system, code) -> resources (or components) whose
            code no rule maps; ("", "") when the concept has no coding.
        unknown_resource_types: resourceType -> resources of a type the mapping does not know.
        ignored: (resource type, reason) -> resources read but deliberately not extracted
            (MedicationRequest orders, Encounters, reference targets, negative answers).
        excluded_status: (resource type, status) -> resources excluded by status.
        entries_without_resource: Bundle entries with no resource (e.g. DELETE requests).
        seconds: wall time spent inside the stream.
    """

    mode: str
    files: list[str] = field(default_factory=list)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    resources_by_type: Counter[str] = field(default_factory=Counter)
    rows_by_entity: Counter[str] = field(default_factory=Counter)
    rejected_by_rule: Counter[str] = field(default_factory=Counter)
    unmapped_codes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    unknown_resource_types: Counter[str] = field(default_factory=Counter)
    ignored: Counter[tuple[str, str]] = field(default_factory=Counter)
    excluded_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    entries_without_resource: int = 0
    seconds: float = 0.0

    @property
    def resources(self) -> int:
        """Resources (and unparseable lines/files) accounted for."""
        return sum(sum(c.values()) for c in self.outcomes.values())

    @property
    def resources_per_second(self) -> float:
        """Throughput of the consumed stream."""
        return self.resources / self.seconds if self.seconds > 0 else 0.0

    @property
    def medication_orders(self) -> int:
        """MedicationRequest resources counted as orders (never doses)."""
        return sum(n for (rtype, _), n in self.ignored.items() if rtype == "MedicationRequest")

    def totals(self) -> Counter[str]:
        """Outcome counts over all files."""
        total: Counter[str] = Counter()
        for counts in self.outcomes.values():
            total.update(counts)
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the run report."""
        return {
            "mode": self.mode,
            "files": len(self.files),
            "outcomes": dict(self.totals()),
            "resources_by_type": dict(self.resources_by_type),
            "rows_by_entity": dict(self.rows_by_entity),
            "rejected_by_rule": dict(self.rejected_by_rule),
            "unmapped_codes": [
                {"resource_type": t, "system": s, "code": c, "count": n}
                for (t, s, c), n in self.unmapped_codes.most_common()
            ],
            "unknown_resource_types": dict(self.unknown_resource_types),
            "ignored": [
                {"resource_type": t, "reason": r, "count": n}
                for (t, r), n in self.ignored.most_common()
            ],
            "excluded_status": [
                {"resource_type": t, "status": s, "count": n}
                for (t, s), n in self.excluded_status.most_common()
            ],
            "entries_without_resource": self.entries_without_resource,
            "seconds": round(self.seconds, 3),
            "resources_per_second": round(self.resources_per_second),
        }


_Writer = tuple[tuple[tuple[Callable[[Any], None], Spec], ...], tuple[Callable[[Any], None], ...]]


class _EntityBuffer:
    """Column lists of one entity for one input file (columnar: no per-row tuples for the GC)."""

    __slots__ = ("cols", "files", "keys", "last", "resources", "rows", "writers")

    def __init__(self, entity: str) -> None:
        self.files: list[str] = []
        self.rows: list[str] = []
        self.keys: list[str] = []
        self.cols: list[list[str | None]] = [[] for _ in ENTITY_COLUMNS[entity]]
        self.resources = 0  # distinct resources with a row in this buffer
        self.last = -1  # sequence number of the last resource counted
        self.writers: dict[int, _Writer] = {}

    def writer(self, out: _Output) -> _Writer:
        """Bound appends of ``out``'s columns (built once per output: the hot loop's setup)."""
        writer = self.writers.get(id(out))
        if writer is None:
            fills = tuple(
                (col.append, spec)
                for col, spec in zip(self.cols, out.specs, strict=True)
                if spec is not None
            )
            blanks = tuple(
                col.append for col, spec in zip(self.cols, out.specs, strict=True) if spec is None
            )
            writer = self.writers[id(out)] = (fills, blanks)
        return writer

    def frame(self, entity: str) -> pl.DataFrame:
        """The buffered rows as a contract frame."""
        data: dict[str, list[str | None] | list[str]] = {
            "source": [SOURCE] * len(self.rows),
            "file": self.files,
            "row": self.rows,
            "patient_key": self.keys,
        }
        data.update(zip(ENTITY_COLUMNS[entity], self.cols, strict=True))
        return conform(entity, pl.DataFrame(data, schema=dict.fromkeys(data, pl.String)))


class _Rows:
    """Buffered rows per entity, flushed as RawBatch at the batch size or at a file boundary.

    NDJSON files flush at their end; a directory of Bundles shares one buffer (its rows name
    their file) so that thousands of one-patient Bundles do not become thousands of frames.
    """

    def __init__(self, batch_rows: int) -> None:
        self.file = ""  # the file rows are currently read from
        self.batch_rows = batch_rows
        self.entities: dict[str, _EntityBuffer] = {}
        self.full = False

    def add(self, out: _Output, row: str, key: str, ctx: _Ctx, seq: int) -> None:
        """Append one row built from ``out``'s specs."""
        buf = self.entities.get(out.entity)
        if buf is None:
            buf = self.entities[out.entity] = _EntityBuffer(out.entity)
        buf.files.append(self.file)
        buf.rows.append(row)
        buf.keys.append(key)
        fills, blanks = buf.writer(out)
        for append, spec in fills:
            append(spec(ctx))
        for blank in blanks:
            blank(None)
        if buf.last != seq:
            buf.last = seq
            buf.resources += 1
        if len(buf.rows) >= self.batch_rows:
            self.full = True

    def flush(self, report: FhirExtractReport, *, only_full: bool) -> Iterator[RawBatch]:
        """Yield buffered entities (all, or only those at the batch size) and reset them."""
        self.full = False
        for entity in list(self.entities):
            buf = self.entities[entity]
            if not buf.rows or (only_full and len(buf.rows) < self.batch_rows):
                continue
            del self.entities[entity]
            report.rows_by_entity[entity] += len(buf.rows)
            yield RawBatch(entity, buf.frame(entity), buf.resources)


@cache
def _r4b_model(rtype: str) -> Any:
    """The fhir.resources R4B model class of a type, or None if R4B has no such type.

    R4B on purpose: the package's default namespace (``fhir.resources.<type>``) is R5, which
    renamed elements R4 exports use (MedicationAdministration.medicationCodeableConcept ->
    medication, DeviceUseStatement -> DeviceUsage) and would reject valid R4 data.
    """
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(rtype)
    except (KeyError, ValueError):
        return None


def _element_path(loc: Sequence[Any]) -> str:
    """Pydantic error location -> FHIR element path (``component[0].valueQuantity.value``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _validate_r4b(res: Json) -> tuple[str, str, str] | None:
    """Validate against the R4B model; (element path, bad value, message) on failure."""
    from pydantic import ValidationError

    rtype = str(res.get("resourceType"))
    model = _r4b_model(rtype)
    if model is None:
        return "resourceType", rtype, f"{rtype} is not an R4B resource type"
    try:
        model.model_validate(res)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return _element_path(first["loc"]), _snippet(first.get("input")), first["msg"] + more
    return None


@dataclass(frozen=True, slots=True)
class _Input:
    """One file to read."""

    path: Path
    rel: str
    kind: Literal["bundle", "ndjson"]


class _Extractor:
    """Turns resources into rows; owns the report and the per-resource context."""

    def __init__(
        self, mapping: FhirMapping, mode: Mode, study_id_system: str, batch_rows: int
    ) -> None:
        self.mapping = mapping
        self.plans = mapping.plans
        self.strict = mode == "strict"
        self.study_id_system = study_id_system
        self.batch_rows = batch_rows
        self.report = FhirExtractReport(mode=mode)
        self.ctx = _Ctx()
        self.seq = 0

    # -- driving --

    def run(self, inputs: Sequence[_Input]) -> Iterator[RawBatch | Rejected]:
        """Read every input file in order; NDJSON files share one reference scope."""
        started = time.perf_counter()
        ndjson_scope = _NdjsonScope(self.mapping.reference_targets)
        bundle_rows = _Rows(self.batch_rows)
        try:
            for item in inputs:
                self.report.files.append(item.rel)
                self.report.outcomes.setdefault(item.rel, Counter())
                if item.kind == "bundle":
                    yield from self._bundle_file(item, bundle_rows)
                    if bundle_rows.full:
                        yield from bundle_rows.flush(self.report, only_full=True)
                else:
                    yield from bundle_rows.flush(self.report, only_full=False)
                    yield from self._ndjson_file(item, ndjson_scope)
            yield from bundle_rows.flush(self.report, only_full=False)
        finally:
            self.report.seconds += time.perf_counter() - started
            self._log_summary()

    def _bundle_file(self, item: _Input, rows: _Rows) -> Iterator[Rejected]:
        """One JSON file: a Bundle (any supported type) or a single resource."""
        rows.file = item.rel
        with _gc_paused():
            try:
                doc = orjson.loads(_read_bytes(item.path))
            except (orjson.JSONDecodeError, OSError, EOFError) as exc:
                rejected = [
                    self._reject_file(item.rel, "", RULE_UNPARSEABLE, f"not valid JSON: {exc}")
                ]
            else:
                rejected = list(self._document(doc, item.rel, rows))
                del doc  # freed while the collector still sleeps
        yield from rejected

    def _ndjson_file(self, item: _Input, scope: _NdjsonScope) -> Iterator[RawBatch | Rejected]:
        """One NDJSON file, streamed line by line (memory flat in file size)."""
        rows = _Rows(self.batch_rows)
        rows.file = item.rel
        targets = self.mapping.reference_targets
        line_no = 0
        try:
            with _open_binary(item.path) as handle:
                for line_no, line in enumerate(handle, 1):
                    if len(line) < 3 and not line.strip():
                        continue
                    try:
                        res = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        message = f"not valid JSON: {exc.msg} at character {exc.pos} of the line"
                        yield self._reject_file(
                            item.rel, f"line {line_no}", RULE_UNPARSEABLE, message, line
                        )
                        continue
                    rtype = res.get("resourceType") if type(res) is dict else None
                    if rtype == "Bundle":  # a Bundle per line: its own reference scope
                        yield from self._bundle(res, item.rel, f"line {line_no}", rows)
                        continue
                    if rtype == "Patient" or rtype in targets:
                        scope.add(res)
                    rejected = self._resource(res, item.rel, f"line {line_no}", scope, rows)
                    if rejected:
                        yield from rejected
                    if rows.full:
                        yield from rows.flush(self.report, only_full=True)
        except (OSError, EOFError) as exc:  # truncated or corrupt .gz
            yield self._reject_file(
                item.rel, f"line {line_no + 1}", RULE_UNPARSEABLE, f"cannot read further: {exc}"
            )
        yield from rows.flush(self.report, only_full=False)

    def _document(self, doc: Any, file: str, rows: _Rows) -> Iterator[Rejected]:
        """A parsed JSON file: a Bundle's entries or one resource (its own scope)."""
        if type(doc) is dict and doc.get("resourceType") == "Bundle":
            yield from self._bundle(doc, file, "", rows)
            return
        scope = _BundleScope([{"resource": doc}])
        rejected = self._resource(doc, file, "resource", scope, rows)
        if rejected:
            yield from rejected

    def _bundle(self, bundle: Json, file: str, hint: str, rows: _Rows) -> Iterator[Rejected]:
        """Every entry resource of a Bundle, references resolved inside the Bundle."""
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            entries = []
        btype = bundle.get("type")
        if btype not in self.mapping.bundle_types:
            count = sum(1 for e in entries if type(e) is dict and "resource" in e) or 1
            row = bundle.get("id") or hint or "bundle"
            message = f"Bundle.type {btype!r} is not read ({sorted(self.mapping.bundle_types)})"
            yield self._reject_file(file, str(row), RULE_UNSUPPORTED_BUNDLE, message, btype)
            self.report.outcomes[file][REJECTED] += count - 1
            return
        scope = _BundleScope(entries)
        prefix = f"{hint} " if hint else ""
        for i, entry in enumerate(entries):
            res = entry.get("resource") if type(entry) is dict else None
            if res is None:
                self.report.entries_without_resource += 1
                continue
            url = entry.get("fullUrl")
            entry_hint = url if type(url) is str and url else f"{prefix}entry {i}"
            rejected = self._resource(res, file, entry_hint, scope, rows)
            if rejected:
                yield from rejected

    # -- one resource --

    def _resource(
        self, res: Any, file: str, hint: str, scope: _Scope, rows: _Rows
    ) -> list[Rejected] | None:
        """Route one resource; append its rows; return its rejections (None if none)."""
        outcomes = self.report.outcomes[file]
        if type(res) is not dict:
            outcomes[REJECTED] += 1
            return [self._rejected(file, hint, "", res, RULE_UNPARSEABLE, "not a JSON object")]
        rtype = res.get("resourceType")
        rid = res.get("id")
        row = rid if type(rid) is str and rid else hint
        if type(rtype) is not str or not rtype:
            outcomes[REJECTED] += 1
            message = "resource has no resourceType"
            return [self._rejected(file, row, "resourceType", rtype, RULE_INVALID, message)]
        self.report.resources_by_type[rtype] += 1
        self.ctx.res, self.ctx.scope = res, scope
        if self.strict:
            problem = _validate_r4b(res)
            if problem is not None:
                element, value, message = problem
                outcomes[REJECTED] += 1
                text = f"{rtype}/{row} is not valid FHIR R4B at {element}: {message}"
                return [self._rejected(file, row, element, value, RULE_INVALID, text)]
        plan = self.plans.get(rtype)
        if plan is None:
            return self._unplanned(rtype, file, row, outcomes)
        failure = self._gate(plan, res, rtype, file, row)
        if failure is not None:
            outcomes[REJECTED] += 1
            return [failure]
        key = self._patient_key(plan, res, rtype, file, row, scope)
        if isinstance(key, Rejected):
            outcomes[REJECTED] += 1
            return [key]
        return self._rows(plan, res, rtype, file, row, key, rows)

    def _unplanned(
        self, rtype: str, file: str, row: str, outcomes: Counter[str]
    ) -> list[Rejected] | None:
        """An ignored (known, not extracted) or unknown resource type."""
        reason = self.mapping.ignored.get(rtype)
        if reason is not None:
            self.report.ignored[(rtype, reason)] += 1
            outcomes[IGNORED] += 1
            return None
        self.report.unknown_resource_types[rtype] += 1
        outcomes[REJECTED] += 1
        message = f"resource type {rtype} is neither mapped nor listed as ignored"
        return [self._rejected(file, row, "resourceType", rtype, RULE_UNKNOWN_TYPE, message)]

    def _gate(self, plan: _TypePlan, res: Json, rtype: str, file: str, row: str) -> Rejected | None:
        """Status exclusion (entered-in-error, not-done, cancelled ... per the mapping)."""
        if not plan.excluded:
            return None
        status = _text(plan.status(self.ctx))
        reason = plan.excluded.get(status) if status is not None else None
        if reason is None:
            return None
        self.report.excluded_status[(rtype, status or "")] += 1
        log.debug("FHIR %s/%s excluded: status %s (%s)", rtype, row, status, reason)
        message = f"{rtype} status {status!r}: {reason}"
        return self._rejected(file, row, "status", status, RULE_STATUS, message)

    def _patient_key(
        self, plan: _TypePlan, res: Json, rtype: str, file: str, row: str, scope: _Scope
    ) -> str | Rejected:
        """The Patient resource id the resource belongs to, or the missing-subject Rejected."""
        if rtype == "Patient":
            return row
        key, why = scope.patient_key(res.get(plan.subject))
        if key is not None:
            return key
        subject = res.get(plan.subject)
        value = subject.get("reference") if type(subject) is dict else subject
        return self._rejected(
            file, row, plan.subject, value, RULE_MISSING_SUBJECT, f"{rtype}: {why}"
        )

    def _rows(
        self,
        plan: _TypePlan,
        res: Json,
        rtype: str,
        file: str,
        row: str,
        key: str,
        rows: _Rows,
    ) -> list[Rejected] | None:
        """Dispatch to a rule and emit its outputs."""
        ctx = self.ctx
        ctx.study_id = self._study_id(res, row) if rtype == "Patient" else None
        if plan.always is not None:
            rule, ctx.coding = plan.always, {}
        else:
            found = self._dispatch(plan)
            if found is None:
                return self._unmapped(plan, rtype, file, row)
            rule, ctx.coding = found
        self.seq += 1
        emitted, rejected = self._emit(rule, rtype, file, row, key, rows)
        outcomes = self.report.outcomes[file]
        if emitted:
            outcomes[EMITTED] += 1
            return rejected
        if rejected:
            outcomes[REJECTED] += 1
            return rejected
        if rule.ignore_reason is not None:
            self.report.ignored[(rtype, rule.ignore_reason)] += 1
            outcomes[IGNORED] += 1
            return None
        outcomes[REJECTED] += 1
        coding = self.ctx.coding
        value = f"{_text(coding.get('system')) or ''}|{_text(coding.get('code')) or ''}"
        message = f"{rtype} {value} (rule {rule.name}): {rule.reject_message}"
        return [self._rejected(file, row, rule.label, value, RULE_NO_OUTPUT, message)]

    def _dispatch(self, plan: _TypePlan) -> tuple[_Rule, Json] | None:
        """First (rule, coding) whose code the mapping knows, trying code paths in order."""
        ctx = self.ctx
        for dispatch in plan.dispatches:
            for get in dispatch.paths:
                concept = get(ctx)
                if type(concept) is not dict:
                    continue
                for coding in concept.get("coding") or ():
                    rule = dispatch.table.find(coding)
                    if rule is not None:
                        return rule, coding
                break  # the first concept found is the one coded; alternatives are fallbacks
        return None

    def _unmapped(self, plan: _TypePlan, rtype: str, file: str, row: str) -> list[Rejected]:
        """Count every coding of the primary code concept and reject the resource."""
        ctx = self.ctx
        label = plan.dispatches[0].label if plan.dispatches else "code"
        concept: Any = None
        for get in plan.dispatches[0].paths if plan.dispatches else ():
            concept = get(ctx)
            if concept is not None:
                break
        value = self._count_codings(rtype, concept)
        self.report.outcomes[file][REJECTED] += 1
        if concept is None:
            where = plan.dispatches[0].where if plan.dispatches else "code"
            message = f"{rtype} has no code at {where} (or its reference does not resolve)"
        else:
            message = f"{rtype} code {value or '(none)'} is not in the FHIR mapping"
        return [self._rejected(file, row, label, value, RULE_UNMAPPED, message)]

    def _count_codings(self, rtype: str, concept: Any) -> str:
        """Add a concept's codings to unmapped_codes; return "system|code" of the first."""
        codings = (
            [c for c in (concept.get("coding") or ()) if type(c) is dict]
            if type(concept) is dict
            else []
        )
        for coding in codings:
            system, code = _text(coding.get("system")) or "", _text(coding.get("code")) or ""
            self.report.unmapped_codes[(rtype, system, code)] += 1
        if not codings:
            self.report.unmapped_codes[(rtype, "", "")] += 1
            text = concept.get("text") if type(concept) is dict else None
            return f"text:{text}" if text else ""
        first = codings[0]
        return f"{_text(first.get('system')) or ''}|{_text(first.get('code')) or ''}"

    def _emit(
        self, rule: _Rule, rtype: str, file: str, row: str, key: str, rows: _Rows
    ) -> tuple[int, list[Rejected] | None]:
        """Append the rows of every applicable output; return (rows, component rejections)."""
        ctx = self.ctx
        emitted = 0
        rejected: list[Rejected] | None = None
        seen: set[str] | None = set() if rule.check_duplicates else None
        for out in rule.outputs:
            if out.when and not all(check(ctx) for check in out.when):
                continue
            if out.components is None:
                if seen is not None:
                    self._check_exclusive(rule, out.entity, seen)
                rows.add(out, row, key, ctx, self.seq)
                emitted += 1
                continue
            count, bad = self._emit_components(out, rtype, file, row, key, rows)
            emitted += count
            if bad:
                rejected = bad if rejected is None else rejected + bad
        return emitted, rejected

    def _emit_components(
        self, out: _Output, rtype: str, file: str, row: str, key: str, rows: _Rows
    ) -> tuple[int, list[Rejected]]:
        """One row per component with a mapped code; row id ``<id>#component<i>``."""
        ctx = self.ctx
        table = cast(_CodeTable, out.components)
        components = ctx.res.get("component")
        emitted = 0
        rejected: list[Rejected] = []
        for i, comp in enumerate(components if type(components) is list else ()):
            concept = comp.get("code") if type(comp) is dict else None
            coding = None
            for candidate in (concept.get("coding") or ()) if type(concept) is dict else ():
                if table.find(candidate) is not None:
                    coding = candidate
                    break
            if coding is None:
                value = self._count_codings(rtype, concept)
                message = f"{rtype} component code {value or '(none)'} is not in the FHIR mapping"
                rejected.append(
                    self._rejected(file, row, f"component[{i}].code", value, RULE_UNMAPPED, message)
                )
                continue
            ctx.comp, ctx.comp_coding = comp, coding
            rows.add(out, f"{row}#component{i}", key, ctx, self.seq)
            emitted += 1
        return emitted, rejected

    @staticmethod
    def _check_exclusive(rule: _Rule, entity: str, seen: set[str]) -> None:
        """Two outputs of one entity firing for one resource would share a row id."""
        if entity in seen:
            raise MappingError(
                f"Rule {rule.name} emitted two {entity} rows for one resource.",
                fix="make the `when` conditions of its outputs mutually exclusive.",
            )
        seen.add(entity)

    def _study_id(self, res: Json, row: str) -> str:
        """Identifier value of the study-id system (never an MR-typed one), else Patient.id."""
        mrn_system, mrn_code = self.mapping.mrn_type
        for ident in res.get("identifier") or ():
            if type(ident) is not dict or ident.get("system") != self.study_id_system:
                continue
            if _has_coding(ident.get("type"), mrn_system, mrn_code):
                continue  # an MRN stays an MRN, whatever system it was filed under
            value = ident.get("value")
            if type(value) is str and value:
                return value
        return row

    # -- rejections and logging --

    def _rejected(
        self, file: str, row: str, element: str, value: Any, rule: str, message: str
    ) -> Rejected:
        """Build a Rejected and count it."""
        self.report.rejected_by_rule[rule] += 1
        return Rejected(SOURCE, file, row, element, _snippet(value), rule, message)

    def _reject_file(
        self, file: str, row: str, rule: str, message: str, value: Any = ""
    ) -> Rejected:
        """Reject something that is not a resource (a bad line or file); counts as rejected."""
        self.report.outcomes.setdefault(file, Counter())[REJECTED] += 1
        return self._rejected(file, row, "", value, rule, message)

    def _log_summary(self) -> None:
        """One INFO line per exclusion reason and per ignored type; the counts are in the report."""
        for (rtype, status), n in sorted(self.report.excluded_status.items()):
            log.info("FHIR: %d %s excluded with status %s", n, rtype, status)
        for (rtype, reason), n in sorted(self.report.ignored.items()):
            log.info("FHIR: %d %s not extracted: %s", n, rtype, reason)
        for (rtype, system, code), n in self.report.unmapped_codes.most_common(20):
            log.info("FHIR: %d %s with unmapped code %s|%s", n, rtype, system, code)


def _open_binary(path: Path) -> IO[bytes]:
    """Open plain or gzip-compressed input for binary line iteration."""
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb", buffering=1 << 20)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one Bundle (parse, extract, free).

    A one-patient Bundle is ~10^5 containers alive at once; collections triggered while
    orjson builds them, and the full collections their promotion triggers later, traverse
    the tree again and again (about 40 % of the bundle time). Parsed JSON and the rows hold
    no reference cycles, so nothing waits for the collector; no code outside this module
    runs while it is paused (rejections are yielded after it resumes).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_bytes(path: Path) -> bytes:
    """Whole file, decompressed if .gz."""
    with _open_binary(path) as handle:
        return handle.read()


def _kind(name: str) -> Literal["bundle", "ndjson"] | None:
    """Input kind from a file name."""
    lower = name.lower()
    if lower.endswith(_NDJSON_SUFFIXES):
        return "ndjson"
    if lower.endswith(_BUNDLE_SUFFIXES):
        return "bundle"
    return None


def _ndjson_priority(rel: str, targets: frozenset[str]) -> int:
    """Patient files first, then reference targets, then the rest (Bulk Data names by type)."""
    match = _LEADING_TYPE.match(Path(rel).name)
    rtype = match.group(0) if match else ""
    return 0 if rtype == "Patient" else 1 if rtype in targets else 2


def _discover(path: Path, targets: frozenset[str]) -> list[_Input]:
    """Input files under ``path`` in reading order: bundles, then NDJSON (Patient first).

    Raises:
        SourceError: The path does not exist or holds no FHIR file.
    """
    if path.is_file():
        kind = _kind(path.name)
        if kind is None:
            raise SourceError(
                f"{path} is not a FHIR file.",
                fix="pass a .json/.json.gz Bundle, an .ndjson/.ndjson.gz file or a directory.",
            )
        return [_Input(path, path.name, kind)]
    if not path.is_dir():
        raise SourceError(f"FHIR input {path} does not exist.", fix="check the path.")
    found = [
        _Input(p, p.relative_to(path).as_posix(), k)
        for p in sorted(path.rglob("*"))
        if p.is_file() and (k := _kind(p.name)) is not None
    ]
    if not found:
        raise SourceError(
            f"No FHIR files (*.json, *.ndjson, optionally .gz) under {path}.",
            fix="point at the bundles/ or ndjson/ directory of the export.",
        )
    bundles = [f for f in found if f.kind == "bundle"]
    ndjson = sorted(
        (f for f in found if f.kind == "ndjson"),
        key=lambda f: (_ndjson_priority(f.rel, targets), f.rel),
    )
    if bundles and ndjson:
        log.warning(
            "FHIR input %s holds both bundles and NDJSON; both are read. An export that writes "
            "the same resources both ways (cart-etl synth) yields every row twice: pass one.",
            path,
        )
    return bundles + ndjson


class FhirStream(Iterator[RawBatch | Rejected]):
    """The ExtractStream of extract_fhir, with the report it fills while being consumed."""

    def __init__(self, items: Iterator[RawBatch | Rejected], report: FhirExtractReport) -> None:
        self._items = items
        self.report = report

    def __iter__(self) -> FhirStream:
        return self

    def __next__(self) -> RawBatch | Rejected:
        return next(self._items)


def extract_fhir(
    path: Path,
    *,
    mode: Mode = "fast",
    mapping: FhirMapping | None = None,
    study_id_system: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> FhirStream:
    """Extract canonical raw frames from FHIR R4/R4B Bundles and/or Bulk NDJSON.

    ``path`` is a directory (``*.json`` Bundles and/or ``*.ndjson`` files, plain or .gz,
    searched recursively), one Bundle file or one NDJSON file. Bundles of type transaction,
    batch, collection, searchset (and document, message) are read; references resolve by
    ``urn:uuid:``/absolute fullUrl or ``Type/id`` inside a Bundle, by ``Type/id`` across the
    NDJSON files of the input, and ``#id`` against contained resources.

    Provenance: ``file`` is relative to ``path`` (the file name for a single file), ``row`` is
    the resource id (else the entry fullUrl, ``entry <i>`` or ``line <n>``), with
    ``#component<i>`` appended for rows taken from Observation.component, and
    ``patient_key`` is the Patient resource id. A RawBatch's ``input_rows`` counts the
    distinct resources with a row in it. NDJSON batches end with their file; the Bundles of
    a directory share batches (each row names its file) so one-patient Bundles do not each
    become a dozen tiny frames.

    Every resource ends as row(s), a Rejected or an ignored count (report). Rejected rules:
    ``fhir.unparseable`` (bad JSON line/file), ``fhir.invalid_resource`` (strict: R4B
    validation; also a resource without resourceType), ``fhir.missing_subject``,
    ``fhir.status_excluded`` (entered-in-error, not-done, cancelled, ... per the mapping;
    ``stopped`` is kept), ``fhir.unknown_resource_type``, ``fhir.unmapped_code``,
    ``fhir.no_matching_output`` and ``fhir.unsupported_bundle``. MedicationRequest is an
    order, never a dose: it is counted as ignored (``report.medication_orders``).

    Args:
        path: Input directory or file.
        mode: ``fast`` reads with orjson and walks only the mapped elements; ``strict``
            validates every resource with its ``fhir.resources.R4B`` model first and rejects
            invalid ones (``fhir.invalid_resource``). Both emit identical rows otherwise.
        mapping: Compiled mapping; default ``<mappings>/fhir/default.yaml``.
        study_id_system: Patient.identifier system of the study id; default the mapping's.
        batch_rows: Rows of one entity after which a RawBatch is yielded.

    Returns:
        An iterator of RawBatch | Rejected (an ExtractStream) whose ``report`` attribute
        holds the FhirExtractReport, complete once the stream is exhausted.

    Raises:
        SourceError: The path does not exist or holds no FHIR file.
        ConfigurationError: Unknown mode or batch size below 1.
        MappingError: The mapping is inconsistent.
    """
    if mode not in ("fast", "strict"):
        raise ConfigurationError(f"Unknown FHIR mode {mode!r}.", fix="use 'fast' or 'strict'.")
    if batch_rows < 1:
        raise ConfigurationError(f"batch_rows must be >= 1, got {batch_rows}.")
    compiled = mapping if mapping is not None else load_fhir_mapping()
    system = study_id_system if study_id_system is not None else compiled.study_id_system
    inputs = _discover(Path(path), compiled.reference_targets)
    extractor = _Extractor(compiled, mode, system, batch_rows)
    return FhirStream(extractor.run(inputs), extractor.report)
