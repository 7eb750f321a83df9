"""The FHIR concept map, ``fhir/concept_map.csv``: (source system, source code) -> target.

Rows have the shape of OMOP's ``source_to_concept_map``: ``source_system, source_code,
source_display, target, item, note, citation``. ``target`` names a recognition target of
``fhir/targets.yaml``; ``item`` is the canonical key staging uses (``temp``, ``il6``,
``tocilizumab``...), empty where the target fills fixed columns. ``source_code`` ``*`` maps
every code of the system. A profile folder's ``fhir/concept_map.csv`` is read after the
defaults: its rows are added, and a row for the same (system, code) replaces the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cart_etl.errors import MappingError
from cart_etl.mappings import Mappings

CONCEPT_MAP = "fhir/concept_map.csv"
_REQUIRED = ("source_system", "source_code", "target")


@dataclass(frozen=True)
class ConceptRow:
    """One row of the concept map."""

    system: str
    code: str
    target: str
    item: str


def concept_rows(mappings: Mappings) -> list[ConceptRow]:
    """The layered concept map (defaults first, then the profile's rows).

    Raises:
        MappingError: a file lacks a required column or a row lacks a value.
    """
    rows: dict[tuple[str, str], ConceptRow] = {}
    for path in mappings.layers(CONCEPT_MAP):
        frame = pl.read_csv(path, infer_schema=False)
        missing = [c for c in _REQUIRED if c not in frame.columns]
        if missing:
            raise MappingError(
                f"{path} lacks the columns {missing}.",
                fix="start the file with the header "
                "source_system,source_code,source_display,target,item,note,citation.",
            )
        for i, rec in enumerate(frame.iter_rows(named=True), 2):
            system, code, target = ((rec.get(k) or "").strip() for k in _REQUIRED)
            if not (system and code and target):
                raise MappingError(
                    f"{path}, line {i}: source_system, source_code and target are required.",
                    fix="fill the three columns or delete the row.",
                )
            item = (rec.get("item") or "").strip()
            rows[(system, code)] = ConceptRow(system, code, target, item)
    return list(rows.values())
