"""CSV reader: block cuts, codecs, quoting and title lines above the header."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from cart_etl.errors import SourceError
from cart_etl.extract.readers.files import iter_raw_chunks
from cart_etl.extract.site.export import extract_site_export
from cart_etl.extract.site.parse import parse_site_mapping
from cart_etl.extract.site.spec import SiteMapping
from tests.extract.conftest import collect, mini_mapping


def test_01_decode_error_in_a_later_block_names_its_line(
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


def test_02_quoted_delimiters_and_line_breaks_survive_block_cuts(tmp_path: Path) -> None:
    mapping = mini_mapping(tmp_path, encoding="gb18030")
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


def test_03_title_lines_above_the_header_are_skipped(tmp_path: Path) -> None:
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
