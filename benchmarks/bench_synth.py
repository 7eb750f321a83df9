"""Benchmark `cart-etl synth` at registry scale: wall time, peak RSS, rows and disk per size.

Usage: python benchmarks/bench_synth.py [--sizes 1000 10000] [--no-fhir-only] [--keep]
Targets (issue #3): 10 000 patients in < 3 min on 2 cores, memory flat in N.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(patients: int, fhir: bool, out: Path) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "cart_etl",
        "synth",
        "--out",
        str(out),
        "--patients",
        str(patients),
        "--quiet",
    ]
    if not fhir:
        cmd.append("--no-fhir")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    elapsed = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    manifest = json.loads((out / "manifest.json").read_text())
    rows = sum(manifest["site_export_rows"].values())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "seconds": elapsed,
        "peak_rss_mb": max(peak_kb, before) / 1024,
        "site_rows": rows,
        "rows_per_s": rows / elapsed,
        "disk_gb": size / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--no-fhir-only", action="store_true", help="skip the runs with FHIR output"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cart_etl_bench_"))
    header = ("patients", "fhir", "seconds", "peak RSS MB", "site rows", "rows/s", "disk GB")
    widths = (9, 5, 8, 12, 11, 9, 8)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for n in args.sizes:
        for fhir in [False] if args.no_fhir_only else [False, True]:
            out = root / f"n{n}_{'fhir' if fhir else 'site'}"
            r = run_once(n, fhir, out)
            fhir_text = "yes" if fhir else "no"
            print(
                f"{n:>9} {fhir_text:>5} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} "
                f"{r['site_rows']:>11,} {r['rows_per_s']:>9,.0f} {r['disk_gb']:>8.2f}",
                flush=True,
            )
            if not args.keep:
                shutil.rmtree(out)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"outputs kept under {root}")


if __name__ == "__main__":
    main()
