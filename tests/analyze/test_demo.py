"""``cart_etl.demo.run_demo``: the order of the steps and what the observer is told, with
each step replaced by a stand-in (the real workflow is ``cart-etl demo``, about 35 s)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from cart_etl import demo


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.ticks: list[int] = []

    @contextmanager
    def synthesising(self, patients):
        self.events.append(f"synthesising {patients}")
        yield self.ticks.append
        self.events.append("synth progress closed")

    def synthesised(self, summary):
        self.events.append("synthesised")

    def validated(self, summary, html):
        self.events.append(f"validated {summary['rows_in']} {html.name}")

    def loaded(self, result):
        self.events.append(f"loaded {result.status}")

    def grouped(self, groups):
        self.events.append(f"grouped {len(groups)}")

    def reported(self, report, paths):
        self.events.append(f"reported {paths.html.name}")


@pytest.fixture
def steps(monkeypatch, tmp_path):
    """Stand-ins for synth, validation, run, group summary and report."""
    state = {"status": "succeeded", "calls": []}

    def generate(out, on_patient):
        state["calls"].append(("generate", out))
        on_patient(61)
        return SimpleNamespace(out_dir=out)

    def validate_site(location, site, expectations):
        state["calls"].append(("validate", location, site))
        return None, SimpleNamespace(to_json=lambda: {"summary": {"rows_in": 10}})

    def write_report(result, out_dir):
        return out_dir / "validation.html", out_dir / "validation.json"

    def run(source, store, force):
        state["calls"].append(("run", source.location, store, force))
        return SimpleNamespace(status=state["status"], exit_code=int(state["status"] == "failed"))

    def report_store(store, out_dir):
        state["calls"].append(("report", store, out_dir))
        return "report", SimpleNamespace(html=out_dir / "report.html")

    monkeypatch.setattr(demo, "generate", generate)
    monkeypatch.setattr(demo, "validate_site", validate_site)
    monkeypatch.setattr(demo, "write_report", write_report)
    monkeypatch.setattr(demo, "run", run)
    monkeypatch.setattr(demo, "store_groups", lambda store: pd.DataFrame({"group": ["a", "b"]}))
    monkeypatch.setattr(demo, "report_store", report_store)
    return state


def test_steps_in_order_under_one_workdir(steps, tmp_path):
    rec = Recorder()
    result = demo.run_demo(tmp_path, rec)
    assert rec.events == [
        "synthesising 61",
        "synth progress closed",
        "synthesised",
        "validated 10 validation.html",
        "loaded succeeded",
        "grouped 2",
        "reported report.html",
    ]
    assert rec.ticks == [61]
    assert steps["calls"] == [
        ("generate", tmp_path / "cohort"),
        ("validate", tmp_path / "cohort" / "site_export", "tianjin_ref"),
        ("run", str(tmp_path / "cohort" / "site_export"), tmp_path / "cart_etl.duckdb", True),
        ("report", tmp_path / "cart_etl.duckdb", tmp_path / "report"),
    ]
    assert result.exit_code == 0 and result.report == "report"


def test_failed_load_stops_before_the_report(steps, tmp_path):
    steps["status"] = "failed"
    rec = Recorder()
    result = demo.run_demo(tmp_path, rec)
    assert rec.events[-2:] == ["loaded failed", "grouped 2"]
    assert result.exit_code == 1 and result.report is None
    assert [c[0] for c in steps["calls"]] == ["generate", "validate", "run"]


def test_quiet_skips_the_group_summary_and_the_default_observer_is_silent(steps, tmp_path):
    result = demo.run_demo(tmp_path, summarise_groups=False)
    assert result.groups is None and result.report == "report"
    assert Path(result.paths.store).name == "cart_etl.duckdb"
