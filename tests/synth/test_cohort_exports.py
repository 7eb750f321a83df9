"""Acceptance tests of issue #3 on the real generated reference cohort (61 patients, seed 2025).

The writer unit tests (tests/synth/site, tests/synth/fhir, tests/synth/defects) use hand-made
records; these tests run on what ``cart-etl synth`` actually writes: the ``reference_cohort``
(defects on) and ``clean_cohort`` (``--no-defects``) session fixtures of tests/conftest.py,
plus one fresh run for determinism and one with another seed.

Conventions of ``truth/defects.csv`` relied on here (``DefectRecord``): site-export rows are
1-based data-row numbers of the *defective* file (header excluded); a ``duplicated_row``
record names the inserted row, field ``*``, and the row's cells joined by ``,``; FHIR records
name the resource id (bundles) or ``line N`` (NDJSON) and an element path such as
``Observation.valueQuantity.value``.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from openpyxl import load_workbook
from pydantic import ValidationError

from cart_etl.synth.calibrate.plan import DATA_CUT
from cart_etl.synth.defects.catalogue import DEFECT_CATALOGUE, DefectRecord
from cart_etl.synth.defects.fhir import DEFECT_KINDS as FHIR_DEFECT_KINDS
from cart_etl.synth.defects.transforms import nfkc_strip
from cart_etl.synth.fhir.codes import LOINC, STUDY_ID_SYSTEM
from cart_etl.synth.generate import DEFECT_COLUMNS, generate
from cart_etl.synth.site.cells import xlsx_cell_text
from cart_etl.synth.site.layouts import DATE, LAYOUTS, MAR, MRN, NUM, RESULT, FileLayout
from cart_etl.synth.vocab import (
    CRP_ALT_UNIT,
    FAHRENHEIT_UNIT,
    MAR_SHEET,
    OXYGEN_ITEM_NAME,
    VITAL_ITEM_NAMES,
    VITAL_UNIT_NAMES,
)

SEED = 2025
PATIENTS = 61
SITE = "site_export"
FHIR = "fhir"
MALFORMED, MISSING_SUBJECT = "fhir_malformed_resource", "fhir_missing_subject"
TEMPERATURE_ITEM = VITAL_ITEM_NAMES["temp"]  # 体温
TEMPERATURE_LOINC = "8310-5"
FULLWIDTH = re.compile("[\uff01-\uff5e]")  # full-width ASCII variants: digits, letters, '－'...
DECIMAL_COMMA = re.compile(r"\d,\d")
CLEAN_DOSE = re.compile(r"\d+(\.\d+)?(mg|μg)")


def _defects(root: Path) -> list[DefectRecord]:
    with (root / "truth" / "defects.csv").open(encoding="utf-8", newline="") as fh:
        return [DefectRecord(**row) for row in csv.DictReader(fh)]


def _read_site(path: Path, *, raw: bool = False) -> tuple[list[str], list[list[Any]]]:
    """Header and data rows of a site-export file; xlsx cells as DefectRecord text unless raw."""
    layout = LAYOUTS[path.name]
    if layout is MAR:
        wb = load_workbook(path)
        ws = wb[MAR_SHEET]
        rows: list[list[Any]] = [
            list(row) if raw else [xlsx_cell_text(c) for c in row]
            for row in ws.iter_rows(values_only=True)
        ]
        wb.close()
    else:
        with path.open(encoding=layout.encoding, newline="") as fh:
            rows = list(csv.reader(fh))
    return [str(c) for c in rows[0]], rows[1:]


def _relative_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _bundle_paths(root: Path) -> list[Path]:
    return sorted((root / FHIR / "bundles").glob("*.json"))


def _ndjson_paths(root: Path) -> list[Path]:
    return sorted((root / FHIR / "ndjson").glob("*.ndjson"))


def _entries(path: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = orjson.loads(path.read_bytes())["entry"]
    return entries


def _line_no(row: str) -> int:
    assert row.startswith("line "), row
    return int(row.removeprefix("line "))


def _element_text(resource: dict[str, Any], field: str) -> str:
    """A FHIR element as DefectRecord text: '' when absent, a reference's string, JSON else."""
    rtype, *path = field.split(".")
    assert resource["resourceType"] == rtype, field
    value: Any = resource
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, dict) and set(value) == {"reference"}:
        return str(value["reference"])
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _codes(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c.get("system"), c.get("code")) for c in resource.get("code", {}).get("coding", [])}


def _is_temperature(resource: dict[str, Any]) -> bool:
    return resource["resourceType"] == "Observation" and (LOINC, TEMPERATURE_LOINC) in _codes(
        resource
    )


@dataclass
class SiteFile:
    """One site-export file of both cohorts and its defect records."""

    name: str
    header: list[str]
    clean: list[list[str]]
    dirty: list[list[str]]
    records: list[DefectRecord]

    @property
    def inserted(self) -> list[int]:
        """Row numbers (defective file) of the inserted duplicate rows, ascending."""
        return sorted(int(d.row) for d in self.records if d.kind == "duplicated_row")

    def clean_row(self, dirty_row: int) -> int:
        """Row number in the clean file of a non-inserted row of the defective file."""
        return dirty_row - sum(1 for r in self.inserted if r < dirty_row)

    def kept(self) -> list[list[str]]:
        """The defective rows without the inserted duplicates."""
        inserted = set(self.inserted)
        return [row for n, row in enumerate(self.dirty, 1) if n not in inserted]


@pytest.fixture(scope="module")
def reference_defects(reference_cohort: Path) -> list[DefectRecord]:
    return _defects(reference_cohort)


@pytest.fixture(scope="module")
def site_files(
    reference_cohort: Path, clean_cohort: Path, reference_defects: list[DefectRecord]
) -> dict[str, SiteFile]:
    by_file: dict[str, list[DefectRecord]] = defaultdict(list)
    for d in reference_defects:
        if d.file.startswith(f"{SITE}/"):
            by_file[d.file.removeprefix(f"{SITE}/")].append(d)
    assert set(by_file) <= set(LAYOUTS), sorted(by_file)
    out: dict[str, SiteFile] = {}
    for name in LAYOUTS:
        header, clean = _read_site(clean_cohort / SITE / name)
        dirty_header, dirty = _read_site(reference_cohort / SITE / name)
        assert header == dirty_header == list(LAYOUTS[name].columns), name
        out[name] = SiteFile(name, header, clean, dirty, by_file.get(name, []))
    return out


def _fhir_records(defects: list[DefectRecord]) -> list[DefectRecord]:
    return [d for d in defects if d.file.startswith(f"{FHIR}/")]


def test_01_same_seed_is_byte_identical_other_seed_differs(
    reference_cohort: Path, tmp_path: Path
) -> None:
    """Two runs with seed 2025 write the same bytes in every file; seed 2026 writes others."""
    again = tmp_path / "again"
    generate(again, patients=PATIENTS, seed=SEED, defects=True)
    files = _relative_files(reference_cohort)
    assert _relative_files(again) == files
    assert {f"{SITE}/{name}" for name in LAYOUTS} <= set(files)
    assert any(f.startswith(f"{FHIR}/bundles/") for f in files)
    assert any(f.startswith(f"{FHIR}/ndjson/") for f in files)
    differing = [
        f for f in files if (again / f).read_bytes() != (reference_cohort / f).read_bytes()
    ]
    assert differing == []

    other = tmp_path / "other_seed"
    generate(other, patients=PATIENTS, seed=SEED + 1, defects=True, fhir=False)
    for name in (
        f"{SITE}/patients.csv",
        f"{SITE}/vitals_flowsheet.csv",
        f"{SITE}/lab_results.csv",
        f"{SITE}/mar.xlsx",
        "truth/patients.csv",
        "truth/defects.csv",
    ):
        assert (other / name).read_bytes() != (reference_cohort / name).read_bytes(), name


def test_02_every_defect_is_at_its_stated_place(
    site_files: dict[str, SiteFile],
    reference_defects: list[DefectRecord],
    reference_cohort: Path,
    clean_cohort: Path,
) -> None:
    """injected_value in the defective export, original_value in the clean one, same place."""
    assert reference_defects
    for sf in site_files.values():
        for d in sf.records:
            row = int(d.row)
            assert 1 <= row <= len(sf.dirty), d
            if d.kind == "duplicated_row":
                assert d.field == "*", d
                assert d.original_value == "", d
                assert row >= 2, d
                assert sf.dirty[row - 1] == sf.dirty[row - 2], d
                assert ",".join(sf.dirty[row - 1]) == d.injected_value, d
                # The row above is in the clean file, but not twice.
                above = sf.clean_row(row - 1)
                assert sf.clean[above - 1] == sf.dirty[row - 2], d
                assert above == len(sf.clean) or sf.clean[above] != sf.dirty[row - 1], d
                continue
            col = sf.header.index(d.field)
            assert d.injected_value != d.original_value, d
            assert sf.dirty[row - 1][col] == d.injected_value, d
            assert sf.clean[sf.clean_row(row) - 1][col] == d.original_value, d

    fhir = _fhir_records(reference_defects)
    assert {d.kind for d in fhir} <= set(FHIR_DEFECT_KINDS)
    for d in fhir:
        rel = d.file.removeprefix(f"{FHIR}/")
        if rel.startswith("bundles/"):
            assert rel == f"bundles/{d.study_id}.json", d
            [dirty] = [
                e["resource"]
                for e in _entries(reference_cohort / d.file)
                if e["resource"]["id"] == d.row
            ]
            [clean] = [
                e["resource"]
                for e in _entries(clean_cohort / d.file)
                if e["resource"]["id"] == d.row
            ]
        else:
            n = _line_no(d.row)
            dirty = orjson.loads((reference_cohort / d.file).read_bytes().splitlines()[n - 1])
            clean = orjson.loads((clean_cohort / d.file).read_bytes().splitlines()[n - 1])
            assert rel == f"ndjson/{dirty['resourceType']}.ndjson", d
        assert dirty["id"] == clean["id"], d
        assert _element_text(dirty, d.field) == d.injected_value, d
        assert _element_text(clean, d.field) == d.original_value, d
        assert d.injected_value != d.original_value, d


def test_03_clean_and_defective_differ_only_at_listed_defects(
    site_files: dict[str, SiteFile],
    reference_defects: list[DefectRecord],
    reference_cohort: Path,
    clean_cohort: Path,
) -> None:
    """Without the inserted duplicates every other cell, entry and NDJSON line is identical."""
    for name, sf in site_files.items():
        kept = sf.kept()
        assert len(kept) == len(sf.clean), name
        diffs = {
            (n, sf.header[c])
            for n, (a, b) in enumerate(zip(sf.clean, kept, strict=True), 1)
            for c in range(len(sf.header))
            if a[c] != b[c]
        }
        expected = {
            (sf.clean_row(int(d.row)), d.field) for d in sf.records if d.kind != "duplicated_row"
        }
        assert diffs == expected, name
        assert all(len(row) == len(sf.header) for row in sf.dirty), name

    fhir = _fhir_records(reference_defects)
    listed = {(d.file, d.row) for d in fhir}
    clean_files = [f for f in _relative_files(clean_cohort) if f.startswith(f"{FHIR}/")]
    assert [f for f in _relative_files(reference_cohort) if f.startswith(f"{FHIR}/")] == clean_files
    for path in _ndjson_paths(clean_cohort):
        rel = path.relative_to(clean_cohort).as_posix()
        a = path.read_bytes().splitlines()
        b = (reference_cohort / rel).read_bytes().splitlines()
        assert len(a) == len(b), rel
        differing = {
            (rel, f"line {n}") for n, (x, y) in enumerate(zip(a, b, strict=True), 1) if x != y
        }
        assert differing == {k for k in listed if k[0] == rel}, rel
    for path in _bundle_paths(clean_cohort):
        rel = path.relative_to(clean_cohort).as_posix()
        expected_ids = {row for file, row in listed if file == rel}
        clean_bytes, dirty_bytes = path.read_bytes(), (reference_cohort / rel).read_bytes()
        if not expected_ids:
            assert clean_bytes == dirty_bytes, rel
            continue
        clean_bundle, dirty_bundle = orjson.loads(clean_bytes), orjson.loads(dirty_bytes)
        clean_entries, dirty_entries = clean_bundle.pop("entry"), dirty_bundle.pop("entry")
        assert clean_bundle == dirty_bundle, rel
        assert len(clean_entries) == len(dirty_entries), rel
        differing_ids = set()
        for x, y in zip(clean_entries, dirty_entries, strict=True):
            assert x["fullUrl"] == y["fullUrl"], rel
            assert x["request"] == y["request"], rel
            if x != y:
                differing_ids.add(y["resource"]["id"])
        assert differing_ids == expected_ids, rel

    # Defects never leak into the truth tables.
    for name in ("truth/patients.csv", "truth/supplement.csv"):
        assert (clean_cohort / name).read_bytes() == (reference_cohort / name).read_bytes(), name


def _date_cells(layout: FileLayout, rows: list[list[Any]]) -> Iterator[tuple[Any, str]]:
    for row in rows:
        for value, role in zip(row, layout.roles, strict=True):
            if role == DATE and value not in ("", None):
                yield value, str(layout.datetime_format)


def test_04_no_defects_output_has_no_defect_signatures(clean_cohort: Path) -> None:
    """--no-defects: empty defect log, and none of the catalogue's signatures in the export."""
    lines = (clean_cohort / "truth" / "defects.csv").read_text(encoding="utf-8").splitlines()
    assert lines == [",".join(DEFECT_COLUMNS)]
    assert orjson.loads((clean_cohort / "manifest.json").read_bytes())["defects_injected"] == 0

    _, register = _read_site(clean_cohort / SITE / "patients.csv")
    mrns = {row[1] for row in register}
    assert len(mrns) == len(register) == PATIENTS
    cut = datetime.combine(DATA_CUT, datetime.max.time())
    for name, layout in LAYOUTS.items():
        _, raw = _read_site(clean_cohort / SITE / name, raw=True)
        rows = [[xlsx_cell_text(c) for c in row] for row in raw] if layout is MAR else raw
        assert rows, name
        for row in rows:
            for cell, role, column in zip(row, layout.roles, layout.columns, strict=True):
                where = (name, column, cell)
                assert cell == cell.strip(), where  # trailing_space
                assert not FULLWIDTH.search(cell), where  # fullwidth_chars
                assert FAHRENHEIT_UNIT not in cell, where  # fahrenheit_temperature
                assert CRP_ALT_UNIT not in cell, where  # crp_mg_dl
                if role in (NUM, RESULT):
                    assert not DECIMAL_COMMA.search(cell), where  # decimal_comma
                    assert not cell.startswith("-"), where  # impossible_value (labs)
                if role == MRN:
                    assert cell in mrns, where  # mrn_typo
        # excel_serial_date, mixed_date_format, timezone_less, future_date
        for value, fmt in _date_cells(layout, raw):
            if layout is MAR:
                assert isinstance(value, datetime), (name, value)
                when = value
            else:
                when = datetime.strptime(value, fmt)  # fails on any other format
                if "%z" in fmt:
                    assert when.utcoffset() is not None, (name, value)
            assert when.replace(tzinfo=None) <= cut, (name, value)
        # duplicated_row
        assert all(a != b for a, b in pairwise(rows)), name
        if name == "vitals_flowsheet.csv":
            for row in rows:
                _, _, item, result, unit = row
                if item == TEMPERATURE_ITEM:
                    assert unit == VITAL_UNIT_NAMES["temp"], row
                    assert 33.0 <= float(result) <= 43.0, row  # x10 / Fahrenheit
                else:
                    assert (unit == "") == (item == OXYGEN_ITEM_NAME), row  # missing_unit
        if name in ("lab_results.csv", "vasopressors.csv"):
            unit_col = layout.columns.index("单位")
            assert all(row[unit_col] != "" for row in rows), name  # missing_unit
        if name == "mar.xlsx":
            dose_col = layout.columns.index("剂量")
            for row in rows:  # dose_unit_g, dose_unit_mg_per_kg
                assert CLEAN_DOSE.fullmatch(row[dose_col]), row

    for resource, where in _all_resources(clean_cohort):
        if resource["resourceType"] == "Observation":
            assert "subject" in resource, where  # fhir_missing_subject
            value = resource.get("valueQuantity", {}).get("value", 0.0)
            assert isinstance(value, int | float), where  # fhir_malformed_resource


def _all_resources(root: Path) -> Iterator[tuple[dict[str, Any], str]]:
    for path in _ndjson_paths(root):
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            yield orjson.loads(line), f"{path.name} line {n}"
    for path in _bundle_paths(root):
        for entry in _entries(path):
            yield entry["resource"], f"{path.name} {entry['fullUrl']}"


def test_05_defect_kinds_and_rate(
    site_files: dict[str, SiteFile], reference_defects: list[DefectRecord]
) -> None:
    """>= 15 kinds incl. both FHIR kinds; 1-3 % of the site-export rows are defective."""
    kinds = Counter(d.kind for d in reference_defects)
    assert set(kinds) <= set(DEFECT_CATALOGUE) | set(FHIR_DEFECT_KINDS), sorted(kinds)
    assert len(kinds) >= 15, sorted(kinds)
    assert {MALFORMED, MISSING_SUBJECT} <= set(kinds)
    for d in reference_defects:
        is_fhir = d.file.startswith(f"{FHIR}/")
        assert is_fhir == (d.kind in FHIR_DEFECT_KINDS), d
        assert d.file.startswith(f"{SITE}/") or is_fhir, d
        assert re.fullmatch(r"CART-\d{3}", d.study_id), d

    defective = {(d.file, d.row) for d in reference_defects if d.file.startswith(f"{SITE}/")}
    total = sum(len(sf.dirty) for sf in site_files.values())
    share = len(defective) / total
    assert 0.01 <= share <= 0.03, f"{len(defective)} of {total} rows = {share:.2%}"


@pytest.mark.slow
def test_06_fhir_validates_with_r4b_except_malformed(
    reference_cohort: Path, reference_defects: list[DefectRecord]
) -> None:
    """Every bundle and NDJSON resource validates with fhir.resources.R4B but the malformed ones.

    Nothing is sampled: all ~69 k resources are validated in both outputs. Measured on the
    reference cohort, whole-Bundle validation took ~22 s and the NDJSON files ~11 s (~33 s),
    which left too little of the module's 60 s budget. So each bundle is validated by
    ``Bundle.model_validate`` with its ``entry.resource`` members detached (type, entry
    fullUrl and request: the structure), and every detached resource by the R4B class named
    by its ``resourceType``. That is exactly what Bundle does for ``entry.resource``
    (fhir_core dispatches on resourceType and calls ``model_validate``), at ~13 s instead of
    ~22 s. Bundles holding a malformed entry are also validated whole and must fail.
    """
    malformed = {(d.file, d.row) for d in reference_defects if d.kind == MALFORMED}
    assert malformed
    classes: dict[str, Any] = {}

    def model(rtype: str) -> Any:
        if rtype not in classes:
            classes[rtype] = get_fhir_model_class(rtype)
        return classes[rtype]

    failed: set[tuple[str, str]] = set()
    n_bundles = n_resources = 0
    for path in _bundle_paths(reference_cohort):
        rel = path.relative_to(reference_cohort).as_posix()
        bundle = orjson.loads(path.read_bytes())
        if any(file == rel for file, _ in malformed):
            with pytest.raises(ValidationError):
                Bundle.model_validate(bundle)
        resources = [entry.pop("resource") for entry in bundle["entry"]]
        Bundle.model_validate(bundle)
        assert bundle["type"] == "transaction"
        for resource in resources:
            if (rel, resource["id"]) in malformed:
                with pytest.raises(ValidationError):
                    model(resource["resourceType"]).model_validate(resource)
                failed.add((rel, resource["id"]))
            else:
                model(resource["resourceType"]).model_validate(resource)
            n_resources += 1
        n_bundles += 1
    assert n_bundles == PATIENTS

    for path in _ndjson_paths(reference_cohort):
        rel = path.relative_to(reference_cohort).as_posix()
        cls = model(path.stem)
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            resource = orjson.loads(line)
            assert resource["resourceType"] == path.stem, (rel, n)
            if (rel, f"line {n}") in malformed:
                with pytest.raises(ValidationError):
                    cls.model_validate(resource)
                failed.add((rel, f"line {n}"))
            else:
                cls.model_validate(resource)
            n_resources -= 1
    assert n_resources == 0  # bundles and NDJSON hold the same resources
    assert failed == malformed


def test_07_fhir_and_site_export_have_same_patients_and_temperatures(
    site_files: dict[str, SiteFile],
    reference_defects: list[DefectRecord],
    reference_cohort: Path,
) -> None:
    """Same study ids; per patient as many 体温 flowsheet rows as LOINC 8310-5 Observations."""
    register = site_files["patients.csv"].dirty
    sid_col, mrn_col = 0, 1
    mrn_to_sid = {nfkc_strip(row[mrn_col]): nfkc_strip(row[sid_col]) for row in register}
    study_ids = set(mrn_to_sid.values())
    assert len(study_ids) == len(register) == PATIENTS
    with (reference_cohort / "truth" / "patients.csv").open(encoding="utf-8", newline="") as fh:
        assert {row["study_id"] for row in csv.DictReader(fh)} == study_ids

    # Site export: drop inserted duplicates, attribute MRN-typo rows through their record.
    flowsheet = site_files["vitals_flowsheet.csv"]
    inserted = set(flowsheet.inserted)
    typos = {int(d.row): d for d in flowsheet.records if d.kind == "mrn_typo"}
    site_temps: Counter[str] = Counter()
    for n, row in enumerate(flowsheet.dirty, 1):
        if n in inserted or nfkc_strip(row[2]) != TEMPERATURE_ITEM:
            continue
        mrn = nfkc_strip(row[0])
        if n in typos:
            assert mrn not in mrn_to_sid, row
            site_temps[typos[n].study_id] += 1
        else:
            site_temps[mrn_to_sid[mrn]] += 1
    assert sum(site_temps.values()) > 0

    # Bundles: one per patient, named by the study id of its only Patient.
    bundle_temps: Counter[str] = Counter()
    bundle_sids = set()
    for path in _bundle_paths(reference_cohort):
        resources = [e["resource"] for e in _entries(path)]
        patients = [r for r in resources if r["resourceType"] == "Patient"]
        assert len(patients) == 1, path.name
        [sid] = [i["value"] for i in patients[0]["identifier"] if i["system"] == STUDY_ID_SYSTEM]
        assert path.stem == sid
        bundle_sids.add(sid)
        bundle_temps[sid] = sum(1 for r in resources if _is_temperature(r))
    assert bundle_sids == study_ids

    # NDJSON: Patient ids -> study ids; subject-less Observations through their record.
    ndjson = reference_cohort / FHIR / "ndjson"
    pid_to_sid = {}
    for line in (ndjson / "Patient.ndjson").read_bytes().splitlines():
        patient = orjson.loads(line)
        [sid] = [i["value"] for i in patient["identifier"] if i["system"] == STUDY_ID_SYSTEM]
        pid_to_sid[f"Patient/{patient['id']}"] = sid
    assert set(pid_to_sid.values()) == study_ids
    assert len(pid_to_sid) == PATIENTS
    no_subject = {
        _line_no(d.row): d.study_id
        for d in reference_defects
        if d.kind == MISSING_SUBJECT and d.file == f"{FHIR}/ndjson/Observation.ndjson"
    }
    assert no_subject
    ndjson_temps: Counter[str] = Counter()
    for n, line in enumerate((ndjson / "Observation.ndjson").read_bytes().splitlines(), 1):
        if TEMPERATURE_LOINC.encode() not in line:
            continue
        obs = orjson.loads(line)
        if not _is_temperature(obs):
            continue
        if "subject" in obs:
            ndjson_temps[pid_to_sid[obs["subject"]["reference"]]] += 1
        else:
            ndjson_temps[no_subject[n]] += 1

    for sid in sorted(study_ids):
        assert site_temps[sid] == bundle_temps[sid] == ndjson_temps[sid], sid
    assert set(site_temps) <= study_ids
    assert set(ndjson_temps) <= study_ids
    # Infused patients are charted unless their monitoring data were lost (truth supplement).
    infused = {mrn_to_sid[nfkc_strip(row[0])] for row in site_files["cart_infusion.csv"].dirty}
    with (reference_cohort / "truth" / "supplement.csv").open(encoding="utf-8", newline="") as fh:
        lost = {
            row["study_id"] for row in csv.DictReader(fh) if row["lost_data_kind"] == "monitoring"
        }
    assert {sid for sid in infused if site_temps[sid] > 0} == infused - lost
