"""Rules that need more than one row or file: duplicates, orphans and clinical date order.

Each function takes staged (or raw) frames and returns ``(accepted, failure cases)``; the
first occurrence of a duplicate is kept, later ones are quarantined, so re-running on the
same export always keeps the same row.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from cart_etl.contract import ENTITY_COLUMNS
from cart_etl.errors import FailureCase
from cart_etl.stage.casts import normalise_text
from cart_etl.validate.quarantine import case_for


def _cases_each(
    rows: pl.DataFrame, rule_id: str, field: str, raw_col: str | None, detail: str
) -> list[FailureCase]:
    """One case per rejected row, quoting ``raw_col`` as the source wrote it."""
    return [
        case_for(rec, rule_id, field, rec.get(raw_col) if raw_col else "", detail)
        for rec in rows.iter_rows(named=True)
    ]


def _split(df: pl.DataFrame, bad: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    flagged = df.with_columns(_bad=bad.fill_null(False))
    return flagged.filter(~pl.col("_bad")).drop("_bad"), flagged.filter(pl.col("_bad")).drop("_bad")


def filter_duplicates(entity: str, raw: pl.DataFrame) -> tuple[pl.DataFrame, list[FailureCase]]:
    """Quarantine rows identical (after NFKC + strip) to an earlier row of the same file."""
    columns = ["patient_key", *ENTITY_COLUMNS[entity]]
    keys = [
        normalise_text(pl.col(c)).fill_null("\x00").alias(f"_k{i}") for i, c in enumerate(columns)
    ]
    keyed = raw.with_row_index("_order").with_columns(keys)
    first = pl.col("_order") == pl.col("_order").min().over(
        ["source", "file", *[f"_k{i}" for i in range(len(columns))]]
    )
    ok, dup = _split(keyed, ~first)
    drop = ["_order", *[f"_k{i}" for i in range(len(columns))]]
    cases = _cases_each(
        dup, "row.duplicate", "*", None, "identical to an earlier row of the same file"
    )
    return ok.drop(drop), cases


def filter_orphans(
    frame: pl.DataFrame, patients: pl.DataFrame, registered: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, list[FailureCase]]:
    """Quarantine rows whose patient key is not among the same source's accepted patients.

    ``registered`` (source, patient_key of every register row, accepted or not) separates
    a key that is nowhere in the register (``row.patient.known``: an MRN typo) from one whose
    register row was itself quarantined (``row.patient.quarantined``: fix that row first).
    """
    known = patients.select("source", pl.col("patient_key").alias("_known")).unique()
    joined = frame.join(
        known,
        left_on=["source", "patient_key"],
        right_on=["source", "_known"],
        how="left",
        coalesce=False,
    )
    ok, bad = _split(joined, pl.col("_known").is_null())
    listed: set[tuple[str, str]] = set()
    if registered is not None:
        listed = set(registered.select("source", "patient_key").iter_rows())
    cases = []
    for rec in bad.iter_rows(named=True):
        if (rec["source"], rec["patient_key"]) in listed:
            rule_id, detail = (
                "row.patient.quarantined",
                "its patient's register row was quarantined",
            )
        else:
            rule_id, detail = (
                "row.patient.known",
                f"patient key {rec['patient_key']!r} is not in the register",
            )
        cases.append(case_for(rec, rule_id, "patient_key", rec["patient_key"], detail))
    return ok.drop("_known"), cases


def filter_extra_infusions(
    infusion: pl.DataFrame, *, allow_reinfusion: bool = False
) -> tuple[pl.DataFrame, list[FailureCase]]:
    """One infusion per patient unless the site declares re-infusions; the earliest is day 0."""
    if allow_reinfusion:
        return infusion, []
    ranked = infusion.with_columns(_n=pl.col("at").rank("ordinal").over(["source", "patient_key"]))
    ok, bad = _split(ranked, pl.col("_n") > 1)
    detail = "a second CAR-T infusion for the same patient"
    return ok.drop("_n"), _cases_each(bad, "infusion.one_per_patient", "at", "at_raw", detail)


def filter_infusion_dates(
    infusion: pl.DataFrame,
    patients: pl.DataFrame,
    *,
    window: tuple[date, date] | None = None,
    timezone: str,
) -> tuple[pl.DataFrame, list[FailureCase]]:
    """Infusion after diagnosis (birth < diagnosis < infusion) and inside the study window."""
    joined = infusion.join(
        patients.select("source", "patient_key", "diagnosis_date"),
        on=["source", "patient_key"],
        how="left",
    )
    day = pl.col("at").dt.convert_time_zone(timezone).dt.date()
    bad_order = pl.col("diagnosis_date").is_not_null() & (day <= pl.col("diagnosis_date"))
    bad_window = pl.lit(False) if window is None else ~day.is_between(window[0], window[1])
    ok, bad = _split(joined, bad_order | bad_window)
    cases = []
    for rec in bad.iter_rows(named=True):
        rule_id = (
            "infusion.after_diagnosis"
            if rec["diagnosis_date"] and rec["at"] and rec["at"].date() <= rec["diagnosis_date"]
            else "infusion.study_window"
        )
        cases.append(
            case_for(
                rec,
                rule_id,
                "at",
                rec.get("at_raw"),
                f"infusion on {rec['at']} (diagnosis {rec['diagnosis_date']}, window {window})",
            )
        )
    return ok.drop("diagnosis_date"), cases


def filter_response_window(
    response: pl.DataFrame, infusion: pl.DataFrame, *, window: tuple[int, int], timezone: str
) -> tuple[pl.DataFrame, list[FailureCase]]:
    """A 'day 28' assessment must fall on study day 21-35 (``window``) after the infusion."""
    day0 = infusion.select(
        "source",
        "patient_key",
        pl.col("at").dt.convert_time_zone(timezone).dt.date().alias("_day0"),
    )
    joined = response.join(day0, on=["source", "patient_key"], how="left")
    study_day = (
        pl.col("at").dt.convert_time_zone(timezone).dt.date() - pl.col("_day0")
    ).dt.total_days()
    first, last = window
    ok, bad = _split(joined, pl.col("_day0").is_null() | ~study_day.is_between(first, last))
    detail = f"day-28 assessment outside study days {first}-{last} (or no infusion)"
    return ok.drop("_day0"), _cases_each(bad, "response.window", "at", "at_raw", detail)


def filter_followup_order(follow_up: pl.DataFrame) -> tuple[pl.DataFrame, list[FailureCase]]:
    """Death date is not before the last contact date."""
    bad = pl.col("death_date").is_not_null() & (pl.col("death_date") < pl.col("last_contact_date"))
    ok, rejected = _split(follow_up, bad)
    cases = [
        case_for(
            rec,
            "followup.death_before_last_contact",
            "death_date",
            rec.get("death_date_raw"),
            f"death {rec['death_date']} before last contact {rec['last_contact_date']}",
        )
        for rec in rejected.iter_rows(named=True)
    ]
    return ok, cases


def filter_without_infusion(
    frame: pl.DataFrame,
    infusion: pl.DataFrame,
    patients: pl.DataFrame,
    delivered: pl.DataFrame | None = None,
    *,
    raw_col: str = "at_raw",
) -> tuple[pl.DataFrame, list[FailureCase]]:
    """Quarantine drug/vasopressor rows of a patient without an accepted CAR-T infusion.

    A treatment row's study day counts from the infusion (day 0): without one it has none,
    and the patient is ``not_infused``. ``delivered`` (source, patient_key, file, row of the
    infusion rows as extracted) tells a missing infusion row from a quarantined one. The
    message names the patient's register row and study id, never the MRN.
    """
    infused = infusion.select("source", "patient_key", _day0=pl.lit(True)).unique()
    joined = frame.join(infused, on=["source", "patient_key"], how="left")
    ok, bad = _split(joined, pl.col("_day0").is_null())
    if bad.is_empty():
        return ok.drop("_day0"), []
    register = {
        (r["source"], r["patient_key"]): (r["file"], r["row"], r["study_id"])
        for r in patients.select("source", "patient_key", "file", "row", "study_id").iter_rows(
            named=True
        )
    }
    sent: dict[tuple[str, str], tuple[str, str]] = {}
    if delivered is not None:
        for r in delivered.select("source", "patient_key", "file", "row").iter_rows(named=True):
            sent.setdefault((r["source"], r["patient_key"]), (r["file"], r["row"]))
    cases = []
    for rec in bad.iter_rows(named=True):
        key = (rec["source"], rec["patient_key"])
        file, row, study_id = register.get(key, ("register", "?", "?"))
        if key in sent:
            why = "its infusion row ({} row {}) was quarantined".format(*sent[key])
        else:
            why = "the delivery has no infusion row for the patient"
        detail = (
            f"{rec.get(raw_col)!r}: the patient ({file} row {row}, study id {study_id}) has no "
            f"accepted CAR-T infusion, so the row has no study day; {why}"
        )
        cases.append(case_for(rec, "drug.no_infusion", "patient_key", rec["patient_key"], detail))
    return ok.drop("_day0"), cases
