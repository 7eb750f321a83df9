"""Stage one bucket: every canonical entity through its ``stg_*`` function.

Staging only renames, casts, maps codes and converts units; nothing is dropped here
(rows that do not cast end with nulls and the staged models quarantine them). The one
conversion that needs validated data, a mg/kg dose times the weight of the accepted
infusion, is ``staging.stg_drug_doses``, applied by the validation of the bucket.
"""

from __future__ import annotations

import polars as pl

from cart_etl.stage.staging import (
    StagingContext,
    ValueMaps,
    stg_drugs,
    stg_measurements,
    stg_oxygen,
    stg_table,
    stg_vasopressors,
)

# Register-level tables staged by their cast spec alone.
_TABLES: tuple[str, ...] = ("response", "follow_up", "infections", "icans", "recorded_crs")
# Entities validated after the register and infusion, in this order.
BUCKET_ENTITIES: tuple[str, ...] = ("vitals", "labs", "oxygen", "drugs", "vasopressors", *_TABLES)


def stage_bucket(
    deduped: dict[str, pl.DataFrame], ctx: StagingContext, values: ValueMaps
) -> dict[str, pl.DataFrame]:
    """Staged frames of one bucket, keyed by entity (register and infusion first)."""
    staged = {
        "demographics": stg_table(deduped["demographics"], ctx, values, "demographics"),
        "infusion": stg_table(deduped["infusion"], ctx, values, "infusion"),
        "vitals": stg_measurements(deduped["vitals"], ctx, code="item"),
        "labs": stg_measurements(deduped["labs"], ctx, code="test"),
        "oxygen": stg_oxygen(deduped["oxygen"], ctx),
        "drugs": stg_drugs(deduped["drugs"], ctx, values),
        "vasopressors": stg_vasopressors(deduped["vasopressors"], ctx, values),
    }
    for entity in _TABLES:
        staged[entity] = stg_table(deduped[entity], ctx, values, entity)
    return staged
