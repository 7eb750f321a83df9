"""Time the SQL-on-FHIR ViewDefinitions of ``mappings/fhir/views`` over a Bulk NDJSON folder.

Usage:
  python benchmarks/bench_views.py --fhir DIR [--views DIR] [--mode run|materialize|many]
                                   [--only NAME ...] [--repeat N] [--threads N]

Steps, all in this process and one in-memory DuckDB connection:

* floor: DuckDB parsing the same NDJSON (``read_ndjson_objects`` + a count per
  resourceType), the lower bound of any JSON work on this input;
* load: ``cart_etl.extract.fhir.resources.load_resources`` (transaction + collection
  Bundles), reported but not part of the views' total;
* one row per view: ``run_view(con, view, source="resources", references="refs")`` to a
  pyarrow Table (``--mode run``, default) or ``materialize_view`` into a DuckDB table
  (``--mode materialize``); rows, wall seconds (best of ``--repeat``) and resources/s
  (resources of the view's resource type / seconds);
* ``--mode many``: one ``materialize_views`` call for all views (each resource type's
  JSON parsed once), so one TOTAL row (best of ``--repeat``) and the rows per view.

The last lines are the views' total, the floor and their ratio (target: <= 3), and the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from cart_etl.extract.fhir.resources import load_resources  # noqa: E402
from cart_etl.extract.fhir.sof import run_view  # noqa: E402


def floor_seconds(con: duckdb.DuckDBPyConnection, folder: Path) -> tuple[float, int]:
    pattern = str(folder / "*.ndjson").replace("'", "''")
    t0 = time.perf_counter()
    rows = con.execute(
        "SELECT json_extract_string(json, '$.resourceType') t, count(*) "
        f"FROM read_ndjson_objects('{pattern}') GROUP BY t"
    ).fetchall()
    return time.perf_counter() - t0, sum(n for _, n in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fhir", type=Path, required=True, help="folder of Bulk NDJSON files")
    ap.add_argument("--views", type=Path, default=REPO / "mappings" / "fhir" / "views")
    ap.add_argument("--mode", choices=("run", "materialize", "many"), default="run")
    ap.add_argument("--only", nargs="*", default=None, help="view names to run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per view (best is kept)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sql", action="store_true", help="print each compiled SQL statement")
    args = ap.parse_args(argv)

    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {args.threads}")
    floor = min(floor_seconds(con, args.fhir)[0] for _ in range(max(args.repeat, 1)))
    _, n_lines = floor_seconds(con, args.fhir)

    t0 = time.perf_counter()
    load_resources(args.fhir, con, bundle_types=["transaction", "collection"])
    load = time.perf_counter() - t0
    counts = dict(
        con.execute("SELECT resource_type, count(*) FROM resources GROUP BY 1").fetchall()
    )
    n_res = sum(counts.values())

    materialize = None
    if args.mode == "materialize":
        from cart_etl.extract.fhir.sof import materialize_view  # type: ignore[attr-defined]

        materialize = materialize_view

    files = sorted(args.views.glob("*.json"))
    if args.only:
        files = [f for f in files if f.stem in set(args.only)]
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(
        f"input: {args.fhir} ({n_lines} NDJSON lines, {n_res} resource rows), "
        f"duckdb {duckdb.__version__}, threads {threads}, mode {args.mode}"
    )
    print(f"{'view':34} {'rows':>9} {'seconds':>9} {'resources/s':>13}")
    total = 0.0
    n_views = len(files)
    if args.mode == "many":
        from cart_etl.extract.fhir.sof import materialize_views

        views = {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in files}
        best, counts_out = float("inf"), {}
        for _ in range(max(args.repeat, 1)):
            t = time.perf_counter()
            counts_out = materialize_views(con, views, source="resources", references="refs")
            best = min(best, time.perf_counter() - t)
        for name, rows in counts_out.items():
            print(f"{name:34} {rows:>9} {'':>9}")
        total = best
        n_views = len(files)
        files = []
    for path in files:
        view = json.loads(path.read_text(encoding="utf-8"))
        if args.sql:
            from cart_etl.extract.fhir.sof import compile_view

            print(
                compile_view(
                    view,
                    source="resources",
                    references="refs",
                    key_column=True,
                    reference_types=True,
                )
            )
        best, rows = float("inf"), 0
        for _ in range(max(args.repeat, 1)):
            t = time.perf_counter()
            if materialize is not None:
                materialize(con, view, f"v_{path.stem}", source="resources", references="refs")
                rows = con.execute(f'SELECT count(*) FROM "v_{path.stem}"').fetchone()[0]
            else:
                rows = run_view(con, view, source="resources", references="refs").num_rows
            best = min(best, time.perf_counter() - t)
        total += best
        n = counts.get(view["resource"], 0)
        print(f"{path.stem:34} {rows:>9} {best:>9.3f} {n / best if best else 0:>13,.0f}")
    print(
        f"{'TOTAL (' + str(n_views) + ' views)':34} {'':>9} {total:>9.3f} "
        f"{n_res / total if total else 0:>13,.0f}"
    )
    print(f"{'load_resources (not in total)':34} {'':>9} {load:>9.3f}")
    print(f"{'floor (read_ndjson_objects)':34} {'':>9} {floor:>9.3f} {n_lines / floor:>13,.0f}")
    print(f"ratio views/floor: {total / floor:.2f} (target <= 3)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
