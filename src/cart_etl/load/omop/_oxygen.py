"""Oxygen-support runs shared by PROCEDURE_OCCURRENCE and DEVICE_EXPOSURE."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.periods import derive_oxygen_runs
from cart_etl.derive.rules import derivation_rules
from cart_etl.load.omop._common import entity, source_text, with_person

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput


def oxygen_runs(inp: OmopInput) -> pl.DataFrame:
    """person_id, device, start, end (UTC), max_flow, device_source: one row per run.

    The run rule is ``cart_etl.derive.periods.derive_oxygen_runs`` (gap and room-air
    device from ``mappings/derive/derivation.yaml``).
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
    rules = derivation_rules()
    charted = with_person(inp, oxygen).with_columns(
        device_source=source_text(pl.col("device_code"))
    )
    runs = derive_oxygen_runs(charted, "person_id", rules.oxygen_run_gap, rules.room_air_device)
    return runs.select(list(schema))
