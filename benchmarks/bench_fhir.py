"""Benchmark FHIR extraction on a `cart-etl synth` registry beside a bare DuckDB NDJSON parse.

Usage:
  python benchmarks/bench_fhir.py [--patients 10000] [--background-patients 0]
                                  [--workdir DIR] [--reuse] [--rows floor old-extract ...]

The registry is `cart-etl synth --patients P --background-patients B` (seed 2025, defects
on) under ``<workdir>/p<P>_b<B>``; ``--reuse`` skips the regeneration when that folder
already holds a finished one. Every row reads the same Bulk NDJSON folder
(``fhir/ndjson``) and runs in its own child process; wall seconds, resources/s (NDJSON
lines of the input / wall seconds) and peak RSS (``ru_maxrss`` of the child, via wait4)
are measured in this script run, and the last column is the wall time over the floor's.

Rows:
  * floor: DuckDB parsing the NDJSON (``read_ndjson_objects`` + a count per resourceType);
  * old-extract: ``cart_etl.extract.fhir.extract.extract_fhir(mode="fast")`` iterated to
    the end (the extractor as ``pipeline.extract`` called it); skipped with a note once the
    module is gone (its numbers are in benchmarks/results/fhir_old_extractor.md);
  * old-validate: ``cart-etl validate --fhir DIR`` (the full command, with GX);
  * old-run: ``cart-etl run --fhir DIR --store NEW --no-expectations``.
    The pipeline reads FHIR through the views since b79cfb0, so the two command rows only
    measure the old extractor with ``--old-rev REV`` (a commit before b79cfb0, e.g.
    ca1654a): its tree is exported with ``git archive`` and the three old rows run from it
    (PYTHONPATH=<tree>/src, its own mappings/). Without it they measure the checkout.

  * new-extract: ``cart_etl.stage.fhir_concepts.open_fhir(DIR)`` consumed to the end: load
    into DuckDB, cohort selection, the SQL-on-FHIR views and the concept recognition (what
    the old extractor did, and more).
  * new-validate / new-run: ``cart-etl validate --fhir`` / ``run --fhir`` of this checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROWS = (
    "synth",
    "floor",
    "old-extract",
    "old-validate",
    "old-run",
    "new-extract",
    "new-validate",
    "new-run",
)

FLOOR = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET preserve_insertion_order = false")
rows = con.execute(
    "SELECT json_extract_string(json, '$.resourceType') t, count(*) "
    f"FROM read_ndjson_objects('{sys.argv[1]}/*.ndjson') GROUP BY t ORDER BY t"
).fetchall()
print(sum(n for _, n in rows))
"""

OLD_EXTRACT = """
import sys
from pathlib import Path
from cart_etl.config import Settings
from cart_etl.extract.fhir.extract import extract_fhir, load_fhir_mapping
mapping = load_fhir_mapping(Settings().mappings_dir / "fhir" / "default.yaml")
stream = extract_fhir(Path(sys.argv[1]), mode="fast", mapping=mapping)
for _ in stream:
    pass
print(stream.report.resources)
"""

NEW_EXTRACT = """
import sys
from pathlib import Path
from cart_etl.config import Settings
from cart_etl.mappings import Mappings
from cart_etl.stage.fhir_concepts import open_fhir
stream = open_fhir(Path(sys.argv[1]), Mappings.open(Settings().mappings_dir))
for _ in stream:
    pass
print(stream.report.resources, stream.report.not_in_cohort)
"""


@dataclass
class Row:
    name: str
    seconds: float | None = None
    rss_mib: float | None = None
    note: str = ""


def timed_rss(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS (MiB; ru_maxrss of the child via wait4), exit code, stdout."""
    start = time.perf_counter()
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_fhir_{os.getpid()}.out"
    err_path = out_path.with_suffix(".err")
    with out_path.open("wb") as out_fh, err_path.open("wb") as err_fh:
        proc = subprocess.Popen(cmd, stdout=out_fh, stderr=err_fh, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    out = out_path.read_text(errors="replace")
    err = err_path.read_text(errors="replace")
    out_path.unlink()
    err_path.unlink()
    if proc.returncode not in (0, 1):
        sys.stderr.write(err[-4000:])
    return seconds, usage.ru_maxrss / 1024.0, proc.returncode, out


def count_resources(ndjson: Path) -> int:
    """NDJSON lines of every file of the folder (one resource per line)."""
    total = 0
    for path in sorted(ndjson.glob("*.ndjson")):
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                total += chunk.count(b"\n")
    return total


def registry(args: argparse.Namespace, rows: list[Row]) -> Path:
    out = Path(args.workdir) / f"p{args.patients}_b{args.background_patients}"
    manifest = out / "manifest.json"
    if args.reuse and manifest.exists():
        rows.append(Row("synth", note=f"reused {out}"))
        return out
    if out.exists():
        shutil.rmtree(out)
    cmd = [
        str(BIN / "cart-etl"),
        "synth",
        "--out",
        str(out),
        "--patients",
        str(args.patients),
        "--background-patients",
        str(args.background_patients),
        "--seed",
        str(args.seed),
        "--quiet",
    ]
    seconds, rss, code, _ = timed_rss(cmd)
    if code != 0:
        raise SystemExit(f"synth failed (exit {code})")
    # ru_maxrss of wait4 is the max over synth and its reaped FHIR worker process.
    rows.append(Row("synth", seconds, rss, "site export + FHIR bundles + NDJSON"))
    return out


def old_tree(rev: str, workdir: Path) -> Path:
    """The source tree of ``rev`` (git archive), exported once under ``workdir``."""
    tree = workdir / f"src-{rev}"
    if not (tree / "src" / "cart_etl").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev], check=True, stdout=subprocess.PIPE
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def measure(name: str, ndjson: Path, scratch: Path, old: Path | None) -> Row:
    py = sys.executable
    env = cwd = None
    if old is not None and name.startswith("old-"):
        env = {**os.environ, "PYTHONPATH": str(old / "src")}
        env.pop("CART_ETL_MAPPINGS", None)
        cwd = old
    if name == "floor":
        seconds, rss, code, _ = timed_rss([py, "-c", FLOOR, str(ndjson)])
        return Row(name, seconds, rss, "" if code == 0 else f"exit {code}")
    if name == "old-extract":
        where = old / "src" if old is not None else None
        found = (where / "cart_etl/extract/fhir/extract.py").exists() if where else None
        if found is None:
            found = importlib.util.find_spec("cart_etl.extract.fhir.extract") is not None
        if not found:
            return Row(name, note="skipped: cart_etl.extract.fhir.extract no longer exists")
        seconds, rss, code, _ = timed_rss([py, "-c", OLD_EXTRACT, str(ndjson)], cwd, env)
        return Row(name, seconds, rss, "fast mode" if code == 0 else f"exit {code}")
    if name == "old-validate":
        report = scratch / "validation_report"
        cmd = [str(BIN / "cart-etl"), "validate", "--fhir", str(ndjson), "--report", str(report)]
        seconds, rss, code, _ = timed_rss([*cmd, "--quiet"], cwd, env)
        return Row(name, seconds, rss, f"exit {code} (0 clean, 1 warnings/quarantine)")
    if name == "old-run":
        store = scratch / "bench_fhir.duckdb"
        for suffix in ("", ".wal"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        cmd = [str(BIN / "cart-etl"), "run", "--fhir", str(ndjson), "--store", str(store)]
        seconds, rss, code, _ = timed_rss([*cmd, "--no-expectations", "--quiet"], cwd, env)
        return Row(name, seconds, rss, f"exit {code}")
    if name == "new-extract":
        seconds, rss, code, _ = timed_rss([py, "-c", NEW_EXTRACT, str(ndjson)])
        return Row(name, seconds, rss, "open_fhir consumed" if code == 0 else f"exit {code}")
    if name == "new-validate":
        report = scratch / "validation_report_new"
        cmd = [str(BIN / "cart-etl"), "validate", "--fhir", str(ndjson), "--report", str(report)]
        seconds, rss, code, _ = timed_rss([*cmd, "--quiet", "--no-expectations"])
        return Row(name, seconds, rss, f"exit {code} (0 clean, 1 warnings/quarantine)")
    if name == "new-run":
        store = scratch / "bench_fhir_new.duckdb"
        for suffix in ("", ".wal"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        cmd = [str(BIN / "cart-etl"), "run", "--fhir", str(ndjson), "--store", str(store)]
        seconds, rss, code, _ = timed_rss([*cmd, "--no-expectations", "--quiet"])
        return Row(name, seconds, rss, f"exit {code}")
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--background-patients", type=int, default=0)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / "out" / "fhir"))
    parser.add_argument("--reuse", action="store_true", help="keep an existing registry")
    parser.add_argument(
        "--rows", nargs="+", choices=ROWS[1:], default=list(ROWS[1:]), help="rows to measure"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--old-rev", help="run the old-* rows from this commit's tree (before the views switch)"
    )
    args = parser.parse_args()
    rows: list[Row] = []
    out = registry(args, rows)
    ndjson = out / "fhir" / "ndjson"
    resources = count_resources(ndjson)
    scratch = Path(args.workdir) / "scratch" / out.name  # one per registry: runs can overlap
    scratch.mkdir(parents=True, exist_ok=True)
    old = old_tree(args.old_rev, Path(args.workdir)) if args.old_rev else None
    size = sum(p.stat().st_size for p in ndjson.glob("*.ndjson"))
    print(
        f"registry {out}: {args.patients} CAR-T + {args.background_patients} background "
        f"patients, {resources:,} resources, NDJSON {size / 1e9:.2f} GB, "
        f"{os.cpu_count()} cores; old rows from {args.old_rev or 'the checkout'}"
    )
    header = f"{'row':<13} {'seconds':>9} {'resources/s':>12} {'peak RSS MiB':>13} {'x floor':>8}"
    print(header)
    print("-" * len(header), flush=True)
    floor: list[float] = []

    def show(r: Row) -> None:
        if r.seconds is None:
            print(f"{r.name:<13} {'-':>9} {'-':>12} {'-':>13} {'-':>8}  {r.note}", flush=True)
            return
        if r.name == "floor":
            floor.append(r.seconds)
        ratio = f"{r.seconds / floor[0]:.1f}" if floor and r.name != "synth" else "-"
        print(
            f"{r.name:<13} {r.seconds:>9.1f} {resources / r.seconds:>12,.0f} "
            f"{r.rss_mib or 0:>13,.0f} {ratio:>8}  {r.note}",
            flush=True,
        )

    for r in rows:
        show(r)
    # The floor first: every other row is divided by it.
    for name in sorted(args.rows, key=lambda n: n != "floor"):
        row = measure(name, ndjson, scratch, old)
        rows.append(row)
        show(row)
    if args.json:
        payload = {
            "patients": args.patients,
            "background_patients": args.background_patients,
            "resources": resources,
            "ndjson_bytes": size,
            "old_rev": args.old_rev,
            "rows": [r.__dict__ for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
