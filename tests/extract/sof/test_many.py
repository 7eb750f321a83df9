"""``materialize_views`` (each resource type parsed once for many views) gives the tables
and errors of ``materialize_view`` called view by view: the reference cohort's views over a
few hundred synthetic resources (odd shapes included), and the conformance suite."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cart_etl.extract.fhir.sof import ViewDefinitionError, materialize_view, materialize_views
from cart_etl.extract.fhir.sof import run as sof_run
from tests.extract.sof.suite import load_cases, resource_table

VIEWS_DIR = Path(__file__).resolve().parents[3] / "mappings" / "fhir" / "views"


def _coding(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [
        {"system": f"http://s{rng.randint(1, 3)}", "code": f"c{rng.randint(1, 50)}",
         "display": f"d{i}"}
        for i in range(n)
    ]  # fmt: skip


def _concept(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": _coding(rng, rng.randint(0, 3))}
    if rng.random() < 0.5:
        out["text"] = "txt"
    return out


def _resources(n: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """Resources of every type the views read; references by id and by urn:uuid."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        t = rng.choice(
            ["Observation"] * 5
            + ["Procedure", "MedicationAdministration", "Condition", "Patient", "Encounter",
               "Medication", "Specimen", "Device", "DeviceUseStatement", "MedicationRequest"]
        )  # fmt: skip
        r: dict[str, Any] = {"resourceType": t, "id": f"{t[:3].lower()}{i}"}
        subj = rng.choice(
            [{"reference": f"Patient/p{i % 7}"}, {"reference": f"urn:uuid:u{i % 5}"},
             {"identifier": {"value": f"mrn{i}"}}, None]
        )  # fmt: skip
        if subj is not None and t != "Patient":
            r["subject"] = subj
        r["status"] = rng.choice(["final", "completed", "active"])
        r["code"] = _concept(rng)
        if t == "Observation":
            v = rng.random()
            if v < 0.4:
                r["valueQuantity"] = {"value": rng.choice([1.5, 2, "1,38"]), "unit": "mg",
                                      "system": "http://unitsofmeasure.org", "code": "mg"}  # fmt: skip
            elif v < 0.55:
                r["valueCodeableConcept"] = _concept(rng)
            elif v < 0.65:
                r["valueString"] = "pos"
            elif v < 0.7:
                r["valueBoolean"] = True
            if rng.random() < 0.3:
                r["component"] = [
                    {"code": _concept(rng), "valueQuantity": {"value": j, "unit": "mmHg"}}
                    for j in range(rng.randint(0, 3))
                ]
            if rng.random() < 0.5:
                r["effectiveDateTime"] = "2020-01-02"
            else:
                r["effectivePeriod"] = {"start": "2020-01-01", "end": "2020-01-03"}
            if rng.random() < 0.2:
                r["specimen"] = {"reference": f"Specimen/sp{i}", "identifier": {"value": "s"}}
            if rng.random() < 0.2:
                r["method"] = _concept(rng)
        elif t == "Procedure":
            r["performedPeriod"] = {"start": "2020-01-01"}
            r["usedCode"] = [_concept(rng) for _ in range(rng.randint(0, 2))]
            r["note"] = [{"text": "n"}]
        elif t == "MedicationAdministration":
            r["medicationCodeableConcept"] = _concept(rng)
            r["effectiveDateTime"] = "2020-01-02T10:00:00Z"
            r["dosage"] = {"dose": {"value": 1, "unit": "mL"}, "route": _concept(rng)}
            r["reasonCode"] = [_concept(rng)]
        elif t == "Patient":
            r["gender"] = "female"
            r["birthDate"] = "1970-01-01"
            r["identifier"] = [
                {"system": "http://mrn", "value": f"m{i}", "type": _concept(rng)},
                {"system": "http://study", "value": f"s{i}"},
            ]
            if rng.random() < 0.5:
                r["deceasedDateTime"] = "2021-01-01"
        elif t == "Encounter":
            r["class"] = {"code": "IMP"}
            r["period"] = {"start": "2020-01-01", "end": "2020-01-05"}
        elif t == "Condition":
            r["clinicalStatus"] = _concept(rng)
            r["onsetDateTime"] = "2019-05-01"
            r["bodySite"] = [_concept(rng)]
        out.append(r)
    return out


def _con(resources: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    """``resources(resource_type, _key, resource)`` + ``refs(ref, key, type)``."""
    con = resource_table(resources, table="_raw")
    con.execute(
        "CREATE TABLE resources AS SELECT resource_type, "
        "resource_type || '/' || json_extract_string(resource, '$.id') AS _key, resource "
        "FROM _raw"
    )
    con.execute("CREATE TABLE refs (ref VARCHAR, key VARCHAR, type VARCHAR)")
    for u in range(5):
        con.execute("INSERT INTO refs VALUES (?, ?, 'Patient')", [f"urn:uuid:u{u}", f"p{u}"])
    con.execute("INSERT INTO refs VALUES ('urn:uuid:u1', 'p9', 'Patient')")
    return con


def _table(con: duckdb.DuckDBPyConnection, name: str) -> tuple[list[Any], list[Any]]:
    cols = con.execute(f'DESCRIBE "{name}"').fetchall()
    return cols, con.execute(f'SELECT * FROM "{name}"').fetchall()  # in table order


def _reference_views() -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(VIEWS_DIR.glob("*.json"))
    }


@pytest.mark.parametrize("split_rows", [sof_run.SPLIT_MIN_ROWS, 16])
def test_reference_views_same_as_one_by_one(
    monkeypatch: pytest.MonkeyPatch, split_rows: int
) -> None:
    # split_rows=16: the pre-parse and the views also run as rowid ranges (UNION ALL)
    monkeypatch.setattr(sof_run, "SPLIT_MIN_ROWS", split_rows)
    con = _con(_resources())
    con.execute("SET threads = 3")
    views = _reference_views()
    for name, view in views.items():
        materialize_view(con, view, f"one_{name}", source="resources", references="refs")
    fallbacks: list[str] = []
    monkeypatch.setattr(sof_run, "materialize_view", lambda *a, **k: fallbacks.append(a[2]))
    counts = materialize_views(con, views, source="resources", references="refs")
    assert fallbacks == []  # every view ran on the pre-parsed source
    assert set(counts) == set(views)
    for name in views:
        assert _table(con, f"v_{name}") == _table(con, f"one_{name}"), name
        assert counts[name] == len(_table(con, f"one_{name}")[1])
    assert counts["observation"] > 100
    # nothing left behind
    temps = con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '_sof_%'")
    assert temps.fetchall() == []


def test_no_references_no_key_column() -> None:
    con = resource_table(_resources(120, seed=3))
    views = _reference_views()
    for name, view in views.items():
        materialize_view(con, view, f"one_{name}")
    materialize_views(con, views, table_prefix="m_")
    for name in views:
        assert _table(con, f"m_{name}") == _table(con, f"one_{name}"), name


def test_error_order_like_one_by_one() -> None:
    """A view that fails (at compile or at run time) raises the error materialize_view
    raises; the views before it are materialised, the ones after it are not."""
    con = _con([{"resourceType": "Patient", "id": "a", "name": [{"family": "x"}, {"family": "y"}]}])
    ok = {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}
    bad_run = {
        "resource": "Patient",
        "select": [{"column": [{"name": "f", "path": "name.family"}]}],
    }
    bad_compile = {"resource": "Patient", "select": [{"column": [{"name": "f", "path": "name.("}]}]}
    for bad in (bad_run, bad_compile):
        with pytest.raises(ViewDefinitionError) as one:
            materialize_view(con, bad, "x_one", source="resources", references="refs")
        with pytest.raises(ViewDefinitionError) as many:
            materialize_views(
                con, {"a": ok, "b": bad, "c": ok}, source="resources", references="refs",
                table_prefix="e_",
            )  # fmt: skip
        assert str(many.value) == str(one.value)
        assert con.execute("SELECT * FROM e_a").fetchall() == [("a",)]
        assert not con.execute("SELECT * FROM duckdb_tables() WHERE table_name = 'e_c'").fetchall()
        con.execute("DROP TABLE e_a")


CASES = load_cases()


@pytest.mark.parametrize("file", sorted({c.file for c in CASES}))
def test_conformance_resources_same_as_one_by_one(file: str) -> None:
    """Each conformance file: all its views at once, against each one alone."""
    cases = [c for c in CASES if c.file == file]
    con = resource_table(cases[0].resources)
    views: dict[str, Any] = {}
    for i, case in enumerate(cases):
        name = f"t{i}"
        one_error = ""
        try:
            materialize_view(con, case.test["view"], f"one_{name}")
        except ViewDefinitionError as exc:
            one_error = str(exc)
        if one_error:
            with pytest.raises(ViewDefinitionError) as many:
                materialize_views(con, {name: case.test["view"]}, table_prefix="m_")
            assert str(many.value) == one_error, case.id
            continue
        views[name] = case.test["view"]
    if not views:
        return
    fallbacks: list[str] = []
    real = sof_run.materialize_view

    def counted(*a: Any, **k: Any) -> int:
        fallbacks.append(a[2])
        return real(*a, **k)

    sof_run.materialize_view = counted  # type: ignore[assignment]
    try:
        materialize_views(con, views, table_prefix="m_")
    finally:
        sof_run.materialize_view = real  # type: ignore[assignment]
    assert fallbacks == [], (file, fallbacks)
    for name in views:
        assert _table(con, f"m_{name}") == _table(con, f"one_{name}"), (file, name)
