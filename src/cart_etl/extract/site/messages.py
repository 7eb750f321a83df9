"""Validation errors of a site mapping as messages naming the key path, the problem and the fix.

The models of :mod:`cart_etl.extract.site.document` raise :func:`invalid` for the checks
pydantic cannot express; :func:`first_problem` words pydantic's own errors (unknown key,
missing key, wrong type, value not allowed) the same way.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = [
    "ERROR_TYPE",
    "NODE",
    "SYNTHETIC_FIELDS",
    "first_problem",
    "invalid",
    "known_keys",
    "near_miss",
]

ERROR_TYPE: Final = "site_mapping"
# Model fields filled from the YAML's free-form keys, never written as keys themselves.
SYNTHETIC_FIELDS: Final = frozenset({"lookups", "attributes"})
TOP_LEVEL: Final = "(top level)"
NODE: Final = "{node}"  # in an invalid() message: the key path of the node that raised it
_NEAR_MISS_CUTOFF: Final = 0.8
_KEY: Final = "[key]"  # pydantic's loc marker of a dict key


def invalid(problem: str, fix: str, at: str = "") -> PydanticCustomError:
    """An error for ``at`` (a key path relative to the node being validated)."""
    return PydanticCustomError(ERROR_TYPE, "{problem}", {"problem": problem, "fix": fix, "at": at})


def known_keys(model: type[BaseModel]) -> list[str]:
    """The keys a node of this model may have, sorted."""
    return sorted(name for name in model.model_fields if name not in SYNTHETIC_FIELDS)


def near_miss(key: str, known: Iterable[str]) -> str | None:
    """The known key ``key`` is probably a typo of (``feild`` -> ``field``), or None."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=_NEAR_MISS_CUTOFF)
    return close[0] if close else None


def first_problem(exc: ValidationError, root: Any) -> tuple[str, str, str]:
    """(key path, problem, fix) of the error to report: unknown keys (typos) first.

    ``root`` is the type that was validated (a model class or e.g. ``dict[str, Model]``).
    """
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    return describe(errors[0], root)


def describe(error: ErrorDetails, root: Any) -> tuple[str, str, str]:
    """(key path, problem, fix) of one pydantic error."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    context: Mapping[str, Any] = error.get("ctx") or {}
    if kind == ERROR_TYPE:
        node = key_path(loc)
        problem, fix = (str(context[k]).replace(NODE, node) for k in ("problem", "fix"))
        return key_path(loc, str(context["at"])), problem, fix
    if (loc and loc[-1] == _KEY) or kind == "invalid_key":
        holder = loc[:-1] if loc and loc[-1] == _KEY else loc
        return key_path(holder), f"key {value!r} is not text", "quote the key in the YAML."
    model, info, node = _schema_at(root, loc)
    where = key_path(loc)
    if kind == "extra_forbidden" and model is not None:
        known = known_keys(model)
        close = near_miss(str(loc[-1]), known)
        hint = f"did you mean {close!r}? " if close else f"remove {loc[-1]!r}, or use a known key. "
        return where, f"unknown key {loc[-1]!r}", f"{hint}Known keys: {', '.join(known)}."
    if kind == "missing":
        what = f"{loc[-1]}: {info.description}" if info and info.description else str(loc[-1])
        return where, "missing", f"add {what}."
    if kind == "literal_error":
        choices = [str(c) for c in get_args(node)] if get_origin(node) is Literal else []
        fix = f"use one of: {', '.join(choices)}." if choices else f"use {context.get('expected')}."
        return where, f"{value!r} is not allowed", fix
    if kind in {"string_type", "string_too_short"}:
        return where, f"expected text, got {value!r}", "write a non-empty string."
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        what = _what(node, info, loc[-1] if loc else "")
        return where, f"expected {what} (a mapping), got {value!r}", f"write {what}."
    if kind == "bool_type":
        return where, f"expected true or false, got {value!r}", "write true or false."
    if kind in {"list_type", "tuple_type"}:
        return where, f"expected a list, got {value!r}", "write a YAML list, e.g. [a, b]."
    message = error["msg"]
    return where, f"{message[:1].lower()}{message[1:]}, got {value!r}", "correct the value."


def key_path(loc: tuple[Any, ...], at: str = "") -> str:
    """``files.labs.csv.columns.x`` from a pydantic loc (plus a relative path)."""
    parts = [str(p) for p in loc]
    if at:
        parts.append(at)
    return ".".join(parts) or TOP_LEVEL


def _what(node: Any, info: FieldInfo | None, key: Any) -> str:
    """How the YAML writes a node, for 'expected ...' messages."""
    what = getattr(node, "what", None)
    if isinstance(what, str):
        return what
    return f"{key}: {info.description}" if info is not None and info.description else "a mapping"


def _unwrap(node: Any) -> Any:
    """``X`` from ``X | None`` and ``Annotated[X, ...]``."""
    while True:
        origin = get_origin(node)
        if origin is Annotated:
            node = get_args(node)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(node) if a is not type(None)]
            if len(args) != 1:
                return node
            node = args[0]
        else:
            return node


def _schema_at(
    root: Any, loc: tuple[Any, ...]
) -> tuple[type[BaseModel] | None, FieldInfo | None, Any]:
    """The model holding the last key of ``loc``, that key's field and the type found there."""
    model: type[BaseModel] | None = None
    info: FieldInfo | None = None
    node = root
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            model, info = node, node.model_fields.get(str(part))
            if info is None:
                return model, None, None
            node = info.annotation
        elif get_origin(node) in (dict, list, Mapping):
            node = get_args(node)[-1]
        else:
            return model, info, None
    return model, info, _unwrap(node)
