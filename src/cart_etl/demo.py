"""`cart-etl demo`: the reference workflow in one call.

synth (the calibrated 61-patient cohort, seed 2025) -> validation report of its site export
-> `cart-etl run` of the site export into WORKDIR/cart_etl.duckdb -> per-group summary of
the analysed patients (``analyze.groups``) -> `cart-etl report` into WORKDIR/report.

Each step hands what it produced to a ``DemoObserver`` as soon as it is done; the CLI's
observer prints it, ``SilentObserver`` (the default) tells nothing. A failed load stops the
demo before the report (``DemoResult.exit_code`` is then the run's).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from cart_etl.analyze.groups import group_summary
from cart_etl.analyze.report import Report, ReportPaths, report_store
from cart_etl.load.duckdb_store import connect
from cart_etl.pipeline import RunResult, Source, run, validate_site
from cart_etl.synth.generate import REFERENCE_PATIENTS, SynthSummary, generate
from cart_etl.validate.report import write_report

SITE = "tianjin_ref"  # the site mapping of the synthetic export


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo writes, under one work folder."""

    workdir: Path

    @property
    def cohort(self) -> Path:
        """The synthetic cohort (site export, FHIR, truth)."""
        return self.workdir / "cohort"

    @property
    def site_export(self) -> Path:
        """The site export folder that is validated and loaded."""
        return self.cohort / "site_export"

    @property
    def validation(self) -> Path:
        """validation.html and validation.json."""
        return self.workdir / "validation"

    @property
    def store(self) -> Path:
        """The DuckDB store."""
        return self.workdir / "cart_etl.duckdb"

    @property
    def report(self) -> Path:
        """report.html, .md, .json and figures."""
        return self.workdir / "report"


class DemoObserver(Protocol):
    """What the demo tells as it goes (the CLI prints it)."""

    def synthesising(self, patients: int) -> AbstractContextManager[Callable[[int], None]]:
        """Context around the synth step; yields the per-patient progress callback."""
        ...

    def synthesised(self, summary: SynthSummary) -> None:
        """The cohort is written."""

    def validated(self, summary: dict[str, Any], html: Path) -> None:
        """The site export is validated (``summary`` of validation.json, its HTML page)."""

    def loaded(self, result: RunResult) -> None:
        """`cart-etl run` finished (succeeded or failed)."""

    def grouped(self, groups: pd.DataFrame) -> None:
        """The per-group summary of the analysed patients."""

    def reported(self, report: Report, paths: ReportPaths) -> None:
        """The report is written."""


class SilentObserver:
    """A ``DemoObserver`` that tells nothing."""

    def synthesising(self, patients: int) -> AbstractContextManager[Callable[[int], None]]:
        """No progress display."""
        return nullcontext(lambda _done: None)

    def synthesised(self, summary: SynthSummary) -> None:
        """Nothing to tell."""

    def validated(self, summary: dict[str, Any], html: Path) -> None:
        """Nothing to tell."""

    def loaded(self, result: RunResult) -> None:
        """Nothing to tell."""

    def grouped(self, groups: pd.DataFrame) -> None:
        """Nothing to tell."""

    def reported(self, report: Report, paths: ReportPaths) -> None:
        """Nothing to tell."""


@dataclass
class DemoResult:
    """Everything the demo produced; ``report`` is None when the load failed."""

    paths: DemoPaths
    synth: SynthSummary
    validation: dict[str, Any]
    run: RunResult
    groups: pd.DataFrame | None = None
    report: Report | None = None
    report_paths: ReportPaths | None = None

    @property
    def exit_code(self) -> int:
        """The run's exit code (0 when the store was loaded)."""
        return self.run.exit_code


def store_groups(store: Path) -> pd.DataFrame:
    """``analyze.groups.group_summary`` of a store file, opened read-only."""
    con = connect(store, read_only=True)
    try:
        return group_summary(con)
    finally:
        con.close()


def run_demo(
    workdir: Path, observer: DemoObserver | None = None, *, summarise_groups: bool = True
) -> DemoResult:
    """synth -> validate -> run -> group summary -> report under ``workdir``.

    Args:
        workdir: the folder of every output (see ``DemoPaths``).
        observer: told of each step as it ends.
        summarise_groups: compute the per-group summary (the quiet CLI does not show it).
    """
    obs = observer or SilentObserver()
    paths = DemoPaths(workdir)
    with obs.synthesising(REFERENCE_PATIENTS) as on_patient:
        synth = generate(paths.cohort, on_patient=on_patient)
    obs.synthesised(synth)
    _, validation = validate_site(paths.site_export, SITE, expectations=True)
    html_path, _ = write_report(validation, paths.validation)
    summary = validation.to_json()["summary"]
    obs.validated(summary, html_path)
    loaded = run(Source(str(paths.site_export), SITE), paths.store, force=True)
    obs.loaded(loaded)
    result = DemoResult(paths, synth, summary, loaded)
    if summarise_groups:
        result.groups = store_groups(paths.store)
        obs.grouped(result.groups)
    if loaded.exit_code:
        return result
    result.report, result.report_paths = report_store(paths.store, paths.report)
    obs.reported(result.report, result.report_paths)
    return result
