"""Malformed files at the extract stage end as the README promises (issue #15).

Each case is a mutated copy of ``tests/cases/site_wide_en`` (site ``example_wide_en``; the
mutated file lives in ``tests/cases/hardening_<case>/``) or of the reference export (site
``tianjin_ref``), run through ``cart-etl validate``. Either the run stops with exit 2 and ONE
error line naming the file (the row where there is one) and the fix, or the bad rows are
quarantined with an ``extract.*`` rule id while every other row loads (rows in = accepted +
quarantined for the file). Never a traceback, never "internal error".
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from typer.testing import CliRunner

from cart_etl.cli import app
from cart_etl.extract.site.mapper import (
    RULE_CELL_TOO_LONG,
    RULE_CONTROL_CHARACTER,
    RULE_DUPLICATE_COLUMN,
    RULE_TRUNCATED_ROW,
    RULE_UNBALANCED_QUOTE,
)
from tests.extract.conftest import CASES, WIDE_EXPORT

runner = CliRunner()
LABS = "labs.csv"
LABS_ROWS = 15  # data rows of site_wide_en/labs.csv


def _export(tmp_path: Path, case: str | None = None) -> Path:
    """A copy of the English example export, with the case's files laid over it."""
    export = tmp_path / "export"
    shutil.copytree(WIDE_EXPORT, export)
    if case is not None:
        for path in (CASES / f"hardening_{case}").iterdir():
            if path.name.casefold() == LABS and path.name != LABS:
                (export / LABS).unlink()
            shutil.copy(path, export / path.name)
    return export


def _validate(export: Path, site: str, tmp_path: Path) -> tuple[int, str, dict[str, Any] | None]:
    """Exit code, output and validation.json (None when the run stopped) of a validate run."""
    report = tmp_path / "report"
    result = runner.invoke(
        app, ["validate", str(export), "--site", site, "--report", str(report), "--no-expectations"]
    )
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    summary = report / "validation.json"
    data = json.loads(summary.read_text(encoding="utf-8")) if result.exit_code in (0, 1) else None
    return result.exit_code, result.output, data


def _fatal(export: Path, site: str, tmp_path: Path, path: Path, *phrases: str) -> str:
    """Assert exit 2 with one error line naming ``path``, the phrases and a fix."""
    code, output, _ = _validate(export, site, tmp_path)
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("error:"), line
    assert str(path) in line, line
    assert "Fix:" in line, line
    for phrase in phrases:
        assert phrase in line, line
    return line


def _file_summary(data: dict[str, Any], file: str) -> dict[str, Any]:
    (summary,) = [f for f in data["files"] if f["file"] == file]
    return summary


def _quarantined(data: dict[str, Any], file: str, rule: str) -> list[dict[str, Any]]:
    return [q for q in data["quarantined"] if q["file"] == file and q["rule_id"] == rule]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The labs.csv summary of the unmodified example export."""
    tmp = tmp_path_factory.mktemp("baseline")
    code, output, data = _validate(_export(tmp), "example_wide_en", tmp)
    assert code == 1 and data is not None, output
    return _file_summary(data, LABS)


def _assert_quarantined(
    data: dict[str, Any] | None,
    baseline: dict[str, Any],
    rule: str,
    rows: list[str],
    *,
    rows_in: int = LABS_ROWS,
    replaced: int = 0,
) -> list[dict[str, Any]]:
    """The rows are quarantined under ``rule``; every other row is accounted as before.

    ``replaced``: rows that the baseline quarantined for another reason and that the case
    mutated into the bad row (so they are no longer counted under their old rule).
    """
    assert data is not None
    summary = _file_summary(data, LABS)
    assert summary["rows_in"] == rows_in
    assert summary["rows_in"] == summary["accepted"] + summary["quarantined"]
    assert summary["unaccounted"] == 0
    cases = _quarantined(data, LABS, rule)
    assert sorted(c["row"] for c in cases) == rows
    for case in cases:
        assert f"row {case['row']}" in case["message"]
        assert "Fix:" in case["message"]
    new = rows_in - LABS_ROWS
    expected_quarantine = baseline["quarantined"] + len(rows) - replaced
    assert summary["quarantined"] == expected_quarantine
    assert summary["accepted"] == baseline["accepted"] + new - len(rows) + replaced
    return cases


# --- rows quarantined, the rest loaded ------------------------------------------------------


def test_01_truncated_last_row(tmp_path: Path, baseline: dict[str, Any]) -> None:
    code, output, data = _validate(
        _export(tmp_path, "truncated_last_row"), "example_wide_en", tmp_path
    )
    assert code == 1, output
    _assert_quarantined(data, baseline, RULE_TRUNCATED_ROW, [str(LABS_ROWS)])


def test_02_truncated_inside_a_quoted_cell(tmp_path: Path, baseline: dict[str, Any]) -> None:
    export = _export(tmp_path, "truncated_in_quote")
    code, output, data = _validate(export, "example_wide_en", tmp_path)
    assert code == 1, output
    _assert_quarantined(data, baseline, RULE_TRUNCATED_ROW, ["16"], rows_in=LABS_ROWS + 1)


def test_03_first_data_row_shorter_than_the_header(
    tmp_path: Path, baseline: dict[str, Any]
) -> None:
    # Short rows are padded with empty cells (as polars and the XLSX reader do mid-file);
    # the first row is no exception any more (it used to be a polars SchemaError, exit 3).
    code, output, data = _validate(
        _export(tmp_path, "short_first_row"), "example_wide_en", tmp_path
    )
    assert code == 1, output
    assert data is not None
    summary = _file_summary(data, LABS)
    assert summary["rows_in"] == LABS_ROWS
    assert summary["rows_in"] == summary["accepted"] + summary["quarantined"]
    assert (summary["accepted"], summary["quarantined"]) == (
        baseline["accepted"],
        baseline["quarantined"],
    )
    warned = {(w["file"], w["row"], w["rule_id"]) for w in data["warnings"]}
    assert (LABS, "1", "unit.inferred") in warned  # its unit cell was cut away


def test_04_unbalanced_quote_in_the_middle(tmp_path: Path, baseline: dict[str, Any]) -> None:
    code, output, data = _validate(
        _export(tmp_path, "unbalanced_quote"), "example_wide_en", tmp_path
    )
    assert code == 1, output
    # Row 5 was already quarantined (unit ug/L); now its quote swallows nothing else.
    _assert_quarantined(data, baseline, RULE_UNBALANCED_QUOTE, ["5"], replaced=1)


def test_05_nul_byte_in_a_cell(tmp_path: Path, baseline: dict[str, Any]) -> None:
    code, output, data = _validate(_export(tmp_path, "nul_byte"), "example_wide_en", tmp_path)
    assert code == 1, output
    (case,) = _assert_quarantined(data, baseline, RULE_CONTROL_CHARACTER, ["3"])
    assert case["field"] == "accession"
    assert "\x00" not in json.dumps(data)


def test_06_megabyte_long_cell(tmp_path: Path, baseline: dict[str, Any]) -> None:
    export = _export(tmp_path)
    lines = (export / LABS).read_bytes().split(b"\n")
    cells = lines[3].split(b",")
    cells[3] = b"x" * (1 << 20)  # the analyte column
    lines[3] = b",".join(cells)
    (export / LABS).write_bytes(b"\n".join(lines))
    code, output, data = _validate(export, "example_wide_en", tmp_path)
    assert code == 1, output
    (case,) = _assert_quarantined(data, baseline, RULE_CELL_TOO_LONG, ["3"])
    assert case["field"] == "analyte"
    assert len(json.dumps(data)) < 200_000  # the value is not echoed


def test_07_duplicated_column_that_differs(tmp_path: Path, baseline: dict[str, Any]) -> None:
    export = _export(tmp_path, "duplicate_column")
    code, output, data = _validate(export, "example_wide_en", tmp_path)
    assert code == 1, output
    cases = _assert_quarantined(data, baseline, RULE_DUPLICATE_COLUMN, ["2", "7"])
    assert {c["field"] for c in cases} == {"result"}
    assert all("header cells 5, 8" in c["message"] for c in cases)


def test_08_duplicated_column_with_equal_values_loads(
    tmp_path: Path, baseline: dict[str, Any]
) -> None:
    export = _export(tmp_path)
    lines = [line for line in (export / LABS).read_bytes().split(b"\n") if line]
    (export / LABS).write_bytes(b"\n".join(x + b"," + x.split(b",")[4] for x in lines) + b"\n")
    code, output, data = _validate(export, "example_wide_en", tmp_path)
    assert code == 1, output
    assert data is not None
    assert _file_summary(data, LABS) == baseline


# --- one error line, exit 2 -----------------------------------------------------------------


def test_10_cr_only_line_endings(tmp_path: Path) -> None:
    export = _export(tmp_path, "cr_line_endings")
    _fatal(export, "example_wide_en", tmp_path, export / LABS, "carriage return only")


def test_11_bytes_invalid_in_the_declared_encoding(tmp_path: Path) -> None:
    export = _export(tmp_path, "invalid_utf8")
    _fatal(export, "example_wide_en", tmp_path, export / LABS, "row 4:", "byte(s) ff", "'utf-8'")


def test_12_utf16_declared_utf8(tmp_path: Path) -> None:
    export = _export(tmp_path, "utf16_declared_utf8")
    _fatal(export, "example_wide_en", tmp_path, export / LABS, "UTF-16", "re-export")


def test_13_empty_file(tmp_path: Path) -> None:
    export = _export(tmp_path)
    (export / LABS).write_bytes(b"")
    _fatal(export, "example_wide_en", tmp_path, export / LABS, "empty")


def test_14_folder_where_a_file_is_expected(tmp_path: Path) -> None:
    export = _export(tmp_path)
    (export / LABS).unlink()
    (export / LABS).mkdir()
    _fatal(export, "example_wide_en", tmp_path, export / LABS, "is a folder, not a file")


def test_15_symlink_loop_is_not_missing(tmp_path: Path) -> None:
    export = _export(tmp_path)
    (export / LABS).unlink()
    (export / LABS).symlink_to("loop_b.csv")
    (export / "loop_b.csv").symlink_to(LABS)
    line = _fatal(export, "example_wide_en", tmp_path, export / LABS, "symbolic link that loops")
    assert "missing" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_16_unreadable_file(tmp_path: Path) -> None:
    export = _export(tmp_path)
    (export / LABS).chmod(0)
    try:
        _fatal(export, "example_wide_en", tmp_path, export / LABS, "permission denied", "chmod")
    finally:
        (export / LABS).chmod(0o644)


def test_17_file_name_differing_only_by_case(tmp_path: Path) -> None:
    export = _export(tmp_path, "case_differs")
    assert not (export / LABS).exists()
    _fatal(export, "example_wide_en", tmp_path, export / LABS, "'Labs.csv'", "rename the file")


# --- the reference export (GB18030 register, XLSX MAR) --------------------------------------


def _tianjin(tianjin_export: Path, tmp_path: Path) -> Path:
    export = tmp_path / "export"
    shutil.copytree(tianjin_export, export)
    return export


def test_20_sheet_name_with_a_trailing_space(tianjin_export: Path, tmp_path: Path) -> None:
    export = _tianjin(tianjin_export, tmp_path)
    workbook = openpyxl.load_workbook(export / "mar.xlsx")
    workbook.worksheets[0].title = "给药记录 "
    workbook.save(export / "mar.xlsx")
    _fatal(
        export,
        "tianjin_ref",
        tmp_path,
        export / "mar.xlsx",
        "no sheet '给药记录'; sheets found: '给药记录 '",
        "spaces",
    )


def test_21_xlsx_that_is_really_a_csv(tianjin_export: Path, tmp_path: Path) -> None:
    export = _tianjin(tianjin_export, tmp_path)
    shutil.copy(export / "vasopressors.csv", export / "mar.xlsx")
    _fatal(export, "tianjin_ref", tmp_path, export / "mar.xlsx", "looks like a CSV")


def test_22_register_not_in_gb18030(tianjin_export: Path, tmp_path: Path) -> None:
    export = _tianjin(tianjin_export, tmp_path)
    path = export / "patients.csv"
    lines = path.read_bytes().split(b"\n")
    lines[3] += b"\xff"
    path.write_bytes(b"\n".join(lines))
    _fatal(export, "tianjin_ref", tmp_path, path, "row 3:", "'gb18030'")


def test_23_register_in_utf16(tianjin_export: Path, tmp_path: Path) -> None:
    export = _tianjin(tianjin_export, tmp_path)
    path = export / "patients.csv"
    path.write_bytes(path.read_bytes().decode("gb18030").encode("utf-16"))
    _fatal(export, "tianjin_ref", tmp_path, path, "UTF-16")


def test_18_unreadable_file_even_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The permission check without chmod (root reads everything): open() refused."""
    export = _export(tmp_path)
    target = export / LABS
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    _fatal(export, "example_wide_en", tmp_path, target, "permission denied", "chmod a+r")
