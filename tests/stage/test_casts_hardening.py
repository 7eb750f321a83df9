"""Timestamp casts never raise or panic on other data in a date column (#15).

An exporter that shifts columns puts text, decimals, cell counts or MRNs into a date-time
column. Each must end as a null (quarantined by the parse rule), never as a polars panic
(``PanicException``), an ``InvalidOperationError`` or a date Python cannot represent.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from cart_etl.stage.casts import excel_serial_days, parse_local_datetime
from cart_etl.stage.staging import DateFormats, StagingContext, date_recovery, parse_timestamps

TZ = "Europe/London"
FORMATS = ["%Y-%m-%dT%H:%M"]
NOT_DATES = [
    "hello",
    "36.8",  # a temperature: serial 36.8 is 1900-02-04, kept as a serial (warned)
    "-5",  # 1899-12-24 if read as a serial
    "0",
    "0.5",
    "19640106",  # a digits-only date: year 55672 as a serial
    "100000000",  # polars panicked in replace_time_zone (temporal_conversions.rs)
    "154800000",  # a total cell count
    "123456789012",
    "99999999999999999999",  # InvalidOperationError casting the serial's milliseconds
    "1e300",
    "9.9e17",
    "nan",
    "inf",
    "-0001-01-01T00:00",  # year -1: a Python datetime cannot hold it
    "0000-01-01T00:00",
    "1899-12-31T23:59",
    "\x00",
    "２０２１-03-01T08:00",  # full-width digits still parse (NFKC)
]


def _parse(values: list[str | None], **kw: object) -> list[datetime | None]:
    df = pl.DataFrame({"raw": values}, schema={"raw": pl.String})
    out = df.select(t=parse_local_datetime(pl.col("raw"), FORMATS, timezone=TZ, **kw))  # type: ignore[arg-type]
    return out["t"].to_list()  # to_list converts to Python: it raises on year -1


def test_01_other_data_in_a_datetime_column_is_null_never_a_crash():
    parsed = dict(zip(NOT_DATES, _parse(NOT_DATES, precision="minute"), strict=True))
    assert parsed.pop("36.8") == datetime(1900, 2, 4, 19, 12, tzinfo=UTC)
    assert parsed.pop("２０２１-03-01T08:00") == datetime(2021, 3, 1, 8, 0, tzinfo=UTC)
    assert {k: v for k, v in parsed.items() if v is not None} == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", None),  # 1899-12-31 in the 1899-12-30 epoch: before 1900
        ("2", 2.0),  # 1900-01-01
        ("44260.604167", 44260.604167),
        ("73415", 73415.0),  # 2100-12-31
        ("73416", None),
        ("2958465", None),  # 9999-12-31: Excel's own maximum, not a plausible date here
        ("-5", None),
        ("+44260", None),
        ("4.4e4", None),
        ("19640106", None),
    ],
)
def test_02_excel_serials_only_in_the_plausible_range(text, expected):
    days = pl.DataFrame({"raw": [text]}).select(d=excel_serial_days(pl.col("raw")))["d"][0]
    parsed = _parse([text], precision="day")[0]
    if expected is None:
        assert parsed is None
    else:
        assert days == expected
        assert 1900 <= parsed.year <= 2100


def test_03_digits_only_date_reads_only_where_the_mapping_declares_it():
    declared = pl.DataFrame({"raw": ["19640106"]}).select(
        t=parse_local_datetime(pl.col("raw"), ["%Y-%m-%d", "%Y%m%d"], timezone=TZ)
    )["t"][0]
    assert declared.astimezone(UTC).date() == date(1964, 1, 6)
    assert _parse(["19640106"])[0] is None


def test_04_recovery_of_a_declared_digits_only_date_is_an_alternate_format_not_a_serial():
    ctx = StagingContext(timezone=TZ, dates={"f.csv": DateFormats(("%Y-%m-%d", "%Y%m%d"), "day")})
    df = pl.DataFrame({"file": ["f.csv"] * 3, "at_raw": ["1964-01-06", "19640106", "23382"]})
    out = parse_timestamps(df, ctx, {"at": "at_raw"}).with_columns(
        kind=date_recovery(ctx, pl.col("at_raw"))
    )
    assert out["kind"].to_list() == [None, "alternate_format", "excel_serial"]
    assert [t.astimezone(UTC).date() for t in out["at"]] == [date(1964, 1, 6)] * 3


def test_05_a_file_without_serials_never_reads_a_number_as_a_date():
    ctx = StagingContext(
        timezone=TZ, dates={"f.csv": DateFormats(("%Y-%m-%d",), "day", excel_serial=False)}
    )
    df = pl.DataFrame({"file": ["f.csv"], "at_raw": ["23382"]})
    out = parse_timestamps(df, ctx, {"at": "at_raw"}).with_columns(
        kind=date_recovery(ctx, pl.col("at_raw"))
    )
    assert out["at"][0] is None
    assert out["kind"][0] == "alternate_format"  # not recovered: the parse rule quarantines
