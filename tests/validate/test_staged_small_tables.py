"""Dosing units, label limits, register dates and cast failures on tiny hand-built frames."""

from __future__ import annotations

from datetime import date

import polars as pl

from cart_etl.contract import conform
from cart_etl.stage.staging import (
    DateFormats,
    StagingContext,
    ValueMaps,
    stg_demographics,
    stg_drug_doses,
    stg_drugs,
)
from cart_etl.validate.quarantine import cast_failures, validate_frame
from cart_etl.validate.staged import StgDemographics, StgDrug

DRUGS = "local:tianjin_ref:mar.xlsx:药品名称"
CTX = StagingContext(
    timezone="Asia/Shanghai",
    dates={
        "mar.xlsx": DateFormats(("%Y-%m-%dT%H:%M:%S", "%Y/%m/%d %H:%M:%S"), "second"),
        "patients.csv": DateFormats(("%Y-%m-%d", "%Y年%m月%d日"), "day"),
    },
    concepts={
        (DRUGS, "托珠单抗注射液(tocilizumab)"): "tocilizumab",
        (DRUGS, "注射用甲泼尼龙琥珀酸钠"): "methylprednisolone",
        (DRUGS, "重组人粒细胞刺激因子注射液(G-CSF)"): "gcsf",
    },
)
VALUES = ValueMaps(
    {
        "drugs.route": {"静脉滴注": "IV", "皮下注射": "SC"},
        "demographics.sex": {"男": "M", "女": "F"},
        "demographics.is_high_risk": {"高危": "true", "标危": "false"},
        "demographics.prior_allo_sct": {"是": "true", "否": "false"},
    }
)
WEIGHTS = pl.DataFrame({"patient_key": ["m1", "m2"], "weight_kg": [60.0, 25.0]})


def _mar(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    return conform(
        "drugs",
        pl.DataFrame(
            [
                {
                    "source": "tianjin_ref",
                    "file": "mar.xlsx",
                    "row": str(i + 1),
                    "patient_key": key,
                    "at": at,
                    "drug_system": DRUGS,
                    "drug_code": drug,
                    "dose": dose,
                    "route": "静脉滴注",
                }
                for i, (key, at, drug, dose) in enumerate(rows)
            ]
        ),
    )


def test_01_dose_units_g_mg_ug_and_mg_per_kg():
    """8 mg/kg x 60 kg = 480 mg (Actemra label dose); 0.4 g = 400 mg; 300 μg G-CSF stays μg."""
    raw = _mar(
        [
            ("m1", "2021-03-05T10:00:00", "托珠单抗注射液(tocilizumab)", "8mg/kg"),
            ("m1", "2021-03-05T20:00:00", "托珠单抗注射液(tocilizumab)", "0.4g"),
            ("m1", "2021-03-06T08:00:00", "注射用甲泼尼龙琥珀酸钠", "４０ mg"),
            ("m1", "2021-03-10T09:00:00", "重组人粒细胞刺激因子注射液(G-CSF)", "300µg"),
        ]
    )
    out = stg_drug_doses(stg_drugs(raw, CTX, VALUES), WEIGHTS)
    assert out["dose"].to_list() == [480.0, 400.0, 40.0, 300.0]
    assert out["dose_unit"].to_list() == ["mg", "mg", "mg", "ug"]
    assert out["is_dose_per_kg"].to_list() == [True, False, False, False]
    assert out["route"].to_list() == ["IV"] * 4
    assert validate_frame(StgDrug, out).rows_quarantined == 0


def test_02_label_alerts_kept_hard_limits_quarantined():
    raw = _mar(
        [
            (
                "m1",
                "2021-03-05T10:00:00",
                "托珠单抗注射液(tocilizumab)",
                "800mg",
            ),  # label max, 13.3 mg/kg -> alert
            (
                "m1",
                "2021-03-05T14:00:00",
                "托珠单抗注射液(tocilizumab)",
                "80mg",
            ),  # < 8 h, 1.3 mg/kg -> alerts
            (
                "m2",
                "2021-03-05T10:00:00",
                "托珠单抗注射液(tocilizumab)",
                "600mg",
            ),  # 24 mg/kg at 25 kg -> hard
            ("m1", "2021-03-07T10:00:00", "托珠单抗注射液(tocilizumab)", "4g"),  # 4000 mg -> hard
            ("m1", "2021-03-07T10:00:00", "阿司匹林", "100mg"),  # unknown drug
            (
                "m1",
                "2021-03-07T10:00:00",
                "注射用甲泼尼龙琥珀酸钠",
                "40 mL",
            ),  # unit not a dose unit
        ]
    )
    result = validate_frame(StgDrug, stg_drug_doses(stg_drugs(raw, CTX, VALUES), WEIGHTS))
    rules = sorted((c.row, c.rule_id) for c in result.quarantined)
    assert rules == [
        ("3", "drug.toci.mg_per_kg_hard"),
        ("4", "drug.dose.hard_range"),
        ("5", "drug.known"),
        ("6", "drug.dose.parse"),
    ]


def _register(rows: list[dict[str, str]]) -> pl.DataFrame:
    base = {"source": "tianjin_ref", "file": "patients.csv"}
    return conform(
        "demographics", pl.DataFrame([{**base, "row": str(i + 1), **r} for i, r in enumerate(rows)])
    )


def test_03_register_casts_codes_and_date_order():
    raw = _register(
        [
            {
                "patient_key": "m1",
                "study_id": "CART-001",
                "sex": "女",
                "birth_date": "1985-06-02",
                "diagnosis_date": "2019-11-20",
                "screening_date": "2021年02月10日",
                "is_high_risk": "高危",
                "lines_of_therapy": "2",
                "marrow_blasts_pct": "34.15",
            },
            {
                "patient_key": "m2",
                "study_id": "CART-002",
                "sex": "男",
                "birth_date": "2020-01-01",
                "diagnosis_date": "2019-11-20",
                "screening_date": "2021-02-10",
                "is_high_risk": "标危",
                "lines_of_therapy": "1",
                "marrow_blasts_pct": "5",
            },
            {
                "patient_key": "m3",
                "study_id": "CART-003",
                "sex": "X",
                "birth_date": "1990-01-01",
                "diagnosis_date": "2019-11-20",
                "screening_date": "2021-02-10",
                "is_high_risk": "高危",
                "lines_of_therapy": "2.5",
                "marrow_blasts_pct": "120",
            },
        ]
    )
    staged = stg_demographics(raw, CTX, VALUES)
    assert staged["screening_date"][0] == date(2021, 2, 10)
    assert staged["is_high_risk"].to_list() == ["true", "false", "true"]
    ok, cases = cast_failures(
        staged, {"sex": "M/F", "lines_of_therapy": "an integer", "screening_date": "a date"}
    )
    assert sorted((c.row, c.field, c.value) for c in cases) == [
        ("3", "lines_of_therapy", "2.5"),
        ("3", "sex", "X"),
    ]
    result = validate_frame(StgDemographics, ok)
    assert [(c.row, c.rule_id) for c in result.quarantined] == [("2", "patient.dates.order")]
    assert result.accepted["study_id"].to_list() == ["CART-001"]


def test_04_vasopressor_rates_units_and_intervals():
    from cart_etl.stage.staging import stg_vasopressors
    from cart_etl.validate.staged import StgVasopressor

    rx = "http://www.nlm.nih.gov/research/umls/rxnorm"
    ctx = StagingContext(
        timezone="Asia/Shanghai",
        concepts={(rx, "7512"): "norepinephrine", (rx, "11149"): "vasopressin"},
        units={"ug/kg/min": "ug/kg/min", "U/min": "U/min", "ug/min": "ug/min"},
    )
    rows = [
        (
            "7512",
            "2021-03-05T10:00:00+08:00",
            "2021-03-05T20:00:00+08:00",
            "0.1",
            "ug/kg/min",
        ),  # ok
        ("11149", "2021-03-05T10:00:00+08:00", "2021-03-05T20:00:00+08:00", "0.03", "U/min"),  # ok
        (
            "7512",
            "2021-03-05T10:00:00+08:00",
            "2021-03-05T20:00:00+08:00",
            "8",
            "ug/min",
        ),  # per-minute, not per kg
        (
            "7512",
            "2021-03-05T20:00:00+08:00",
            "2021-03-05T10:00:00+08:00",
            "0.1",
            "ug/kg/min",
        ),  # stops before it starts
        (
            "9999",
            "2021-03-05T10:00:00+08:00",
            "2021-03-05T20:00:00+08:00",
            "0.1",
            "ug/kg/min",
        ),  # unknown agent
    ]
    raw = conform(
        "vasopressors",
        pl.DataFrame(
            [
                {
                    "source": "fhir",
                    "file": "MedicationAdministration.ndjson",
                    "row": str(i + 1),
                    "patient_key": "p1",
                    "drug_system": rx,
                    "drug_code": code,
                    "start": start,
                    "stop": stop,
                    "rate": rate,
                    "rate_unit": unit,
                }
                for i, (code, start, stop, rate, unit) in enumerate(rows)
            ]
        ),
    )
    result = validate_frame(StgVasopressor, stg_vasopressors(raw, ctx, ValueMaps()))
    assert sorted((c.row, c.rule_id) for c in result.quarantined) == [
        ("3", "vasopressor.rate"),
        ("4", "vasopressor.interval"),
        ("5", "vasopressor.known"),
    ]


def test_05_infusion_cells_and_dose_per_kg_agree():
    """2.36 x10^6/kg x 45.5 kg = 107.38 x10^6 cells (the charted total); 150 x10^6 is 40 % off."""
    from cart_etl.validate.staged import infusion_dose_consistent

    df = pl.DataFrame(
        {
            "cells_total": [107_380_000.0, 150_000_000.0, None],
            "weight_kg": [45.5, 45.5, 45.5],
            "dose_1e6_per_kg": [2.36, 2.36, 2.36],
        }
    )
    assert df.select(ok=infusion_dose_consistent())["ok"].to_list() == [True, False, True]
