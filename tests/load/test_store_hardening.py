"""The store refuses what would lose data: old/new layouts, non-DuckDB files, inputs, full disks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cart_etl.cli import app
from cart_etl.errors import StoreError, StoreLockedError, StoreVersionError
from cart_etl.load import duckdb_store as store

runner = CliRunner()

OLD_RUNS = """
    CREATE TABLE etl.runs (
        run_id VARCHAR PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ,
        command VARCHAR NOT NULL, row_counts JSON, status VARCHAR NOT NULL, message VARCHAR
    )
"""


def _old_store(path: Path) -> Path:
    """A store as an early cart_etl wrote it: no etl.store_info, etl.runs w/o input_checksums."""
    with duckdb.connect(str(path)) as con:
        for schema in store.SCHEMAS:
            con.execute(f"CREATE SCHEMA {schema}")
        con.execute(OLD_RUNS)
        con.execute(
            "INSERT INTO etl.runs VALUES ('r0', now(), now(), 'run old', '{}', 'succeeded', NULL)"
        )
        con.execute("CREATE TABLE marts.patient AS SELECT 'P01' AS study_id")
    return path


def test_01_new_store_records_its_layout_version(tmp_path: Path):
    with store.connect(tmp_path / "s.duckdb") as con:
        assert store.store_schema_version(con) == store.STORE_SCHEMA_VERSION
        row = con.execute("SELECT created_by_version FROM etl.store_info").fetchone()
        assert row is not None and row[0]


def test_02_old_store_is_migrated_on_open_and_keeps_its_data(tmp_path: Path):
    path = _old_store(tmp_path / "old.duckdb")
    with store.connect(path) as con:
        assert store.store_schema_version(con) == store.STORE_SCHEMA_VERSION
        run = store.start_run(con, "run new", {"a.csv": "abc"})  # needs input_checksums
        store.finish_run(con, run, status="succeeded")
        assert con.execute("SELECT count(*) FROM etl.runs").fetchone() == (2,)
        assert con.execute("SELECT study_id FROM marts.patient").fetchall() == [("P01",)]


def test_03_reader_of_an_old_store_is_told_to_upgrade_it(tmp_path: Path):
    path = _old_store(tmp_path / "old.duckdb")
    with pytest.raises(StoreVersionError) as info:
        store.connect(path, read_only=True)
    text = str(info.value)
    assert "version 0" in text and f"version {store.STORE_SCHEMA_VERSION}" in text
    assert "cart-etl init-store" in text


def test_04_store_of_a_newer_version_is_refused(tmp_path: Path):
    path = tmp_path / "new.duckdb"
    store.connect(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE etl.store_info SET schema_version = 99")
    for read_only in (False, True):
        with pytest.raises(StoreVersionError, match="version 99.*newer cart_etl"):
            store.connect(path, read_only=read_only)


def test_05_init_store_upgrades_and_says_what_it_did(tmp_path: Path):
    path = _old_store(tmp_path / "old.duckdb")
    result = runner.invoke(app, ["init-store", "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert "upgraded layout version 0 to" in result.output
    assert "added column etl.runs.input_checksums" in result.output
    again = runner.invoke(app, ["init-store", "--store", str(path)])
    assert again.exit_code == 0 and "already up to date" in again.output
    fresh = runner.invoke(app, ["init-store", "--store", str(tmp_path / "fresh.duckdb")])
    assert fresh.exit_code == 0 and "created the store" in fresh.output


@pytest.mark.parametrize("content", [b"study_id,mrn\nP01,2021004817\n", b"", b"SQLite format 3\0"])
def test_06_existing_non_duckdb_file_is_refused_and_untouched(tmp_path: Path, content: bytes):
    bad = tmp_path / "patients.csv"
    bad.write_bytes(content)
    with pytest.raises(StoreError, match="not a DuckDB database|empty file"):
        store.connect(bad)
    assert bad.read_bytes() == content
    result = runner.invoke(app, ["init-store", "--store", str(bad)])
    assert result.exit_code == 2


def test_07_store_inside_or_equal_to_an_input_is_refused(tmp_path: Path):
    export = tmp_path / "site_export"
    export.mkdir()
    with pytest.raises(StoreError, match="inside the input"):
        store.connect(export / "s.duckdb", inputs=[export])
    (export / "a.csv").write_text("x\n")
    with pytest.raises(StoreError, match="the input"):
        store.check_store_path(export / "a.csv", inputs=[export / "a.csv"])
    with pytest.raises(StoreError, match="inside the input"):
        store.check_store_path(tmp_path / "s.duckdb", inputs=[f"sqlite:///{tmp_path}"])
    assert not (export / "s.duckdb").exists()


def test_08_missing_parent_is_created_a_file_parent_is_a_clear_error(tmp_path: Path):
    store.connect(tmp_path / "new" / "deeper" / "s.duckdb").close()
    assert (tmp_path / "new" / "deeper" / "s.duckdb").is_file()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(StoreError) as info:
        store.connect(blocker / "sub" / "s.duckdb")
    assert f"{blocker} is a file, not a folder" in str(info.value) and info.value.fix
    with pytest.raises(StoreError, match="is a folder"):
        store.connect(tmp_path)


def test_09_reader_during_a_write_is_told_what_to_do(tmp_path: Path):
    path = tmp_path / "s.duckdb"
    store.connect(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError) as info:
            store.connect(path, read_only=True)
        result = runner.invoke(app, ["report", "--store", str(path), "--out", str(tmp_path)])
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert "in use by another process" in str(info.value)
    assert "wait for the running `cart-etl run`" in str(info.value) and "copy" in str(info.value)
    assert result.exit_code == 2


def test_10_disk_full_detection():
    assert store.is_disk_full(OSError(28, "No space left on device"))
    assert store.is_disk_full(duckdb.IOException('Could not write file "x": File too large'))
    assert not store.is_disk_full(duckdb.IOException("Could not set lock on file"))


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4-patient registry loaded once: (export folder, store)."""
    from cart_etl.pipeline import Source, run
    from cart_etl.synth.generate import generate

    base = tmp_path_factory.mktemp("full_disk")
    generate(base / "cohort", patients=4, seed=7, fhir=False)
    path = base / "s.duckdb"
    result = run(Source(str(base / "cohort" / "site_export"), "tianjin_ref"), path)
    assert result.status == "succeeded"
    return base / "cohort" / "site_export", path


def _tables(path: Path) -> dict[str, object]:
    with duckdb.connect(str(path), read_only=True) as con:
        names = [
            t
            for (t,) in con.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_schema IN ('staging', 'omop', 'marts') ORDER BY 1"
            ).fetchall()
        ]
        return {
            t: con.execute(f"SELECT count(*), sum(hash(x)) FROM {t} x").fetchone() for t in names
        }


@pytest.mark.parametrize("headroom", [0, 200_000])
def test_11_disk_full_during_the_run_is_one_line_and_recorded(
    small_store: tuple[Path, Path], tmp_path: Path, headroom: int
):
    """RLIMIT_FSIZE (SIGXFSZ ignored) makes every write past the limit fail with EFBIG."""
    export, loaded = small_store
    path = tmp_path / "s.duckdb"
    path.write_bytes(loaded.read_bytes())
    before = _tables(path)
    limit = path.stat().st_size + headroom if headroom else 64 * 1024
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        from cart_etl.cli import app
        sys.argv = ["cart-etl", "run", "--source", {str(export)!r}, "--site", "tianjin_ref",
                    "--store", {str(path)!r}, "--force", "--quiet"]
        app()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.splitlines()) == 1, err
    assert "disk filled up" in err and "free disk space" in err
    with duckdb.connect(str(path), read_only=True) as con:
        last = con.execute(
            "SELECT status, message FROM etl.runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    assert last is not None
    if "the load is in the store" in err:  # the checkpoint after the commit failed: kept
        assert last[0] == "succeeded"
        return
    assert _tables(path) == before
    if "is recorded in etl.runs" in err:
        assert last[0] == "failed" and "disk full" in last[1]
    else:
        assert "could not be recorded" in err
