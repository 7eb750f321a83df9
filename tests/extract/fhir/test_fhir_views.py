"""Tests for the FHIR path through SQL-on-FHIR views and the concept map (``open_fhir``).

Ported from the old extractor's tests (``extract/fhir/extract.py``): the behaviour is the
same except where issue #11 changed it on purpose. Unknown resource types and unmapped codes
are *out of scope* (counted in ``report.out_of_scope`` by type, first code and reason, never
quarantined), and ``ignored`` became ``out_of_scope`` with the reason from ``targets.yaml``
``context_only``. New here: the flat (per-view Parquet) hand-over, cohort selection of
whole-hospital exports and the vendored public FHIR files.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal
from pydantic import ValidationError
from typer.testing import CliRunner

from cart_etl.cli import app
from cart_etl.contract import PROVENANCE, RawBatch, Rejected, columns_of
from cart_etl.errors import MappingError, SourceError
from cart_etl.extract.fhir.concept_map import concept_rows
from cart_etl.extract.fhir.resources import (
    RULE_INVALID,
    RULE_UNPARSEABLE,
    RULE_UNSUPPORTED_BUNDLE,
)
from cart_etl.extract.fhir.views import RULE_DUPLICATE
from cart_etl.mappings import Mappings
from cart_etl.stage.fhir_concepts import (
    RULE_MISSING_SUBJECT,
    RULE_NO_OUTPUT,
    RULE_STATUS,
    FhirReport,
    flatten,
    open_fhir,
)
from cart_etl.synth.fhir import codes as fx
from cart_etl.synth.generate import generate
from tests.extract.conftest import MAPPINGS, collect

REPO = Path(__file__).resolve().parents[3]
CASES = REPO / "tests" / "cases"
PUBLIC = REPO / "tests" / "data" / "public_fhir"
LOINC, RXNORM, SNOMED = fx.LOINC, fx.RXNORM, fx.SNOMED
CONTEXT_ONLY: dict[str, str] = yaml.safe_load(
    (MAPPINGS / "fhir" / "targets.yaml").read_text(encoding="utf-8")
)["context_only"]
UNMAPPED = "code not in fhir/concept_map.csv"
NOT_NEEDED = "resource type not needed by the cohort"


@dataclass
class Run:
    """Everything one ``open_fhir`` stream yielded."""

    report: FhirReport
    batches: list[RawBatch] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def frame(self, entity: str) -> pl.DataFrame:
        """All rows of one entity (empty contract frame when there are none)."""
        parts = [b.frame for b in self.batches if b.entity == entity]
        if not parts:
            return pl.DataFrame(schema=dict.fromkeys(columns_of(entity), pl.String))
        return pl.concat(parts)

    @property
    def entities(self) -> set[str]:
        return {b.entity for b in self.batches}

    def rules(self) -> Counter[str]:
        return Counter(r.rule_id for r in self.rejected)


def run(path: Path, mappings: Mappings | None = None, **kwargs: Any) -> Run:
    stream = open_fhir(path, mappings or Mappings.open(MAPPINGS), **kwargs)
    drained = collect(stream)  # the report is complete once the stream is drained
    return Run(stream.report, drained.batches, drained.rejected)


def canonical(frame: pl.DataFrame, *drop: str) -> pl.DataFrame:
    """Rows without the file column (and ``drop``), in a stable order."""
    rest = frame.drop("file", *drop)
    return rest.sort(rest.columns, nulls_last=True)


def assert_same_frames(a: Run, b: Run, *drop: str) -> None:
    assert a.entities == b.entities
    for entity in sorted(a.entities):
        assert_frame_equal(canonical(a.frame(entity), *drop), canonical(b.frame(entity), *drop))


def one_row(frame: pl.DataFrame, row: str) -> dict[str, Any]:
    hit = frame.filter(pl.col("row") == row)
    assert hit.height == 1, f"{row}: {hit.height} rows"
    return hit.row(0, named=True)


def ndjson_lines(folder: Path) -> dict[str, int]:
    return {
        p.name: sum(1 for line in p.read_bytes().splitlines() if line.strip())
        for p in sorted(folder.glob("*.ndjson"))
    }


def _shared(reference_fhir: Any, layout: str) -> Run:
    items, report = reference_fhir(layout)  # read once per session (tests/conftest.py)
    return Run(
        report,
        [i for i in items if isinstance(i, RawBatch)],
        [i for i in items if isinstance(i, Rejected)],
    )


@pytest.fixture(scope="module")
def bundles(reference_fhir: Any) -> Run:
    return _shared(reference_fhir, "bundles")


@pytest.fixture(scope="module")
def ndjson(reference_fhir: Any) -> Run:
    return _shared(reference_fhir, "ndjson")


@pytest.fixture(scope="module")
def fhir_defects(reference_cohort: Path) -> list[dict[str, str]]:
    with (reference_cohort / "truth" / "defects.csv").open(encoding="utf-8") as fh:
        return [d for d in csv.DictReader(fh) if d["file"].startswith("fhir/bundles/")]


@pytest.fixture(scope="module")
def strict_sample(
    reference_cohort: Path,
    fhir_defects: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Bundles of every patient with a FHIR defect plus two without (strict is slow)."""
    out = tmp_path_factory.mktemp("strict_sample")
    sids = [*sorted({d["study_id"] for d in fhir_defects}), "CART-002", "CART-003"]
    for sid in sids:
        shutil.copy(reference_cohort / "fhir" / "bundles" / f"{sid}.json", out / f"{sid}.json")
    return out


def _profile(tmp_path: Path, rel: str, text: str) -> Mappings:
    """The defaults with one file of a profile folder over them."""
    target = tmp_path / "profile" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return Mappings.open(MAPPINGS, profile=tmp_path / "profile")


def test_01_concept_map_maps_every_code_the_writer_emits() -> None:
    mappings = Mappings.open(MAPPINGS)
    spec = mappings.load("fhir/targets.yaml")
    views_of: dict[str, set[str]] = {}
    for view, targets in spec["views"].items():
        for target in targets:
            views_of.setdefault(target, set()).add(view)
    mapped = {
        (view, row.system, row.code)
        for row in concept_rows(mappings)
        for view in views_of.get(row.target, set())
    }
    expected: set[tuple[str, str, str]] = set()
    observation_loinc = [c for c, _ in fx.VITAL_LOINC.values()]
    observation_loinc += [c for c, _ in fx.LAB_LOINC.values()]
    observation_loinc += [c for c, _ in fx.LOINC_CODES.values()]
    expected |= {("observation", LOINC, c) for c in observation_loinc}
    expected |= {
        ("observation", fx.LOCAL_SYSTEM, c) for c in fx.LOCAL_CODES if c != "cart-infusion"
    }
    expected |= {("procedure", fx.LOCAL_SYSTEM, "cart-infusion")}
    expected |= {("procedure", SNOMED, fx.OXYGEN_THERAPY_SNOMED[0])}
    expected |= {("medication_administration", RXNORM, c) for c, _ in fx.DRUG_RXNORM.values()}
    expected |= {("condition", s, c) for s, c, _ in fx.DIAGNOSIS_CODINGS}
    expected |= {("condition", fx.CTCAE_GRADE_SYSTEM, "*")}  # any grade: an infection
    expected |= {
        ("device_use_statement", fx.LOCAL_SYSTEM, c) for c, _ in fx.OXYGEN_DEVICES.values()
    }
    assert expected - mapped == set()
    assert spec["patient"]["study_id_system"] == fx.STUDY_ID_SYSTEM
    assert spec["systems"]["local"] == fx.LOCAL_SYSTEM
    assert spec["systems"]["ctcae_grade"] == fx.CTCAE_GRADE_SYSTEM
    mrn = spec["patient"]["mrn_type"]
    assert (mrn["system"], mrn["code"]) == (fx.V2_0203, "MR")


def test_02_mapping_errors_name_the_problem(tmp_path: Path) -> None:
    case = CASES / "bundle_bp_panel.json"
    header = "source_system,source_code,source_display,target,item,note,citation\n"
    unknown_target = _profile(
        tmp_path / "a", "fhir/concept_map.csv", header + f"{LOINC},2345-7,Glucose,glucose,,,\n"
    )
    with pytest.raises(MappingError, match=r"2345-7 to the unknown target 'glucose'"):
        run(case, unknown_target)
    targets = (MAPPINGS / "fhir" / "targets.yaml").read_text(encoding="utf-8")
    assert "birth_date: birth_date}" in targets
    bad_column = _profile(
        tmp_path / "b",
        "fhir/targets.yaml",
        targets.replace("birth_date: birth_date}", "birth_date: birthDate}"),
    )
    with pytest.raises(MappingError, match=r"views\.patient\.patient: 'birthDate' is not a column"):
        run(case, bad_column)
    view = json.loads((MAPPINGS / "fhir" / "views" / "patient.json").read_text(encoding="utf-8"))
    view["name"] = "patients"
    renamed = _profile(tmp_path / "c", "fhir/views/patient.json", json.dumps(view))
    with pytest.raises(MappingError, match=r"patient\.json: the view's name 'patients' differs"):
        run(case, renamed)


def test_03_every_bundle_resource_is_accounted_for(reference_cohort: Path, bundles: Run) -> None:
    report = bundles.report
    for path in sorted((reference_cohort / "fhir" / "bundles").glob("*.json")):
        entries = orjson.loads(path.read_bytes())["entry"]
        assert sum(report.outcomes[path.name].values()) == len(entries), path.name
    totals = report.totals()
    assert totals["rejected"] == len(bundles.rejected) == 3
    assert bundles.rules() == {RULE_MISSING_SUBJECT: 3}
    # Encounters are context only; every other resource's code is in the concept map.
    assert totals["out_of_scope"] == report.resources_by_type["Encounter"] == 60
    assert report.out_of_scope == {("Encounter", "", CONTEXT_ONLY["Encounter"]): 60}
    assert report.not_in_cohort == 0 and report.entries_without_resource == 0
    assert sum(b.frame.height for b in bundles.batches) == sum(report.rows_by_entity.values())


def test_04_every_ndjson_line_is_accounted_for(reference_cohort: Path, ndjson: Run) -> None:
    report = ndjson.report
    lines = ndjson_lines(reference_cohort / "fhir" / "ndjson")
    for name, count in lines.items():
        assert sum(report.outcomes[name].values()) == count, name
    assert ndjson.rules() == {RULE_MISSING_SUBJECT: 3}
    assert report.files == sorted(lines)  # read into DuckDB first: file order does not matter


def test_05_bundles_and_ndjson_yield_the_same_rows(bundles: Run, ndjson: Run) -> None:
    assert_same_frames(bundles, ndjson)
    keys = {(r.row, r.field, r.rule_id, r.message) for r in bundles.rejected}
    assert keys == {(r.row, r.field, r.rule_id, r.message) for r in ndjson.rejected}


def test_06_frames_follow_the_contract(bundles: Run, ndjson: Run) -> None:
    for result in (bundles, ndjson):
        for batch in result.batches:
            assert tuple(batch.frame.columns) == columns_of(batch.entity)
            assert set(batch.frame.dtypes) == {pl.String}
            assert batch.frame.select(PROVENANCE).null_count().sum_horizontal().item() == 0
            assert 0 < batch.input_rows <= batch.frame.height
        for entity in result.entities:
            frame = result.frame(entity)
            assert not frame.select("source", "file", "row").is_duplicated().any(), entity
    vitals = bundles.frame("vitals")
    assert vitals["row"].str.contains("#component").sum() > 0  # BP panels: two rows each
    assert set(vitals["item_system"].unique()) == {LOINC}


def test_07_defects_fast_mode_keeps_text_and_rejects_missing_subject(
    bundles: Run, fhir_defects: list[dict[str, str]]
) -> None:
    measurements = pl.concat([bundles.frame("vitals"), bundles.frame("labs")], how="diagonal")
    malformed = [d for d in fhir_defects if d["kind"] == "fhir_malformed_resource"]
    missing = [d for d in fhir_defects if d["kind"] == "fhir_missing_subject"]
    assert malformed and missing
    for defect in malformed:
        # Not the extractor's job: the "446,6" text travels on and pandera rejects it.
        assert one_row(measurements, defect["row"])["value"] == defect["injected_value"]
    rejected = {(r.file, r.row) for r in bundles.rejected if r.rule_id == RULE_MISSING_SUBJECT}
    assert rejected == {(Path(d["file"]).name, d["row"]) for d in missing}


def test_08_coalesced_rows_reproduce_the_register(reference_cohort: Path, bundles: Run) -> None:
    """Partial rows per resource, merged per patient, give back the truth register."""
    demo = bundles.frame("demographics").drop("source", "file", "row")
    merged = demo.group_by("patient_key").agg(pl.all().drop_nulls().first())
    infusion = bundles.frame("infusion").drop("source", "file", "row")
    dose = infusion.group_by("patient_key").agg(pl.col("dose_1e6_per_kg").drop_nulls().first())
    merged = merged.join(dose, on="patient_key", how="left")
    truth = pl.read_csv(reference_cohort / "truth" / "patients.csv", infer_schema=False)
    both = truth.join(merged, on="study_id", how="full", suffix="_fhir", coalesce=True)
    assert both.height == truth.height == 61
    assert (both["sex"] == both["sex_fhir"].replace({"male": "M", "female": "F"})).all()
    for name in ("is_high_risk", "lines_of_therapy", "prior_allo_sct"):
        assert (both[name] == both[f"{name}_fhir"]).all(), name
    for name, fhir_name in (
        ("marrow_blasts_pct", "marrow_blasts_pct_fhir"),
        ("cart_dose_1e6_per_kg", "dose_1e6_per_kg"),
    ):
        pair = both.select(pl.col(name).cast(pl.Float64), pl.col(fhir_name).cast(pl.Float64))
        assert pair.filter(pl.col(name) != pl.col(fhir_name)).height == 0, name
    assert merged.null_count().select(pl.all().exclude("dose_1e6_per_kg")).sum_horizontal()[0] == 0


def test_09_strict_matches_fast_except_the_malformed_resource(
    strict_sample: Path, fhir_defects: list[dict[str, str]]
) -> None:
    fast = run(strict_sample)
    strict = run(strict_sample, mode="strict")
    malformed = {
        (Path(d["file"]).name, d["row"]): d
        for d in fhir_defects
        if d["kind"] == "fhir_malformed_resource"
    }
    invalid = [r for r in strict.rejected if r.rule_id == RULE_INVALID]
    assert {(r.file, r.row) for r in invalid} == set(malformed)
    for r in invalid:
        assert r.field == "valueQuantity.value"
        assert r.value == malformed[(r.file, r.row)]["injected_value"]
        assert r.row in r.message and "R4B" in r.message and "Decimal" in r.message
    others = [r for r in strict.rejected if r.rule_id != RULE_INVALID]
    assert sorted(others, key=repr) == sorted(fast.rejected, key=repr)
    assert fast.entities == strict.entities
    for entity in sorted(fast.entities):
        kept = fast.frame(entity).filter(
            ~pl.struct("file", "row").is_in([{"file": f, "row": r} for f, r in malformed])
        )
        assert_frame_equal(canonical(kept), canonical(strict.frame(entity)))
    assert strict.report.totals()["rejected"] == fast.report.totals()["rejected"] + len(invalid)


def test_10_strict_uses_r4b_models_not_the_r5_default() -> None:
    """R5 renamed medicationCodeableConcept to medication and DeviceUseStatement to DeviceUsage."""
    from fhir.resources import get_fhir_model_class as r5_model

    bundle = orjson.loads((CASES / "bundle_entered_in_error.json").read_bytes())
    stopped = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "ma-st-stopped")
    with pytest.raises(ValidationError, match="medication"):
        r5_model("MedicationAdministration").model_validate(stopped)  # the trap is real
    result = run(CASES / "bundle_entered_in_error.json", mode="strict")
    assert RULE_INVALID not in result.rules()
    assert one_row(result.frame("drugs"), "ma-st-stopped")["drug_code"] == "612865"
    devices = run(CASES / "bundle_oxygen_device_use_statement.json", mode="strict")
    assert RULE_INVALID not in devices.rules()
    assert {"dus-nc", "dus-hfnc"} <= set(devices.frame("oxygen")["row"])


def test_11_strict_names_the_failing_element(tmp_path: Path) -> None:
    resource = {
        "resourceType": "Observation",
        "id": "bad-bp",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2021-03-06T08:00:00+08:00",
        "component": [
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": {"value": "12O", "unit": "mmHg"},
            }
        ],
    }
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(orjson.dumps(resource) + b"\n")
    fast = run(path)
    assert one_row(fast.frame("vitals"), "bad-bp#component0")["value"] == "12O"
    (rejected,) = run(path, mode="strict").rejected
    assert (rejected.row, rejected.rule_id) == ("bad-bp", RULE_INVALID)
    assert rejected.field == "component.0.valueQuantity.value"  # pydantic's location
    assert rejected.value == "12O"


def test_12_missing_or_unresolvable_subject_is_rejected() -> None:
    result = run(CASES / "bundle_missing_subject.json")
    why = {r.row: r.message for r in result.rejected if r.rule_id == RULE_MISSING_SUBJECT}
    assert set(why) == {
        "obs-ms-no-subject",
        "obs-ms-dangling",
        "obs-ms-other-patient",
        "obs-ms-group",
    }
    assert "no subject" in why["obs-ms-no-subject"]
    assert "matches no entry" in why["obs-ms-dangling"]
    # The bundle's Patient has a study id (cohort selection is on): a reference to a Patient
    # that is not in the input is still a missing subject, not another patient's resource.
    assert "not a Patient of this input" in why["obs-ms-other-patient"]
    assert "not a Patient" in why["obs-ms-group"]
    assert result.report.not_in_cohort == 0
    vitals = result.frame("vitals")
    assert vitals["row"].to_list() == ["obs-ms-ok"]
    assert vitals["patient_key"].to_list() == ["pat-ms-1"]


def test_13_excluded_statuses_are_rejected_with_a_reason_stopped_is_kept() -> None:
    result = run(CASES / "bundle_entered_in_error.json")
    excluded = {r.row: r for r in result.rejected}
    assert set(excluded) == {
        "obs-st-error",
        "obs-st-cancelled",
        "ma-st-not-done",
        "proc-st-cancelled",
        "cond-st-error",
    }
    assert {r.rule_id for r in excluded.values()} == {RULE_STATUS}
    assert "recorded in error" in excluded["obs-st-error"].message
    assert excluded["cond-st-error"].value == "entered-in-error"  # Condition.verificationStatus
    assert result.frame("vitals")["row"].to_list() == ["obs-st-final"]
    assert one_row(result.frame("drugs"), "ma-st-stopped")["status"] == "stopped"
    assert result.report.excluded_status == {
        ("Observation", "entered-in-error"): 1,
        ("Observation", "cancelled"): 1,
        ("MedicationAdministration", "not-done"): 1,
        ("Procedure", "cancelled"): 1,
        ("Condition", "entered-in-error"): 1,
    }


def test_14_medication_reference_resolves_contained_and_bundle_medications() -> None:
    result = run(CASES / "bundle_contained_medication.json")
    drugs = result.frame("drugs")
    toci = one_row(drugs, "ma-contained-toci")
    assert (toci["drug_system"], toci["drug_code"], toci["dose"], toci["dose_unit"]) == (
        RXNORM,
        "612865",
        "400",
        "mg",
    )
    assert (toci["route"], toci["indication"]) == ("47625008", "CRS")
    dexa = one_row(drugs, "ma-bundle-dexa")
    assert (dexa["drug_code"], dexa["at"], dexa["route"]) == (
        "3264",
        "2021-03-07T21:00:00+08:00",
        "intrathecal",
    )
    product = one_row(result.frame("infusion"), "ma-cart-product")
    assert (product["product"], product["lot"], product["cells_total"]) == (
        "CD19 CAR-T (4-1BB)",
        "LOT-21-0305",
        "87000000",
    )
    # The dangling medicationReference gives no code: out of scope (was fhir.unmapped_code).
    assert result.rejected == []
    assert result.report.out_of_scope == {
        ("MedicationAdministration", "", UNMAPPED): 1,
        ("Medication", "", CONTEXT_ONLY["Medication"]): 1,
    }


def test_15_medication_requests_are_orders_never_doses() -> None:
    result = run(CASES / "bundle_medication_request_only.json")
    assert "drugs" not in result.entities
    assert result.rejected == []
    assert result.report.medication_orders == 2
    assert result.report.totals() == {"emitted": 1, "out_of_scope": 3}  # + the OperationOutcome
    assert result.report.out_of_scope == {
        ("MedicationRequest", "", CONTEXT_ONLY["MedicationRequest"]): 2,
        ("OperationOutcome", "", NOT_NEEDED): 1,
    }


def test_16_bp_panel_gives_one_row_per_component() -> None:
    result = run(CASES / "bundle_bp_panel.json")
    vitals = result.frame("vitals").sort("row")
    assert vitals.select("row", "item_code", "value", "unit").rows() == [
        ("bp-1#component0", "8480-6", "84", "mm[Hg]"),
        ("bp-1#component1", "8462-4", "52", "mm[Hg]"),
        ("bp-2#component0", "8462-4", "61", "mm[Hg]"),
        ("bp-2#component2", "8480-6", "101", "mm[Hg]"),
    ]
    # The mean-pressure component (8478-0) maps to no target: it gives no row and, unlike
    # the old extractor's fhir.unmapped_code, no rejection. The report counts resources, and
    # bp-2 was emitted, so the component's code is not counted anywhere.
    assert result.rejected == []
    assert result.report.out_of_scope == Counter()
    assert result.report.totals() == {"emitted": 3}


def test_17_temperatures_pass_through_with_their_unit() -> None:
    vitals = run(CASES / "bundle_temperature_degF.json").frame("vitals")
    assert vitals.sort("at").select("row", "at", "value", "unit").rows() == [
        # 101.30 reads back as the double 101.3: the text is the shortest round-trip spelling.
        ("temp-f", "2021-03-06T02:00:00+08:00", "101.3", "[degF]"),
        ("temp-c", "2021-03-06T06:00:00+08:00", "38.5", "Cel"),  # effectivePeriod.start
        ("temp-unit-only", "2021-03-06T10:00:00+08:00", "99", "degF"),  # no UCUM code
    ]


def test_18_collection_bundle_with_literal_references() -> None:
    result = run(CASES / "bundle_collection_type.json")
    assert result.rejected == []
    assert set(result.frame("vitals")["patient_key"]) == {"pat-col-1"}
    lab = one_row(result.frame("labs"), "col-il6")
    assert (lab["value"], lab["patient_key"]) == ("<1.5", "pat-col-1")  # comparator kept
    assert one_row(result.frame("follow_up"), "pat-col-1")["death_date"] == "2022-01-31"
    assert one_row(result.frame("demographics"), "col-dx")["diagnosis_date"] == "2020-06-15"


def test_19_gzipped_ndjson_streams() -> None:
    result = run(CASES / "ndjson_gzipped.ndjson.gz")
    assert result.rejected == []
    assert one_row(result.frame("demographics"), "pat-gz-1")["study_id"] == "CASE-GZ-1"
    oxygen = result.frame("oxygen").sort("row")
    assert oxygen.select("row", "item_code", "flow_l_min", "flow_unit").rows() == [
        ("gz-fio2-1", "3150-0", "40", "%"),  # FiO2: told apart by its item code and unit
        ("gz-flow-1", "3151-8", "4", "L/min"),
    ]
    pressor = one_row(result.frame("vasopressors"), "gz-norepi-1")
    assert (pressor["start"], pressor["stop"], pressor["rate"], pressor["rate_unit"]) == (
        "2021-03-06T09:00:00+08:00",
        "2021-03-06T21:00:00+08:00",
        "0.1",
        "ug/kg/min",
    )
    # A .gz cut mid-line: the 20 complete lines before the damage are read, the 21st is
    # rejected by its line number.
    cut = run(CASES / "ndjson_truncated.ndjson.gz")
    (truncated,) = cut.rejected
    assert (truncated.row, truncated.rule_id) == ("line 21", RULE_UNPARSEABLE)
    assert sum(cut.report.totals().values()) == 21


def test_20_bad_ndjson_lines_are_rejected_with_their_line() -> None:
    result = run(CASES / "ndjson_bad_line.ndjson")
    by_row = {r.row: r for r in result.rejected}
    assert by_row["line 3"].rule_id == RULE_UNPARSEABLE
    assert by_row["line 3"].value.startswith('{"resourceType":"Observation","id":"nd-hr-2"')
    assert by_row["line 5"].rule_id == RULE_UNPARSEABLE  # a JSON array, not a resource
    assert by_row["nd-hr-4"].rule_id == RULE_MISSING_SUBJECT  # Patient not in the input
    assert set(result.frame("vitals")["row"]) == {"nd-hr-1", "nd-hr-3"}
    assert result.report.totals() == {"emitted": 3, "rejected": 3}  # blank line 4 skipped


def test_21_device_use_statement_and_device_reference_give_oxygen_rows() -> None:
    result = run(CASES / "bundle_oxygen_device_use_statement.json")
    oxygen = result.frame("oxygen").sort("at")
    assert oxygen.select("row", "at", "device_system", "device_code").rows() == [
        ("dus-nc", "2021-03-06T20:00:00+08:00", fx.LOCAL_SYSTEM, "nasal-cannula"),
        ("dus-hfnc", "2021-03-07T08:00:00+08:00", SNOMED, "426854004"),  # contained Device
        ("proc-o2-device-ref", "2021-03-07T12:00:00+08:00", fx.LOCAL_SYSTEM, "nasal-cannula"),
    ]
    assert one_row(oxygen, "proc-o2-device-ref")["item_code"] == fx.OXYGEN_THERAPY_SNOMED[0]
    (intended,) = result.rejected
    assert (intended.row, intended.rule_id) == ("dus-intended", RULE_STATUS)
    # The contained Device is part of its statement; the bundle's Device is context.
    assert result.report.out_of_scope == {("Device", "", CONTEXT_ONLY["Device"]): 1}


def test_22_unknown_types_and_codes_are_out_of_scope_and_counted() -> None:
    result = run(CASES / "bundle_unmapped_codes.json")
    assert {r.row: r.rule_id for r in result.rejected} == {"un-height-inches": RULE_NO_OUTPUT}
    report = result.report
    assert report.out_of_scope == {
        ("Observation", f"{LOINC}|2345-7", UNMAPPED): 1,  # the first coding names it
        ("Observation", "", UNMAPPED): 1,  # code.text only
        ("AllergyIntolerance", "", NOT_NEEDED): 1,
        ("Encounter", "", CONTEXT_ONLY["Encounter"]): 1,
        # "no progression" is an answer, not an error (targets.yaml otherwise: ignore)
        ("Observation", "", "progression documented as absent (valueBoolean false)"): 1,
    }
    assert report.totals() == {"emitted": 1, "rejected": 1, "out_of_scope": 5}
    assert report.entries_without_resource == 1  # the DELETE entry
    summary = orjson.loads(orjson.dumps(report.to_dict()))
    assert {
        "resource_type": "AllergyIntolerance",
        "code": "",
        "reason": NOT_NEEDED,
        "count": 1,
    } in (summary["out_of_scope"])
    types = run(CASES / "bundle_unknown_resource_type.json")
    assert types.rejected == []
    assert types.report.out_of_scope == {
        ("ImagingStudy", "", NOT_NEEDED): 1,
        ("CarePlan", "", NOT_NEEDED): 1,
    }


def test_23_study_id_system_is_configurable_and_never_an_mrn(tmp_path: Path) -> None:
    path = CASES / "bundle_patient_identifiers.json"
    default = run(path)
    assert dict(default.frame("demographics").select("row", "study_id").rows()) == {
        "pat-id-study": "CART-901"
    }
    # Only pat-id-study is a study subject: an MR-typed identifier in the study-id system is
    # no study id, so the two MRN-only patients are not in the cohort.
    assert default.report.not_in_cohort == 2
    other = run(path, study_id_system="https://registry.example.org/sid/subject")
    custom = dict(other.frame("demographics").select("row", "study_id").rows())
    assert custom == {"pat-id-study": "REG-17"}
    # Alone in a delivery (no cohort evidence: nothing is selected), the fallback is Patient.id.
    bundle = orjson.loads(path.read_bytes())
    for entry in bundle["entry"][1:]:
        single = tmp_path / f"{entry['resource']['id']}.json"
        single.write_bytes(orjson.dumps({**bundle, "entry": [entry]}))
        alone = run(single)
        ((row, study_id),) = alone.frame("demographics").select("row", "study_id").rows()
        assert study_id == row == entry["resource"]["id"]  # MR-typed: never used
        assert alone.report.not_in_cohort == 0


def test_24_reference_cohort_study_ids_come_from_the_study_system(
    reference_cohort: Path, bundles: Run
) -> None:
    demo = bundles.frame("demographics").filter(pl.col("study_id").is_not_null())
    truth = pl.read_csv(reference_cohort / "truth" / "patients.csv", infer_schema=False)
    assert sorted(demo["study_id"]) == sorted(truth["study_id"])
    assert (demo["row"] == demo["patient_key"]).all()  # patient_key = Patient resource id


def test_25_duplicate_resources_are_read_once(tmp_path: Path) -> None:
    shutil.copy(CASES / "bundle_bp_panel.json", tmp_path / "a.json")
    shutil.copy(CASES / "bundle_bp_panel.json", tmp_path / "b.json")
    result = run(tmp_path)
    assert {(r.file, r.rule_id) for r in result.rejected} == {("b.json", RULE_DUPLICATE)}
    assert len(result.rejected) == 3
    assert all("already read from a.json" in r.message for r in result.rejected)
    assert_same_frames(result, run(CASES / "bundle_bp_panel.json"))


def test_26_directory_with_bundles_and_ndjson_reads_both_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(CASES / "bundle_bp_panel.json", tmp_path / "a.json")
    (tmp_path / "sub").mkdir()
    shutil.copy(CASES / "ndjson_gzipped.ndjson.gz", tmp_path / "sub" / "b.ndjson.gz")
    with caplog.at_level(logging.WARNING, logger="cart_etl.extract.fhir.resources"):
        result = run(tmp_path)
    assert "both Bundles and NDJSON" in caplog.text
    assert result.report.files == ["a.json", "sub/b.ndjson.gz"]
    assert sum(result.report.outcomes["sub/b.ndjson.gz"].values()) == 5
    # pat-gz-1 has a study id, pat-bp-1 neither a study id nor a CAR-T infusion: cohort
    # selection drops pat-bp-1 and its two panels (read, then counted as not in cohort).
    assert result.report.not_in_cohort == 3
    assert set(result.frame("demographics")["file"]) == {"sub/b.ndjson.gz"}


def test_27_unreadable_files_and_bad_arguments(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceType": "Bundle", "entry": [', encoding="utf-8")
    history = tmp_path / "history.json"
    history.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "history", "entry": []}))
    result = run(tmp_path)
    assert {(r.file, r.rule_id) for r in result.rejected} == {
        ("broken.json", RULE_UNPARSEABLE),
        ("history.json", RULE_UNSUPPORTED_BUNDLE),
    }
    assert result.report.totals() == {"rejected": 2}
    mappings = Mappings.open(MAPPINGS)
    with pytest.raises(SourceError, match="does not exist"):
        open_fhir(tmp_path / "nope", mappings)
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(SourceError, match="No FHIR files"):
        open_fhir(tmp_path / "notes.txt", mappings)
    with pytest.raises(SourceError, match="Unknown FHIR mode"):
        open_fhir(CASES / "bundle_bp_panel.json", mappings, mode="lenient")


# -- flat hand-over (per-view Parquet) -------------------------------------------------------


@pytest.fixture(scope="module")
def flat_dir(reference_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("flat")
    written, rejected = flatten(reference_cohort / "fhir" / "ndjson", Mappings.open(MAPPINGS), out)
    assert rejected == 0
    views = (MAPPINGS / "fhir" / "views").glob("*.json")
    assert {p.name for p in written} == {f"{p.stem}.parquet" for p in views}
    return out


def test_28_flat_parquet_gives_the_same_frames_as_ndjson(flat_dir: Path, ndjson: Run) -> None:
    flat = run(flat_dir, mode="flat")
    assert_same_frames(flat, ndjson)
    files = {f for b in flat.batches for f in b.frame["file"].unique()}
    assert files <= {p.name for p in flat_dir.iterdir()}  # provenance: the view's file
    keys = {(r.row, r.field, r.rule_id, r.message) for r in flat.rejected}
    assert keys == {(r.row, r.field, r.rule_id, r.message) for r in ndjson.rejected}
    assert flat.report.totals() == ndjson.report.totals()


def test_29_flat_folder_missing_a_view_or_a_column_names_the_view(
    flat_dir: Path, tmp_path: Path
) -> None:
    mappings = Mappings.open(MAPPINGS)
    missing = tmp_path / "missing"
    shutil.copytree(flat_dir, missing)
    (missing / "specimen.parquet").unlink()
    with pytest.raises(SourceError, match="no Parquet file for the view 'specimen'"):
        open_fhir(missing, mappings, mode="flat")
    narrow = tmp_path / "narrow"
    shutil.copytree(flat_dir, narrow)
    target = narrow / "observation.parquet"
    pl.read_parquet(target).drop("status").write_parquet(target)
    with pytest.raises(SourceError, match=r"columns \['status'\] of the view 'observation'"):
        open_fhir(narrow, mappings, mode="flat")


# -- cohort selection (whole-hospital exports) -----------------------------------------------


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 5-patient registry without and with 20 non-CAR-T hospital patients."""
    plain, hospital = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("hospital")
    generate(plain, patients=5, seed=11, defects=False, fhir=True)
    generate(hospital, patients=5, seed=11, defects=False, fhir=True, background_patients=20)
    return plain / "fhir", hospital / "fhir"


@pytest.mark.parametrize("layout", ["ndjson", "bundles"])
def test_30_cohort_selection_keeps_only_the_car_t_patients(
    registries: tuple[Path, Path], layout: str
) -> None:
    plain_dir, hospital_dir = (r / layout for r in registries)
    plain, hospital = run(plain_dir), run(hospital_dir)
    assert plain.report.not_in_cohort == 0
    if layout == "ndjson":
        lines = ndjson_lines(hospital_dir)
        assert set(lines) > set(ndjson_lines(plain_dir))  # Claim, Immunization, ...
        skipped = sum(lines.values()) - sum(ndjson_lines(plain_dir).values())
        assert_same_frames(hospital, plain)  # file names differ only for bundles
    else:
        entries = {
            p.name: len(orjson.loads(p.read_bytes())["entry"]) for p in hospital_dir.glob("*.json")
        }
        cohort_files = {p.name for p in plain_dir.glob("*.json")}
        assert len(entries) == 25 and cohort_files < set(entries)
        skipped = sum(n for name, n in entries.items() if name not in cohort_files)
        assert_same_frames(hospital, plain)
    assert hospital.report.not_in_cohort == skipped > 0
    assert hospital.report.totals() == plain.report.totals()
    assert hospital.rejected == plain.rejected == []
    patients = set(hospital.frame("demographics")["patient_key"])
    assert len(patients) == 5


def test_30b_flat_input_gets_the_same_cohort_rule(
    registries: tuple[Path, Path], tmp_path: Path
) -> None:
    """Views flattened elsewhere (here by `flatten`, cohort selection off) over the
    whole-hospital export: `--flat` removes the background patients' rows as the direct
    path does, and counts them."""
    hospital_dir = registries[1] / "ndjson"
    flat = tmp_path / "flat"
    flatten(hospital_dir, Mappings.open(MAPPINGS), flat)
    from_flat = run(flat, mode="flat")
    direct = run(hospital_dir)
    assert from_flat.report.not_in_cohort > 0
    patients = set(from_flat.frame("demographics")["patient_key"])
    assert patients == set(direct.frame("demographics")["patient_key"])
    for entity in ("vitals", "labs", "drugs", "infusion"):
        a = from_flat.frame(entity).drop("file")
        b = direct.frame(entity).drop("file")
        assert_frame_equal(a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True))


# -- public FHIR files (Synthea, HL7 R4 examples) --------------------------------------------

_SKIP = {"LICENSE", "NOTICE.md", "package.json", "PROVENANCE.md", "provenance.json"}
PUBLIC_FILES = sorted(
    p.relative_to(PUBLIC).as_posix()
    for p in PUBLIC.rglob("*")
    if p.is_file() and p.name not in _SKIP
)
SYNTHEA = [f for f in PUBLIC_FILES if f.startswith("synthea_")]
_HEIGHT = "Observation height: height is not in cm (demographics.height_cm has no unit column)"
_WEIGHT = "Observation weight: weight is not in kg (weight_kg has no unit column)"
# What the quarantine holds per file (rule, row, message start); every other file: nothing.
EXPECTED_REJECTIONS: dict[str, set[tuple[str, str, str]]] = {
    # The spec's example is withdrawn: status entered-in-error.
    "r4_spec_examples/Observation-f202.json": {
        (RULE_STATUS, "f202", "Observation status 'entered-in-error'")
    },
    # Body height in [in_i] and body weight in [lb_av]: the register columns height_cm /
    # weight_kg have no unit column and no unit conversion exists yet.
    "r4_spec_examples/Observation-body-height.json": {(RULE_NO_OUTPUT, "body-height", _HEIGHT)},
    "r4_spec_examples/Observation-example.json": {(RULE_NO_OUTPUT, "example", _WEIGHT)},
    # US Core "data absent" examples: height and weight with dataAbsentReason "unknown" and no
    # valueQuantity, so neither value nor unit (the reason names the unit test that failed).
    "synthea_inferno/uscore_bundle_patient_355.json": {
        (RULE_NO_OUTPUT, "e8985f88-ca15-40ba-8c83-8d3bdd00c075", _HEIGHT),
        (RULE_NO_OUTPUT, "484aaa4e-29ae-45ee-acac-5df1aad8ee8f", _WEIGHT),
    },
}


@pytest.fixture(scope="module")
def public_runs() -> dict[str, Run]:
    mappings = Mappings.open(MAPPINGS)
    return {name: run(PUBLIC / name, mappings) for name in PUBLIC_FILES}


def _resources(doc: dict[str, Any]) -> tuple[int, int]:
    """(resources, entries without a resource) of a JSON file."""
    if doc["resourceType"] != "Bundle":
        return 1, 0
    entries = doc.get("entry", [])
    with_resource = sum(1 for e in entries if isinstance(e.get("resource"), dict))
    return with_resource, len(entries) - with_resource


@pytest.mark.slow
@pytest.mark.parametrize("name", PUBLIC_FILES)
def test_31_public_fhir_files_are_read_and_accounted_for(
    name: str, public_runs: dict[str, Run]
) -> None:
    result = public_runs[name]
    resources, without = _resources(orjson.loads((PUBLIC / name).read_bytes()))
    assert result.report.files == [Path(name).name]
    assert sum(result.report.outcomes[Path(name).name].values()) == resources
    assert result.report.not_in_cohort == 0
    assert result.report.entries_without_resource == without
    got = {(r.rule_id, r.row, r.message) for r in result.rejected}
    expected = EXPECTED_REJECTIONS.get(name, set())
    assert {(rule, row) for rule, row, _ in got} == {(rule, row) for rule, row, _ in expected}
    for rule, row, start in expected:
        assert any(
            r.rule_id == rule and r.row == row and r.message.startswith(start)
            for r in result.rejected
        ), (rule, row)
    for batch in result.batches:
        assert tuple(batch.frame.columns) == columns_of(batch.entity)


@pytest.mark.slow
@pytest.mark.parametrize("name", SYNTHEA)
def test_32_synthea_bp_panels_give_two_vitals_rows_each(
    name: str, public_runs: dict[str, Run]
) -> None:
    bundle = orjson.loads((PUBLIC / name).read_bytes())
    panels = {
        e["resource"]["id"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and {c.get("code") for c in e["resource"]["code"].get("coding", [])}
        & {"85354-9", "55284-4"}
    }
    assert panels
    vitals = public_runs[name].frame("vitals")
    rows = vitals.filter(pl.col("row").str.contains("#component"))
    per_panel = Counter(r.split("#", 1)[0] for r in rows["row"])
    assert per_panel == dict.fromkeys(panels, 2)
    assert set(rows["item_code"]) == {"8480-6", "8462-4"}


@pytest.mark.slow
def test_33_cli_validate_on_a_synthea_bundle(tmp_path: Path, public_runs: dict[str, Run]) -> None:
    name = "synthea_pathling/Dino214_Parisian75_40d82b80-b682-cd8b-da6d-396809878641.json"
    report = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["validate", "--fhir", str(PUBLIC / name), "--report", str(report), "-q"]
    )
    assert result.exit_code in (0, 1), result.output
    fhir = json.loads((report / "validation.json").read_text(encoding="utf-8"))["fhir"]
    by_type: Counter[str] = Counter()
    for item in fhir["out_of_scope"]:
        by_type[item["resource_type"]] += item["count"]
    expected: Counter[str] = Counter()
    for (rtype, _, _), n in public_runs[name].report.out_of_scope.items():
        expected[rtype] += n
    assert by_type == expected
    assert {"Claim", "ExplanationOfBenefit", "Encounter", "Immunization"} <= set(by_type)
    assert fhir["resources"] == sum(fhir["outcomes"].values()) == 164
