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
