"""The concept file is complete and cited; every mapper honours the DDL contract."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from cart_etl.errors import MappingError
from cart_etl.load.omop import TABLES, map_all
from cart_etl.load.omop._common import table_columns
from cart_etl.load.omop.concepts import CONCEPTS_FILE, concepts, load_concepts
from tests.load.omop.conftest import MRN_A, MRN_B, make_input

REFERENCE = Path(__file__).resolve().parents[4] / "shared" / "reference" / "omop_v54.md"


def test_01_every_concept_is_cited_and_nonzero_ids_appear_in_the_reference():
    table = load_concepts()
    text = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else None
    for concept in table.concepts.values():
        assert concept.source.startswith("omop_v54.md"), concept.key
        if concept.concept_id and text is not None:
            assert re.search(rf"\b{concept.concept_id}\b", text), concept.key


def test_02_unknown_concept_name_is_a_mapping_error():
    with pytest.raises(MappingError, match="no concept named"):
        concepts().id("tocilizumabb")


def test_03_unmapped_codes_get_zero():
    frame = pl.DataFrame({"drug": ["tocilizumab", "gcsf", "aspirin", None]})
    got = frame.select(concepts().map_expr("drug", "drug"))["drug"].to_list()
    assert got == [40171288, 0, 0, 0]


def test_04_every_table_has_the_ddl_columns_in_order_with_their_dtypes():
    out = map_all(make_input())
    assert tuple(out) == TABLES
    for table, frame in out.items():
        cols = table_columns(table)
        assert frame.columns == [c.name for c in cols], table
        assert [frame.schema[c.name] for c in cols] == [c.dtype for c in cols], table
        for c in cols:
            if c.required:
                assert frame[c.name].null_count() == 0, (table, c.name)


def test_05_two_runs_give_identical_tables():
    a, b = map_all(make_input()), map_all(make_input())
    for table in TABLES:
        assert a[table].equals(b[table]), table


def test_06_no_mrn_anywhere():
    for table, frame in map_all(make_input()).items():
        for col in frame.columns:
            values = set(frame[col].cast(pl.String).drop_nulls().to_list())
            assert not any(MRN_A in v or MRN_B in v for v in values), (table, col)


def test_07_missing_entities_give_empty_tables_not_errors():
    inp = make_input()
    bare = type(inp)(
        **{
            **inp.__dict__,
            "accepted": {"demographics": inp.accepted["demographics"]},
            "crs_episode": pl.DataFrame(),
            "treatment": pl.DataFrame(),
        }
    )
    out = map_all(bare)
    assert out["person"].height == 2
    assert out["drug_exposure"].height == 0 and out["episode_event"].height == 0
    assert out["visit_occurrence"].height == 0


def test_08_concept_file_path():
    from cart_etl.mappings import active

    assert CONCEPTS_FILE == "omop/concepts.yaml"
    assert active().path(CONCEPTS_FILE).is_file()
