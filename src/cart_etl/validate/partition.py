"""Raw layer: every extracted batch checked against the contract, then grouped by patient.

Every rule is per patient (duplicates, orphans, infusions, windows all compare rows of one
patient), so partitioning raw rows by a hash of the normalised patient key and validating
each bucket alone gives the same cases as one pass. A small extract is one bucket held in
memory; a large one is spilled to Parquet in ``spill_dir`` while extracting and read back
one bucket at a time, which keeps memory flat whatever the size of the export.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from cart_etl.contract import ENTITIES, RawBatch, Rejected, empty_frame
from cart_etl.errors import FailureCase
from cart_etl.stage.casts import normalise_text
from cart_etl.validate.raw import check_raw
from cart_etl.validate.report import FileSummary

# Rows per patient bucket when an extract is spilled to disk: bounds peak memory (staging
# keeps ~10 columns per row) whatever the size of the export.
BUCKET_ROWS = 250_000


@dataclass
class RawBucket:
    """The raw frames of one group of patients.

    ``extractor_rejects``: what the extractor could not place, when the whole extract is one
    bucket (they are accounted with it); a spilled extract reports them as
    ``Partition.unplaced`` instead.
    """

    number: int
    frames: dict[str, pl.DataFrame]
    extractor_rejects: list[FailureCase] = field(default_factory=list)


def _bucket_of(buckets: int) -> pl.Expr:
    # Bucket by the *normalised* key so that a padded/full-width MRN lands with its patient.
    return (normalise_text(pl.col("patient_key")).fill_null("").hash(seed=7) % buckets).alias(
        "_bucket"
    )


def collect(
    stream: Iterable[RawBatch | Rejected],
) -> tuple[dict[str, pl.DataFrame], list[FailureCase]]:
    """Concatenate raw batches per entity and gather the extractor's rejections."""
    parts: dict[str, list[pl.DataFrame]] = defaultdict(list)
    rejected: list[FailureCase] = []
    for item in stream:
        if isinstance(item, RawBatch):
            parts[item.entity].append(check_raw(item.entity, item.frame))
        else:
            rejected.append(item)  # extractor rejections are FailureCases already
    frames = {e: pl.concat(parts[e]) if parts[e] else empty_frame(e) for e in ENTITIES}
    return frames, rejected


class Partition:
    """Iterate the buckets of an extract; ``unplaced`` holds the spilled path's rejections.

    ``expected_rows`` (a size estimate) sets the number of buckets: one per
    ``BUCKET_ROWS`` rows.
    """

    def __init__(
        self, stream: Iterable[RawBatch | Rejected], *, expected_rows: int, spill_dir: Path
    ) -> None:
        self.stream = stream
        self.buckets = max(1, -(-expected_rows // BUCKET_ROWS))
        self.spill_dir = spill_dir
        self.unplaced: list[FailureCase] = []

    def __iter__(self) -> Iterator[RawBucket]:
        if self.buckets == 1:
            frames, placed_nowhere = collect(self.stream)
            yield RawBucket(0, frames, placed_nowhere)
            return
        parts = self._spill()
        for bucket in range(self.buckets):
            frames = {
                e: pl.read_parquet(self.spill_dir / f"{e}.{bucket}.*.parquet")
                if parts.get((e, bucket))
                else empty_frame(e)
                for e in ENTITIES
            }
            yield RawBucket(bucket, frames)

    def _spill(self) -> dict[tuple[str, int], int]:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        parts: dict[tuple[str, int], int] = defaultdict(int)
        for item in self.stream:
            if not isinstance(item, RawBatch):
                self.unplaced.append(item)
                continue
            check_raw(item.entity, item.frame)
            for (bucket,), part in (
                item.frame.with_columns(_bucket_of(self.buckets))
                .partition_by("_bucket", as_dict=True)
                .items()
            ):
                n = parts[(item.entity, int(bucket))]
                path = self.spill_dir / f"{item.entity}.{bucket}.{n}.parquet"
                part.drop("_bucket").write_parquet(path)
                parts[(item.entity, int(bucket))] = n + 1
        return parts


def merge_file_summaries(
    per_bucket: Iterable[list[FileSummary]], unplaced: Iterable[FailureCase] = ()
) -> list[FileSummary]:
    """Per (source, file) totals over buckets; each unplaced rejection is one quarantined row."""
    summaries: dict[tuple[str, str], FileSummary] = {}
    for files in per_bucket:
        for f in files:
            acc = summaries.setdefault((f.source, f.file), FileSummary(f.source, f.file, 0, 0, 0))
            acc.rows_in += f.rows_in
            acc.accepted += f.accepted
            acc.quarantined += f.quarantined
            acc.warnings += f.warnings
            acc.unaccounted += f.unaccounted
    for c in unplaced:  # rows the extractor could not place at all
        acc = summaries.setdefault((c.source, c.file), FileSummary(c.source, c.file, 0, 0, 0))
        acc.rows_in += 1
        acc.quarantined += 1
    return sorted(summaries.values(), key=lambda f: (f.source, f.file))
