"""Site export extractor (CSV + XLSX): every row placed, nothing cleaned, clear errors."""

from __future__ import annotations

import csv
import dataclasses
import re
import shutil
import unicodedata
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from cart_etl.errors import MappingError, SourceError
from cart_etl.extract.contract import ENTITIES, RawBatch, Rejected, columns_of
from cart_etl.extract.site_mapping import SiteMapping, parse_site_mapping
from cart_etl.extract.tabular import (
    RULE_EMPTY_ROW,
    RULE_MISSING_PATIENT_KEY,
    RULE_NO_VALUES,
    RULE_RAGGED_ROW,
    RULE_UNKNOWN_ITEM,
    cell_text,
    extract_site_export,
    iter_raw_chunks,
    map_source_frame,
    source_row,
)
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


def test_11_decode_error_in_a_later_block_names_its_line(
    tianjin_export: Path, tianjin_mapping: SiteMapping, tmp_path: Path
) -> None:
    spec = tianjin_mapping.files["patients.csv"]
    lines = (tianjin_export / "patients.csv").read_bytes().split(b"\r\n")
    lines[40] = lines[40].decode("gb18030").encode("utf-8")  # one row saved as UTF-8
    path = tmp_path / "patients.csv"
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(SourceError, match=r"\(line 41\)") as err:
        list(iter_raw_chunks(path, spec, 10, block_bytes=512))
    offset = int(re.search(r"byte offset (\d+)", str(err.value))[1])  # type: ignore[index]
    assert path.read_bytes()[:offset].count(b"\n") == 40


def test_12_header_without_a_mapped_column_is_a_mapping_error(
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


def test_13_unknown_items_are_rejected_with_the_fix(
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


def test_14_small_chunks_and_blocks_give_the_same_frames(
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


def _mini_mapping(tmp_path: Path, encoding: str = "utf-8", layout: str = "flat") -> SiteMapping:
    """A one-file site: MRN, time and a free-text note into infusion.product."""
    raw = {
        "site": "mini",
        "timezone": "UTC",
        "files": {
            "notes.csv": {
                "encoding": encoding,
                "patient_key": "MRN",
                "columns": {
                    "MRN": {"field": "demographics.mrn"},
                    "时间": {"field": "infusion.at"},
                    "备注": {"field": "infusion.product"},
                    "姓名": {"field": "demographics.name"},
                },
            }
        },
    }
    return parse_site_mapping(raw, tmp_path / "mini.yaml")


def test_15_quoted_delimiters_and_line_breaks_survive_block_cuts(tmp_path: Path) -> None:
    mapping = _mini_mapping(tmp_path, encoding="gb18030")
    notes = [f'多行,备注 {i}\r\n第二行 "引号"' for i in range(40)]
    body = "".join(
        f'M{i:03d},2021-01-01 08:{i:02d},"{n.replace(chr(34), chr(34) * 2)}",张三\r\n'
        for i, n in enumerate(notes)
    )
    (tmp_path / "notes.csv").write_bytes(("MRN,时间,备注,姓名\r\n" + body).encode("gb18030"))
    spec = mapping.files["notes.csv"]
    for block in (64, 257, 1 << 20):
        frame = pl.concat(
            c.frame for c in iter_raw_chunks(tmp_path / "notes.csv", spec, 7, block_bytes=block)
        )
        assert frame["备注"].to_list() == notes, block
        assert frame["__row__"].to_list() == [str(i) for i in range(1, 41)]


def test_16_ragged_blank_and_keyless_rows_are_rejected_not_dropped(tmp_path: Path) -> None:
    mapping = _mini_mapping(tmp_path)
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


def test_17_the_english_wide_site_extracts_into_the_same_canonical_frames(
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


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2020, 5, 18, 3, 50), "2020-05-18T03:50:00"),
        (datetime(2020, 5, 18, 3, 50, 1, 250_000), "2020-05-18T03:50:01.250"),
        (date(2020, 5, 18), "2020-05-18"),
        (time(8, 30), "08:30:00"),
        (43969.159722, "43969.159722"),
        (45.0, "45"),
        (1e-07, "0.0000001"),
        (7, "7"),
        (True, "TRUE"),
        (Decimal("38.60"), "38.60"),
        ("", None),
        (" x ", " x "),
        (None, None),
    ],
)
def test_18_native_cells_are_rendered_as_text(value: object, text: str | None) -> None:
    assert cell_text(value) == text


def test_19_the_mapper_alone_places_every_row(tianjin_mapping: SiteMapping) -> None:
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


def test_20_title_lines_above_the_header_are_skipped(tmp_path: Path) -> None:
    raw = {
        "site": "pre",
        "timezone": "UTC",
        "files": {
            "notes.csv": {
                "header_row": 3,
                "patient_key": "MRN",
                "columns": {"MRN": "demographics.mrn", "备注": "infusion.product"},
            }
        },
    }
    mapping = parse_site_mapping(raw, tmp_path / "pre.yaml")
    (tmp_path / "notes.csv").write_bytes(
        'HIS export 2024-01-01\r\n"title", with quotes\r\nMRN,备注\r\nM1,a\r\nM2,b\r\n'.encode()
    )
    infusion = collect(extract_site_export(tmp_path, mapping)).frames["infusion"]
    assert infusion.select("row", "patient_key", "product").rows() == [
        ("1", "M1", "a"),
        ("2", "M2", "b"),
    ]


def test_21_xlsx_rows_blank_ragged_and_missing_sheet(tmp_path: Path) -> None:
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
    with pytest.raises(SourceError, match="no sheet '给药记录'; sheets found: MAR"):
        list(iter_raw_chunks(tmp_path / "mar.xlsx", wrong, 100))


def test_22_a_database_mapping_is_refused_by_the_file_extractor(
    wide_mapping: SiteMapping, tmp_path: Path
) -> None:
    tables = dataclasses.replace(wide_mapping, kind="sql")
    with pytest.raises(MappingError, match="describes database tables"):
        extract_site_export(tmp_path, tables)
