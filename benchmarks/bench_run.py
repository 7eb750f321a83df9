"""Benchmark a full `cart-etl run` on the synthetic registry beside a bare DuckDB read_csv.

Usage:
  python benchmarks/bench_run.py [--patients 10000] [--out DIR] [--json FILE]

Issue #5 targets: full run <= 2x a bare DuckDB `read_csv` of the same files; peak RSS
<= 2 GB; a re-run on unchanged inputs <= 10 % of a full run.

Measured, each in its own subprocess (wall time; peak RSS = ru_maxrss of the child via wait4):
  * bare: DuckDB `read_csv` (all columns as VARCHAR) of every CSV of the site export, into
    a fresh DuckDB file (what "just load the files" costs; mar.xlsx is not CSV and is left
    out of the baseline, which favours the baseline);
  * run: `cart-etl run --source DIR --site tianjin_ref --store NEW.duckdb --no-expectations`
    (extract, validate, derive, stage, marts, OMOP, invariants; one transaction);
  * run + GX: the same with the post-load great-expectations suite;
  * re-run: the same command again on unchanged inputs (skipped by checksum).
The registry is `cart-etl synth --no-fhir` output (seed 2025, defects on), reused when DIR
already holds one with the right patient count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RSS_TARGET_MIB = 2048.0


def timed(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit code of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.stderr.write(proc.stderr.read().decode() if proc.stderr else "")
    if proc.stderr:
        proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024.0, code


BARE = """
import sys, duckdb
from pathlib import Path
src, db = Path(sys.argv[1]), sys.argv[2]
con = duckdb.connect(db)
for f in sorted(src.glob("*.csv")):
    # GB18030 needs an extension: read the register as latin-1 (same bytes, same work)
    enc = "latin-1" if f.name == "patients.csv" else "utf-8"
    con.execute(
        f"CREATE TABLE t_{f.stem} AS SELECT * FROM read_csv('{f}', all_varchar=true, "
        f"encoding='{enc}', ignore_errors=true)"
    )
con.close()
"""


def registry(out: Path, patients: int) -> Path:
    manifest = out / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text())["patients"] == patients:
        return out
    subprocess.run(
        [
            str(BIN / "cart-etl"),
            "synth",
            "--out",
            str(out),
            "--patients",
            str(patients),
            "--no-fhir",
            "--quiet",
        ],
        check=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=None, help="registry folder (reused if present)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cart_etl_bench_run_"))
    reg = registry(args.out or tmp / f"n{args.patients}", args.patients)
    src = reg / "site_export"
    rows = sum(json.loads((reg / "manifest.json").read_text())["site_export_rows"].values())
    cli = str(BIN / "cart-etl")
    store = tmp / "run.duckdb"
    results = {
        "bare DuckDB read_csv": timed(
            [sys.executable, "-c", BARE, str(src), str(tmp / "bare.duckdb")]
        ),
        "cart-etl run (no GX)": timed(
            [
                cli,
                "run",
                "--source",
                str(src),
                "--site",
                "tianjin_ref",
                "--store",
                str(store),
                "--no-expectations",
                "-q",
            ]
        ),
    }
    store2 = tmp / "run_gx.duckdb"
    results["cart-etl run (+ GX post-load)"] = timed(
        [cli, "run", "--source", str(src), "--site", "tianjin_ref", "--store", str(store2), "-q"]
    )
    results["re-run, unchanged inputs"] = timed(
        [cli, "run", "--source", str(src), "--site", "tianjin_ref", "--store", str(store2), "-q"]
    )
    bare = results["bare DuckDB read_csv"][0]
    full = results["cart-etl run (+ GX post-load)"][0]
    print(f"\n{args.patients:,} patients, {rows:,} site-export rows, {os.cpu_count()} cores\n")
    print(f"{'stage':34} {'seconds':>9} {'rows/s':>10} {'peak RSS MiB':>13} {'x bare':>7} exit")
    for name, (sec, rss, code) in results.items():
        print(f"{name:34} {sec:9.1f} {rows / sec:10,.0f} {rss:13.0f} {sec / bare:7.1f} {code}")
    peak = max(r[1] for r in results.values())
    print(
        f"\ntargets: run <= 2x bare -> {full / bare:.1f}x "
        f"({'met' if full <= 2 * bare else 'NOT met'}); peak RSS <= {RSS_TARGET_MIB:.0f} MiB -> "
        f"{peak:.0f} ({'met' if peak <= RSS_TARGET_MIB else 'NOT met'}); re-run <= 10 % -> "
        f"{100 * results['re-run, unchanged inputs'][0] / full:.1f} %"
    )
    if args.json:
        args.json.write_text(json.dumps({k: list(v) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
