"""Tests of the MAR workbook rows: administration times are native Excel date-times."""

from __future__ import annotations

from openpyxl import load_workbook

from cart_etl.synth.model import SITE_TZ
from cart_etl.synth.vocab import MAR_SHEET
from tests.synth.site.records import RECORDS, Exports


def test_mar_dates_are_native_excel_datetimes(site_exports: Exports) -> None:
    wb = load_workbook(site_exports.clean / "mar.xlsx")
    cells = [row[1] for row in wb[MAR_SHEET].iter_rows(min_row=2, values_only=True)]
    wb.close()
    expected = [
        d.at.astimezone(SITE_TZ).replace(tzinfo=None)
        for r in RECORDS
        if r.infusion is not None
        for d in sorted(r.drugs, key=lambda d: d.at)
    ]
    assert cells == expected
