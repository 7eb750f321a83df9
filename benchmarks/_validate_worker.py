"""One measurement of benchmarks/bench_validate.py, run in its own process (for its peak RSS).

Usage: python benchmarks/_validate_worker.py KIND INPUT RESULT_JSON

KIND is one of
  site-extract   extract_site_export + collect over INPUT (a site_export folder)
  site-validate  validate_site(INPUT, 'tianjin_ref', expectations=False): extract, spill to
                 patient buckets, validate bucket by bucket
  fhir-fast      extract_fhir(INPUT, mode="fast"), stream consumed to the end
  fhir-strict    extract_fhir(INPUT, mode="strict"), stream consumed to the end
  fhiry          fhiry.Fhirndjson over the NDJSON folder INPUT (run with the fhiry venv's
                 python: this kind imports nothing from cart_etl)

The timed section ("seconds") starts after the imports and covers all the work; the result
is written as JSON to RESULT_JSON. Stdout/stderr are the caller's log.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def site(export_dir: Path, *, validate: bool) -> dict[str, Any]:
    """Extraction streamed to the end (no frames kept), or the full ``validate_site`` path.

    ``validate_site`` spills raw batches to patient buckets on disk and validates one bucket
    at a time, which is what keeps memory flat at registry scale.
    """
    from cart_etl.config import Settings
    from cart_etl.contract import RawBatch
    from cart_etl.extract.site.export import extract_site_export
    from cart_etl.extract.site.parse import load_site_mapping
    from cart_etl.pipeline import validate_site

    start = time.perf_counter()
    result: dict[str, Any] = {"unit": "rows", "phases": {}, "details": {}}
    if not validate:
        mapping = load_site_mapping("tianjin_ref", Settings().mappings_dir)
        rows = rejects = 0
        for item in extract_site_export(export_dir, mapping):
            if isinstance(item, RawBatch):
                rows += item.frame.height
            else:
                rejects += 1
        result["units"] = rows + rejects
        result["details"]["extractor_rejects"] = rejects
        result["phases"]["extract"] = time.perf_counter() - start
    else:
        outcome, _ = validate_site(export_dir, "tianjin_ref", expectations=False)
        rows_in = sum(f.rows_in for f in outcome.files)
        result["units"] = rows_in
        result["phases"]["extract+validate"] = time.perf_counter() - start
        result["details"].update(
            rows_in=rows_in,
            accepted=sum(f.accepted for f in outcome.files),
            quarantined_rows=sum(f.quarantined for f in outcome.files),
            unaccounted=sum(f.unaccounted for f in outcome.files),
            failure_cases=len(outcome.quarantined),
            warnings=len(outcome.warnings),
        )
    result["seconds"] = time.perf_counter() - start
    return result


def fhir(ndjson_dir: Path, mode: str) -> dict[str, Any]:
    from cart_etl.config import Settings
    from cart_etl.mappings import Mappings
    from cart_etl.stage.fhir_concepts import open_fhir

    start = time.perf_counter()
    mappings = Mappings.open(Settings().mappings_dir)
    stream = open_fhir(ndjson_dir, mappings, mode="strict" if mode == "strict" else "fast")
    items = 0
    for _ in stream:
        items += 1
    seconds = time.perf_counter() - start
    report = stream.report
    return {
        "unit": "resources",
        "units": report.resources,
        "seconds": seconds,
        "details": {
            "stream_items": items,
            "outcomes": dict(report.totals()),
            "rows_emitted": sum(report.rows_by_entity.values()),
            "rejected_by_rule": dict(report.rejected_by_rule),
        },
    }


def fhiry(ndjson_dir: Path) -> dict[str, Any]:
    import fhiry as fhiry_pkg
    from fhiry import Fhirndjson

    start = time.perf_counter()
    reader = Fhirndjson()
    reader.folder = str(ndjson_dir)
    reader.process_source()
    seconds = time.perf_counter() - start
    df = reader.df
    rows = 0 if df is None else len(df)
    return {
        "unit": "resources",
        "units": rows,
        "seconds": seconds,
        "details": {
            "fhiry_version": getattr(fhiry_pkg, "__version__", "unknown"),
            "dataframe_rows": rows,
            "dataframe_columns": 0 if df is None else df.shape[1],
        },
    }


def main() -> None:
    kind, source, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if kind == "site-extract":
        result = site(source, validate=False)
    elif kind == "site-validate":
        result = site(source, validate=True)
    elif kind in ("fhir-fast", "fhir-strict"):
        result = fhir(source, kind.removeprefix("fhir-"))
    elif kind == "fhiry":
        result = fhiry(source)
    else:
        raise SystemExit(f"unknown measurement kind {kind!r}")
    result_path.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
