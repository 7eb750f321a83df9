"""XLSX reader: native cells, blank and ragged rows, the declared sheet."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import openpyxl
import pytest

from cart_etl.errors import SourceError
from cart_etl.extract.readers.files import iter_raw_chunks
from cart_etl.extract.site.export import extract_site_export
from cart_etl.extract.site.mapper import RULE_EMPTY_ROW, RULE_RAGGED_ROW
from cart_etl.extract.site.parse import parse_site_mapping
from tests.extract.conftest import collect


def test_01_xlsx_rows_blank_ragged_and_missing_sheet(tmp_path: Path) -> None:
    raw = {
        "site": "xl",
        "timezone": "UTC",
        "files": {
            "mar.xlsx": {
                "sheet": "MAR",
                "patient_key": "MRN",
                "columns": {
                    "MRN": "demographics.mrn",
                    "given": "drugs[].at",
                    "dose": "drugs[].dose",
                },
            }
        },
    }
    mapping = parse_site_mapping(raw, tmp_path / "xl.yaml")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "MAR"
    for row in (
        ["MRN", "given", "dose"],
        ["M1", datetime(2021, 3, 2, 9, 15), "400mg"],
        [None, None, None],  # a blank row between data rows is a data row (rejected)
        ["M2", 44258.385417, 8],
        ["M3", "2021/03/04 09:00:00", "1g", "extra"],
        [None, None, None],  # trailing blank rows are not data
    ):
        sheet.append(row)
    workbook.save(tmp_path / "mar.xlsx")
    extracted = collect(extract_site_export(tmp_path, mapping))
    assert extracted.frames["drugs"].select("row", "patient_key", "at", "dose").rows() == [
        ("1", "M1", "2021-03-02T09:15:00", "400mg"),
        ("3", "M2", "44258.385417", "8"),
    ]
    assert [(r.row, r.rule_id) for r in extracted.rejected] == [
        ("2", RULE_EMPTY_ROW),
        ("4", RULE_RAGGED_ROW),
    ]
    wrong = dataclasses.replace(mapping.files["mar.xlsx"], sheet="给药记录")
    with pytest.raises(SourceError, match="no sheet '给药记录'; sheets found: 'MAR'"):
        list(iter_raw_chunks(tmp_path / "mar.xlsx", wrong, 100))
