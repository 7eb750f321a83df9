"""Append each validated, derived bucket to the ``staging.*`` tables of the store.

Staged tables carry the study id as the only patient key: the register's MRN
(``patient_key``) and names never reach the store, and identifier values are redacted
from the quarantine and warning cases before they are written.
"""

from __future__ import annotations

import duckdb
import polars as pl

from cart_etl.contract import ENTITIES
from cart_etl.derive.assemble import Derived
from cart_etl.errors import FailureCase
from cart_etl.load.marts import DERIVED_MARTS

# Register identifiers that must never reach the store or the logs (redacted in cases).
IDENTIFYING_FIELDS = frozenset({"patient_key", "mrn", "name"})


def redact(case: FailureCase) -> FailureCase:
    """Drop MRNs/names from a case before it is stored (the row reference stays)."""
    if case.field not in IDENTIFYING_FIELDS or not case.value:
        return case
    return FailureCase(
        case.source,
        case.file,
        case.row,
        case.field,
        "<redacted>",
        case.rule_id,
        case.message.replace(case.value, "<redacted>"),
    )


def _printable(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns DuckDB can type from Arrow: all-null (untyped) columns become VARCHAR."""
    return frame.with_columns(pl.col(pl.Null).cast(pl.String))


class StagingWriter:
    """Writes buckets 0, 1, ... to ``staging.<entity>`` and ``staging.d_<mart>``."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.buckets = 0
        self.created: set[str] = set()

    def _append(self, table: str, frame: pl.DataFrame) -> None:
        arrow = _printable(frame).to_arrow()  # noqa: F841 - read by DuckDB's replacement scan
        if table not in self.created:
            self.con.execute(f"DROP TABLE IF EXISTS staging.{table}")
            self.con.execute(f"CREATE TABLE staging.{table} AS SELECT * FROM arrow")
            self.created.add(table)
        else:
            self.con.execute(f"INSERT INTO staging.{table} BY NAME SELECT * FROM arrow")

    def write(self, accepted: dict[str, pl.DataFrame], derived: Derived) -> int:
        """Append one bucket (accepted frames keyed by ``patient_key``); return its number."""
        bucket = pl.lit(self.buckets, pl.Int32)
        ids = accepted["demographics"].select("patient_key", "study_id").unique("patient_key")
        for entity in ENTITIES:  # every canonical entity is staged
            frame = accepted[entity]
            keep = [
                c
                for c in frame.columns
                if not c.endswith("_raw") and c not in ("source_right", "_members", "study_id")
            ]
            frame = (
                frame.select(keep)
                .join(ids, on="patient_key", how="inner")  # orphans were quarantined upstream
                .drop("patient_key")
                .with_columns(_bucket=bucket)
            )
            self._append(entity, frame)
        for mart in DERIVED_MARTS:
            frame = getattr(derived, mart).drop("patient_key")
            self._append(f"d_{mart}", frame.with_columns(_bucket=bucket))
        self.buckets += 1
        return self.buckets - 1

    @property
    def has_register(self) -> bool:
        """True once a bucket with register rows was written."""
        return "demographics" in self.created
