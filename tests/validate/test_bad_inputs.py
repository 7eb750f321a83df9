"""Bad-input corpus (#4): every case in tests/cases gives its documented rule or exit code and
loses nothing.

One table, ``TABLE``: case file -> how it is applied -> expected outcome.

How a case is applied:
  ``<export file>``  the case replaces that file in a copy of a tiny clean tianjin_ref export
                     (``generate(patients=3, seed=7, defects=False)``; case files use its MRNs)
  ``wide:<file>``    the same in a copy of the English wide sample site (tests/cases/site_wide_en)
  ``overlay``        a case directory: each of its files replaces its namesake (tianjin_ref)
  ``site-file``      the case file is the ``--site`` mapping (a broken site mapping)
  ``site-name``      the case file holds the ``--site`` name
  ``fhir``, ``fhir-strict``  ``extract_fhir(case, mode="fast" | "strict")``
  ``fhir-validate``  ``validate_fhir(case, mode="fast")``: extracted as text, quarantined later

Expected outcome: an int is the exit code of a fatal case, run through ``cart-etl validate``:
one line on stderr naming the file and the fix, never a traceback. A set is the rule ids of
the quarantined rows and warnings the case causes (exactly those), and nothing is lost: per
file ``rows_in == accepted + quarantined``, every input row of a replaced file is accepted or
in a case, and every FHIR resource is emitted, rejected or counted as ignored.
"""

from __future__ import annotations

import csv
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from cart_etl.cli import app
from cart_etl.contract import RawBatch, Rejected
from cart_etl.errors import FailureCase
from cart_etl.extract.fhir import resources as fhir_resources
from cart_etl.extract.fhir import views as fhir_views
from cart_etl.extract.site import mapper as tabular
from cart_etl.extract.site.mapper import source_row
from cart_etl.extract.site.parse import load_site_mapping
from cart_etl.extract.site.spec import SiteMapping
from cart_etl.mappings import Mappings
from cart_etl.pipeline import validate_site
from cart_etl.stage import fhir_concepts as fhir
from cart_etl.synth.generate import generate
from cart_etl.validate.rules import RULES
from cart_etl.validate.run import ValidationOutcome
from tests.extract.conftest import count_data_rows

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "tests" / "cases"
TIANJIN, WIDE = "tianjin_ref", "example_wide_en"
# The register of generate(patients=3, seed=7): the MRNs the tianjin case files chart.
REGISTER_MRNS = ["2023940363", "2022179938", "2020724961"]
FATAL = 2
FLOWSHEET, LABS, REGISTER, MAR = (
    "vitals_flowsheet.csv",
    "lab_results.csv",
    "patients.csv",
    "mar.xlsx",
)
APPLIED_AS = {"overlay", "site-name", "site-file", "fhir", "fhir-strict", "fhir-validate"}
EXTRACTOR_RULES = {
    value
    for module in (tabular, fhir_resources, fhir_views, fhir)
    for name, value in vars(module).items()
    if name.startswith("RULE_")
}

TABLE: list[tuple[str, str, int | set[str]]] = [
    # --- nursing flowsheet (long layout, UTF-8 with BOM) --------------------------------------
    ("flowsheet_empty.csv", FLOWSHEET, FATAL),  # 0 bytes
    ("flowsheet_header_only.csv", FLOWSHEET, set()),  # no rows is not an error
    ("flowsheet_gb18030_declared_utf8.csv", FLOWSHEET, FATAL),
    ("flowsheet_utf16.csv", FLOWSHEET, FATAL),
    ("flowsheet_semicolon_delimiter.csv", FLOWSHEET, FATAL),  # one header cell
    ("flowsheet_title_line_above_header.csv", FLOWSHEET, FATAL),
    ("flowsheet_missing_column.csv", FLOWSHEET, FATAL),
    (
        "flowsheet_ragged_rows.csv",
        FLOWSHEET,
        {"extract.ragged_row", "measurement.value.numeric", "unit.inferred"},
    ),
    ("flowsheet_unknown_item.csv", FLOWSHEET, {"extract.unknown_item", "row.patient.known"}),
    (
        "flowsheet_blank_and_keyless_rows.csv",
        FLOWSHEET,
        {"extract.empty_row", "extract.missing_patient_key"},
    ),
    ("flowsheet_mixed_temperature_units.csv", FLOWSHEET, {"unit.converted"}),  # ℃ ℉ °C °F
    ("flowsheet_excel_serial_dates.csv", FLOWSHEET, {"date.excel_serial"}),
    ("flowsheet_future_dates.csv", FLOWSHEET, {"measurement.at.future"}),
    ("flowsheet_decimal_comma.csv", FLOWSHEET, {"number.decimal_comma"}),
    ("flowsheet_fullwidth_digits.csv", FLOWSHEET, {"text.normalised"}),
    ("flowsheet_duplicated_rows.csv", FLOWSHEET, {"row.duplicate"}),
    ("flowsheet_mrn_not_in_register.csv", FLOWSHEET, {"row.patient.known"}),
    ("flowsheet_temperature_371.csv", FLOWSHEET, {"measurement.value.hard_range"}),
    ("flowsheet_unknown_oxygen_device.csv", FLOWSHEET, {"oxygen.device.known"}),
    ("flowsheet_unknown_unit.csv", FLOWSHEET, {"measurement.unit.convertible"}),
    ("flowsheet_missing_unit.csv", FLOWSHEET, {"unit.inferred"}),
    ("flowsheet_lf_no_bom.csv", FLOWSHEET, set()),  # LF, no BOM: still clean
    # --- LIS export ---------------------------------------------------------------------------
    ("labs_timezone_less.csv", LABS, {"date.timezone_assumed"}),
    ("labs_mixed_date_format.csv", LABS, {"date.alternate_format"}),
    ("labs_negative_il6.csv", LABS, {"measurement.value.hard_range"}),
    ("labs_crp_mg_dl.csv", LABS, {"unit.converted"}),
    ("labs_il6_in_ng_ml.csv", LABS, {"measurement.unit.convertible"}),  # no ng/mL -> pg/mL
    # --- HIS register (GB18030): its rows link every other file -------------------------------
    ("register_wrong_encoding.csv", REGISTER, FATAL),  # UTF-8 where GB18030 is declared
    ("register_header_only.csv", REGISTER, {"row.patient.known"}),
    # A quarantined register row leaves that patient's rows in other files without a patient:
    # they are quarantined with row.patient.quarantined (fix the register row), not as typos.
    ("register_unknown_sex_code.csv", REGISTER, {"field.parse", "row.patient.quarantined"}),
    (
        "register_birth_after_diagnosis.csv",
        REGISTER,
        {"patient.dates.order", "row.patient.quarantined"},
    ),
    # --- infusion, day-28 response, follow-up, ICANS ------------------------------------------
    ("infusion_second_infusion.csv", "cart_infusion.csv", {"infusion.one_per_patient"}),
    ("response_day60.csv", "response_day28.csv", {"response.window"}),
    (
        "followup_death_before_last_contact.csv",
        "followup.csv",
        {"followup.death_before_last_contact"},
    ),
    ("icans_grade_roman_numeral.csv", "icans.csv", {"field.parse"}),
    # --- medication administration record (XLSX) ---------------------------------------------
    ("mar_truncated.xlsx", MAR, FATAL),  # zip cut in half
    ("mar_wrong_sheet_name.xlsx", MAR, FATAL),
    ("mar_csv_saved_as_xlsx.xlsx", MAR, FATAL),
    ("mar_tocilizumab_dose_4g.xlsx", MAR, {"drug.dose.hard_range"}),  # 4000 mg
    ("mar_unknown_drug.xlsx", MAR, {"drug.known"}),
    ("mar_dose_without_unit.xlsx", MAR, {"drug.dose.parse"}),
    # 8 mg/kg: no infusion weight for one patient (quarantined), 63.5 kg for the other (kept).
    ("export_dose_per_kg_no_weight", "overlay", {"drug.dose.unit", "drug.dose.per_kg"}),
    # --- the English wide-layout site ---------------------------------------------------------
    (
        "wide_vitals_mixed_temperature_units.csv",
        "wide:vitals_wide.csv",
        {"unit.converted", "unit.inferred", "measurement.unit.convertible"},  # degF, blank, °F
    ),
    # --- site mappings ------------------------------------------------------------------------
    ("site_unknown_name.txt", "site-name", FATAL),
    ("mapping_yaml_syntax_error.yaml", "site-file", FATAL),
    ("mapping_unknown_entity.yaml", "site-file", FATAL),
    # --- FHIR ---------------------------------------------------------------------------------
    ("ndjson_bad_line.ndjson", "fhir", {"fhir.unparseable", "fhir.missing_subject"}),
    ("ndjson_truncated.ndjson.gz", "fhir", {"fhir.unparseable"}),  # gzip cut mid-line
    ("bundle_truncated.json", "fhir", {"fhir.unparseable"}),
    ("bundle_missing_subject.json", "fhir", {"fhir.missing_subject"}),
    # Unknown resource types and codes the cohort does not need are out of scope (counted in
    # the report), not quarantined; a known code that fits no output is.
    ("bundle_unknown_resource_type.json", "fhir", set()),
    ("bundle_unmapped_codes.json", "fhir", {"fhir.no_matching_output"}),
    ("bundle_entered_in_error.json", "fhir", {"fhir.status_excluded"}),
    ("bundle_medication_request_only.json", "fhir", set()),  # orders are ignored, not doses
    # valueQuantity.value "36,6": fast mode extracts the text, validation quarantines it ...
    ("bundle_decimal_comma_value.json", "fhir-validate", {"measurement.value.numeric"}),
    # ... strict mode rejects the resource as invalid R4B.
    ("bundle_decimal_comma_value.json", "fhir-strict", {"fhir.invalid_resource"}),
]


def _params() -> list[pytest.ParameterSet]:
    repeated = Counter(case for case, _, _ in TABLE)
    return [
        pytest.param(case, how, expected, id=case if repeated[case] == 1 else f"{case}[{how}]")
        for case, how, expected in TABLE
    ]


# --- base exports ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """An export the cases are injected into, and the cases it has on its own."""

    export: Path
    mapping: SiteMapping
    cases: frozenset[tuple[str, str, str]]  # (file, row, rule id)


def _keys(outcome: ValidationOutcome) -> frozenset[tuple[str, str, str]]:
    return frozenset((c.file, c.row, c.rule_id) for c in [*outcome.quarantined, *outcome.warnings])


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Base]:
    """The tiny tianjin_ref export (3 patients, no defects) and the English wide sample."""
    out = tmp_path_factory.mktemp("bad_inputs_base")
    generate(out, patients=3, seed=7, defects=False, fhir=False)
    found = {}
    for site, export in ((TIANJIN, out / "site_export"), (WIDE, CASES / "site_wide_en")):
        outcome, _ = validate_site(export, site, expectations=False)
        found[site] = Base(export, load_site_mapping(site), _keys(outcome))
    return found


def _export_with(
    case: Path, how: str, bases: dict[str, Base], tmp_path: Path
) -> tuple[Base, Path, list[str]]:
    """A copy of the base export with the case file(s) in place of the export's own."""
    base = bases[WIDE if how.startswith("wide:") else TIANJIN]
    export = shutil.copytree(base.export, tmp_path / "export")
    targets = (
        {f.name: f for f in sorted(case.iterdir())}
        if case.is_dir()
        else {how.removeprefix("wide:"): case}
    )
    for name, source in targets.items():
        assert (export / name).is_file(), f"{case.name} replaces no file of the export: {name}"
        shutil.copyfile(source, export / name)
    return base, export, list(targets)


# --- independent counts ----------------------------------------------------------------------


def _resources(path: Path) -> int:
    """Resources in a FHIR case; an unreadable file or gzip tail counts as one rejection."""
    data = path.read_bytes()
    truncated = False
    if path.name.endswith(".gz"):
        inflate = zlib.decompressobj(wbits=31)  # reads a truncated stream as far as it goes
        data = inflate.decompress(data)
        truncated = not inflate.eof
        if truncated:
            data = data[: data.rfind(b"\n") + 1]  # the cut line is part of the unreadable tail
    if ".ndjson" in path.name:
        return sum(1 for line in data.splitlines() if line.strip()) + truncated
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return 1
    if doc.get("resourceType") == "Bundle":
        return sum(1 for e in doc.get("entry", []) if "resource" in e)
    return 1


# --- the checks ------------------------------------------------------------------------------


def _assert_fatal(args: list[str], code: int, names: str, tmp_path: Path) -> None:
    """cart-etl validate exits ``code`` with one error line naming ``names`` and a fix."""
    result = CliRunner().invoke(
        app, ["validate", *args, "--report", str(tmp_path / "report"), "--no-expectations"]
    )
    both = result.stdout + result.stderr
    assert result.exit_code == code, both
    assert "Traceback" not in both
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert names in lines[0], lines[0]
    assert "Fix:" in lines[0], lines[0]


def _assert_nothing_lost(
    outcome: ValidationOutcome, base: Base, export: Path, replaced: list[str]
) -> None:
    """Per file rows_in == accepted + quarantined; each row of a replaced file is placed."""
    for summary in outcome.files:
        assert summary.rows_in == summary.accepted + summary.quarantined, summary
    for name in replaced:
        n = count_data_rows(export / name, base.mapping.files[name])
        accepted = {
            source_row(row)
            for frame in outcome.accepted.values()
            if not frame.is_empty()
            for row in frame.filter(pl.col("file") == name).get_column("row").to_list()
        }
        cased = {source_row(c.row) for c in outcome.quarantined if c.file == name}
        assert accepted | cased == {str(i) for i in range(1, n + 1)}, name
        assert [f.rows_in for f in outcome.files if f.file == name] == ([n] if n else []), name


def _assert_actionable(cases: list[FailureCase], files: list[str]) -> None:
    """Every case of a replaced file names its file and row and says how to fix it."""
    for case in cases:
        if case.file in files:
            assert case.message.startswith(f"{case.file} row {case.row}"), case.message
            assert "Fix:" in case.message, case.message


def _run_fhir(path: Path, mode: str, expected: set[str]) -> fhir.FhirReport:
    """Extract one FHIR case; its rejections are ``expected`` and every resource is counted."""
    stream = fhir.open_fhir(path, Mappings.open(REPO / "mappings"), mode=mode)
    items = list(stream)
    rejected = [i for i in items if isinstance(i, Rejected)]
    batches = [i for i in items if isinstance(i, RawBatch)]
    report = stream.report
    assert {r.rule_id for r in rejected} == expected
    assert all(r.file == path.name for r in rejected)
    assert report.rejected_by_rule == Counter(r.rule_id for r in rejected)
    assert sum(report.outcomes[path.name].values()) == _resources(path), report.outcomes
    assert sum(b.frame.height for b in batches) == sum(report.rows_by_entity.values())
    return report


# --- tests -----------------------------------------------------------------------------------


def test_01_the_base_export_is_clean_and_has_the_case_mrns(bases: dict[str, Base]) -> None:
    """Any case or warning in a tianjin_ref run comes from the injected case file."""
    tianjin = bases[TIANJIN]
    assert tianjin.cases == frozenset()
    with (tianjin.export / REGISTER).open(encoding="gb18030", newline="") as fh:
        assert [r["住院号"] for r in csv.DictReader(fh)] == REGISTER_MRNS


def test_02_the_corpus_has_30_cases_with_documented_outcomes() -> None:
    files = [case for case, _, _ in TABLE]
    assert len(set(files)) >= 30
    for case, how, expected in TABLE:
        assert (CASES / case).exists(), case
        if isinstance(expected, int):
            assert expected == FATAL
        else:
            undocumented = expected - set(RULES) - EXTRACTOR_RULES
            assert not undocumented, (case, undocumented)
        site = WIDE if how.startswith("wide:") else TIANJIN
        target = how.removeprefix("wide:")
        assert target in APPLIED_AS or target in load_site_mapping(site).files, (case, how)


@pytest.mark.parametrize(("case", "how", "expected"), _params())
def test_03_bad_input_gives_its_rule_or_exit_code_and_loses_nothing(
    case: str, how: str, expected: int | set[str], bases: dict[str, Base], tmp_path: Path
) -> None:
    path = CASES / case
    if how == "site-name":
        name = path.read_text(encoding="utf-8").strip()
        _assert_fatal([str(bases[TIANJIN].export), "--site", name], FATAL, f"{name}.yaml", tmp_path)
        return
    if how == "site-file":
        _assert_fatal([str(bases[TIANJIN].export), "--site", str(path)], FATAL, case, tmp_path)
        return
    if how in ("fhir", "fhir-strict"):
        assert isinstance(expected, set)
        _run_fhir(path, "strict" if how == "fhir-strict" else "fast", expected)
        return
    if how == "fhir-validate":
        assert isinstance(expected, set)
        from cart_etl.pipeline import validate_fhir

        extracted = _run_fhir(path, "fast", set())  # the extractor passes the text on
        outcome, _ = validate_fhir(path, mode="fast", expectations=False)
        assert {c.rule_id for c in [*outcome.quarantined, *outcome.warnings]} == expected
        for summary in outcome.files:
            assert summary.rows_in == summary.accepted + summary.quarantined, summary
        totals = extracted.totals()
        assert sum(f.rows_in for f in outcome.files) == totals["emitted"] + totals["rejected"]
        return

    base, export, replaced = _export_with(path, how, bases, tmp_path)
    site = WIDE if how.startswith("wide:") else TIANJIN
    if isinstance(expected, int):
        _assert_fatal([str(export), "--site", site], expected, replaced[0], tmp_path)
        return
    outcome, report = validate_site(export, site, expectations=False)
    cases = [*outcome.quarantined, *outcome.warnings]
    # The case's rules: every case of a replaced file, and whatever it newly causes elsewhere.
    found = {
        c.rule_id
        for c in cases
        if c.file in replaced or (c.file, c.row, c.rule_id) not in base.cases
    }
    assert found == expected, Counter((c.file, c.rule_id) for c in cases)
    assert report.exit_code == (1 if expected or base.cases else 0)
    _assert_actionable(cases, replaced)
    _assert_nothing_lost(outcome, base, export, replaced)
