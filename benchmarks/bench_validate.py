"""Benchmark extraction + validation of a synthetic registry, and FHIR NDJSON beside fhiry.

Usage:
  python benchmarks/bench_validate.py [--patients 10000] [--sizes 1000 10000]
         [--fhir-patients N] [--out DIR] [--keep] [--skip-fhir] [--skip-fhiry]
         [--fhiry-resources 20000] [--rss-cap-gb 8] [--json FILE]

Issue #4 targets: FHIR fast mode >= 5x fhiry and strict mode >= 1x fhiry (resources/s on
the same NDJSON files); peak RSS <= 2 GB (checked as 2 GiB = 2048 MiB per measured process).

What is measured (each in its own subprocess; peak RSS = ru_maxrss of that child, via wait4):
  * site export: extract_site_export + collect ("extract"), and the same followed by
    validate_raw ("extract + validate", what `validate_site(..., expectations=False)` does),
    in rows/s of the raw export (every input row ends accepted or quarantined);
  * FHIR NDJSON (DIR/fhir/ndjson): extract_fhir in fast and strict mode over all files,
    in resources/s (resources = NDJSON lines);
  * fhiry (installed with pip into its own venv, benchmarks/.venv-fhiry): Fhirndjson over
    the NDJSON files. fhiry turns every line into a one-row pandas DataFrame (~200 lines/s here),
    so by default it reads a proportional head sample of the same files (the first
    --fhiry-resources lines, spread over the files in proportion to their line counts);
    cart_etl fast and strict are timed again on that identical sample and the ratios use
    those numbers. --fhiry-resources 0 gives fhiry the full files (hours at 1000 patients).
  Rates use the timed section inside the child (after imports); wall time includes startup.

Registries: `cart-etl synth` output with seed 2025 and defects. With --out DIR, DIR itself
is reused when DIR/manifest.json has the right patient count (and FHIR when needed), else
DIR/n<N>[_fhir] is reused or generated there and kept. Without --out they are generated
under a temporary folder in /tmp and deleted at the end unless --keep. A FHIR registry
takes ~1.9 MB of disk per patient (bundles + NDJSON; ~19 GB at 10 000): when the disk has
too little room, the FHIR part falls back to a smaller registry and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORKER = BENCH_DIR / "_validate_worker.py"
DEFAULT_FHIRY_VENV = BENCH_DIR / ".venv-fhiry"

RSS_TARGET_MIB = 2048.0
FAST_TARGET = 5.0
STRICT_TARGET = 1.0
# Disk per patient written by `cart-etl synth` (measured at 1000 patients: 1.8 GB FHIR
# bundles + NDJSON, 65 MB site export); rounded up.
FHIR_BYTES_PER_PATIENT = 1.95e6
SITE_BYTES_PER_PATIENT = 0.1e6
DISK_MARGIN_BYTES = 3e9
FHIR_FALLBACKS = (1000, 300, 100)


# --- measurement ---------------------------------------------------------------------------


@dataclass
class Measurement:
    label: str
    patients: int | None
    unit: str
    wall: float = 0.0
    peak_rss_mib: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    units_override: int | None = None  # denominator fixed by the parent (NDJSON lines)
    targets: list[tuple[str, str]] = field(default_factory=list)  # (target, PASS/FAIL/n/a)

    @property
    def units(self) -> int | None:
        if self.units_override is not None:
            return self.units_override
        return None if self.result is None else int(self.result["units"])

    @property
    def seconds(self) -> float | None:
        return None if self.result is None else float(self.result["seconds"])

    @property
    def rate(self) -> float | None:
        if self.units is None or not self.seconds:
            return None
        return self.units / self.seconds


def _rss_mib(pid: int) -> float:
    """Current resident set of a process (MiB), 0 when it is gone."""
    try:
        with Path(f"/proc/{pid}/status").open() as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measurement(
    m: Measurement,
    python: Path,
    kind: str,
    source: Path,
    logs: Path,
    *,
    cap_mib: float,
    env: dict[str, str] | None = None,
) -> Measurement:
    """Run one worker in a subprocess; fill wall time, peak RSS (wait4) and its JSON result."""
    logs.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}_{m.patients}_{source.parent.name}"
    result_path = logs / f"{stem}.json"
    log_path = logs / f"{stem}.log"
    result_path.unlink(missing_ok=True)
    print(f"  running {m.label} ({m.patients} patients) ...", end=" ", flush=True)
    killed = threading.Event()
    start = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(python), str(WORKER), kind, str(source), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )

        def watch() -> None:  # keep the machine usable: stop a child above the cap
            while proc.returncode is None and not killed.is_set():
                if _rss_mib(proc.pid) > cap_mib:
                    killed.set()
                    proc.kill()
                    return
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    m.wall = time.perf_counter() - start
    m.peak_rss_mib = usage.ru_maxrss / 1024  # Linux: KiB
    if killed.is_set():
        m.error = f"killed: RSS above the {cap_mib / 1024:g} GiB cap (--rss-cap-gb)"
    elif proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        m.error = f"exit {proc.returncode}: " + " | ".join(t.strip() for t in tail)
    else:
        m.result = json.loads(result_path.read_text())
    if m.error:
        print(f"FAILED ({m.error}; log: {log_path})", flush=True)
    else:
        print(
            f"{m.seconds:.1f} s, {m.rate or 0:,.0f} {m.unit}/s, peak RSS {m.peak_rss_mib:,.0f} MiB",
            flush=True,
        )
    return m


# --- registries ----------------------------------------------------------------------------


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        man = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) else None


def _matches(folder: Path, patients: int, fhir: bool) -> bool:
    man = _manifest(folder)
    if man is None or man.get("patients") != patients:
        return False
    return not fhir or (bool(man.get("fhir")) and (folder / "fhir" / "ndjson").is_dir())


def find_or_generate(
    root: Path, out: Path | None, patients: int, *, need_fhir: bool, write_fhir: bool
) -> Path:
    """A registry with `patients` patients (with FHIR if needed): reuse one, else synthesise it.

    ``write_fhir``: when it has to be generated, also write FHIR (so the FHIR part reuses it).
    """
    candidates = [out] if out is not None else []
    candidates += [root / f"n{patients}_fhir", root / f"n{patients}"]
    for folder in candidates:
        if _matches(folder, patients, need_fhir):
            print(f"reusing registry {folder} ({patients} patients, FHIR={_has_fhir(folder)})")
            return folder
    fhir = need_fhir or write_fhir
    target = root / (f"n{patients}_fhir" if fhir else f"n{patients}")
    if target.exists():  # an interrupted run of ours: start again
        shutil.rmtree(target)
    cmd = [sys.executable, "-m", "cart_etl", "synth", "--out", str(target)]
    cmd += ["--patients", str(patients), "--quiet"] + ([] if fhir else ["--no-fhir"])
    print(f"generating {patients}-patient registry (FHIR={fhir}) in {target} ...", end=" ")
    sys.stdout.flush()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    print(f"{time.perf_counter() - start:.0f} s", flush=True)
    return target


def _has_fhir(folder: Path) -> bool:
    man = _manifest(folder) or {}
    return bool(man.get("fhir"))


def plan_fhir_patients(requested: int, root: Path, already_there: bool) -> tuple[int | None, str]:
    """Patients of the FHIR registry that fit on the disk, and a note saying what was chosen."""
    if already_there:
        return requested, f"FHIR: {requested}-patient registry (reused)"
    free = shutil.disk_usage(root).free
    for n in (requested, *[f for f in FHIR_FALLBACKS if f < requested]):
        need = n * (FHIR_BYTES_PER_PATIENT + SITE_BYTES_PER_PATIENT)
        if need + DISK_MARGIN_BYTES <= free:
            note = f"FHIR: {n}-patient registry (~{need / 1e9:.1f} GB; {free / 1e9:.0f} GB free)"
            if n != requested:
                note += f" -- {requested} patients would need ~{requested * 2.05e6 / 1e9:.0f} GB"
            return n, note
    return None, f"FHIR: skipped, only {free / 1e9:.1f} GB free on {root}"


def count_lines(folder: Path) -> dict[str, int]:
    """Non-empty lines (= resources) per NDJSON file."""
    counts: dict[str, int] = {}
    for path in sorted(folder.glob("*.ndjson")):
        n = 0
        last = b"\n"
        with path.open("rb") as fh:
            while block := fh.read(1 << 24):
                n += block.count(b"\n")
                last = block[-1:]
        counts[path.name] = n + (last != b"\n")
    return counts


def head_sample(folder: Path, target: Path, lines: dict[str, int], budget: int) -> int:
    """Copy the first lines of every NDJSON file, in proportion to its size; return lines."""
    target.mkdir(parents=True, exist_ok=True)
    total = sum(lines.values())
    written = 0
    for name, n in lines.items():
        take = max(1, round(n * budget / total)) if n else 0
        with (folder / name).open("rb") as src, (target / name).open("wb") as dst:
            for i, line in enumerate(src):
                if i >= take:
                    break
                dst.write(line if line.endswith(b"\n") else line + b"\n")
                written += 1
    return written


# --- fhiry ---------------------------------------------------------------------------------


def ensure_fhiry(venv: Path, log: Path) -> tuple[Path | None, str]:
    """fhiry installed with pip into its own venv: (python, version) or (None, why not)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import fhiry; print(fhiry.__version__)"]

    def version() -> str | None:
        if not python.exists():
            return None
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def hide() -> None:  # keep ruff/git out of it, as `python -m venv` does from Python 3.13
        if venv.is_dir() and not (venv / ".gitignore").exists():
            (venv / ".gitignore").write_text("# created by bench_validate.py\n*\n")

    found = version()
    if found:
        hide()
        return python, found
    base = shutil.which("python3.11") or sys.executable
    print(f"installing fhiry into {venv} (pip) ...", end=" ", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        steps = [
            [base, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "fhiry"],
        ]
        for cmd in steps:
            try:
                done = subprocess.run(
                    cmd, check=False, stdout=fh, stderr=subprocess.STDOUT, timeout=900
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                print("failed")
                return None, f"{' '.join(cmd[:4])}: {exc}"
            if done.returncode != 0:
                print("failed")
                tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                what = "venv creation" if "venv" in cmd else "pip install fhiry"
                return None, f"{what} failed (exit {done.returncode}): {' '.join(tail)}"
            hide()
    found = version()
    print(found or "failed")
    return (python, found) if found else (None, f"fhiry does not import after install ({log})")


# --- report ----------------------------------------------------------------------------------


def _fmt_units(n: int | None, unit: str) -> str:
    return "-" if n is None else f"{n:,} {'rows' if unit == 'rows' else 'res'}"


def rss_target(m: Measurement) -> None:
    if m.error and m.peak_rss_mib is not None and "cap" in m.error:
        # killed above the cap: a FAIL when the cap is above the target, else unknown
        over = m.peak_rss_mib > RSS_TARGET_MIB
        m.targets.append(("peak RSS <= 2 GiB", "FAIL" if over else "n/a"))
    elif m.error or m.peak_rss_mib is None:
        m.targets.append(("peak RSS <= 2 GiB", "n/a"))
    else:
        ok = m.peak_rss_mib <= RSS_TARGET_MIB
        m.targets.append(("peak RSS <= 2 GiB", "PASS" if ok else "FAIL"))


def print_table(rows: list[Measurement], ratios: list[tuple[str, str, str, str]]) -> None:
    head = (
        f"{'measurement':<36} {'patients':>8} {'input':>18} {'wall s':>8} {'work s':>8} "
        f"{'rate /s':>11} {'peak RSS MiB':>12}  {'target':<20} {'result':<6}"
    )
    print()
    print(head)
    print("-" * len(head))
    for m in rows:
        rate = "-" if m.rate is None else f"{m.rate:,.0f}"
        rss = "-" if m.peak_rss_mib is None else f"{m.peak_rss_mib:,.0f}"
        work = "-" if m.seconds is None else f"{m.seconds:.1f}"
        wall = f"{m.wall:.1f}" if m.wall else "-"
        target, verdict = m.targets[0] if m.targets else ("(reference)", "n/a" if m.error else "")
        print(
            f"{m.label:<36} {m.patients if m.patients is not None else '-':>8} "
            f"{_fmt_units(m.units, m.unit):>18} {wall:>8} {work:>8} {rate:>11} {rss:>12}  "
            f"{target:<20} {verdict:<6}"
        )
        if m.error:
            print(f"{'':<4}-> {m.error}")
    for label, value, target, verdict in ratios:
        print(
            f"{label:<36} {'':>8} {'':>18} {'':>8} {'':>8} {value:>11} {'':>12}  "
            f"{target:<20} {verdict:<6}"
        )


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=10000, help="registry size (site part)")
    parser.add_argument("--sizes", type=int, nargs="+", help="several sizes (overrides --patients)")
    parser.add_argument(
        "--fhir-patients",
        type=int,
        help="FHIR registry size (default: the largest size; less if the disk is short)",
    )
    parser.add_argument("--out", type=Path, help="registry folder to reuse / generate in (kept)")
    parser.add_argument("--keep", action="store_true", help="keep generated registries in /tmp")
    parser.add_argument("--skip-fhir", action="store_true", help="site export only")
    parser.add_argument("--skip-fhiry", action="store_true", help="no fhiry comparison")
    parser.add_argument("--fhiry-venv", type=Path, default=DEFAULT_FHIRY_VENV)
    parser.add_argument(
        "--fhiry-resources",
        type=int,
        default=20000,
        help="NDJSON lines in the sample read by fhiry and cart_etl (0 = all files)",
    )
    parser.add_argument("--rss-cap-gb", type=float, default=8.0, help="kill a child above this")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    sizes = sorted(set(args.sizes or [args.patients]))
    cap = args.rss_cap_gb * 1024
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        root, temporary = args.out.resolve(), False
    else:
        root, temporary = Path(tempfile.mkdtemp(prefix="cart_etl_bench_validate_")), True
    scratch = Path(tempfile.mkdtemp(prefix="cart_etl_bench_validate_work_"))
    logs = scratch / "logs"
    print(
        f"cart_etl bench_validate: python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"registries under {root}"
    )

    fhir_n: int | None = None
    notes: list[str] = []
    if not args.skip_fhir:
        requested = args.fhir_patients or max(sizes)
        existing = any(
            _matches(f, requested, True)
            for f in [
                *([args.out] if args.out else []),
                root / f"n{requested}_fhir",
                root / f"n{requested}",
            ]
        )
        fhir_n, note = plan_fhir_patients(requested, root, existing)
        notes.append(note)
        print(note)

    rows: list[Measurement] = []
    ratios: list[tuple[str, str, str, str]] = []
    env = dict(os.environ)
    try:
        # -- site export -----------------------------------------------------------------
        for n in sizes:
            reg = find_or_generate(root, args.out, n, need_fhir=False, write_fhir=(n == fhir_n))
            export = reg / "site_export"
            for kind, label in (
                ("site-extract", "site export: extract"),
                ("site-validate", "site export: extract + validate"),
            ):
                m = run_measurement(
                    Measurement(label, n, "rows"),
                    Path(sys.executable),
                    kind,
                    export,
                    logs,
                    cap_mib=cap,
                    env=env,
                )
                rss_target(m)
                rows.append(m)
                if kind == "site-validate" and m.result:
                    ph, d = m.result["phases"], m.result["details"]
                    notes.append(
                        f"site {n}: extract {ph['extract']:.1f} s + validate "
                        f"{ph['validate']:.1f} s; rows in {d['rows_in']:,} = accepted "
                        f"{d['accepted']:,} + quarantined "
                        f"{d['quarantined_rows']:,} ({d['failure_cases']:,} failure cases, "
                        f"{d['warnings']:,} warnings)"
                    )

        # -- FHIR NDJSON -----------------------------------------------------------------
        if fhir_n is not None:
            reg = find_or_generate(root, args.out, fhir_n, need_fhir=True, write_fhir=True)
            ndjson = reg / "fhir" / "ndjson"
            lines = count_lines(ndjson)
            total = sum(lines.values())
            notes.append(f"FHIR NDJSON: {len(lines)} files, {total:,} lines in {ndjson}")
            for mode in ("fast", "strict"):
                m = run_measurement(
                    Measurement(
                        f"FHIR {mode} (all NDJSON)", fhir_n, "resources", units_override=total
                    ),
                    Path(sys.executable),
                    f"fhir-{mode}",
                    ndjson,
                    logs,
                    cap_mib=cap,
                    env=env,
                )
                _check_count(m, total, notes)
                rss_target(m)
                rows.append(m)
            if not args.skip_fhiry:
                ratios += compare_fhiry(
                    args, ndjson, lines, scratch, logs, fhir_n, cap, rows, notes
                )
    finally:
        if temporary and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:
            notes.append(f"registries kept under {root}")

    if any(m.error for m in rows):
        notes.append(f"worker logs kept in {logs}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(rows, ratios)
    if notes:
        print()
        for note in notes:
            print(f"* {note}")
    if args.json:
        args.json.write_text(json.dumps(_as_json(rows, ratios, notes), indent=2))
    verdicts = [v for m in rows for _, v in m.targets] + [r[3] for r in ratios]
    return 1 if "FAIL" in verdicts else 0


def compare_fhiry(
    args: argparse.Namespace,
    ndjson: Path,
    lines: dict[str, int],
    scratch: Path,
    logs: Path,
    patients: int,
    cap: float,
    rows: list[Measurement],
    notes: list[str],
) -> list[tuple[str, str, str, str]]:
    """fhiry and cart_etl fast/strict on the same NDJSON input; the two ratio rows."""
    total = sum(lines.values())
    python, version = ensure_fhiry(args.fhiry_venv, logs / "fhiry_install.log")
    if python is None:
        rows.append(Measurement("fhiry: NOT AVAILABLE", patients, "resources", error=version))
        return [
            ("fast / fhiry", "-", f">= {FAST_TARGET:g}x fhiry", "n/a"),
            ("strict / fhiry", "-", f">= {STRICT_TARGET:g}x fhiry", "n/a"),
        ]
    if args.fhiry_resources and args.fhiry_resources < total:
        source = scratch / "fhiry_sample"
        n = head_sample(ndjson, source, lines, args.fhiry_resources)
        what = f"sample {n:,} res"
        notes.append(
            f"fhiry comparison on a head sample of the same NDJSON files: {n:,} of {total:,} "
            f"lines, each file in proportion ({', '.join(f'{k} {v:,}' for k, v in lines.items())})"
        )
    else:
        source, n, what = ndjson, total, "all NDJSON"
    fhiry_env = dict(os.environ, TQDM_DISABLE="1", PYTHONUTF8="1")
    fhiry_env.pop("PYTHONPATH", None)
    ref = run_measurement(
        Measurement(f"fhiry {version} ({what})", patients, "resources", units_override=n),
        python,
        "fhiry",
        source,
        logs,
        cap_mib=cap,
        env=fhiry_env,
    )
    _check_count(ref, n, notes, who="fhiry DataFrame rows")
    rows.append(ref)
    same: dict[str, Measurement] = {}
    if source == ndjson:
        same = {m.label.split()[1]: m for m in rows if m.label.startswith("FHIR ")}
    else:
        for mode in ("fast", "strict"):
            m = run_measurement(
                Measurement(f"FHIR {mode} ({what})", patients, "resources", units_override=n),
                Path(sys.executable),
                f"fhir-{mode}",
                source,
                logs,
                cap_mib=cap,
            )
            _check_count(m, n, notes)
            rows.append(m)
            same[mode] = m
    full = {m.label.split()[1]: m.rate for m in rows if m.label.endswith("(all NDJSON)")}
    if source != ndjson and ref.rate and all(full.values()):
        notes.append(
            "all-NDJSON rates over fhiry's sample rate (not the same input; for scale): "
            + ", ".join(f"{k} {v / ref.rate:,.0f}x" for k, v in full.items() if v)
        )
    out = []
    for mode, target in (("fast", FAST_TARGET), ("strict", STRICT_TARGET)):
        ours = same[mode].rate
        label = f"{mode} / fhiry ({what})"
        goal = f">= {target:g}x fhiry"
        if ref.rate is None or ours is None:
            why = "fhiry failed" if ref.rate is None else f"{mode} failed"
            out.append((label, why, goal, "n/a"))
        else:
            ratio = ours / ref.rate
            out.append((label, f"{ratio:,.1f}x", goal, "PASS" if ratio >= target else "FAIL"))
    return out


def _check_count(m: Measurement, expected: int, notes: list[str], who: str = "") -> None:
    if m.result and int(m.result["units"]) != expected:
        notes.append(
            f"{m.label}: {who or 'resources counted by the extractor'} "
            f"{int(m.result['units']):,} != {expected:,} NDJSON lines (rates use the lines)"
        )


def _as_json(
    rows: list[Measurement], ratios: list[tuple[str, str, str, str]], notes: list[str]
) -> dict[str, Any]:
    return {
        "measurements": [
            {
                "label": m.label,
                "patients": m.patients,
                "unit": m.unit,
                "units": m.units,
                "wall_seconds": round(m.wall, 3),
                "work_seconds": m.seconds,
                "rate_per_second": m.rate,
                "peak_rss_mib": m.peak_rss_mib,
                "targets": m.targets,
                "error": m.error,
                "result": m.result,
            }
            for m in rows
        ],
        "ratios": [
            dict(zip(("label", "value", "target", "result"), r, strict=True)) for r in ratios
        ],
        "notes": notes,
    }


if __name__ == "__main__":
    sys.exit(main())
