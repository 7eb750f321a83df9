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


def _rows_text(rows: list[str]) -> str:
    return ", ".join(sorted(set(rows), key=lambda r: (len(r), r)))


def filter_register_conflicts(
    register: pl.DataFrame, fields: tuple[str, ...] = ()
) -> tuple[pl.DataFrame, list[FailureCase]]:
    """Quarantine register rows that contradict each other; never keep one of them silently.

    ``register``: the staged register (``patient_key`` = normalised MRN, ``<field>_raw`` as
    written) after exact duplicates were removed, so two rows of one MRN always differ.

    * ``register.study_id.conflict``: one study id registered with two or more MRNs (both
      MRNs named; field ``mrn``, so the store redacts them);
    * ``register.mrn.conflict``: one MRN under two or more study ids (the study ids named);
    * ``register.conflicting_facts``: one MRN and study id on two rows with different facts
      (``fields``: the compared fields, e.g. sex; both values named);
    * ``register.study_id.is_mrn``: a study id that is an MRN of a site register (field
      ``mrn``): an MRN in the study-id column would become the pseudonym in the marts.
      FHIR keys are resource ids, not MRNs, and are not compared.

    Every row of a conflicting group is quarantined (which one is right is the data
    manager's call); the patient's rows in other files follow (``row.patient.quarantined``).
    """
    if register.is_empty():
        return register, []
    if register.get_column("patient_key").null_count():
        # A row without an MRN links nothing (StgDemographics quarantines it): not compared.
        keyless = register.filter(pl.col("patient_key").is_null())
        keyed_ok, keyed_cases = filter_register_conflicts(
            register.filter(pl.col("patient_key").is_not_null()), fields
        )
        return pl.concat([keyed_ok, keyless], how="vertical_relaxed"), keyed_cases
    blank = "\x00"
    sid = normalise_text(pl.col("study_id_raw")).fill_null(blank)
    compared = [f for f in fields if f"{f}_raw" in register.columns and f != "study_id"]
    keyed = register.with_row_index("_i").with_columns(
        _sid=sid,
        **{f"_f_{f}": normalise_text(pl.col(f"{f}_raw")).fill_null(blank) for f in compared},
    )
    key = ["source", "patient_key"]
    flagged = keyed.with_columns(
        _sids=pl.col("_sid").n_unique().over(key),
        _rows=pl.len().over(key),
        _keys=pl.when(pl.col("_sid") != blank).then(
            pl.col("patient_key").n_unique().over("source", "_sid")
        ),
    )
    # FHIR keys are resource ids (the study id is Patient.id when no study-id identifier is
    # sent), not the register's MRNs: only a site register's keys are MRNs.
    mrns_of = (
        keyed.filter(pl.col("source") != "fhir")
        .select("source", _sid="patient_key")
        .unique()
        .with_columns(_is_mrn=pl.lit(True))
    )
    flagged = flagged.join(mrns_of, on=["source", "_sid"], how="left").with_columns(
        pl.col("_is_mrn").fill_null(False)
    )
    bad = flagged.filter(
        (pl.col("_sids") > 1)
        | (pl.col("_rows") > 1)
        | (pl.col("_keys") > 1).fill_null(False)
        | pl.col("_is_mrn")
    )
    if bad.is_empty():
        return register, []
    records = bad.to_dicts()

    def both(group: list[dict], col: str) -> str:  # type: ignore[type-arg]
        """The distinct values of ``col`` in ``group``, sorted, as 'a / b'."""
        return " / ".join(sorted({"<blank>" if r[col] == blank else str(r[col]) for r in group}))

    by_key: dict[tuple[str, str], list[dict]] = {}  # type: ignore[type-arg]
    by_sid: dict[tuple[str, str], list[dict]] = {}  # type: ignore[type-arg]
    for r in records:
        by_key.setdefault((r["source"], r["patient_key"]), []).append(r)
        by_sid.setdefault((r["source"], r["_sid"]), []).append(r)
    cases: list[FailureCase] = []
    for rec in records:
        same_key = by_key[(rec["source"], rec["patient_key"])]
        if rec["_keys"] is not None and rec["_keys"] > 1:
            group = by_sid[(rec["source"], rec["_sid"])]
            mrns = " / ".join(sorted({str(r["patient_key"]) for r in group}))
            detail = (
                f"study id {rec['_sid']!r} is registered with {len(group)} MRNs: {mrns} "
                f"(rows {_rows_text([r['row'] for r in group])}); one study id is one patient"
            )
            cases.append(case_for(rec, "register.study_id.conflict", "mrn", mrns, detail))
        if rec["_sids"] > 1:
            ids = both(same_key, "_sid")
            detail = (
                f"the MRN of this row is registered under {rec['_sids']} study ids: {ids} "
                f"(rows {_rows_text([r['row'] for r in same_key])}); one patient has one study id"
            )
            cases.append(case_for(rec, "register.mrn.conflict", "study_id", ids, detail))
        elif rec["_rows"] > 1:
            differing = [f for f in compared if len({r[f"_f_{f}"] for r in same_key}) > 1]
            parts = [f"{f}: {both(same_key, f'_f_{f}')}" for f in differing]
            first = differing[0] if differing else "*"
            value = both(same_key, f"_f_{first}") if differing else ""
            detail = (
                f"study id {rec['_sid']!r} is registered on {rec['_rows']} rows "
                f"({_rows_text([r['row'] for r in same_key])}) with different "
                f"{'; '.join(parts) or 'facts'}"
            )
            cases.append(case_for(rec, "register.conflicting_facts", first, value, detail))
        if rec["_is_mrn"]:
            detail = (
                f"the study id {rec['_sid']!r} is an MRN of the register; the study id is the "
                "pseudonym the marts carry and must not be an MRN"
            )
            cases.append(case_for(rec, "register.study_id.is_mrn", "mrn", rec["_sid"], detail))
    drop = set(bad.get_column("_i").to_list())
    kept = register.with_row_index("_i").filter(~pl.col("_i").is_in(list(drop))).drop("_i")
    return kept, cases
