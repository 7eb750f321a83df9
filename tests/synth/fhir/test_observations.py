"""Tests of the vital-sign, oxygen and laboratory Observations (and oxygen Procedures)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

from cart_etl.synth.model import ClinicalRecord, example_record
from tests.synth.fhir.records import coded, load_bundle, resources, write_records


def test_vital_signs(clean_out: Path) -> None:
    obs = resources(load_bundle(clean_out, "CART-002"), "Observation")
    panels = coded(obs, "85354-9")
    assert len(panels) == 1  # sbp 95 / dbp 60, charted in reverse order
    comps = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in panels[0]["component"]}
    assert comps["8480-6"]["value"] == 95
    assert comps["8462-4"] == {
        "value": 60,
        "unit": "mmHg",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    }
    assert [o["valueQuantity"]["value"] for o in coded(obs, "8462-4")] == [55]
    assert [o["valueQuantity"]["value"] for o in coded(obs, "8480-6")] == [80]
    (temp,) = coded(obs, "8310-5")
    assert temp["valueQuantity"]["code"] == "Cel"
    assert temp["status"] == "final"
    assert temp["category"][0]["coding"][0]["code"] == "vital-signs"
    assert temp["effectiveDateTime"] == "2021-03-05T16:30:00+08:00"
    (hr,) = coded(obs, "8867-4")
    assert hr["valueQuantity"]["code"] == "/min"
    assert hr["effectiveDateTime"].endswith("+08:00")
    assert coded(obs, "59408-5")[0]["valueQuantity"]["code"] == "%"


def test_oxygen_periods_follow_charting_time(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    procs = _oxygen_procedures(raw)
    assert len(procs) == 8  # one per non-room-air charting
    procs.sort(key=lambda p: p["performedPeriod"]["start"])
    for prev, nxt in pairwise(procs):
        assert prev["performedPeriod"]["end"] == nxt["performedPeriod"]["start"]
        assert prev["status"] == "completed"
    # The last device is closed by the room-air charting one hour later.
    assert procs[-1]["performedPeriod"]["end"] == "2021-03-06T04:30:00+08:00"
    devices = [p["usedCode"][0]["coding"][0]["code"] for p in procs]
    assert devices[0] == "nasal-cannula"
    assert devices[-1] == "mechanical-ventilation"
    flows = coded(resources(raw, "Observation"), "3151-8")
    assert len(flows) == 8
    proc_urls = {f"urn:uuid:{p['id']}" for p in procs}
    assert all(f["partOf"][0]["reference"] in proc_urls for f in flows)
    assert all(f["valueQuantity"]["code"] == "L/min" for f in flows)


def _oxygen_procedures(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    procs = resources(bundle, "Procedure")
    return [p for p in procs if p["code"]["coding"][0]["code"] == "57485005"]


def test_last_oxygen_device_without_successor_is_in_progress(tmp_path: Path) -> None:
    rec = example_record()
    closed = _oxygen_procedures(load_bundle(_out_of(tmp_path / "a", rec), "CART-001"))
    assert [p["status"] for p in closed] == ["completed", "completed"]  # room air closes it
    rec.oxygen = rec.oxygen[:-1]
    still_on = _oxygen_procedures(load_bundle(_out_of(tmp_path / "b", rec), "CART-001"))
    assert [p["status"] for p in still_on] == ["completed", "in-progress"]
    assert "end" not in still_on[-1]["performedPeriod"]


def _out_of(root: Path, rec: ClinicalRecord) -> Path:
    out = root / "fhir"
    write_records(out, [rec])
    return out


def test_labs(clean_out: Path) -> None:
    raw = load_bundle(clean_out, "CART-002")
    obs = resources(raw, "Observation")
    expected = {
        "26881-3": "pg/mL",
        "26848-2": "pg/mL",
        "33209-6": "U/mL",
        "3074-2": "pg/mL",
        "27415-9": "pg/mL",
        "1988-5": "mg/L",
        "2276-4": "ng/mL",
        "6690-2": "10*9/L",
        "751-8": "10*9/L",
        "777-3": "10*9/L",
        "718-7": "g/L",
        "11118-7": "%",
    }
    for code, unit in expected.items():
        labs = [
            o for o in coded(obs, code) if o["category"][0]["coding"][0]["code"] == "laboratory"
        ]
        assert labs, code
        assert all(o["valueQuantity"]["code"] == unit for o in labs)
