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
