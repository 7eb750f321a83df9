"""DEVICE_EXPOSURE: oxygen-support devices, one row per run of the same device."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.timeline import local_date
from cart_etl.load.omop._common import (
    assign_ids,
    attach_visit,
    conform,
    local_datetime,
)
from cart_etl.load.omop._oxygen import oxygen_runs
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput


def map_device_exposure(inp: OmopInput) -> pl.DataFrame:
    """One row per oxygen-support run (``_oxygen.oxygen_runs``: consecutive chartings of one
    device, gaps <= 24 h, room air excluded).

    device_concept_id: nasal cannula -> Oxygen nasal cannula (4224038), mechanical
    ventilation -> Mechanical ventilator (40493026); high-flow cannula, face mask,
    non-rebreather, Venturi, CPAP, BiPAP -> 0 (no verified Device concept); start/end =
    first/last charting of the run (local date, naive local datetime); device_type EHR
    (32817); device_source_value = the charting as written (e.g. ``鼻导管 3L/min``), the
    highest flow in L/min is not a device attribute (it is a MEASUREMENT). quantity 1.

    Note: schemas/omop_v54_fields.csv (hence the project DDL) lacks DEVICE_EXPOSURE; the
    columns come from the official v5.4 DuckDB DDL (``_common.DEVICE_EXPOSURE_FIELDS``).
    """
    c = concepts()
    tz = inp.timezone
    runs = oxygen_runs(inp)
    frame = runs.select(
        "person_id",
        "start",
        "device",
        device_concept_id=c.map_expr("oxygen_device", "device"),
        device_exposure_start_date=local_date(pl.col("start"), tz),
        device_exposure_start_datetime=local_datetime(pl.col("start"), tz),
        device_exposure_end_date=local_date(pl.col("end"), tz),
        device_exposure_end_datetime=local_datetime(pl.col("end"), tz),
        device_type_concept_id=pl.lit(c.id("type_ehr")),
        quantity=pl.lit(1, pl.Int32),
        device_source_value=pl.col("device_source"),
        device_source_concept_id=pl.lit(c.id("no_matching_concept")),
    )
    frame = attach_visit(inp, frame, "device_exposure_start_date")
    frame = assign_ids(frame, "device_exposure_id", ["person_id", "start", "device"])
    return conform(frame, "device_exposure")
