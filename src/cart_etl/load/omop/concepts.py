"""Named OMOP concept ids, read from the cited data file ``mappings/omop/concepts.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import polars as pl

from cart_etl.errors import MappingError
from cart_etl.mappings import Mappings, active

CONCEPTS_FILE = "omop/concepts.yaml"


@dataclass(frozen=True)
class Concept:
    """One concept: its id (0 = no verified standard concept), vocabulary, code, citation."""

    key: str
    name: str
    concept_id: int
    vocabulary: str
    code: str
    source: str


@dataclass(frozen=True)
class ConceptTable:
    """All concepts by key, plus the source-code -> concept-key maps of the YAML file."""

    concepts: dict[str, Concept]
    maps: dict[str, dict[str, str]]

    def id(self, key: str) -> int:
        """The concept id named ``key``; a typo is a MappingError, never a silent 0."""
        try:
            return self.concepts[key].concept_id
        except KeyError:
            raise MappingError(
                f"{CONCEPTS_FILE}: no concept named {key!r}; add it with its citation"
            ) from None

    def lookup(self, map_name: str) -> dict[str, int]:
        """Source code -> concept id for one map (codes not in the map are unmapped = 0)."""
        return {code: self.id(key) for code, key in self.maps[map_name].items()}

    def map_expr(self, map_name: str, column: str | pl.Expr) -> pl.Expr:
        """Vectorised lookup: ``column`` replaced through map ``map_name``, 0 if absent/null."""
        expr = pl.col(column) if isinstance(column, str) else column
        return expr.replace_strict(self.lookup(map_name), default=0, return_dtype=pl.Int64)


def load_concepts(mappings: Mappings | None = None) -> ConceptTable:
    """Read and check the concept file (each entry: name, concept_id, vocabulary, code, source).

    ``mappings`` (default: the active set) may layer a site's concepts over the defaults.
    """
    path = CONCEPTS_FILE
    data = (mappings or active()).load(CONCEPTS_FILE)
    concepts: dict[str, Concept] = {}
    for key, entry in data["concepts"].items():
        missing = {"name", "concept_id", "vocabulary", "code", "source"} - set(entry)
        if missing:
            raise MappingError(f"{path}: concept {key!r} lacks {sorted(missing)}")
        concepts[key] = Concept(
            key=key,
            name=str(entry["name"]),
            concept_id=int(entry["concept_id"]),
            vocabulary=str(entry["vocabulary"]),
            code=str(entry["code"]),
            source=str(entry["source"]),
        )
    maps = {name: {str(k): str(v) for k, v in m.items()} for name, m in data["maps"].items()}
    table = ConceptTable(concepts, maps)
    for name in maps:
        table.lookup(name)
    return table


@cache
def _concepts(mappings: Mappings) -> ConceptTable:
    return load_concepts(mappings)


def concepts() -> ConceptTable:
    """The concept table of the active mappings (read once per mapping set)."""
    return _concepts(active())
