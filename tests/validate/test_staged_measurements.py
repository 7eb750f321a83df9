"""Staging + pandera validation of vitals/labs/oxygen on tiny hand-built raw frames."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from cart_etl.contract import conform
from cart_etl.derive.measurements import compute_clinical_flag
from cart_etl.stage.staging import DateFormats, StagingContext, stg_measurements, stg_oxygen
from cart_etl.validate.quarantine import validate_frame
from cart_etl.validate.staged import StgMeasurement, StgOxygen, implausible

LOCAL = "local:tianjin_ref:vitals_flowsheet.csv:项目"
LOINC = "http://loinc.org"
CTX = StagingContext(
    timezone="Asia/Shanghai",
    dates={"vitals_flowsheet.csv": DateFormats(("%Y/%m/%d %H:%M", "%d/%m/%Y %H:%M"), "minute")},
    concepts={
        (LOCAL, "体温"): "temp",
        (LOCAL, "收缩压"): "sbp",
        (LOINC, "8310-5"): "temp",
        (LOINC, "1988-5"): "crp",
    },
    units={
        "℃": "Cel",
        "°C": "Cel",
        "℉": "[degF]",
        "°F": "[degF]",
        "mmHg": "mm[Hg]",
        "mg/dL": "mg/dL",
        "mg/L": "mg/L",
    },
    default_units={"temp": "Cel", "sbp": "mm[Hg]"},
    oxygen_devices=(
        (r"^未吸氧", "room_air"),
        (r"^鼻导管", "nasal_cannula"),
        (r"^高流量", "high_flow_nasal_cannula"),
        (r"^储氧面罩", "non_rebreather"),
        (r"^面罩", "face_mask"),
    ),
)


def _vitals(rows: list[tuple[str, str, str, str, str]]) -> pl.DataFrame:
    df = pl.DataFrame(
        [
            {
                "source": "tianjin_ref",
                "file": "vitals_flowsheet.csv",
                "row": str(i + 1),
                "patient_key": "2021004817",
                "at": at,
                "item_system": system,
                "item_code": code,
                "value": value,
                "unit": unit,
            }
            for i, (at, system, code, value, unit) in enumerate(rows)
        ]
    )
    return conform("vitals", df)


def test_01_units_decimal_comma_fahrenheit_and_inferred_unit():
    raw = _vitals(
        [
            ("2021/03/05 14:20", LOCAL, "体温", "38,6", "℃"),  # decimal comma
            ("2021/03/05 14:20", LOCAL, "体温", "101.3", "℉"),  # (101.3-32)*5/9 = 38.5
            ("2021/03/05 14:20", LOCAL, "体温 ", "３７.２", "℃"),  # trailing space + full width
            ("05/03/2021 14:20", LOCAL, "收缩压", "84", ""),  # day-first alternate, unit inferred
        ]
    )
    out = stg_measurements(raw, CTX, code="item")
    assert out["item"].to_list() == ["temp", "temp", "temp", "sbp"]
    assert out["value"].to_list() == [38.6, 38.5, 37.2, 84.0]
    assert out["unit"].to_list() == ["Cel", "Cel", "Cel", "mm[Hg]"]
    assert out["is_unit_converted"].to_list() == [False, True, False, False]
    assert out["is_unit_inferred"].to_list() == [False, False, False, True]
    assert out["has_decimal_comma"].to_list() == [True, False, False, False]
    assert set(out["at"].to_list()) == {datetime(2021, 3, 5, 6, 20, tzinfo=UTC)}
    assert validate_frame(StgMeasurement, out).rows_quarantined == 0


def test_02_each_bad_row_quarantined_once_with_its_rule_and_raw_value():
    raw = _vitals(
        [
            ("2021/03/05 14:20", LOCAL, "体温", "37.1", "℃"),  # ok
            ("2021/03/05 14:20", LOCAL, "体温", "371", "℃"),  # impossible (x10)
            ("2041/03/05 14:20", LOCAL, "体温", "37.0", "℃"),  # future
            ("2021-03-05 14:20", LOCAL, "体温", "37.0", "℃"),  # undeclared format
            ("2021/03/05 14:20", LOCAL, "呼吸", "18", "次/分"),  # unknown item
            ("2021/03/05 14:20", LOCAL, "体温", "n/a", "℃"),  # not numeric
            ("2021/03/05 14:20", LOCAL, "体温", "37.0", "K"),  # unknown unit
        ]
    )
    result = validate_frame(StgMeasurement, stg_measurements(raw, CTX, code="item"))
    assert result.accepted["row"].to_list() == ["1"]
    by_row = {c.row: (c.rule_id, c.value) for c in result.quarantined}
    assert by_row == {
        "2": ("measurement.value.hard_range", "371"),
        "3": ("measurement.at.future", "2041/03/05 14:20"),
        "4": ("measurement.at.parse", "2021-03-05 14:20"),
        "5": ("measurement.item.known", "呼吸"),
        "6": ("measurement.value.numeric", "n/a"),
        "7": ("measurement.unit.convertible", "K"),
    }
    assert result.rows_in == result.accepted.height + len({c.row for c in result.quarantined})
    assert all(
        "Fix:" in c.message and "vitals_flowsheet.csv row" in c.message for c in result.quarantined
    )


def test_03_crp_mg_dl_converted_and_fhir_iso_timestamps():
    raw = conform(
        "labs",
        pl.DataFrame(
            {
                "source": ["fhir", "fhir"],
                "file": ["ndjson/Observation.ndjson"] * 2,
                "row": ["a", "b"],
                "patient_key": ["p1", "p1"],
                "at": ["2021-03-05T06:10:00+08:00", "2021-03-04T22:10:00Z"],
                "test_system": [LOINC, LOINC],
                "test_code": ["1988-5", "1988-5"],
                "value": ["8.64", "86.4"],
                "unit": ["mg/dL", "mg/L"],
            }
        ),
    )
    out = stg_measurements(raw, CTX, code="test")
    assert out["value"].to_list() == [86.4, 86.4]
    assert out["at"][0] == out["at"][1]


def test_04_clinical_flags_are_kept_not_quarantined():
    raw = _vitals(
        [
            ("2021/03/05 14:20", LOCAL, "体温", "40.6", "℃"),
            ("2021/03/05 14:20", LOCAL, "收缩压", "78", "mmHg"),
        ]
    )
    out = stg_measurements(raw, CTX, code="item").with_columns(
        flag=compute_clinical_flag(), odd=implausible()
    )
    assert out["flag"].to_list() == ["high", "low"]
    assert out["odd"].to_list() == [False, False]
    assert validate_frame(StgMeasurement, out).rows_quarantined == 0


@pytest.mark.parametrize(
    ("text", "device", "flow"),
    [
        ("鼻导管 3L/min", "nasal_cannula", 3.0),
        ("高流量 40L/min", "high_flow_nasal_cannula", 40.0),
        ("储氧面罩 10L/min", "non_rebreather", 10.0),
        ("面罩 8L/min", "face_mask", 8.0),
        ("未吸氧", "room_air", None),
        ("鼻导管 ７L/min", "nasal_cannula", 7.0),
    ],
)
def test_05_oxygen_text_to_device_and_flow(text, device, flow):
    raw = conform(
        "oxygen",
        pl.DataFrame(
            {
                "source": ["s"],
                "file": ["vitals_flowsheet.csv"],
                "row": ["1"],
                "patient_key": ["m"],
                "at": ["2021/03/05 14:20"],
                "device_system": [LOCAL],
                "device_code": [text],
            }
        ),
    )
    out = stg_oxygen(raw, CTX)
    assert (out["device"][0], out["flow_l_min"][0]) == (device, flow)
    assert validate_frame(StgOxygen, out).rows_quarantined == 0


def test_06_unknown_oxygen_text_is_quarantined():
    raw = conform(
        "oxygen",
        pl.DataFrame(
            {
                "source": ["s"],
                "file": ["vitals_flowsheet.csv"],
                "row": ["9"],
                "patient_key": ["m"],
                "at": ["2021/03/05 14:20"],
                "device_system": [LOCAL],
                "device_code": ["氧气枕"],
            }
        ),
    )
    result = validate_frame(StgOxygen, stg_oxygen(raw, CTX))
    assert [(c.row, c.rule_id) for c in result.quarantined] == [("9", "oxygen.device.known")]
