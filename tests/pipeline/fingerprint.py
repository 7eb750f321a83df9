"""Content hashes of every mart and OMOP table of a store (order-independent, zone-fixed).

Used by ``test_output_fingerprint.py`` to prove that a restructuring changes no output:
the hashes of the reference cohort's store are checked in under ``tests/snapshots``.
Refresh them only for an intended change of output: ``python -m tests.pipeline.fingerprint``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import duckdb

SNAPSHOT = (
    Path(__file__).resolve().parents[1] / "snapshots" / "pipeline" / "output_fingerprint.json"
)
# Columns that legitimately change from one run to the next (the day the store was built).
VOLATILE = {
    "omop.cdm_source": ("cdm_release_date", "source_release_date"),
    "etl.quarantine": ("run_id",),
    "etl.warnings": ("run_id",),
}


def table_hashes(store: Path) -> dict[str, str]:
    """sha256 over the sorted text of every row of every mart, OMOP and case table."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        tables = [
            f"{s}.{t}"
            for s, t in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() "
                "WHERE schema_name IN ('marts', 'omop') "
                "OR (schema_name = 'etl' AND table_name IN ('quarantine', 'warnings')) "
                "ORDER BY 1, 2"
            ).fetchall()
        ]
        out: dict[str, str] = {}
        for table in tables:
            cols = [
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE schema_name || '.' || "
                    "table_name = ? ORDER BY column_index",
                    [table],
                ).fetchall()
                if c not in VOLATILE.get(table, ())
            ]
            select = ", ".join(f'"{c}"' for c in cols)
            rows = con.execute(
                f"SELECT CAST(ROW({select}) AS VARCHAR) AS r FROM {table} ORDER BY r"
            ).fetchall()
            digest = hashlib.sha256("|".join(cols).encode())
            for (r,) in rows:
                digest.update(r.encode() + b"\n")
            out[table] = f"{len(rows)}:{digest.hexdigest()}"
        return out
    finally:
        con.close()


def build() -> dict[str, dict[str, str]]:
    """Generate the reference cohort, load it from the site export and from FHIR, hash both."""
    from cart_etl.pipeline import Source, run
    from cart_etl.synth.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        generate(cohort)
        site = run(Source(str(cohort / "site_export"), "tianjin_ref"), Path(tmp) / "site.duckdb")
        fhir = run(Source(str(cohort / "fhir" / "ndjson"), fhir=True), Path(tmp) / "fhir.duckdb")
        return {"site": table_hashes(site.store), "fhir": table_hashes(fhir.store)}


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {SNAPSHOT}\n")
