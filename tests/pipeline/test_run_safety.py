"""A run is one transaction: killed runs leave the previous store, re-runs are idempotent,
a second writer is refused with a clear message."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from cart_etl.pipeline import Source, run

TABLES_SQL = (
    "SELECT table_schema || '.' || table_name FROM information_schema.tables "
    "WHERE table_schema IN ('omop', 'marts', 'staging') ORDER BY 1"
)


def snapshot(store: Path) -> dict[str, tuple[int, object]]:
    """Row count and an order-independent content hash of every data table."""
    with duckdb.connect(str(store), read_only=True) as con:
        tables = [t for (t,) in con.sql(TABLES_SQL).fetchall()]
        return {
            t: con.execute(f"SELECT count(*), sum(hash(x)) FROM (SELECT * FROM {t}) x").fetchall()[
                0
            ]
            for t in tables
        }


@pytest.fixture
def loaded_store(site_run, tmp_path) -> Path:
    store = tmp_path / "copy.duckdb"
    shutil.copy(site_run.store, store)
    return store


def test_rerun_on_unchanged_input_is_skipped_and_identical(loaded_store, cohort):
    before = snapshot(loaded_store)
    started = time.perf_counter()
    again = run(Source(str(cohort / "site_export"), "tianjin_ref"), loaded_store)
    assert again.status == "skipped"
    assert time.perf_counter() - started < 5
    assert snapshot(loaded_store) == before


def test_forced_rerun_gives_identical_tables(loaded_store, cohort):
    before = snapshot(loaded_store)
    again = run(Source(str(cohort / "site_export"), "tianjin_ref"), loaded_store, force=True)
    assert again.status == "succeeded"
    assert snapshot(loaded_store) == before


def test_killed_run_leaves_previous_store_intact(loaded_store, cohort):
    before = snapshot(loaded_store)
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from cart_etl.pipeline import Source, run

        def stage(msg):
            print(msg, flush=True)
            if msg == "omop":  # marts already rebuilt inside the open transaction
                time.sleep(120)

        run(Source({str(cohort / "site_export")!r}, "tianjin_ref"), Path({str(loaded_store)!r}),
            force=True, on_stage=stage)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "omop":
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert snapshot(loaded_store) == before
    with duckdb.connect(str(loaded_store), read_only=True) as con:
        statuses = [s for (s,) in con.sql("SELECT status FROM etl.runs").fetchall()]
    assert "running" not in statuses


def test_second_writer_is_refused_with_a_clear_message(loaded_store, cohort):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(loaded_store)!r}); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        cli = Path(sys.executable).with_name("cart-etl")
        out = subprocess.run(
            [
                str(cli),
                "run",
                "--source",
                str(cohort / "site_export"),
                "--site",
                "tianjin_ref",
                "--store",
                str(loaded_store),
                "--force",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert out.returncode == 2
    assert "in use by another process" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_failed_invariant_rolls_back_and_is_recorded(loaded_store, cohort, monkeypatch):
    """A post-load check failure fails the run (exit 1), keeps the previous data, logs why."""
    from cart_etl.load import marts

    before = snapshot(loaded_store)
    broken = (("test.always_fails", "a check that cannot hold", "SELECT 1"),)
    monkeypatch.setattr(marts, "INVARIANTS", marts.INVARIANTS + broken)
    result = run(Source(str(cohort / "site_export"), "tianjin_ref"), loaded_store, force=True)
    assert result.status == "failed"
    assert result.exit_code == 1
    assert any("test.always_fails" in f for f in result.failures)
    assert snapshot(loaded_store) == before
    with duckdb.connect(str(loaded_store), read_only=True) as con:
        status, message = con.execute(
            "SELECT status, message FROM etl.runs ORDER BY started_at DESC LIMIT 1"
        ).fetchall()[0]
    assert status == "failed"
    assert "test.always_fails" in message


def test_run_cli_needs_exactly_one_input(tmp_path):
    cli = Path(sys.executable).with_name("cart-etl")
    out = subprocess.run(
        [str(cli), "run", "--store", str(tmp_path / "x.duckdb")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "--source DIR --site NAME, --fhir DIR or --flat DIR" in out.stderr
    assert "Traceback" not in out.stderr
