"""Writes the HIS register (patients.csv) and the CAR-T infusion record (cart_infusion.csv).

One register row per screened patient, the only file linking the study id to the MRN;
one infusion row per infused patient (product, lot, time, cells, dose, weight, source).
Sex, risk group, yes/no and cell-source codes are printed with the site's local names.
"""

from __future__ import annotations

from cart_etl.synth.model import ClinicalRecord, Demographics
from cart_etl.synth.site.cells import FORMATTERS, fixed_number, local_time, shortest_number
from cart_etl.synth.site.layouts import CART_INFUSION, PATIENTS, Row
from cart_etl.synth.vocab import CELL_SOURCE_NAMES, RISK_NAMES, SEX_NAMES, YES_NO


def register_row(demo: Demographics) -> Row:
    """patients.csv row: the HIS register entry."""
    fmt = FORMATTERS[PATIENTS.datetime_format or ""]
    return [
        demo.study_id,
        demo.mrn,
        demo.name,
        SEX_NAMES[demo.sex],
        fmt(demo.birth_date),
        fmt(demo.diagnosis_date),
        fmt(demo.screening_date),
        fixed_number(demo.height_cm, 1),
        fixed_number(demo.weight_kg, 1),
        RISK_NAMES[demo.is_high_risk],
        demo.risk_genetics,
        str(demo.lines_of_therapy),
        YES_NO[demo.prior_allo_sct],
        fixed_number(demo.marrow_blasts_pct, 1),
    ]


def infusion_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """cart_infusion.csv rows (one, or none when not infused)."""
    inf = record.infusion
    if inf is None:
        return []
    fmt = FORMATTERS[CART_INFUSION.datetime_format or ""]
    return [
        [
            mrn,
            inf.product,
            inf.lot,
            fmt(local_time(inf.at)),
            shortest_number(inf.cells_total),
            fixed_number(inf.dose_1e6_per_kg, 1),
            fixed_number(inf.weight_kg, 1),
            CELL_SOURCE_NAMES[inf.donor_derived],
        ]
    ]
