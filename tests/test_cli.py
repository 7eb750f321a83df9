"""The cart-etl command line: help, synth, init-store and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cart_etl.cli import app

runner = CliRunner()


def test_01_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "demo", "init-store"):
        assert command in result.output


def test_02_synth_small_registry_quiet(tmp_path: Path):
    result = runner.invoke(
        app, ["synth", "--out", str(tmp_path / "o"), "--patients", "3", "--no-fhir", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "truth" / "patients.csv").read_text().count("\n") == 4
    assert not (tmp_path / "o" / "fhir").exists()


def test_03_init_store(tmp_path: Path):
    result = runner.invoke(app, ["init-store", "--store", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 0 and "store ready" in result.output


def test_04_error_is_one_line_not_a_traceback(tmp_path: Path):
    bad = tmp_path / "bad.duckdb"
    bad.write_text("not a database")
    proc = subprocess.run(
        [sys.executable, "-m", "cart_etl", "init-store", "--store", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert "Fix:" in proc.stderr


def test_05_invalid_patients_is_a_usage_error(tmp_path: Path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--patients", "0"])
    assert result.exit_code == 2


def test_06_site_folder_and_fhir_profile_options(tmp_path: Path):
    """--site takes a folder outside the repository; a missing --fhir-profile is exit 2."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    folder = tmp_path / "st_marys"
    folder.mkdir()
    shutil.copy(repo / "mappings" / "sites" / "example_wide_en.yaml", folder / "site.yaml")
    export = repo / "tests" / "cases" / "site_london_infusion_before_midnight"
    store = tmp_path / "s.duckdb"
    runner = CliRunner()
    ran = runner.invoke(
        app, ["run", "--source", str(export), "--site", str(folder), "--store", str(store), "-q"]
    )
    assert ran.exit_code == 0, ran.output
    missing = runner.invoke(
        app,
        ["validate", "--fhir", str(export), "--fhir-profile", str(tmp_path / "nope"), "-q"],
    )
    assert missing.exit_code == 2
    assert "FHIR profile folder" in missing.output and "Traceback" not in missing.output


def _fake_run(status: str, failures: list[str]):
    from cart_etl.pipeline import RunResult

    def fake(src, store, **_kw):
        return RunResult("f" * 32, status, store, failures=failures)

    return fake


def test_07_quiet_failing_run_still_prints_one_line_with_the_failures(tmp_path, monkeypatch):
    import cart_etl.pipeline as pipeline

    failure = "patient: followup_non_negative (1 rows)"
    monkeypatch.setattr(pipeline, "run", _fake_run("failed", [failure]))
    args = ["run", "--source", str(tmp_path), "--site", "x", "--store", str(tmp_path / "s")]
    quiet = CliRunner().invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 1
    assert len(quiet.output.strip().splitlines()) == 1 and failure in quiet.output
    monkeypatch.setattr(pipeline, "run", _fake_run("succeeded", []))
    ok = CliRunner().invoke(app, [*args, "--quiet"])
    assert ok.exit_code == 0 and ok.output == ""


def test_08_quiet_error_line_is_printed(tmp_path):
    bad = tmp_path / "export.csv"
    bad.write_text("a,b\n1,2\n")
    args = ["run", "--source", str(tmp_path), "--site", "tianjin_ref", "--store", str(bad)]
    proc = subprocess.run(
        [sys.executable, "-m", "cart_etl", *args, "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr
    assert bad.read_text() == "a,b\n1,2\n"


def test_09_a_rust_panic_is_a_one_line_internal_error(tmp_path, monkeypatch):
    import cart_etl.pipeline as pipeline

    class PanicException(BaseException):  # what pyo3 raises for a polars panic
        pass

    def panic(*_a, **_kw):
        raise PanicException("called `Option::unwrap()` on a `None` value\nmore lines")

    monkeypatch.setattr(pipeline, "run", panic)
    monkeypatch.delenv("CART_ETL_DEBUG", raising=False)
    result = CliRunner().invoke(
        app, ["run", "--source", str(tmp_path), "--site", "x", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 3
    assert "internal error: PanicException" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not isinstance(result.exception, PanicException)


def test_10_run_refuses_a_short_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("CART_ETL_SECRET", "abc")
    result = CliRunner().invoke(
        app, ["run", "--source", str(tmp_path), "--site", "x", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 2 and "too short" in result.output
    assert not (tmp_path / "s").exists()


def test_11_disk_full_outside_the_store_names_what_to_free(tmp_path, monkeypatch):
    import errno

    import cart_etl.pipeline as pipeline

    def full(*_a, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "spill.arrow"))

    monkeypatch.setattr(pipeline, "run", full)
    result = CliRunner().invoke(
        app, ["run", "--source", str(tmp_path), "--site", "x", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 2
    assert "disk is full" in result.output and f"filesystem of {tmp_path}" in result.output
