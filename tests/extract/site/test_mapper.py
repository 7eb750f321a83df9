"""The mapper: every input row becomes records of its entities or a Rejected saying why."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cart_etl.contract import RawBatch, Rejected
from cart_etl.extract.site.export import extract_site_export
from cart_etl.extract.site.mapper import (
    RULE_EMPTY_ROW,
    RULE_MISSING_PATIENT_KEY,
    RULE_RAGGED_ROW,
    map_source_frame,
    source_row,
)
from cart_etl.extract.site.spec import SiteMapping
from tests.extract.conftest import collect, mini_mapping

FLOWSHEET = "vitals_flowsheet.csv"


def test_01_ragged_blank_and_keyless_rows_are_rejected_not_dropped(tmp_path: Path) -> None:
    mapping = mini_mapping(tmp_path)
    (tmp_path / "notes.csv").write_text(
        "MRN,时间,备注,姓名\n"
        "M1,2021-01-01,ok,张三\n"
        "M2,2021-01-02,too,many,cells,李四\n"
        ",,,\n"
        ",2021-01-03,no key,王五\n"
        'M5,2021-01-05,"",赵六\n',
        encoding="utf-8",
    )
    extracted = collect(extract_site_export(tmp_path, mapping))
    infusion = extracted.frames["infusion"]
    assert infusion.select("row", "patient_key", "product").rows() == [
        ("1", "M1", "ok"),
        ("5", "M5", None),  # a quoted empty cell is missing, like an unquoted one
    ]
    rejected = {r.row: r for r in extracted.rejected}
    assert {row: r.rule_id for row, r in rejected.items()} == {
        "2": RULE_RAGGED_ROW,
        "3": RULE_EMPTY_ROW,
        "4": RULE_MISSING_PATIENT_KEY,
    }
    assert rejected["2"].value == "6 fields"  # cells are not echoed (one is a name)
    assert "李四" not in rejected["2"].message
    assert "MRN" in rejected["4"].message


def test_02_the_mapper_alone_places_every_row(tianjin_mapping: SiteMapping) -> None:
    spec = tianjin_mapping.files[FLOWSHEET]
    frame = pl.DataFrame(
        {
            "__row__": ["1", "2", "3"],
            "住院号": ["A", "A", None],
            "记录时间": ["t1", "t2", "t3"],
            "项目": ["吸氧方式", "体温", "体温"],
            "结果": ["未吸氧", "37.0", "37.1"],
            "单位": [None, "℃", "℃"],
        }
    )
    out = map_source_frame(frame, spec, tianjin_mapping, "src", "f.csv")
    batches = [o for o in out if isinstance(o, RawBatch)]
    rejected = [o for o in out if isinstance(o, Rejected)]
    assert [(b.entity, b.frame.height, b.input_rows) for b in batches] == [
        ("vitals", 1, 1),
        ("oxygen", 1, 1),
    ]
    assert [(r.row, r.rule_id) for r in rejected] == [("3", RULE_MISSING_PATIENT_KEY)]
    assert batches[0].frame["source"].to_list() == ["src"]
    assert source_row("12:Temp") == "12"
