"""Append each validated, derived bucket to the ``staging.*`` tables of the store.

Staged tables carry the study id as the only patient key: the register's MRN
(``patient_key``) and names never reach the store. Identifier values are redacted from the
quarantine and warning cases, and every register MRN of the bucket is scrubbed from every
text value written (an MRN typed into an indication or a cause of death), so that no MRN
reaches ``staging``, the marts, OMOP or the case tables.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import duckdb
import polars as pl

from cart_etl.contract import ENTITIES
from cart_etl.derive.assemble import Derived
from cart_etl.errors import FailureCase
from cart_etl.load.marts import DERIVED_MARTS

# Register identifiers that must never reach the store or the logs (redacted in cases).
IDENTIFYING_FIELDS = frozenset({"patient_key", "mrn", "name"})


REDACTED = "<redacted>"
# Shorter keys (e.g. "12") would scrub ordinary numbers; hospital MRNs are longer.
MIN_IDENTIFIER_LENGTH = 4
# Provenance columns that name the input, never a patient.
_NOT_SCRUBBED = frozenset({"source", "file", "source_file"})


def register_identifiers(register: pl.DataFrame) -> list[str]:
    """Every patient key (MRN) of the bucket's raw register rows, as written and NFKC-stripped,
    longest first (so a longer MRN is scrubbed before one it contains)."""
    if "patient_key" not in register.columns:
        return []
    keys = set()
    for value in register.get_column("patient_key").drop_nulls().to_list():
        for form in (str(value), unicodedata.normalize("NFKC", str(value)).strip()):
            if len(form.strip()) >= MIN_IDENTIFIER_LENGTH:
                keys.add(form)
    return sorted(keys, key=lambda k: (-len(k), k))


class Scrubber:
    """Replaces register identifiers in text by ``<redacted>``, one regex scan per value.

    Built once per bucket. Identifiers are tried longest first (``register_identifiers``
    order), so a longer MRN wins over one it contains, as in ``scrub_frame``.
    """

    def __init__(self, identifiers: Sequence[str]) -> None:
        self.identifiers = list(identifiers)
        self._pattern = (
            re.compile("|".join(map(re.escape, self.identifiers))) if self.identifiers else None
        )

    def text(self, value: str) -> str:
        """``value`` with every identifier replaced."""
        if self._pattern is None or not value:
            return value
        return self._pattern.sub(REDACTED, value)


NO_SCRUB = Scrubber(())


def redact(case: FailureCase, scrubber: Scrubber = NO_SCRUB) -> FailureCase:
    """Drop MRNs/names from a case before it is stored (the row reference stays).

    A case on an identifier field loses its value; any register MRN quoted in the value or
    the message of any case is replaced by ``<redacted>``.
    """
    value, message = case.value, case.message
    if case.field in IDENTIFYING_FIELDS and value:
        message = message.replace(value, REDACTED)
        value = REDACTED
    value, message = scrubber.text(value or ""), scrubber.text(message)
    if (value, message) == (case.value or "", case.message):
        return case
    return FailureCase(case.source, case.file, case.row, case.field, value, case.rule_id, message)


def scrub_frame(frame: pl.DataFrame, identifiers: Sequence[str]) -> pl.DataFrame:
    """Every text column (but input provenance) with the identifiers replaced by
    ``<redacted>``; a frame holding none of them is returned as is (one vectorised pass)."""
    columns = [c for c, t in frame.schema.items() if t == pl.String and c not in _NOT_SCRUBBED]
    if not identifiers or not columns or frame.is_empty():
        return frame
    keys = list(identifiers)
    hit = frame.select(
        pl.any_horizontal(pl.col(c).str.contains_any(keys).fill_null(False) for c in columns)
    ).to_series()
    if not hit.any():
        return frame
    return frame.with_columns(
        pl.col(c).str.replace_many(keys, [REDACTED] * len(keys)) for c in columns
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

    def write(
        self,
        accepted: dict[str, pl.DataFrame],
        derived: Derived,
        identifiers: Sequence[str] = (),
    ) -> int:
        """Append one bucket (accepted frames keyed by ``patient_key``); return its number.

        ``identifiers``: the bucket's register MRNs (``register_identifiers``), scrubbed from
        every text value written.
        """
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
            self._append(entity, scrub_frame(frame, identifiers))
        for mart in DERIVED_MARTS:
            frame = scrub_frame(getattr(derived, mart).drop("patient_key"), identifiers)
            self._append(f"d_{mart}", frame.with_columns(_bucket=bucket))
        self.buckets += 1
        return self.buckets - 1

    @property
    def has_register(self) -> bool:
        """True once a bucket with register rows was written."""
        return "demographics" in self.created
