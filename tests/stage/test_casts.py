"""Casts from raw text: numbers, decimal commas, full-width digits, dates and Excel serials."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from cart_etl.stage.casts import (
    has_decimal_comma,
    normalise_text,
    parse_iso_datetime,
    parse_local_datetime,
    parse_number,
)

TZ = "Asia/Shanghai"


def _col(values: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame({"raw": values}, schema={"raw": pl.String})


def test_01_numbers_decimal_comma_fullwidth_and_garbage():
    df = _col(["38.5", " 38,6 ", "３８.５", "371", "-2", "abc", "", None, "1,234,5", "1.2.3"])
    out = df.select(v=parse_number(pl.col("raw")), comma=has_decimal_comma(pl.col("raw")))
    assert out["v"].to_list() == [38.5, 38.6, 38.5, 371.0, -2.0, None, None, None, None, None]
    assert out["comma"].to_list() == [
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
    ]


def test_02_normalise_text_nfkc_strip_empty_is_null():
    out = _col(["  ＩＬ－６ ", "℃", "   ", "鼻导管 3L/min "]).select(
        t=normalise_text(pl.col("raw"))
    )
    assert out["t"].to_list() == ["IL-6", "°C", None, "鼻导管 3L/min"]


def test_03_declared_formats_in_order_then_excel_serial():
    """Excel serial 44260.604167 = 2021-03-05 14:30 local (Excel: =TEXT(44260.604167,"yyyy-mm-dd hh:mm"))."""
    formats = ["%Y/%m/%d %H:%M", "%d/%m/%Y %H:%M", "%Y年%m月%d日 %H:%M"]
    df = _col(
        [
            "2021/03/05 14:20",
            "05/03/2021 14:20",
            "2021年03月05日 14:20",
            "44260.604167",
            "2021-13-01 00:00",
            None,
        ]
    )
    out = df.select(
        t=parse_local_datetime(pl.col("raw"), formats, timezone=TZ, precision="minute")
    )["t"].to_list()
    local = [None if t is None else t.astimezone(UTC) for t in out]
    assert local[0] == datetime(2021, 3, 5, 6, 20, tzinfo=UTC)  # 14:20 +08:00
    assert local[1] == local[0]  # day-first slash format as declared
    assert local[2] == local[0]
    assert local[3] == datetime(2021, 3, 5, 6, 30, tzinfo=UTC)
    assert local[4] is None
    assert local[5] is None


def test_04_offset_and_timezone_less_lis_timestamps_agree():
    formats = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]
    df = _col(["2021-03-05T06:10:00+08:00", "2021-03-05T06:10:00"])
    out = df.select(
        t=parse_local_datetime(pl.col("raw"), formats, timezone=TZ, excel_serial=False)
    )["t"]
    assert out[0] == out[1] == datetime(2021, 3, 4, 22, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-03-05T14:20:00+08:00", datetime(2021, 3, 5, 6, 20, tzinfo=UTC)),
        ("2021-03-05T06:20:00Z", datetime(2021, 3, 5, 6, 20, tzinfo=UTC)),
        ("2021-03-05", datetime(2021, 3, 4, 16, 0, tzinfo=UTC)),
    ],
)
def test_05_iso_datetimes(text, expected):
    assert _col([text]).select(t=parse_iso_datetime(pl.col("raw"), timezone=TZ))["t"][0] == expected
