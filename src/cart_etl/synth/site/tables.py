"""Writes the small site tables: vasopressors.csv and the EMR extracts.

vasopressors.csv holds one row per continuous infusion (local drug name, start, stop,
rate, printed rate unit); the EMR extracts are response_day28.csv (MRD 0 printed as
阴性), followup.csv (blank dates and causes when absent), infections.csv, icans.csv (a
blank ICE score when not assessed) and crs_recorded.csv (the physician's CRS grade).
"""

from __future__ import annotations

from operator import attrgetter

from cart_etl.synth.model import ClinicalRecord
from cart_etl.synth.site.cells import (
    FORMATTERS,
    fixed_number,
    local_time,
    opt_date,
    shortest_number,
)
from cart_etl.synth.site.layouts import (
    CRS_RECORDED,
    FOLLOWUP,
    ICANS,
    INFECTIONS,
    RESPONSE,
    VASOPRESSORS,
    Event,
    Row,
)
from cart_etl.synth.vocab import (
    DEATH_CAUSE_NAMES,
    INFECTION_SITE_NAMES,
    MRD_NEGATIVE,
    RATE_UNIT_NAMES,
    VASOPRESSOR_NAMES,
)


def vasopressor_rows(mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
    """vasopressors.csv rows, by start time."""
    events = sorted(record.vasopressors, key=attrgetter("start"))
    fmt = FORMATTERS[VASOPRESSORS.datetime_format or ""]
    rows: list[Row] = [
        [
            mrn,
            VASOPRESSOR_NAMES[ev.drug],
            fmt(local_time(ev.start)),
            fmt(local_time(ev.stop)),
            shortest_number(ev.rate),
            RATE_UNIT_NAMES[ev.rate_unit],
        ]
        for ev in events
    ]
    return rows, list(events)


def response_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """response_day28.csv row (MRD 0 printed as 阴性)."""
    resp = record.response
    if resp is None:
        return []
    fmt = FORMATTERS[RESPONSE.datetime_format or ""]
    mrd = MRD_NEGATIVE if resp.mrd_pct == 0 else shortest_number(resp.mrd_pct)
    return [
        [
            mrn,
            fmt(local_time(resp.at).date()),
            resp.morphology,
            fixed_number(resp.marrow_blasts_pct, 1),
            mrd,
        ]
    ]


def followup_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """followup.csv row; absent dates and causes are blank."""
    fu = record.follow_up
    fmt = FORMATTERS[FOLLOWUP.datetime_format or ""]
    cause = "" if fu.death_cause is None else DEATH_CAUSE_NAMES.get(fu.death_cause, fu.death_cause)
    return [
        [
            mrn,
            fmt(fu.last_contact_date),
            opt_date(fu.progression_date, fmt),
            opt_date(fu.death_date, fmt),
            cause,
        ]
    ]


def infection_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """infections.csv rows, by onset date."""
    fmt = FORMATTERS[INFECTIONS.datetime_format or ""]
    return [
        [
            mrn,
            fmt(inf.onset_date),
            INFECTION_SITE_NAMES.get(inf.site, inf.site),
            inf.organism,
            str(inf.ctcae_grade),
        ]
        for inf in sorted(record.infections, key=attrgetter("onset_date"))
    ]


def icans_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """icans.csv rows; an unassessed ICE score is blank."""
    fmt = FORMATTERS[ICANS.datetime_format or ""]
    return [
        [mrn, fmt(local_time(a.at)), "" if a.ice_score is None else str(a.ice_score), str(a.grade)]
        for a in sorted(record.icans, key=attrgetter("at"))
    ]


def crs_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """crs_recorded.csv row when the physician recorded a grade."""
    crs = record.recorded_crs
    if crs is None:
        return []
    fmt = FORMATTERS[CRS_RECORDED.datetime_format or ""]
    return [[mrn, fmt(local_time(crs.at)), str(crs.grade)]]
