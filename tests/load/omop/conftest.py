"""Two hand-built patients (A infused with CRS, B not infused and dead) as an OmopInput.

Times are UTC instants; the site is Asia/Shanghai (UTC+8), so 2020-04-19 22:30 UTC is the
local date 2020-04-20 -- the cases below check that dates are local.
"""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest

from cart_etl.load.omop import OmopInput

TZ = "Asia/Shanghai"
MRN_A, MRN_B = "2020296820", "2021381276"
UTC = pl.Datetime("us", "UTC")


def t(s: str) -> datetime:
    """A UTC instant from 'YYYY-mm-dd HH:MM'."""
    return datetime.strptime(s + "+0000", "%Y-%m-%d %H:%M%z")


def ts(values: list[str]) -> pl.Series:
    return pl.Series([t(v) for v in values], dtype=UTC)


def frames() -> dict[str, pl.DataFrame]:
    demographics = pl.DataFrame(
        {
            "file": ["patients.csv", "patients.csv"],
            "row": ["1", "2"],
            "patient_key": [MRN_A, MRN_B],
            "patient_key_raw": [MRN_A, MRN_B],
            "study_id": ["CART-001", "CART-002"],
            "sex_raw": ["女", "男"],
            "sex": ["F", "M"],
            "birth_date": [date(1980, 5, 17), date(2010, 2, 3)],
            "diagnosis_date": [date(2019, 1, 10), date(2018, 6, 1)],
            "screening_date": [date(2020, 3, 29), date(2020, 5, 1)],
            "height_cm": [160.0, 140.5],
            "weight_kg": [50.0, 33.1],
            "is_high_risk": ["true", "false"],
            "risk_genetics": ["复杂核型", "ETV6-RUNX1"],
            "lines_of_therapy": [2, 1],
            "prior_allo_sct": ["true", "false"],
            "marrow_blasts_pct": [26.11, 6.26],
        }
    )
    infusion = pl.DataFrame(
        {
            "file": ["cart_infusion.csv"],
            "row": ["1"],
            "patient_key": [MRN_A],
            "at": ts(["2020-04-18 06:50"]),
            "product": ["CD19 CAR-T (4-1BB)"],
            "lot": ["CT200418-40"],
            "cells_total": [2.9e7],
            "dose_1e6_per_kg": [0.58],
        }
    )
    vitals = pl.DataFrame(
        {
            "file": ["v.csv"] * 3,
            "row": ["1", "2", "3"],
            "patient_key": [MRN_A, MRN_A, MRN_B],
            "item_code": [" 体温", "收缩压  ", "体温"],
            "item": ["temp", "sbp", "temp"],
            "value_raw": ["101.3", "85", "36.8"],
            "value": [38.5, 85.0, 36.8],
            "unit": ["Cel", "mm[Hg]", "Cel"],
            "source_unit": ["[degF]", "mm[Hg]", "Cel"],
            "at": ts(["2020-04-19 02:00", "2020-04-19 02:00", "2020-05-02 01:00"]),
        }
    )
    labs = pl.DataFrame(
        {
            "file": ["l.csv", "l.csv"],
            "row": ["1", "2"],
            "patient_key": [MRN_A, MRN_A],
            "test_code": ["白细胞介素-6(IL-6)", "可溶性白介素-2受体(sIL-2R)"],
            "item": ["il6", "sil2r"],
            "value": [120.0, 2400.0],
            "unit": ["pg/mL", "U/mL"],
            "source_unit": ["pg/mL", "U/mL"],
            "at": ts(["2020-04-19 22:30", "2020-04-19 22:30"]),
        }
    )
    oxygen = pl.DataFrame(
        {
            "file": ["v.csv"] * 4,
            "row": ["10", "11", "12", "13"],
            "patient_key": [MRN_A] * 4,
            "device_code": ["鼻导管 3L/min", "鼻导管 3L/min", "未吸氧", "面罩 8L/min"],
            "device": ["nasal_cannula", "nasal_cannula", "room_air", "face_mask"],
            "flow_l_min": [3.0, 3.0, None, 8.0],
            "at": ts(
                ["2020-04-19 03:00", "2020-04-19 05:00", "2020-04-19 09:00", "2020-04-19 10:00"]
            ),
        }
    )
    drugs = pl.DataFrame(
        {
            "file": ["mar.xlsx"] * 4,
            "row": ["1", "2", "3", "4"],
            "patient_key": [MRN_A] * 4,
            "drug_code": ["托珠单抗注射液", "托珠单抗注射液", "注射用甲泼尼龙", "G-CSF"],
            "drug": ["tocilizumab", "tocilizumab", "methylprednisolone", "gcsf"],
            "dose_raw": ["8mg/kg", "400mg", "80mg", "300μg"],
            "source_dose": [8.0, 400.0, 80.0, 300.0],
            "source_unit": ["mg/kg", "mg", "mg", "ug"],
            "route_raw": ["静脉滴注", "静脉滴注", "静脉滴注", "皮下注射"],
            "route": ["IV", "IV", "IV", "SC"],
            "dose": [400.0, 400.0, 80.0, 300.0],
            "dose_unit": ["mg", "mg", "mg", "ug"],
            "at": ts(
                ["2020-04-19 04:00", "2020-04-19 14:00", "2020-04-19 06:00", "2020-04-25 01:00"]
            ),
        }
    )
    vasopressors = pl.DataFrame(
        {
            "file": ["vasopressors.csv"],
            "row": ["1"],
            "patient_key": [MRN_A],
            "drug_code": ["去甲肾上腺素"],
            "drug": ["norepinephrine"],
            "start": ts(["2020-04-19 05:00"]),
            "stop": ts(["2020-04-19 12:00"]),
            "rate": [0.1],
            "rate_unit": ["ug/kg/min"],
        }
    )
    response = pl.DataFrame(
        {
            "file": ["response_day28.csv"],
            "row": ["1"],
            "patient_key": [MRN_A],
            "at": ts(["2020-05-14 01:30"]),
            "morphology": ["CR"],
            "marrow_blasts_pct": [1.1],
            "mrd_pct_raw": ["阴性"],
            "mrd_pct": [0.0],
        }
    )
    follow_up = pl.DataFrame(
        {
            "file": ["followup.csv"] * 2,
            "row": ["1", "2"],
            "patient_key": [MRN_A, MRN_B],
            "last_contact_date": [date(2021, 1, 1), date(2020, 5, 20)],
            "progression_date": [None, date(2020, 5, 10)],
            "death_date": [None, date(2020, 5, 20)],
            "death_cause": [None, "disease progression"],
        }
    )
    infections = pl.DataFrame(
        {
            "patient_key": [MRN_A],
            "onset_date": [date(2020, 6, 1)],
            "site": ["肺部"],
            "organism": ["Klebsiella pneumoniae"],
            "ctcae_grade": [3],
        }
    )
    # A: site style (score and grade in one row); B: FHIR style (one value per row).
    icans = pl.DataFrame(
        {
            "patient_key": [MRN_A, MRN_B, MRN_B],
            "at": ts(["2020-04-21 00:00", "2020-05-02 00:00", "2020-05-02 00:00"]),
            "ice_score": [8, 10, None],
            "grade": [1, None, 0],
        }
    )
    recorded_crs = pl.DataFrame(
        {
            "patient_key": [MRN_A],
            "at": ts(["2020-04-20 18:53"]),
            "grade": [2],
            "scale": [None],
        },
        schema_overrides={"scale": pl.String},
    )
    return {
        "demographics": demographics,
        "infusion": infusion,
        "vitals": vitals,
        "labs": labs,
        "oxygen": oxygen,
        "drugs": drugs,
        "vasopressors": vasopressors,
        "response": response,
        "follow_up": follow_up,
        "infections": infections,
        "icans": icans,
        "recorded_crs": recorded_crs,
    }


def persons() -> pl.DataFrame:
    return pl.DataFrame(
        {"patient_key": [MRN_A, MRN_B], "person_id": [1, 2], "study_id": ["CART-001", "CART-002"]},
        schema_overrides={"person_id": pl.Int64},
    )


def crs_episode() -> pl.DataFrame:
    """A: one CRS episode (grade 3, day 1) and a later febrile episode that is not CRS."""
    return pl.DataFrame(
        {
            "person_id": [1, 1],
            "study_id": ["CART-001", "CART-001"],
            "episode_number": [1, 2],
            "is_crs": [True, False],
            "onset_at": ts(["2020-04-19 02:00", "2020-06-01 02:00"]),
            "end_at": ts(["2020-04-19 16:00", "2020-06-02 02:00"]),
            "max_grade": [3, 1],
            "grade_mechanism": ["vasopressor", "fever"],
        },
        schema_overrides={"person_id": pl.Int64, "episode_number": pl.Int32},
    )


def treatment() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "person_id": [1] * 5,
            "study_id": ["CART-001"] * 5,
            "drug": ["tocilizumab", "tocilizumab", "methylprednisolone", "gcsf", "norepinephrine"],
            "drug_class": [
                "anti_il6",
                "anti_il6",
                "corticosteroid",
                "growth_factor",
                "vasopressor",
            ],
            "route": ["IV", "IV", "IV", "SC", None],
            "start_at": ts(
                [
                    "2020-04-19 04:00",
                    "2020-04-19 14:00",
                    "2020-04-19 06:00",
                    "2020-04-25 01:00",
                    "2020-04-19 05:00",
                ]
            ),
            "dose": [400.0, 400.0, 80.0, 300.0, None],
        },
        schema_overrides={"person_id": pl.Int64},
    )


def make_input(**accepted_overrides: pl.DataFrame) -> OmopInput:
    acc = frames() | accepted_overrides
    return OmopInput(
        accepted=acc,
        persons=persons(),
        patient=pl.DataFrame(),
        detail=pl.DataFrame(),
        crs_episode=crs_episode(),
        treatment=treatment(),
        source_name="tianjin_ref",
        timezone=TZ,
    )


@pytest.fixture
def inp() -> OmopInput:
    return make_input()
