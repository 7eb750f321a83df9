"""Oxygen-support runs shared by PROCEDURE_OCCURRENCE and DEVICE_EXPOSURE."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import polars as pl

from cart_etl.load.omop._common import entity, source_text, with_person

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

# Chartings of the same device further apart than this are two separate runs.
RUN_GAP = timedelta(hours=24)
ROOM_AIR = "room_air"


def oxygen_runs(inp: OmopInput) -> pl.DataFrame:
    """person_id, device, start, end (UTC), max_flow, device_source: one row per run.

    A run is a maximal sequence of consecutive chartings (per person, in time order) of the
    same device category with no gap above 24 h; it starts at its first and ends at its
    last charting. Room-air runs are not oxygen support and are dropped.
    """
    oxygen = entity(inp, "oxygen")
    schema = pl.Schema(
        {
            "person_id": pl.Int64(),
            "device": pl.String(),
            "start": pl.Datetime("us", "UTC"),
            "end": pl.Datetime("us", "UTC"),
            "max_flow": pl.Float64(),
            "device_source": pl.String(),
        }
    )
    if oxygen is None:
        return pl.DataFrame(schema=schema)
    charted = with_person(inp, oxygen).select(
        "person_id",
        "at",
        "device",
        "flow_l_min",
        device_source=source_text(pl.col("device_code")),
    )
    charted = charted.sort("person_id", "at", "device", maintain_order=True)
    new_run = (
        (pl.col("device") != pl.col("device").shift().over("person_id"))
        | (pl.col("at").diff().over("person_id") > RUN_GAP)
    ).fill_null(True)
    return (
        charted.with_columns(_run=new_run.cast(pl.Int32).cum_sum().over("person_id"))
        .group_by("person_id", "_run", maintain_order=True)
        .agg(
            device=pl.col("device").first(),
            start=pl.col("at").min(),
            end=pl.col("at").max(),
            max_flow=pl.col("flow_l_min").max(),
            device_source=pl.col("device_source").first(),
        )
        .filter(pl.col("device") != ROOM_AIR)
        .select(list(schema))
    )
