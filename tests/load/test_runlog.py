"""load/runlog.py: what a run reads back from the store."""

from __future__ import annotations

from cart_etl.load import duckdb_store as store
from cart_etl.load import runlog


def test_01_a_new_store_has_no_success_no_counts_no_consort(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    try:
        assert runlog.last_success(con, "abc") is None
        assert runlog.row_counts(con) == {}
        assert runlog.consort(con) == []
    finally:
        con.close()


def test_02_last_success_matches_only_the_latest_succeeded_fingerprint(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    try:
        first = store.start_run(con, "run a", {"_fingerprint": "f1"})
        store.finish_run(con, first, status="succeeded")
        assert runlog.last_success(con, "f1") == first.run_id
        failed = store.start_run(con, "run b", {"_fingerprint": "f2"})
        store.finish_run(con, failed, status="failed")
        assert runlog.last_success(con, "f2") is None  # a failed run is never "unchanged"
        assert runlog.last_success(con, "f1") == first.run_id
    finally:
        con.close()
