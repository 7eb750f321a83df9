"""Unit tests of the SQL on FHIR runner beyond the official suite: the references table
(Bundle ``urn:uuid:`` fullUrls), the ``_key`` column, run-time errors, column order and a
100k-resource table."""

from __future__ import annotations

import json
import time

import duckdb
import pyarrow.compute as pc
import pytest

from cart_etl.extract.fhir.sof import ViewDefinitionError, compile_view, run_view, view_columns
from tests.extract.sof.suite import resource_table

PATIENT_UUID = "urn:uuid:0b6f3c1e-5d1b-4a35-9a0e-7d3b0c0f1a11"

OBS_VIEW = {
    "name": "obs",
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "string"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)", "type": "string"},
                {"name": "encounter", "path": "subject.getReferenceKey(Encounter)"},
                {"name": "any_ref", "path": "subject.getReferenceKey()"},
            ]
        }
    ],
}


def _bundle_con() -> duckdb.DuckDBPyConnection:
    """Resources of a transaction Bundle whose references are entry fullUrls."""
    con = resource_table(
        [
            {"resourceType": "Patient", "id": "p1"},
            {"resourceType": "Observation", "id": "o1", "subject": {"reference": PATIENT_UUID}},
            {"resourceType": "Observation", "id": "o2", "subject": {"reference": "Patient/p2"}},
            {
                "resourceType": "Observation",
                "id": "o3",
                "subject": {"reference": "urn:uuid:unknown"},
            },
        ]
    )
    return con


def test_references_table_resolves_urn_uuid() -> None:
    con = _bundle_con()
    con.execute("CREATE TABLE refs (ref VARCHAR, key VARCHAR, type VARCHAR)")
    con.execute("INSERT INTO refs VALUES (?, 'p1', 'Patient')", [PATIENT_UUID])
    rows = {r["id"]: r for r in run_view(con, OBS_VIEW, references="refs").to_pylist()}
    assert rows["o1"] == {"id": "o1", "patient": "p1", "encounter": None, "any_ref": "p1"}
    assert rows["o2"] == {"id": "o2", "patient": "p2", "encounter": None, "any_ref": "p2"}
    assert rows["o3"] == {"id": "o3", "patient": None, "encounter": None, "any_ref": None}


def test_references_table_without_type_column() -> None:
    con = _bundle_con()
    con.execute("CREATE TABLE refs AS SELECT ? AS ref, 'p1' AS key", [PATIENT_UUID])
    rows = {r["id"]: r for r in run_view(con, OBS_VIEW, references="refs").to_pylist()}
    assert rows["o1"]["patient"] == "p1"
    assert rows["o1"]["encounter"] == "p1"  # untyped table: the type cannot be checked


def test_without_references_table_urn_uuid_is_empty() -> None:
    rows = {r["id"]: r for r in run_view(_bundle_con(), OBS_VIEW).to_pylist()}
    assert rows["o1"]["patient"] is None
    assert rows["o2"]["patient"] == "p2"


def test_reference_key_inside_expression_with_references_table_is_rejected() -> None:
    view = {
        "resource": "Observation",
        "select": [{"column": [{"name": "id", "path": "id"}]}],
        "where": [{"path": "subject.getReferenceKey(Patient).exists()"}],
    }
    con = _bundle_con()
    con.execute("CREATE TABLE refs (ref VARCHAR, key VARCHAR)")
    with pytest.raises(ViewDefinitionError, match="getReferenceKey"):
        run_view(con, view, references="refs")


def test_key_column_is_the_resource_key() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE src (resource_type VARCHAR, resource JSON, _key VARCHAR)")
    con.execute(
        """INSERT INTO src VALUES ('Patient', '{"resourceType":"Patient","id":"a"}', 'K1')"""
    )
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "k", "path": "getResourceKey()"}]}],
    }
    assert run_view(con, view, source="src").to_pylist() == [{"k": "K1"}]
    assert "_src._key" in compile_view(view, source="src", key_column=True)
    assert "_key" not in compile_view(view, source="src")


def test_multiple_values_in_a_scalar_column_names_the_column() -> None:
    con = resource_table(
        [{"resourceType": "Patient", "id": "a", "name": [{"family": "x"}, {"family": "y"}]}]
    )
    view = {
        "name": "pv",
        "resource": "Patient",
        "select": [{"column": [{"name": "fam", "path": "name.family"}]}],
    }
    with pytest.raises(ViewDefinitionError, match=r"'pv'.*'fam'.*name\.family"):
        run_view(con, view)


def test_compile_errors_name_view_column_and_expression() -> None:
    view = {
        "name": "v",
        "resource": "Patient",
        "select": [{"column": [{"name": "c", "path": "name.frobnicate()"}]}],
    }
    with pytest.raises(ViewDefinitionError, match=r"'v'.*'c'.*frobnicate"):
        compile_view(view)
    with pytest.raises(ViewDefinitionError, match="resource"):
        compile_view({"select": [{"column": [{"name": "id", "path": "id"}]}]})


def test_view_columns_in_output_order() -> None:
    view = {
        "resource": "Patient",
        "select": [
            {
                "column": [{"name": "a", "path": "id", "type": "id"}],
                "unionAll": [
                    {"column": [{"name": "u", "path": "'x'", "type": "string"}]},
                    {"column": [{"name": "u", "path": "'y'", "type": "string"}]},
                ],
                "select": [
                    {
                        "forEach": "name",
                        "column": [{"name": "g", "path": "given", "collection": True}],
                    }
                ],
            }
        ],
    }
    assert view_columns(view) == [("a", "id", False), ("g", "", True), ("u", "string", False)]


def test_untyped_and_collection_columns() -> None:
    con = resource_table(
        [{"resourceType": "Patient", "id": "a", "active": True, "name": [{"given": ["x", "y"]}]}]
    )
    view = {
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": "has", "path": "name.exists()"},
                    {"name": "given", "path": "name.given", "type": "string", "collection": True},
                    {"name": "n", "path": "name.given.count()"},
                ]
            }
        ],
    }
    table = run_view(con, view)
    assert table.to_pylist() == [{"has": True, "given": ["x", "y"], "n": 2}]
    assert str(table.schema.field("given").type) == "list<l: string>"


@pytest.mark.slow
def test_hundred_thousand_resources_run_in_seconds() -> None:
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE resources AS SELECT 'Observation' AS resource_type, json_object(
             'resourceType', 'Observation', 'id', 'o' || i, 'status', 'final',
             'subject', json_object('reference', 'Patient/p' || (i % 1000)),
             'code', json_object('coding', json_array(json_object(
                 'system', 'http://loinc.org', 'code', CAST(i % 50 AS VARCHAR)))),
             'valueQuantity', json_object('value', i / 10.0, 'unit', 'mg')) AS resource
           FROM range(100000) t(i)"""
    )
    view = {
        "resource": "Observation",
        "where": [{"path": "status = 'final'"}],
        "select": [
            {
                "column": [
                    {"name": "id", "path": "getResourceKey()"},
                    {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                    {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                ]
            },
            {
                "forEach": "code.coding",
                "column": [{"name": "code", "path": "code", "type": "code"}],
            },
        ],
    }
    start = time.perf_counter()
    table = run_view(con, view)
    elapsed = time.perf_counter() - start
    assert table.num_rows == 100_000
    row = table.filter(pc.equal(table["id"], "o7")).to_pylist()
    assert row == [{"id": "o7", "patient": "p7", "value": 0.7, "code": "7"}]
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert json.loads(json.dumps(view))  # the view is plain JSON


def test_materialize_view_writes_a_table_like_run_view() -> None:
    from cart_etl.extract.fhir.sof import materialize_view

    con = resource_table(
        [
            {"resourceType": "Patient", "id": "a", "name": [{"family": "x"}]},
            {"resourceType": "Patient", "id": "b", "name": [{"family": "y"}, {"family": "z"}]},
        ]
    )
    view = {
        "name": "pv",
        "resource": "Patient",
        "select": [
            {"column": [{"name": "id", "path": "getResourceKey()"}]},
            {"forEach": "name", "column": [{"name": "fam", "path": "family"}]},
        ],
    }
    assert materialize_view(con, view, "v out") == 3
    rows = con.execute('SELECT * FROM "v out" ORDER BY fam').fetchall()
    assert rows == sorted(tuple(r.values()) for r in run_view(con, view).to_pylist())
    bad = {**view, "select": [{"column": [{"name": "fam", "path": "name.family"}]}]}
    with pytest.raises(ViewDefinitionError, match="'fam'"):
        materialize_view(con, bad, "v out")
    assert con.execute('SELECT count(*) FROM "v out"').fetchone() == (3,)
