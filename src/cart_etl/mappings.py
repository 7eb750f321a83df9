"""The one loader of every rule, mapping and concept file, with site folders layered over it.

Every window, threshold, code map and unit a run applies is a file under one *root*
(``mappings/`` in a checkout, or ``CART_ETL_MAPPINGS``), named by its path relative to the
root (``RULE_FILES``). A *site folder* (``--site PATH``, or ``mappings/sites/NAME/``) or a
FHIR *profile folder* (``--fhir-profile PATH``) may hold files with the same relative paths;
they are layered over the defaults:

1. a YAML/JSON mapping (a dict) is deep-merged: keys of the site file replace or add to
   the default's, nested dicts merge key by key, lists and scalars are replaced whole;
2. any other file (and each SQL-on-FHIR view, ``fhir/views/<name>.json``) is replaced
   whole by the site's copy; the rows of ``fhir/concept_map.csv`` are added to the
   defaults' (``cart_etl.extract.fhir.concept_map``).

The run records which files were applied (``Mappings.applied()``) in ``etl.runs`` and its
fingerprint hashes exactly those, so an edited site override re-runs the load.

Example:
    >>> m = Mappings.open(Path("mappings"), site="tianjin_ref")
    >>> m.load("validation/plausibility.yaml")["measurements"]["temp"]["unit"]
    'Cel'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cart_etl.config import Settings
from cart_etl.errors import ConfigurationError, MappingError

# Every rule and mapping file a run can apply, relative to the mappings root.
RULE_FILES: tuple[str, ...] = (
    "grading/crs_astct2019.json",
    "derive/derivation.yaml",
    "drugs/corticosteroid_equivalents.yaml",
    "validation/plausibility.yaml",
    "omop/concepts.yaml",
    "analysis/table2.yaml",
)
# Rule files read only by FHIR sources (plus every view file under ``fhir/views/``).
FHIR_FILES: tuple[str, ...] = (
    "fhir/concepts.yaml",
    "fhir/targets.yaml",
    "fhir/concept_map.csv",  # rows: a profile's rows are added to the defaults
)
# Files read as one unit: a site copy replaces the default instead of merging into it (each
# SQL-on-FHIR ViewDefinition, fhir/views/<name>.json, is also whole).
WHOLE_FILES: frozenset[str] = frozenset()
SITE_FILE = "site.yaml"


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` layered on ``base``: dicts merge recursively, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    return over


def _parse(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as exc:
        raise MappingError(
            f"Cannot read rule file {path}: {exc.strerror or exc}.",
            fix="restore it from the repository or fix the path.",
        ) from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise MappingError(
            f"Rule file {path} is not valid {path.suffix.lstrip('.').upper()}: {exc}",
            fix="correct the syntax (compare it with the version in the repository).",
        ) from exc


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (what the run fingerprint records)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class Mappings:
    """The default rule files under ``root`` with an optional site/profile folder over them.

    Files are read on first use and kept for the life of the instance; identity is the
    instance (``eq=False``), so rules cached per Mappings are re-read by the next
    ``Mappings.open`` after an edit.

    Attributes:
        root: folder of the default mappings (``mappings/`` in a checkout).
        site_dir: a site or FHIR-profile folder layered over ``root`` (None: defaults only).
        site_file: the site mapping (export layout) for a site-export source.
    """

    root: Path
    site_dir: Path | None = None
    site_file: Path | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def open(
        cls, root: Path, *, site: str | Path | None = None, profile: Path | None = None
    ) -> Mappings:
        """Resolve a site (name or path) or a FHIR profile folder over the defaults in ``root``.

        ``site`` is, in this order: a folder holding ``site.yaml`` and overrides; a site
        mapping file (``*.yaml``); a name with ``<root>/sites/NAME/site.yaml`` or
        ``<root>/sites/NAME.yaml``.

        Raises:
            ConfigurationError: the root, the site or the profile folder does not exist.
        """
        root = Path(root).resolve()
        if not root.is_dir():
            raise ConfigurationError(
                f"Mappings folder {root} does not exist.",
                fix="unset CART_ETL_MAPPINGS or point it at a folder laid out like mappings/.",
            )
        if profile is not None:
            folder = Path(profile).resolve()
            if not folder.is_dir():
                raise ConfigurationError(
                    f"FHIR profile folder {profile} does not exist.",
                    fix="pass a folder holding fhir/*.yaml (and other overrides) to layer "
                    "over the defaults.",
                )
            return cls(root, folder)
        if site is None:
            return cls(root)
        site_dir, site_file = _resolve_site(root, site)
        return cls(root, site_dir, site_file)

    def path(self, rel: str) -> Path:
        """The file applied for ``rel``: the site's copy if it has one, else the default."""
        if self.site_dir is not None and (self.site_dir / rel).is_file():
            return self.site_dir / rel
        return self.root / rel

    def layers(self, rel: str) -> list[Path]:
        """Existing files read for ``rel``, defaults first."""
        if rel in WHOLE_FILES:
            found = self.path(rel)
            return [found] if found.is_file() else []
        candidates = [self.root / rel] + ([self.site_dir / rel] if self.site_dir else [])
        return [p for p in candidates if p.is_file()]

    def load(self, rel: str) -> Any:
        """The parsed, layered content of ``rel`` (read once per Mappings).

        Raises:
            MappingError: the file is missing from the root and the site, or unreadable.
        """
        if rel not in self._cache:
            layers = self.layers(rel)
            if not layers:
                raise MappingError(
                    f"Rule file {rel} is missing from {self.root}"
                    + (f" and {self.site_dir}" if self.site_dir else "")
                    + ".",
                    fix=f"restore mappings/{rel} from the repository.",
                )
            doc: Any = None
            for i, layer in enumerate(layers):
                part = _parse(layer)
                doc = part if i == 0 else deep_merge(doc, part)
            self._cache[rel] = doc
        return self._cache[rel]

    def applied(self, *, fhir: bool = False) -> dict[str, str]:
        """``{label: sha256}`` of every rule file a run applies (what the fingerprint hashes).

        Labels are ``mappings/<rel>`` for defaults (and a site mapping under the root, e.g.
        ``mappings/sites/tianjin_ref.yaml``), ``site/<rel>`` for a site or profile override
        and ``site/site.yaml`` for the mapping of a site folder outside the root.
        """
        out: dict[str, str] = {}
        for rel in RULE_FILES + (FHIR_FILES if fhir else ()):
            for layer in self.layers(rel):
                out[self._label(layer)] = file_sha256(layer)
        if fhir:
            views: dict[str, Path] = {}
            for folder in [self.root] + ([self.site_dir] if self.site_dir else []):
                for view in sorted((folder / "fhir" / "views").glob("*.json")):
                    views[view.name] = view
            for view in views.values():
                out[self._label(view)] = file_sha256(view)
        if self.site_file is not None and not fhir:
            inside = self.site_file.is_relative_to(self.root)
            label = (
                f"mappings/{self.site_file.relative_to(self.root)}"
                if inside
                else f"site/{self.site_file.name}"
            )
            out[label] = file_sha256(self.site_file)
        return out

    def _label(self, path: Path) -> str:
        if path.is_relative_to(self.root):
            return f"mappings/{path.relative_to(self.root)}"
        assert self.site_dir is not None  # only the site folder lies outside the root
        return f"site/{path.relative_to(self.site_dir)}"

    def describe(self) -> dict[str, str]:
        """Where the rules came from (recorded beside the checksums)."""
        out = {"_mappings_root": str(self.root)}
        if self.site_dir is not None:
            out["_site_dir"] = str(self.site_dir)
        if self.site_file is not None:
            out["_site_file"] = str(self.site_file)
        return out


def _resolve_site(root: Path, site: str | Path) -> tuple[Path | None, Path]:
    text = str(site)
    candidate = Path(text).expanduser()
    looks_like_path = "/" in text or "\\" in text or candidate.suffix in (".yaml", ".yml")
    if candidate.is_dir():
        return _site_folder(candidate.resolve())
    if candidate.is_file():
        return None, candidate.resolve()
    folder = root / "sites" / text
    if not looks_like_path and folder.is_dir():
        return _site_folder(folder)
    flat = root / "sites" / f"{text}.yaml"
    if not looks_like_path and flat.is_file():
        return None, flat
    names = available_sites(root)
    raise ConfigurationError(
        f"Unknown site {text!r}: no folder or mapping file at that path, and neither "
        f"{flat} nor {folder / SITE_FILE} exists.",
        fix=f"use one of {', '.join(names) or '(none)'}, or pass a site folder holding "
        f"{SITE_FILE} (see README 'Adding a site').",
    )


def _site_folder(folder: Path) -> tuple[Path, Path]:
    site_file = folder / SITE_FILE
    if not site_file.is_file():
        raise ConfigurationError(
            f"Site folder {folder} has no {SITE_FILE}.",
            fix=f"put the site's export mapping in {site_file} (see mappings/sites/*.yaml).",
        )
    return folder, site_file


def available_sites(root: Path) -> list[str]:
    """Site names under ``<root>/sites``: ``NAME.yaml`` files and ``NAME/`` folders."""
    sites = root / "sites"
    if not sites.is_dir():
        return []
    names = {p.stem for p in sites.glob("*.yaml")}
    names |= {p.name for p in sites.iterdir() if (p / SITE_FILE).is_file()}
    return sorted(names)


_ACTIVE: ContextVar[Mappings | None] = ContextVar("cart_etl_mappings", default=None)


@cache
def _default(root: Path) -> Mappings:
    return Mappings.open(root)


def active() -> Mappings:
    """The mappings of the run in progress, else the defaults (``Settings().mappings_dir``).

    Validation checks and staging read their limits through this, so a site's
    plausibility additions apply to the run that layers them and to nothing else.
    """
    current = _ACTIVE.get()
    if current is not None:
        return current
    return _default(Settings().mappings_dir.resolve())


@contextlib.contextmanager
def activate(mappings: Mappings) -> Iterator[Mappings]:
    """Make ``mappings`` the active set for the duration of a run."""
    token = _ACTIVE.set(mappings)
    try:
        yield mappings
    finally:
        _ACTIVE.reset(token)


def plausibility() -> dict[str, Any]:
    """The plausibility/units rules of the active mappings (``validation/plausibility.yaml``,
    with a site's additions layered over it)."""
    return active().load("validation/plausibility.yaml")  # type: ignore[no-any-return]
