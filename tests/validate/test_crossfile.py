"""Cross-row and cross-file rules: duplicates, orphans, infusions, day-28 window, death order."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from cart_etl.contract import conform
from cart_etl.validate import crossfile

PROV = {"source": "s", "file": "vitals_flowsheet.csv"}


def test_01_duplicates_after_normalisation_keep_the_first():
    raw = conform(
        "vitals",
        pl.DataFrame(
            [
                {
                    **PROV,
                    "row": "1",
                    "patient_key": "m1",
                    "at": "2021/03/05 14:20",
                    "item_code": "体温",
                    "value": "38.6",
                    "unit": "℃",
                },
                {
                    **PROV,
                    "row": "2",
                    "patient_key": "m1",
                    "at": "2021/03/05 14:20",
                    "item_code": "体温",
                    "value": "38.6 ",
                    "unit": "℃",
                },
                {
                    **PROV,
                    "row": "3",
                    "patient_key": "m1",
                    "at": "2021/03/05 14:20",
                    "item_code": "体温",
                    "value": "38.7",
                    "unit": "℃",
                },
            ]
        ),
    )
    ok, cases = crossfile.filter_duplicates("vitals", raw)
    assert ok["row"].to_list() == ["1", "3"]
    assert [(c.row, c.rule_id) for c in cases] == [("2", "row.duplicate")]


def test_02_orphans_named_with_their_key():
    patients = pl.DataFrame({"source": ["s"], "patient_key": ["2021004817"]})
    rows = pl.DataFrame(
        {
            **{k: [v, v] for k, v in PROV.items()},
            "row": ["1", "2"],
            "patient_key": ["2021004817", "2021008417"],
        }
    )
    ok, cases = crossfile.filter_orphans(rows, patients)
    assert ok["row"].to_list() == ["1"]
    assert cases[0].rule_id == "row.patient.known"
    assert "2021008417" in cases[0].message


def _at(y, m, d, h=10):
    return datetime(y, m, d, h, tzinfo=UTC)


def test_03_second_infusion_and_date_order_and_window():
    inf = pl.DataFrame(
        {
            "source": ["s"] * 3,
            "file": ["cart_infusion.csv"] * 3,
            "row": ["1", "2", "3"],
            "patient_key": ["m1", "m1", "m2"],
            "at": [_at(2021, 3, 5), _at(2021, 4, 5), _at(2019, 1, 5)],
            "at_raw": ["a", "b", "c"],
        }
    )
    ok, cases = crossfile.filter_extra_infusions(inf)
    assert ok["row"].to_list() == ["1", "3"]
    assert cases[0].rule_id == "infusion.one_per_patient"
    patients = pl.DataFrame(
        {
            "source": ["s", "s"],
            "patient_key": ["m1", "m2"],
            "diagnosis_date": [date(2020, 1, 1), date(2019, 6, 1)],
        }
    )
    ok2, cases2 = crossfile.filter_infusion_dates(
        ok, patients, window=(date(2020, 4, 1), date(2023, 10, 31)), timezone="Asia/Shanghai"
    )
    assert ok2["row"].to_list() == ["1"]
    assert [c.rule_id for c in cases2] == ["infusion.after_diagnosis"]


def test_04_day28_window_and_death_order():
    inf = pl.DataFrame({"source": ["s"], "patient_key": ["m1"], "at": [_at(2021, 3, 5)]})
    resp = pl.DataFrame(
        {
            "source": ["s", "s"],
            "file": ["r.csv"] * 2,
            "row": ["1", "2"],
            "patient_key": ["m1", "m1"],
            "at": [_at(2021, 4, 1), _at(2021, 4, 20)],
            "at_raw": ["2021/04/01", "2021/04/20"],
        }
    )
    ok, cases = crossfile.filter_response_window(
        resp, inf, window=(21, 35), timezone="Asia/Shanghai"
    )
    assert ok["row"].to_list() == ["1"]  # day 27
    assert cases[0].value == "2021/04/20"  # day 46
    fu = pl.DataFrame(
        {
            "source": ["s", "s"],
            "file": ["f.csv"] * 2,
            "row": ["1", "2"],
            "patient_key": ["m1", "m2"],
            "last_contact_date": [date(2022, 1, 1), date(2022, 1, 1)],
            "death_date": [date(2022, 1, 1), date(2021, 12, 1)],
            "death_date_raw": ["2022-01-01", "2021-12-01"],
        }
    )
    ok, cases = crossfile.filter_followup_order(fu)
    assert ok["row"].to_list() == ["1"]
    assert cases[0].rule_id == "followup.death_before_last_contact"
