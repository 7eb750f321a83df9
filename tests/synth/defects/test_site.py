"""Tests of the defect injection into the site export: placement, rules, recoverability."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from cart_etl.synth.defects.catalogue import DEFECT_CATALOGUE, QUARANTINE_KINDS
from cart_etl.synth.defects.transforms import nfkc_strip
from cart_etl.synth.model import SITE_TZ
from cart_etl.synth.site.cells import xlsx_cell_text
from cart_etl.synth.site.layouts import LAYOUTS, MAR
from cart_etl.synth.vocab import (
    DRUG_NAMES,
    LAB_TEST_NAMES,
    OXYGEN_ITEM_NAME,
    VASOPRESSOR_NAMES,
    VITAL_ITEM_NAMES,
)
from tests.synth.site.records import (
    RECORDS,
    Exports,
    clean_row,
    defects_by_file,
    inserted_rows,
    read_export_file,
)

EVENT_FILES = {"vitals_flowsheet.csv", "lab_results.csv", "mar.xlsx", "vasopressors.csv"}


def test_all_kinds_are_injected(site_exports: Exports) -> None:
    kinds = {d.kind for d in site_exports.defects}
    assert kinds == set(DEFECT_CATALOGUE)
    assert len(kinds) >= 15


def test_defect_rate_is_realistic(site_exports: Exports) -> None:
    total = sum(len(read_export_file(site_exports.clean / name)[1]) for name in LAYOUTS)
    touched = {(d.file, d.row) for d in site_exports.defects}
    assert 0.005 < len(touched) / total < 0.05
    flowsheet_and_labs = sum(
        1 for f, _ in touched if f.endswith(("vitals_flowsheet.csv", "lab_results.csv"))
    )
    assert flowsheet_and_labs > len(touched) / 2


def test_every_defect_points_at_its_cell(site_exports: Exports) -> None:
    for name, records in defects_by_file(site_exports.defects).items():
        header, clean = read_export_file(site_exports.clean / name)
        _, dirty = read_export_file(site_exports.dirty / name)
        inserted = inserted_rows(records)
        for d in records:
            row = int(d.row)
            if d.kind == "duplicated_row":
                assert d.field == "*"
                assert dirty[row - 1] == dirty[row - 2], d
                assert ",".join(dirty[row - 1]) == d.injected_value, d
                continue
            col = header.index(d.field)
            assert dirty[row - 1][col] == d.injected_value, d
            assert clean[clean_row(row, inserted) - 1][col] == d.original_value, d
            assert d.injected_value != d.original_value, d


def test_clean_and_defective_differ_exactly_at_defects(site_exports: Exports) -> None:
    by_file = defects_by_file(site_exports.defects)
    for name in LAYOUTS:
        records = by_file.get(name, [])
        header, clean = read_export_file(site_exports.clean / name)
        _, dirty = read_export_file(site_exports.dirty / name)
        inserted = set(inserted_rows(records))
        kept = [row for n, row in enumerate(dirty, 1) if n not in inserted]
        assert len(kept) == len(clean), name
        diffs = {
            (n, header[c])
            for n, (a, b) in enumerate(zip(clean, kept, strict=True), 1)
            for c in range(len(header))
            if a[c] != b[c]
        }
        expected = {
            (clean_row(int(d.row), sorted(inserted)), d.field)
            for d in records
            if d.kind != "duplicated_row"
        }
        assert diffs == expected, name


def test_untouched_csv_lines_are_byte_identical(site_exports: Exports) -> None:
    by_file = defects_by_file(site_exports.defects)
    for name, layout in LAYOUTS.items():
        if layout is MAR:
            continue
        records = by_file.get(name, [])
        inserted = set(inserted_rows(records))
        touched = {int(d.row) for d in records if d.kind != "duplicated_row"}
        clean = (site_exports.clean / name).read_bytes().split(b"\r\n")
        dirty = (site_exports.dirty / name).read_bytes().split(b"\r\n")
        kept = [line for n, line in enumerate(dirty) if n not in inserted]
        kept_numbers = [n for n in range(len(dirty)) if n not in inserted]
        assert len(kept) == len(clean), name
        for number, a, b in zip(kept_numbers, clean, kept, strict=True):
            if number not in touched:
                assert a == b, (name, number)


def test_register_ids_only_carry_normalisable_defects(site_exports: Exports) -> None:
    for d in site_exports.defects:
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
                keys["vitals_flowsheet.csv"].add((mrn, stamp, VITAL_ITEM_NAMES[v.item]))
        for o in r.oxygen:
            if o.key:
                stamp = o.at.strftime("%Y/%m/%d %H:%M")
                keys["vitals_flowsheet.csv"].add((mrn, stamp, OXYGEN_ITEM_NAME))
        for lab in r.labs:
            if lab.key:
                keys["lab_results.csv"].add((mrn, lab.at.isoformat(), LAB_TEST_NAMES[lab.test]))
        for drug in r.drugs:
            if drug.key:
                stamp = xlsx_cell_text(drug.at.replace(tzinfo=None))
                keys["mar.xlsx"].add((mrn, stamp, DRUG_NAMES[drug.drug]))
        for vaso in r.vasopressors:
            if vaso.key:
                stamp = vaso.start.strftime("%Y-%m-%d %H:%M:%S")
                keys["vasopressors.csv"].add((mrn, stamp, VASOPRESSOR_NAMES[vaso.drug]))
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
    fmt = LAYOUTS[name].datetime_format
    assert fmt is not None
    return datetime.strptime(text, fmt)


def test_quarantine_kinds_only_on_non_key_rows_24h_apart(site_exports: Exports) -> None:
    keys = _event_keys()
    by_file = defects_by_file(site_exports.defects)
    for name, records in by_file.items():
        quarantined = [d for d in records if d.kind in QUARANTINE_KINDS]
        if not quarantined:
            continue
        assert name in EVENT_FILES, f"quarantine defect in a file without key flags: {name}"
        _, clean = read_export_file(site_exports.clean / name)
        inserted = inserted_rows(records)
        seen: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        rows_done: set[str] = set()
        for d in quarantined:
            if d.row in rows_done:  # one defect may rewrite two cells of a row
                continue
            rows_done.add(d.row)
            row = clean[clean_row(int(d.row), inserted) - 1]
            mrn, stamp, item = _signature(name, row)
            assert (mrn, stamp, item) not in keys[name], d
            when = _parse_stamp(name, stamp)
            for other in seen[d.study_id, item]:
                assert abs(when - other) > timedelta(hours=24), d
            seen[d.study_id, item].append(when)


def test_mrn_typos_never_hit_a_registered_mrn(site_exports: Exports) -> None:
    registered = {r.demographics.mrn for r in RECORDS}
    typos = [d for d in site_exports.defects if d.kind == "mrn_typo"]
    assert typos
    for d in typos:
        assert d.injected_value not in registered
        assert sorted(d.injected_value) == sorted(d.original_value)


def test_recoverable_defects_recover_with_the_mapping(
    site_exports: Exports, site_mapping: dict
) -> None:
    weights = {r.demographics.mrn: r.infusion.weight_kg for r in RECORDS if r.infusion}
    files = site_mapping["files"]
    for d in site_exports.defects:
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
