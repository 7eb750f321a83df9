"""Tests of SiteExportWriter: every file written, codecs, row counts, determinism, headers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cart_etl.synth.site.layouts import LAYOUTS
from cart_etl.synth.vocab import SITE_NAME
from tests.synth.site.records import (
    NOT_INFUSED,
    RECORDS,
    SEED,
    Exports,
    read_export_file,
    write_site_export,
)

BOM = b"\xef\xbb\xbf"


def test_every_file_is_written(site_exports: Exports) -> None:
    for folder in (site_exports.clean, site_exports.dirty):
        assert sorted(p.name for p in folder.iterdir()) == sorted(LAYOUTS)


@pytest.mark.parametrize("which", ["clean", "dirty"])
def test_encodings_and_bom(site_exports: Exports, which: str) -> None:
    folder = getattr(site_exports, which)
    raw = (folder / "patients.csv").read_bytes()
    assert raw.decode("gb18030").startswith("研究编号,住院号,姓名")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    for name, layout in LAYOUTS.items():
        data = (folder / name).read_bytes()
        if layout.encoding == "utf-8-sig":
            assert data.startswith(BOM), name
            data[3:].decode("utf-8")
        elif layout.encoding == "utf-8":
            assert not data.startswith(BOM), name
            data.decode("utf-8")
    assert (folder / "lab_results.csv").read_bytes().startswith("病历号".encode())


def test_row_counts_equal_events(site_exports: Exports) -> None:
    infused = [r for r in RECORDS if r.infusion is not None]
    expected = {
        "patients.csv": len(RECORDS),
        "cart_infusion.csv": len(infused),
        "vitals_flowsheet.csv": sum(len(r.vitals) + len(r.oxygen) for r in infused),
        "lab_results.csv": sum(len(r.labs) for r in infused),
        "mar.xlsx": sum(len(r.drugs) for r in infused),
        "vasopressors.csv": sum(len(r.vasopressors) for r in infused),
        "response_day28.csv": sum(r.response is not None for r in infused),
        "followup.csv": len(RECORDS),
        "infections.csv": sum(len(r.infections) for r in infused),
        "icans.csv": sum(len(r.icans) for r in infused),
        "crs_recorded.csv": sum(r.recorded_crs is not None for r in infused),
    }
    inserted = Counter(
        d.file.removeprefix("site_export/")
        for d in site_exports.defects
        if d.kind == "duplicated_row"
    )
    for name, n_rows in expected.items():
        header, clean_rows = read_export_file(site_exports.clean / name)
        assert header == list(LAYOUTS[name].columns)
        assert len(clean_rows) == n_rows, name
        assert len(read_export_file(site_exports.dirty / name)[1]) == n_rows + inserted[name], name


def test_not_infused_patients_only_in_register_and_followup(site_exports: Exports) -> None:
    mrns = {RECORDS[i].demographics.mrn for i in NOT_INFUSED}
    for name in LAYOUTS:
        _, rows = read_export_file(site_exports.clean / name)
        key = 1 if name == "patients.csv" else 0  # 住院号 / 病历号
        found = {row[key] for row in rows} & mrns
        assert found == (mrns if name in {"patients.csv", "followup.csv"} else set()), name


def test_output_is_deterministic(tmp_path: Path, site_exports: Exports) -> None:
    again = write_site_export(tmp_path / "a" / "site_export", defects=True)
    assert again == site_exports.defects
    for name in LAYOUTS:
        assert (tmp_path / "a" / "site_export" / name).read_bytes() == (
            site_exports.dirty / name
        ).read_bytes(), name
    other = write_site_export(tmp_path / "b" / "site_export", defects=True, seed=SEED + 1)
    assert other != site_exports.defects


def test_clean_output_does_not_depend_on_seed(tmp_path: Path, site_exports: Exports) -> None:
    write_site_export(tmp_path / "c" / "site_export", defects=False, seed=7)
    for name in LAYOUTS:
        assert (tmp_path / "c" / "site_export" / name).read_bytes() == (
            site_exports.clean / name
        ).read_bytes(), name


def test_mapping_names_every_file_and_column_written(
    site_exports: Exports, site_mapping: dict
) -> None:
    files = site_mapping["files"]
    assert site_mapping["site"] == SITE_NAME
    assert site_mapping["timezone"] == "Asia/Shanghai"
    assert sorted(files) == sorted(p.name for p in site_exports.dirty.iterdir())
    link = site_mapping["patient_link"]
    assert (link["file"], link["study_id_column"], link["mrn_column"]) == (
        "patients.csv",
        "研究编号",
        "住院号",
    )
    for name, spec in files.items():
        header, _ = read_export_file(site_exports.dirty / name)
        assert list(spec["columns"]) == header, name
        assert spec["patient_key"] in header, name
