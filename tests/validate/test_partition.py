"""validate/partition.py: patients hashed into buckets; nothing the extractor rejected is lost."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from cart_etl.contract import RawBatch, conform
from cart_etl.errors import FailureCase
from cart_etl.pipeline import Source, run
from cart_etl.validate import partition
from cart_etl.validate.partition import Partition, merge_file_summaries
from cart_etl.validate.report import FileSummary

CASES = Path(__file__).resolve().parents[1] / "cases"
LATE = CASES / "site_london_infusion_before_midnight"


def _vitals(keys: list[str]) -> RawBatch:
    frame = pl.DataFrame(
        {
            "source": ["s"] * len(keys),
            "file": ["v.csv"] * len(keys),
            "row": [str(i + 1) for i in range(len(keys))],
            "patient_key": keys,
        }
    )
    return RawBatch("vitals", conform("vitals", frame), len(keys))


REJECT = FailureCase("s", "v.csv", "99", "", "", "csv.row_shape", "row 99 has 3 fields, not 7")


def test_01_one_bucket_keeps_the_rejections_with_it(tmp_path):
    buckets = list(Partition([_vitals(["a", "b"]), REJECT], expected_rows=10, spill_dir=tmp_path))
    assert len(buckets) == 1
    assert buckets[0].frames["vitals"].height == 2 and buckets[0].extractor_rejects == [REJECT]


def test_02_spilled_buckets_hold_each_patient_once_and_report_rejections_as_unplaced(tmp_path):
    keys = [f"mrn{i}" for i in range(40)] + [" mrn3", "ｍｒｎ3"]  # padded / full-width: mrn3
    parts = Partition(
        [_vitals(keys), REJECT], expected_rows=4 * partition.BUCKET_ROWS, spill_dir=tmp_path
    )
    buckets = list(parts)
    assert parts.buckets == 4 and len(buckets) == 4
    assert sum(b.frames["vitals"].height for b in buckets) == len(keys)
    assert all(b.extractor_rejects == [] for b in buckets)
    assert parts.unplaced == [REJECT]
    holding_mrn3 = [
        b.number
        for b in buckets
        if b.frames["vitals"].filter(pl.col("patient_key").str.contains("3$")).height
    ]
    # mrn3, " mrn3" and the full-width spelling normalise to one key: one bucket holds all
    # three (mrn13, mrn23, mrn33 may share it or not).
    with_mrn3 = [
        b.number
        for b in buckets
        if b.frames["vitals"]
        .filter(pl.col("patient_key").is_in(["mrn3", " mrn3", "ｍｒｎ3"]))
        .height
        == 3
    ]
    assert len(with_mrn3) == 1 and with_mrn3[0] in holding_mrn3


def test_03_unplaced_rejections_count_as_quarantined_rows():
    files = merge_file_summaries(
        [[FileSummary("s", "v.csv", 10, 9, 1)], [FileSummary("s", "v.csv", 5, 5, 0)]], [REJECT]
    )
    assert [(f.rows_in, f.accepted, f.quarantined) for f in files] == [(16, 14, 2)]


def _rounded(row: tuple) -> str:
    return str(tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in row))


@pytest.mark.parametrize("bucket_rows", [10, 25])
def test_04_a_run_gives_the_same_marts_whatever_the_bucketing(tmp_path, monkeypatch, bucket_rows):
    """Every rule is per patient, so a spilled run (several buckets) equals a one-bucket run.

    Floats are compared to 12 significant digits: polars divides by a column that is constant
    within a frame as a multiplication by its reciprocal, so 10 mg / 61 kg can differ in the
    last bit between a one-patient bucket and a mixed one (0.16393442622950818 vs ...082).
    """
    one = run(Source(str(LATE), "example_wide_en"), tmp_path / "one.duckdb")
    monkeypatch.setattr(partition, "BUCKET_ROWS", bucket_rows)
    many = run(Source(str(LATE), "example_wide_en"), tmp_path / "many.duckdb")
    assert one.status == many.status == "succeeded"
    for table in ("marts.patient", "marts.crs_episode", "marts.treatment", "omop.measurement"):
        rows = []
        for result in (one, many):
            con = duckdb.connect(str(result.store), read_only=True)
            rows.append(sorted(map(_rounded, con.execute(f"SELECT * FROM {table}").fetchall())))
            con.close()
        assert rows[0] == rows[1], table
    assert one.quarantined == many.quarantined and one.warnings == many.warnings
