"""DRUG_EXPOSURE: MAR administrations, vasopressor infusions and the CAR-T product."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from cart_etl.derive.timeline import local_date
from cart_etl.load.omop._common import (
    assign_ids,
    attach_visit,
    col_or,
    conform,
    empty,
    entity,
    local_datetime,
    source_text,
    with_person,
)
from cart_etl.load.omop.concepts import concepts

if TYPE_CHECKING:
    from cart_etl.load.omop import OmopInput

_KEY = ["person_id", "_at", "_drug", "_file", "_row"]
_EMPTY_KEYED = pl.Schema(
    {
        "drug_exposure_id": pl.Int64(),
        "person_id": pl.Int64(),
        "_drug": pl.String(),
        "_at": pl.Datetime("us", "UTC"),
    }
)


def _provenance(frame: pl.DataFrame) -> list[pl.Expr]:
    return [
        col_or(frame, "file", pl.lit("")).cast(pl.String).alias("_file"),
        col_or(frame, "row", pl.lit("")).cast(pl.String).alias("_row"),
    ]


def _administrations(inp: OmopInput) -> pl.DataFrame | None:
    drugs = entity(inp, "drugs")
    if drugs is None:
        return None
    c = concepts()
    sig = pl.concat_str(
        [pl.col("source_dose").cast(pl.String), pl.col("source_unit")], separator=" "
    )
    return with_person(inp, drugs).select(
        "person_id",
        *_provenance(drugs),
        _drug=pl.col("drug"),
        _at=pl.col("at"),
        _end=pl.col("at"),
        drug_concept_id=c.map_expr("drug", "drug"),
        quantity=pl.col("dose"),
        sig=source_text(col_or(drugs, "dose_raw", sig), 1000),
        route_concept_id=pl.when(pl.col("route").is_not_null()).then(
            pl.lit(c.id("route_unmapped"))
        ),
        route_source_value=source_text(col_or(drugs, "route_raw", "route")),
        drug_source_value=source_text(pl.col("drug_code")),
        dose_unit_source_value=source_text(pl.col("source_unit")),
    )


def _vasopressors(inp: OmopInput) -> pl.DataFrame | None:
    vaso = entity(inp, "vasopressors")
    if vaso is None:
        return None
    c = concepts()
    return with_person(inp, vaso).select(
        "person_id",
        *_provenance(vaso),
        _drug=pl.col("drug"),
        _at=pl.col("start"),
        _end=pl.col("stop").fill_null(pl.col("start")),
        drug_concept_id=c.map_expr("drug", "drug"),
        sig=pl.concat_str([pl.col("rate").cast(pl.String), pl.col("rate_unit")], separator=" "),
        drug_source_value=source_text(pl.col("drug_code")),
        dose_unit_source_value=source_text(pl.col("rate_unit")),
    )


def _cart_product(inp: OmopInput) -> pl.DataFrame | None:
    infusion = entity(inp, "infusion")
    if infusion is None:
        return None
    c = concepts()
    return with_person(inp, infusion).select(
        "person_id",
        *_provenance(infusion),
        _drug=pl.lit("cart"),
        _at=pl.col("at"),
        _end=pl.col("at"),
        drug_concept_id=pl.lit(c.id("academic_cart")),
        quantity=pl.col("cells_total"),
        sig=pl.format("{} x10^6 cells/kg", pl.col("dose_1e6_per_kg")),
        lot_number=source_text(pl.col("lot")),
        drug_source_value=source_text(pl.col("product")),
        dose_unit_source_value=pl.lit("cells"),
    )


def drug_exposure_keyed(inp: OmopInput) -> pl.DataFrame:
    """The DRUG_EXPOSURE rows before conforming, with ``_drug`` (canonical name) and ``_at``
    (UTC start instant) kept so that episodes can find a treatment row's drug_exposure_id."""
    candidates = (_administrations(inp), _vasopressors(inp), _cart_product(inp))
    parts = [p for p in candidates if p is not None]
    if not parts:
        return pl.DataFrame(schema=_EMPTY_KEYED)
    c = concepts()
    tz = inp.timezone
    frame = pl.concat(parts, how="diagonal_relaxed").with_columns(
        drug_exposure_start_date=local_date(pl.col("_at"), tz),
        drug_exposure_start_datetime=local_datetime(pl.col("_at"), tz),
        drug_exposure_end_date=local_date(pl.col("_end"), tz),
        drug_exposure_end_datetime=local_datetime(pl.col("_end"), tz),
        drug_type_concept_id=pl.lit(c.id("type_ehr_administration")),
        drug_source_concept_id=pl.lit(c.id("no_matching_concept")),
    )
    frame = attach_visit(inp, frame, "drug_exposure_start_date")
    return assign_ids(frame, "drug_exposure_id", _KEY)


def map_drug_exposure(inp: OmopInput) -> pl.DataFrame:
    """One row per drug administration (MAR), vasopressor infusion and CAR-T infusion.

    * MAR (``drugs``): drug_concept_id by canonical drug (tocilizumab 40171288,
      methylprednisolone 1506270, dexamethasone 1518254, prednisone 1551099; G-CSF 0:
      filgrastim unverified); start = end = administration time (bolus); quantity = the
      normalised dose (mg; ug for G-CSF), the unit as
      written (``source_unit``) in dose_unit_source_value,
      the order as written (``dose_raw``, e.g. ``8mg/kg``) in sig; route_concept_id 0 (no
      verified route concepts), route as written in route_source_value.
    * Vasopressors: norepinephrine 1321341, dopamine 1337860, vasopressin 1507835,
      epinephrine 1343916, phenylephrine 1135766, dobutamine 1337720; start/stop of the
      infusion; quantity NULL; ``rate rate_unit`` in sig, rate unit in
      dose_unit_source_value.
    * CAR-T product (``infusion``): drug_concept_id 0 (academic product, no RxNorm),
      product name in drug_source_value, lot in lot_number, quantity = total cells,
      dose per kg in sig.
    * drug_type EHR administration record (32818); drug_source_concept_id 0; dates are
      local dates, datetimes naive local time; visit = the CAR-T admission if the start
      date falls in it. drug_exposure_id: 1..n over (person, start, drug, file, row).
    """
    keyed = drug_exposure_keyed(inp)
    if not keyed.height:
        return empty("drug_exposure")
    return conform(keyed, "drug_exposure")
