"""Site export extractor (CSV + XLSX): every row placed, nothing cleaned, clear errors."""

from __future__ import annotations

import csv
import dataclasses
import re
import shutil
import unicodedata
from pathlib import Path

import polars as pl
import pytest

from cart_etl.contract import ENTITIES, columns_of
from cart_etl.errors import MappingError, SourceError
from cart_etl.extract.readers.files import iter_raw_chunks
from cart_etl.extract.site.export import extract_site_export
from cart_etl.extract.site.mapper import RULE_NO_VALUES, RULE_UNKNOWN_ITEM
from cart_etl.extract.site.spec import SiteMapping
from tests.extract.conftest import (
    CASES,
    WIDE_EXPORT,
    Extracted,
    collect,
    copy_export,
    count_data_rows,
)

FLOWSHEET = "vitals_flowsheet.csv"

ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")


def _read_csv(path: Path, encoding: str) -> list[dict[str, str]]:
    """Rows of a CSV file via the csv module (independent of the extractor)."""
    with path.open(encoding=encoding, newline="") as fh:
        return list(csv.DictReader(fh))


def _file_frame(extracted: Extracted, file: str) -> pl.DataFrame:
    """(entity, row) of every record of one file, across entities."""
    parts = [
        b.frame.select(pl.lit(b.entity).alias("entity"), "row")
        for b in extracted.batches
        if b.frame.height and b.frame["file"][0] == file
    ]
    return (
        pl.concat(parts) if parts else pl.DataFrame(schema={"entity": pl.String, "row": pl.String})
    )


def test_01_every_mapped_file_is_extracted(
    tianjin_extracted: Extracted, tianjin_mapping: SiteMapping
) -> None:
    files = {b.frame["file"][0] for b in tianjin_extracted.batches if b.frame.height}
    assert files == set(tianjin_mapping.files)
    assert {b.frame["source"][0] for b in tianjin_extracted.batches} == {"tianjin_ref"}
    assert set(tianjin_extracted.frames) == set(ENTITIES)
    for entity, frame in tianjin_extracted.frames.items():
        assert frame.columns == list(columns_of(entity))
        assert set(frame.dtypes) == {pl.String}


def test_02_rows_in_equal_records_plus_rejected_and_long_rows_go_to_one_entity(
    tianjin_extracted: Extracted, tianjin_export: Path, tianjin_mapping: SiteMapping
) -> None:
    for name, spec in tianjin_mapping.files.items():
        rows_in = count_data_rows(tianjin_export / name, spec)
        records = _file_frame(tianjin_extracted, name)
        rejected = [r for r in tianjin_extracted.rejected if r.file == name]
        assert rows_in == records.height + len(rejected), name
        placed = [*records["row"].to_list(), *(r.row for r in rejected)]
        assert sorted(placed, key=int) == [str(n) for n in range(1, rows_in + 1)], name
        batches = [b for b in tianjin_extracted.batches if b.frame["file"][0] == name]
        assert sum(b.input_rows for b in batches) == records.height, name
    flowsheet = _file_frame(tianjin_extracted, FLOWSHEET)
    assert set(flowsheet["entity"]) == {"vitals", "oxygen"}
    assert flowsheet["row"].is_unique().all()  # each long row in exactly one entity


def test_03_patient_key_present_and_file_row_unique(tianjin_extracted: Extracted) -> None:
    for entity, frame in tianjin_extracted.frames.items():
        assert frame["patient_key"].null_count() == 0, entity
        assert frame.select("file", "row").is_unique().all(), entity


def test_04_names_never_leave_the_extractor(
    tianjin_extracted: Extracted, tianjin_export: Path
) -> None:
    names = {r["姓名"] for r in _read_csv(tianjin_export / "patients.csv", "gb18030")}
    assert len(names) == 61
    for entity, frame in tianjin_extracted.frames.items():
        for column in frame.columns:
            assert not frame[column].is_in(list(names)).any(), (entity, column)
    for rejected in tianjin_extracted.rejected:
        assert not any(n in f"{rejected.value} {rejected.message}" for n in names)


def test_05_gb18030_register_is_decoded_intact(
    tianjin_extracted: Extracted, tianjin_export: Path
) -> None:
    register = _read_csv(tianjin_export / "patients.csv", "gb18030")
    demographics = tianjin_extracted.frames["demographics"]
    assert demographics["study_id"].to_list() == [r["研究编号"] for r in register]
    assert demographics["patient_key"].to_list() == [r["住院号"] for r in register]
    assert demographics["sex"].to_list() == [r["性别"] for r in register]
    assert demographics["risk_genetics"].to_list() == [r["遗传学异常"] or None for r in register]
    assert set(demographics["sex"]) <= {"男", "女"}
    assert "复杂核型" in demographics["risk_genetics"].to_list()


def test_06_cells_are_kept_exactly_as_written(
    tianjin_extracted: Extracted, tianjin_export: Path, tianjin_mapping: SiteMapping
) -> None:
    # Every injected defect in an extracted column is in the frame verbatim: padded and
    # full-width text, decimal commas, Excel serials, other date formats, blank units ...
    records: dict[tuple[str, str], tuple[str, dict[str, str | None]]] = {}
    for entity, frame in tianjin_extracted.frames.items():
        for row in frame.iter_rows(named=True):
            records[row["file"], row["row"]] = (entity, row)
    defects = _read_csv(tianjin_export.parent / "truth" / "defects.csv", "utf-8")
    checked: set[str] = set()
    for defect in defects:
        file = defect["file"].removeprefix("site_export/")
        spec = tianjin_mapping.files[file]
        if defect["field"] in {"*", "姓名"}:
            continue
        entity, record = records[file, defect["row"]]
        if defect["field"] == spec.patient_key:
            column = "patient_key"
        else:
            output = next(o for o in spec.outputs if o.entity == entity)
            sources = {a.source: a.column for a in output.assigns}
            if defect["field"] not in sources:
                continue  # a column the mapping does not extract (参考范围, 异常标识)
            column = sources[defect["field"]]
        assert record[column] == (defect["injected_value"] or None), defect
        checked.add(defect["kind"])
    assert checked >= {
        "trailing_space",
        "fullwidth_chars",
        "decimal_comma",
        "excel_serial_date",
        "mixed_date_format",
        "timezone_less",
        "future_date",
        "missing_unit",
        "fahrenheit_temperature",
        "crp_mg_dl",
        "mrn_typo",
        "impossible_value",
        "dose_unit_g",
    }


def test_07_oxygen_rows_keep_the_charted_text(
    tianjin_extracted: Extracted, tianjin_export: Path
) -> None:
    rows = _read_csv(tianjin_export / FLOWSHEET, "utf-8-sig")
    charted = [
        r["结果"] for r in rows if unicodedata.normalize("NFKC", r["项目"]).strip() == "吸氧方式"
    ]
    oxygen = tianjin_extracted.frames["oxygen"]
    assert oxygen["device_code"].to_list() == charted
    assert oxygen["flow_l_min"].null_count() == oxygen.height  # parsing is staging's job
    assert set(oxygen["device_system"]) == {"local:tianjin_ref:vitals_flowsheet.csv:结果"}
    assert any(re.fullmatch(r"鼻导管 \d+(\.\d+)?L/min", c) for c in charted)
    vitals = tianjin_extracted.frames["vitals"]
    assert set(vitals["item_system"]) == {"local:tianjin_ref:vitals_flowsheet.csv:项目"}
    assert {"体温", "收缩压", "舒张压", "心率", "血氧饱和度"} <= set(vitals["item_code"])


def test_08_xlsx_datetimes_become_iso_text_and_other_cells_stay(
    tianjin_extracted: Extracted, tianjin_export: Path
) -> None:
    drugs = tianjin_extracted.frames["drugs"]
    defects = _read_csv(tianjin_export.parent / "truth" / "defects.csv", "utf-8")
    odd = {
        d["row"]: d["injected_value"]
        for d in defects
        if d["file"].endswith("mar.xlsx") and d["field"] == "给药时间"
    }
    for row, at in drugs.select("row", "at").iter_rows():
        assert at == odd[row] if row in odd else ISO_SECONDS.match(at), (row, at)
    assert any(re.fullmatch(r"\d+\.\d+", v) for v in odd.values())  # a serial stays a number


def test_09_missing_file_fails_before_any_row(
    tianjin_export: Path, tianjin_mapping: SiteMapping, tmp_path: Path
) -> None:
    export = copy_export(tianjin_export, tmp_path / "export")
    (export / "cart_infusion.csv").unlink()
    with pytest.raises(SourceError) as err:
        extract_site_export(export, tianjin_mapping)  # raised at the call, not mid-stream
    text = str(err.value)
    assert "cart_infusion.csv: missing" in text
    assert "files.cart_infusion.csv" in text
    assert "回输时间" in text  # what the mapping expected there
    with pytest.raises(SourceError, match="does not exist"):
        extract_site_export(tmp_path / "nowhere", tianjin_mapping)


def test_10_wrong_encoding_names_byte_line_and_encoding(
    tianjin_export: Path, tianjin_mapping: SiteMapping, tmp_path: Path
) -> None:
    export = copy_export(tianjin_export, tmp_path / "export")
    shutil.copy(CASES / "register_wrong_encoding.csv", export / "patients.csv")
    with pytest.raises(SourceError) as err:
        extract_site_export(export, tianjin_mapping)
    text = str(err.value)
    assert "patients.csv" in text
    assert "byte offset 21 (line 1)" in text
    assert "'gb18030'" in text
    assert "files.patients.csv.encoding" in (err.value.fix or "")


def test_11_header_without_a_mapped_column_is_a_mapping_error(
    tianjin_export: Path, tianjin_mapping: SiteMapping, tmp_path: Path
) -> None:
    export = copy_export(tianjin_export, tmp_path / "export")
    shutil.copy(CASES / "flowsheet_missing_column.csv", export / FLOWSHEET)
    with pytest.raises(MappingError) as err:
        extract_site_export(export, tianjin_mapping)
    text = str(err.value)
    assert FLOWSHEET in text
    assert "column(s) '单位'" in text
    assert "Columns found: '住院号', '记录时间', '项目', '结果'" in text


def test_12_unknown_items_are_rejected_with_the_fix(
    tianjin_export: Path, tianjin_mapping: SiteMapping, tmp_path: Path
) -> None:
    export = copy_export(tianjin_export, tmp_path / "export")
    shutil.copy(CASES / "flowsheet_unknown_item.csv", export / FLOWSHEET)
    extracted = collect(extract_site_export(export, tianjin_mapping))
    rejected = [r for r in extracted.rejected if r.file == FLOWSHEET]
    assert [(r.row, r.field, r.value, r.rule_id) for r in rejected] == [
        ("3", "项目", "呼吸频率", RULE_UNKNOWN_ITEM),
        ("6", "项目", "", RULE_UNKNOWN_ITEM),
        ("8", "项目", "ＳｐＯ２", RULE_UNKNOWN_ITEM),
    ]
    message = rejected[0].message
    assert message.startswith("vitals_flowsheet.csv row 3: '项目' = '呼吸频率'")
    assert "files.vitals_flowsheet.csv.items" in message
    assert "tianjin_ref.yaml" in message
    assert "Fix: add '呼吸频率'" in message
    vitals = extracted.frames["vitals"].filter(pl.col("file") == FLOWSHEET)
    # Routing normalised the item; the emitted code is the cell as written.
    assert vitals.select("row", "item_code", "value").rows() == [
        ("1", "体温", "37.6"),
        ("2", " 心率 ", "88"),
        ("4", "血氧饱和度\u3000", "97"),
        ("7", "体温", "38,1"),
    ]
    oxygen = extracted.frames["oxygen"].filter(pl.col("file") == FLOWSHEET)
    assert oxygen.select("row", "device_code", "flow_unit").rows() == [("5", "鼻导管 3L/min", None)]


def test_13_small_chunks_and_blocks_give_the_same_frames(
    tianjin_extracted: Extracted, tianjin_export: Path, tianjin_mapping: SiteMapping
) -> None:
    small = collect(extract_site_export(tianjin_export, tianjin_mapping, chunk_rows=997))
    assert all(b.frame.height <= 997 for b in small.batches)
    for entity, frame in tianjin_extracted.frames.items():
        assert small.frames[entity].equals(frame), entity
    for name, block in (("patients.csv", 300), (FLOWSHEET, 1 << 16)):
        spec = tianjin_mapping.files[name]
        path = tianjin_export / name
        whole = pl.concat(c.frame for c in iter_raw_chunks(path, spec, 10**9))
        cut = pl.concat(c.frame for c in iter_raw_chunks(path, spec, 5000, block_bytes=block))
        assert cut.equals(whole), name


def test_14_the_english_wide_site_extracts_into_the_same_canonical_frames(
    wide_mapping: SiteMapping, tianjin_extracted: Extracted
) -> None:
    extracted = collect(extract_site_export(WIDE_EXPORT, wide_mapping))
    frames = extracted.frames
    reference = tianjin_extracted.frames
    for entity, frame in frames.items():
        assert frame.schema == reference[entity].schema, entity
    assert {e: f.height for e, f in frames.items()} == {
        "demographics": 4,
        "infusion": 3,
        "vitals": 63,
        "oxygen": 11,
        "labs": 15,
        "drugs": 10,
    }
    vitals = frames["vitals"]
    temp = vitals.filter(pl.col("row") == "3:Temp").row(0, named=True)
    assert (temp["item_code"], temp["value"], temp["unit"], temp["at"]) == (
        "Temp",
        "101.3",
        "degF",
        "2021-03-02T08:00",
    )
    assert vitals.filter(pl.col("row") == "11:Temp")["value"].item() == " 37.9"  # not stripped
    hr = vitals.filter(pl.col("row") == "1:HR").row(0, named=True)
    assert (hr["value"], hr["unit"]) == ("84", "bpm")
    assert vitals.filter(pl.col("row").str.starts_with("4:"))["item_code"].to_list() == [
        "SBP",
        "DBP",
        "SpO2",
    ]
    oxygen = frames["oxygen"]
    assert oxygen.filter(pl.col("row") == "9:O2").select(
        "device_code", "flow_l_min", "flow_unit"
    ).row(0) == ("high-flow nasal cannula", "40", "L/min")
    assert oxygen.filter(pl.col("row") == "1:O2").select("flow_l_min", "flow_unit").row(0) == (
        None,
        None,
    )
    labs = frames["labs"]
    assert labs.filter(pl.col("row") == "10").select("test_code", "value", "unit").row(0) == (
        "C-reactive protein",
        "18.2",
        "mg/dL",
    )
    assert labs["specimen_id"].null_count() == 0
    drugs = frames["drugs"]
    assert drugs.filter(pl.col("row") == "8").select("drug_code", "dose", "dose_unit").row(0) == (
        "Filgrastim (G-CSF)",
        "300",
        "microgram",
    )
    assert frames["demographics"]["study_id"].to_list() == ["EX-001", "EX-002", "EX-003", "EX-004"]
    assert [(r.file, r.row, r.rule_id) for r in extracted.rejected] == [
        ("vitals_wide.csv", "8", RULE_NO_VALUES)
    ]
    for frame in frames.values():
        for column in frame.columns:
            assert not frame[column].is_in(["Alice Thornbury", "Bernard Okafor"]).any()


def test_15_a_database_mapping_is_refused_by_the_file_extractor(
    wide_mapping: SiteMapping, tmp_path: Path
) -> None:
    tables = dataclasses.replace(wide_mapping, kind="sql")
    with pytest.raises(MappingError, match="describes database tables"):
        extract_site_export(tmp_path, tables)
