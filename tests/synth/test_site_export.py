"""Tests of the synthetic tianjin_ref site export writer and its defect injection."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook

from cart_etl.synth import site_export as se
from cart_etl.synth.defects import (
    DEFECT_CATALOGUE,
    QUARANTINE_KINDS,
    DefectRecord,
    nfkc_strip,
)
from cart_etl.synth.model import (
    SITE_TZ,
    ClinicalRecord,
    DrugAdministration,
    IcansAssessment,
    LabResult,
    LabTest,
    OxygenCharting,
    OxygenDevice,
    VasopressorInfusion,
    VitalItem,
    VitalSign,
    example_record,
)

MAPPING = Path(__file__).resolve().parents[2] / "mappings" / "sites" / "tianjin_ref.yaml"
N_PATIENTS = 24
NOT_INFUSED = {20, 21}
SEED = 20240630
BOM = b"\xef\xbb\xbf"
EVENT_FILES = {"vitals_flowsheet.csv", "lab_results.csv", "mar.xlsx", "vasopressors.csv"}

# Codes the study protocol fixes (LOINC for labs, RxNorm for drugs and vasopressors).
EXPECTED_LOINC: dict[LabTest, str] = {
    "il6": "26881-3",
    "il10": "26848-2",
    "sil2r": "33209-6",
    "tnf_alpha": "3074-2",
    "ifn_gamma": "27415-9",
    "crp": "1988-5",
    "ferritin": "2276-4",
    "wbc": "6690-2",
    "anc": "751-8",
    "plt": "777-3",
    "hgb": "718-7",
    "marrow_blasts": "11118-7",
}
EXPECTED_RXNORM = {
    "tocilizumab": "612865",
    "methylprednisolone": "6902",
    "dexamethasone": "3264",
    "prednisone": "8640",
    "gcsf": "68442",
    "norepinephrine": "7512",
    "dopamine": "3628",
    "epinephrine": "3992",
    "phenylephrine": "8163",
    "vasopressin": "11149",
}


# --- cohort ------------------------------------------------------------------------------------


def _variant(i: int) -> ClinicalRecord:
    """example_record() with its own ids, weight, ~6 days of vitals and daily labs."""
    base = example_record()
    assert base.infusion is not None
    t0 = base.infusion.at
    weight = 58.0 + (i % 4) * 5.5
    demo = replace(
        base.demographics,
        study_id=f"CART-{i:03d}",
        mrn=f"20210{48170 + 37 * i:05d}",
        sex="M" if i % 2 else "F",
        weight_kg=weight,
        name=f"测试患者{i}",
    )
    vitals = list(base.vitals)
    values: dict[VitalItem, float] = {"temp": 36.4, "sbp": 108, "dbp": 66, "hr": 84, "spo2": 96}
    for k in range(72):  # every 2 h for 6 days, one round of five items
        at = t0 + timedelta(hours=2 * k, minutes=15)
        for item, value in values.items():
            step = (k + i) % 9
            vitals.append(
                VitalSign(at, item, round(value + step * (0.1 if item == "temp" else 1), 1))
            )
    vitals.sort(key=lambda v: v.at)
    oxygen = [
        *base.oxygen,
        OxygenCharting(t0 + timedelta(hours=95), "face_mask", 8.0),
        OxygenCharting(t0 + timedelta(hours=97), "venturi", 6.0),
        OxygenCharting(t0 + timedelta(hours=99), "non_rebreather", 10.0),
        OxygenCharting(t0 + timedelta(hours=101), "cpap", None),
        OxygenCharting(t0 + timedelta(hours=103), "bipap", None),
        OxygenCharting(t0 + timedelta(hours=105), "mechanical_ventilation", None),
        OxygenCharting(t0 + timedelta(hours=107), "nasal_cannula", 2.5),
    ]
    labs = list(base.labs)
    for day in range(1, 15):
        at = t0 + timedelta(days=day, hours=-3)
        for n, test in enumerate(EXPECTED_LOINC):
            labs.append(LabResult(at, test, round(5.0 + 3.7 * day + n, 2)))
    toci = round(8 * weight)
    drugs = [
        replace(base.drugs[0], dose=float(toci)),
        *base.drugs[1:],
        DrugAdministration(t0 + timedelta(days=3), "dexamethasone", 10.0, "IV", "CRS"),
        DrugAdministration(t0 + timedelta(days=4), "prednisone", 30.0, "PO", "CRS"),
    ]
    vaso = [
        *base.vasopressors,
        VasopressorInfusion(
            t0 + timedelta(hours=40), t0 + timedelta(hours=44), "vasopressin", 0.03, "U/min"
        ),
    ]
    icans = [*base.icans, IcansAssessment(t0 + timedelta(days=3), None, 1)]
    record = replace(
        base,
        demographics=demo,
        infusion=replace(base.infusion, weight_kg=weight),
        vitals=vitals,
        oxygen=oxygen,
        labs=labs,
        drugs=drugs,
        vasopressors=vaso,
        icans=icans,
    )
    if i in NOT_INFUSED:
        record.infusion = None
    return record


RECORDS = [_variant(i) for i in range(N_PATIENTS)]


def _write(out_dir: Path, *, defects: bool, seed: int = SEED) -> list[DefectRecord]:
    with se.SiteExportWriter(out_dir, defects=defects, seed=seed) as writer:
        for record in RECORDS:
            writer.write(record)
    return writer.close()


@dataclass
class Exports:
    clean: Path
    dirty: Path
    defects: list[DefectRecord]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    root = tmp_path_factory.mktemp("synth")
    clean_defects = _write(root / "clean" / "site_export", defects=False)
    assert clean_defects == []
    defects = _write(root / "dirty" / "site_export", defects=True)
    return Exports(root / "clean" / "site_export", root / "dirty" / "site_export", defects)


@pytest.fixture(scope="module")
def mapping() -> dict:
    with MAPPING.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# --- readers -----------------------------------------------------------------------------------


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of an export file, every cell as text."""
    layout = se.LAYOUTS[path.name]
    if layout is se.MAR:
        wb = load_workbook(path)
        ws = wb[se.MAR_SHEET]
        rows = [[se.xlsx_cell_text(c) for c in row] for row in ws.iter_rows(values_only=True)]
        wb.close()
    else:
        with path.open(encoding=layout.encoding, newline="") as fh:
            rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _by_file(defects: list[DefectRecord]) -> dict[str, list[DefectRecord]]:
    out: dict[str, list[DefectRecord]] = defaultdict(list)
    for d in defects:
        out[d.file.removeprefix("site_export/")].append(d)
    return out


def _inserted_rows(records: list[DefectRecord]) -> list[int]:
    return sorted(int(d.row) for d in records if d.kind == "duplicated_row")


def _clean_row(dirty_row: int, inserted: list[int]) -> int:
    """Row number in the clean file of a (non-inserted) row of the defective file."""
    return dirty_row - sum(1 for r in inserted if r < dirty_row)


# --- files, encodings, row counts --------------------------------------------------------------


def test_every_file_is_written(exports: Exports) -> None:
    for folder in (exports.clean, exports.dirty):
        assert sorted(p.name for p in folder.iterdir()) == sorted(se.LAYOUTS)


@pytest.mark.parametrize("which", ["clean", "dirty"])
def test_encodings_and_bom(exports: Exports, which: str) -> None:
    folder = getattr(exports, which)
    raw = (folder / "patients.csv").read_bytes()
    assert raw.decode("gb18030").startswith("研究编号,住院号,姓名")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    for name, layout in se.LAYOUTS.items():
        data = (folder / name).read_bytes()
        if layout.encoding == "utf-8-sig":
            assert data.startswith(BOM), name
            data[3:].decode("utf-8")
        elif layout.encoding == "utf-8":
            assert not data.startswith(BOM), name
            data.decode("utf-8")
    assert (folder / "lab_results.csv").read_bytes().startswith("病历号".encode())


def test_row_counts_equal_events(exports: Exports) -> None:
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
        d.file.removeprefix("site_export/") for d in exports.defects if d.kind == "duplicated_row"
    )
    for name, n_rows in expected.items():
        header, clean_rows = _read(exports.clean / name)
        assert header == list(se.LAYOUTS[name].columns)
        assert len(clean_rows) == n_rows, name
        assert len(_read(exports.dirty / name)[1]) == n_rows + inserted[name], name


def test_not_infused_patients_only_in_register_and_followup(exports: Exports) -> None:
    mrns = {RECORDS[i].demographics.mrn for i in NOT_INFUSED}
    for name in se.LAYOUTS:
        _, rows = _read(exports.clean / name)
        key = 1 if name == "patients.csv" else 0  # 住院号 / 病历号
        found = {row[key] for row in rows} & mrns
        assert found == (mrns if name in {"patients.csv", "followup.csv"} else set()), name


def test_flowsheet_is_in_time_order_per_patient(exports: Exports) -> None:
    _, rows = _read(exports.clean / "vitals_flowsheet.csv")
    by_mrn: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_mrn[row[0]].append(row[1])
    for stamps in by_mrn.values():
        parsed = [datetime.strptime(s, "%Y/%m/%d %H:%M") for s in stamps]
        assert parsed == sorted(parsed)


def test_mar_dates_are_native_excel_datetimes(exports: Exports) -> None:
    wb = load_workbook(exports.clean / "mar.xlsx")
    cells = [row[1] for row in wb[se.MAR_SHEET].iter_rows(min_row=2, values_only=True)]
    wb.close()
    expected = [
        d.at.astimezone(SITE_TZ).replace(tzinfo=None)
        for r in RECORDS
        if r.infusion is not None
        for d in sorted(r.drugs, key=lambda d: d.at)
    ]
    assert cells == expected


# --- defects -----------------------------------------------------------------------------------


def test_all_kinds_are_injected(exports: Exports) -> None:
    kinds = {d.kind for d in exports.defects}
    assert kinds == set(DEFECT_CATALOGUE)
    assert len(kinds) >= 15


def test_defect_rate_is_realistic(exports: Exports) -> None:
    total = sum(len(_read(exports.clean / name)[1]) for name in se.LAYOUTS)
    touched = {(d.file, d.row) for d in exports.defects}
    assert 0.005 < len(touched) / total < 0.05
    flowsheet_and_labs = sum(
        1 for f, _ in touched if f.endswith(("vitals_flowsheet.csv", "lab_results.csv"))
    )
    assert flowsheet_and_labs > len(touched) / 2


def test_every_defect_points_at_its_cell(exports: Exports) -> None:
    for name, records in _by_file(exports.defects).items():
        header, clean = _read(exports.clean / name)
        _, dirty = _read(exports.dirty / name)
        inserted = _inserted_rows(records)
        for d in records:
            row = int(d.row)
            if d.kind == "duplicated_row":
                assert d.field == "*"
                assert dirty[row - 1] == dirty[row - 2], d
                assert ",".join(dirty[row - 1]) == d.injected_value, d
                continue
            col = header.index(d.field)
            assert dirty[row - 1][col] == d.injected_value, d
            assert clean[_clean_row(row, inserted) - 1][col] == d.original_value, d
            assert d.injected_value != d.original_value, d


def test_clean_and_defective_differ_exactly_at_defects(exports: Exports) -> None:
    by_file = _by_file(exports.defects)
    for name in se.LAYOUTS:
        records = by_file.get(name, [])
        header, clean = _read(exports.clean / name)
        _, dirty = _read(exports.dirty / name)
        inserted = set(_inserted_rows(records))
        kept = [row for n, row in enumerate(dirty, 1) if n not in inserted]
        assert len(kept) == len(clean), name
        diffs = {
            (n, header[c])
            for n, (a, b) in enumerate(zip(clean, kept, strict=True), 1)
            for c in range(len(header))
            if a[c] != b[c]
        }
        expected = {
            (_clean_row(int(d.row), sorted(inserted)), d.field)
            for d in records
            if d.kind != "duplicated_row"
        }
        assert diffs == expected, name


def test_untouched_csv_lines_are_byte_identical(exports: Exports) -> None:
    by_file = _by_file(exports.defects)
    for name, layout in se.LAYOUTS.items():
        if layout is se.MAR:
            continue
        records = by_file.get(name, [])
        inserted = set(_inserted_rows(records))
        touched = {int(d.row) for d in records if d.kind != "duplicated_row"}
        clean = (exports.clean / name).read_bytes().split(b"\r\n")
        dirty = (exports.dirty / name).read_bytes().split(b"\r\n")
        kept = [line for n, line in enumerate(dirty) if n not in inserted]
        kept_numbers = [n for n in range(len(dirty)) if n not in inserted]
        assert len(kept) == len(clean), name
        for number, a, b in zip(kept_numbers, clean, kept, strict=True):
            if number not in touched:
                assert a == b, (name, number)


def test_register_ids_only_carry_normalisable_defects(exports: Exports) -> None:
    for d in exports.defects:
        if d.file.endswith("patients.csv") and d.field in {"研究编号", "住院号"}:
            assert d.kind in {"trailing_space", "fullwidth_chars"}, d
            assert nfkc_strip(d.injected_value) == d.original_value


def _event_keys() -> dict[str, set[tuple[str, str, str]]]:
    """(MRN, time cell, item cell) of every key=True event, per file, as the writer prints."""
    keys: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for r in RECORDS:
        if r.infusion is None:
            continue
        mrn = r.demographics.mrn
        for v in r.vitals:
            if v.key:
                stamp = v.at.strftime("%Y/%m/%d %H:%M")
                keys["vitals_flowsheet.csv"].add((mrn, stamp, se.VITAL_ITEM_NAMES[v.item]))
        for o in r.oxygen:
            if o.key:
                stamp = o.at.strftime("%Y/%m/%d %H:%M")
                keys["vitals_flowsheet.csv"].add((mrn, stamp, se.OXYGEN_ITEM_NAME))
        for lab in r.labs:
            if lab.key:
                keys["lab_results.csv"].add((mrn, lab.at.isoformat(), se.LAB_TEST_NAMES[lab.test]))
        for drug in r.drugs:
            if drug.key:
                stamp = se.xlsx_cell_text(drug.at.replace(tzinfo=None))
                keys["mar.xlsx"].add((mrn, stamp, se.DRUG_NAMES[drug.drug]))
        for vaso in r.vasopressors:
            if vaso.key:
                stamp = vaso.start.strftime("%Y-%m-%d %H:%M:%S")
                keys["vasopressors.csv"].add((mrn, stamp, se.VASOPRESSOR_NAMES[vaso.drug]))
    return keys


def _signature(name: str, row: list[str]) -> tuple[str, str, str]:
    """(MRN, time cell, item cell) of a clean row of an event file."""
    if name == "lab_results.csv":
        return row[0], row[2], row[3]
    if name == "vasopressors.csv":
        return row[0], row[2], row[1]
    return row[0], row[1], row[2]


def _parse_stamp(name: str, text: str) -> datetime:
    if name == "lab_results.csv":
        return datetime.fromisoformat(text).replace(tzinfo=None)
    if name == "mar.xlsx":
        return datetime.fromisoformat(text)
    fmt = se.LAYOUTS[name].datetime_format
    assert fmt is not None
    return datetime.strptime(text, fmt)


def test_quarantine_kinds_only_on_non_key_rows_24h_apart(exports: Exports) -> None:
    keys = _event_keys()
    by_file = _by_file(exports.defects)
    for name, records in by_file.items():
        quarantined = [d for d in records if d.kind in QUARANTINE_KINDS]
        if not quarantined:
            continue
        assert name in EVENT_FILES, f"quarantine defect in a file without key flags: {name}"
        _, clean = _read(exports.clean / name)
        inserted = _inserted_rows(records)
        seen: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        rows_done: set[str] = set()
        for d in quarantined:
            if d.row in rows_done:  # one defect may rewrite two cells of a row
                continue
            rows_done.add(d.row)
            row = clean[_clean_row(int(d.row), inserted) - 1]
            mrn, stamp, item = _signature(name, row)
            assert (mrn, stamp, item) not in keys[name], d
            when = _parse_stamp(name, stamp)
            for other in seen[d.study_id, item]:
                assert abs(when - other) > timedelta(hours=24), d
            seen[d.study_id, item].append(when)


def test_mrn_typos_never_hit_a_registered_mrn(exports: Exports) -> None:
    registered = {r.demographics.mrn for r in RECORDS}
    typos = [d for d in exports.defects if d.kind == "mrn_typo"]
    assert typos
    for d in typos:
        assert d.injected_value not in registered
        assert sorted(d.injected_value) == sorted(d.original_value)


def _yaml_datetime_formats(spec: dict) -> list[str]:
    return [spec.get("datetime_format") or "", *spec["alternate_datetime_formats"]]


def test_recoverable_defects_recover_with_the_mapping(exports: Exports, mapping: dict) -> None:
    weights = {r.demographics.mrn: r.infusion.weight_kg for r in RECORDS if r.infusion}
    files = mapping["files"]
    for d in exports.defects:
        name = d.file.removeprefix("site_export/")
        spec = files[name]
        injected, original = d.injected_value, d.original_value
        if d.kind in {"trailing_space", "fullwidth_chars"}:
            assert nfkc_strip(injected) == original
        elif d.kind == "decimal_comma":
            assert injected.replace(",", ".") == original
        elif d.kind == "mixed_date_format":
            formats = spec["alternate_datetime_formats"]
            parsed = {_try_parse(injected, f) for f in formats} - {None}
            assert parsed == {_original_datetime(spec, original)}, d
        elif d.kind == "excel_serial_date":
            serial = float(injected)
            when = datetime(1899, 12, 30) + timedelta(days=serial)
            unit = {"day": "days", "minute": "minutes", "second": "seconds"}[spec["precision"]]
            rounded = _round_to(when, unit)
            assert rounded == _original_datetime(spec, original).replace(tzinfo=None), d
        elif d.kind == "timezone_less":
            naive = datetime.strptime(injected, spec["datetime_format_without_offset"])
            assert naive.replace(tzinfo=SITE_TZ) == datetime.fromisoformat(original)
        elif d.kind == "fahrenheit_temperature" and d.field == "结果":
            assert round((float(injected) - 32) * 5 / 9, 1) == float(original)
        elif d.kind == "crp_mg_dl" and d.field == "结果":
            assert Decimal(injected) * 10 == Decimal(original)
        elif d.kind == "dose_unit_g":
            assert Decimal(injected.removesuffix("g")) * 1000 == Decimal(
                original.removesuffix("mg")
            )
        elif d.kind == "dose_unit_mg_per_kg":
            mrn = next(r.demographics.mrn for r in RECORDS if r.demographics.study_id == d.study_id)
            assert f"{round(8 * weights[mrn])}mg" == original


def _try_parse(text: str, fmt: str) -> datetime | None:
    try:
        return datetime.strptime(text, fmt)
    except ValueError:
        return None


def _original_datetime(spec: dict, text: str) -> datetime:
    if spec.get("format") == "xlsx":
        return datetime.fromisoformat(text)
    return datetime.strptime(text, spec["datetime_format"])


def _round_to(when: datetime, unit: str) -> datetime:
    step = timedelta(**{unit: 1})
    base = datetime(when.year, when.month, when.day)
    return base + round((when - base) / step) * step


def test_output_is_deterministic(tmp_path: Path, exports: Exports) -> None:
    again = _write(tmp_path / "a" / "site_export", defects=True)
    assert again == exports.defects
    for name in se.LAYOUTS:
        assert (tmp_path / "a" / "site_export" / name).read_bytes() == (
            exports.dirty / name
        ).read_bytes(), name
    other = _write(tmp_path / "b" / "site_export", defects=True, seed=SEED + 1)
    assert other != exports.defects


def test_clean_output_does_not_depend_on_seed(tmp_path: Path, exports: Exports) -> None:
    _write(tmp_path / "c" / "site_export", defects=False, seed=7)
    for name in se.LAYOUTS:
        assert (tmp_path / "c" / "site_export" / name).read_bytes() == (
            exports.clean / name
        ).read_bytes(), name


# --- mapping YAML ------------------------------------------------------------------------------


def test_mapping_names_every_file_and_column_written(exports: Exports, mapping: dict) -> None:
    files = mapping["files"]
    assert mapping["site"] == se.SITE_NAME
    assert mapping["timezone"] == "Asia/Shanghai"
    assert sorted(files) == sorted(p.name for p in exports.dirty.iterdir())
    link = mapping["patient_link"]
    assert (link["file"], link["study_id_column"], link["mrn_column"]) == (
        "patients.csv",
        "研究编号",
        "住院号",
    )
    for name, spec in files.items():
        header, _ = _read(exports.dirty / name)
        assert list(spec["columns"]) == header, name
        assert spec["patient_key"] in header, name


def test_mapping_matches_layouts(mapping: dict) -> None:
    for name, layout in se.LAYOUTS.items():
        spec = mapping["files"][name]
        if layout is se.MAR:
            assert spec["format"] == "xlsx"
            assert spec["sheet"] == se.MAR_SHEET
            assert spec["datetime_cells"] == "excel_native"
        else:
            codec = {"utf-8-sig": ("utf-8", True), "utf-8": ("utf-8", False)}.get(
                layout.encoding, (layout.encoding, False)
            )
            assert (spec["encoding"], spec["bom"]) == codec, name
            assert (spec["delimiter"], spec["line_terminator"]) == (",", "\r\n")
            assert spec["datetime_format"] == layout.datetime_format, name
        assert tuple(spec["alternate_datetime_formats"]) == layout.alternate_formats, name


def test_writer_vocabularies_agree_with_mapping(mapping: dict) -> None:
    files = mapping["files"]
    reg = files["patients.csv"]["columns"]
    assert reg["性别"]["values"] == {v: k for k, v in se.SEX_NAMES.items()}
    assert reg["危险分层"]["values"] == {v: k for k, v in se.RISK_NAMES.items()}
    assert reg["既往异基因造血干细胞移植"]["values"] == {v: k for k, v in se.YES_NO.items()}
    source = files["cart_infusion.csv"]["columns"]["细胞来源"]["values"]
    assert source == {v: k for k, v in se.CELL_SOURCE_NAMES.items()}

    flow = files["vitals_flowsheet.csv"]
    vitals = {k: v for k, v in flow["items"].items() if v["target"] == "vitals"}
    assert {v["item"]: k for k, v in vitals.items()} == se.VITAL_ITEM_NAMES
    assert {v["item"]: v["default_unit"] for v in vitals.values()} == se.VITAL_UNIT_NAMES
    assert [k for k, v in flow["items"].items() if v["target"] == "oxygen"] == [se.OXYGEN_ITEM_NAME]
    for printed in {*se.VITAL_UNIT_NAMES.values(), se.FAHRENHEIT_UNIT}:
        assert printed in flow["units"]

    labs = files["lab_results.csv"]
    assert {v["test"]: k for k, v in labs["tests"].items()} == se.LAB_TEST_NAMES
    assert {v["test"]: v["default_unit"] for v in labs["tests"].values()} == se.LAB_UNIT_NAMES
    assert {v["test"]: v["loinc"] for v in labs["tests"].values()} == EXPECTED_LOINC
    for printed in {*se.LAB_UNIT_NAMES.values(), se.CRP_ALT_UNIT}:
        assert printed in labs["units"]
    ranges = labs["reference_ranges"]
    for test, (low, high) in se.LAB_REFERENCE_RANGES.items():
        assert ranges[test] == se.reference_text(low, high)
    for sex, (low, high) in se.HGB_REFERENCE_RANGES.items():
        assert ranges["hgb"][sex] == se.reference_text(low, high)

    mar = files["mar.xlsx"]
    assert {v["drug"]: k for k, v in mar["drugs"].items()} == se.DRUG_NAMES
    assert {v["route"]: k for k, v in mar["routes"].items()} == se.ROUTE_NAMES
    assert {v: k for k, v in mar["indications"].items()} == se.INDICATION_NAMES
    for printed in {*se.DOSE_UNIT_NAMES.values(), "g", "mg/kg"}:
        assert printed in mar["dose_units"]

    vaso = files["vasopressors.csv"]
    assert {v["drug"]: k for k, v in vaso["drugs"].items()} == se.VASOPRESSOR_NAMES
    assert {vaso["units"][k]: k for k in se.RATE_UNIT_NAMES.values()} == se.RATE_UNIT_NAMES
    defaults = {v["drug"]: vaso["units"][v["default_unit"]] for v in vaso["drugs"].values()}
    assert defaults == se.VASOPRESSOR_DEFAULT_UNITS

    rxnorm = {v["drug"]: v["rxnorm"] for v in (*mar["drugs"].values(), *vaso["drugs"].values())}
    assert rxnorm == EXPECTED_RXNORM
    mrd = files["response_day28.csv"]["columns"]["MRD(流式,%)"]["special_values"]
    assert mrd == {se.MRD_NEGATIVE: 0.0}
    assert {v: k for k, v in files["followup.csv"]["death_causes"].items()} == se.DEATH_CAUSE_NAMES
    assert {v: k for k, v in files["infections.csv"]["sites"].items()} == se.INFECTION_SITE_NAMES


@pytest.mark.parametrize("device", list(se.OXYGEN_DEVICE_NAMES))
@pytest.mark.parametrize("flow", [None, 3.0, 2.5, 40.0])
def test_oxygen_patterns_parse_writer_text(
    mapping: dict, device: OxygenDevice, flow: float | None
) -> None:
    spec = mapping["files"]["vitals_flowsheet.csv"]["oxygen_devices"]
    text = se.oxygen_text(OxygenCharting(datetime(2021, 3, 5, tzinfo=SITE_TZ), device, flow))
    matches = [d["device"] for d in spec["devices"] if re.search(d["pattern"], text)]
    assert matches == [device]
    found = re.search(spec["flow_regex"], text)
    assert (None if found is None else float(found.group(1))) == flow
