"""Tests for the FHIR extractor: mapping coverage, accounting, fast/strict, bundles/NDJSON, cases."""

from __future__ import annotations

import csv
import logging
import shutil
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from cart_etl.contract import PROVENANCE, RawBatch, Rejected, columns_of
from cart_etl.errors import ConfigurationError, MappingError, SourceError
from cart_etl.extract.fhir.extract import (
    RULE_INVALID,
    RULE_MISSING_SUBJECT,
    RULE_NO_OUTPUT,
    RULE_STATUS,
    RULE_UNKNOWN_TYPE,
    RULE_UNMAPPED,
    RULE_UNPARSEABLE,
    RULE_UNSUPPORTED_BUNDLE,
    FhirExtractReport,
    FhirMapping,
    extract_fhir,
    load_fhir_mapping,
)
from cart_etl.synth.fhir import codes as fx
from cart_etl.synth.generate import generate
from tests.extract.conftest import collect

CASES = Path(__file__).resolve().parents[2] / "cases"
LOINC, RXNORM, SNOMED = fx.LOINC, fx.RXNORM, fx.SNOMED


@dataclass
class Run:
    """Everything one extraction yielded."""

    report: FhirExtractReport
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


def run(path: Path, **kwargs: Any) -> Run:
    stream = extract_fhir(path, **kwargs)
    drained = collect(stream)  # the report is complete once the stream is drained
    return Run(stream.report, drained.batches, drained.rejected)


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows without the file column, in a stable order (for source-independent comparison)."""
    rest = frame.drop("file")
    return rest.sort(rest.columns, nulls_last=True)


def one_row(frame: pl.DataFrame, row: str) -> dict[str, Any]:
    hit = frame.filter(pl.col("row") == row)
    assert hit.height == 1, f"{row}: {hit.height} rows"
    return hit.row(0, named=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference cohort (61 patients, seed 2025, defects) with its FHIR export."""
    out = tmp_path_factory.mktemp("fhir_cohort")
    generate(out, patients=61, seed=2025, defects=True, fhir=True)
    return out


@pytest.fixture(scope="module")
def bundles(cohort: Path) -> Run:
    return run(cohort / "fhir" / "bundles")


@pytest.fixture(scope="module")
def ndjson(cohort: Path) -> Run:
    return run(cohort / "fhir" / "ndjson")


@pytest.fixture(scope="module")
def fhir_defects(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "truth" / "defects.csv").open(encoding="utf-8") as fh:
        return [d for d in csv.DictReader(fh) if d["file"].startswith("fhir/bundles/")]


@pytest.fixture(scope="module")
def strict_sample(
    cohort: Path, fhir_defects: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Bundles of every patient with a FHIR defect plus two without (strict is ~5k res/s)."""
    out = tmp_path_factory.mktemp("strict_sample")
    sids = [*sorted({d["study_id"] for d in fhir_defects}), "CART-002", "CART-003"]
    for sid in sids:
        shutil.copy(cohort / "fhir" / "bundles" / f"{sid}.json", out / f"{sid}.json")
    return out


def test_01_mapping_maps_every_code_the_writer_emits() -> None:
    mapping = load_fhir_mapping()
    mapped = mapping.mapped_codes()
    expected: set[tuple[str, str, str]] = set()
    observation_loinc = [c for c, _ in fx.VITAL_LOINC.values()]
    observation_loinc += [c for c, _ in fx.LAB_LOINC.values()]
    observation_loinc += [c for c, _ in fx.LOINC_CODES.values()]
    expected |= {("Observation", LOINC, c) for c in observation_loinc}
    expected |= {
        ("Observation", fx.LOCAL_SYSTEM, c) for c in fx.LOCAL_CODES if c != "cart-infusion"
    }
    expected |= {("Procedure", fx.LOCAL_SYSTEM, "cart-infusion")}
    expected |= {("Procedure", SNOMED, fx.OXYGEN_THERAPY_SNOMED[0])}
    expected |= {("MedicationAdministration", RXNORM, c) for c, _ in fx.DRUG_RXNORM.values()}
    expected |= {("Condition", s, c) for s, c, _ in fx.DIAGNOSIS_CODINGS}
    expected |= {("DeviceUseStatement", fx.LOCAL_SYSTEM, c) for c, _ in fx.OXYGEN_DEVICES.values()}
    assert expected - mapped == set()
    assert mapping.study_id_system == fx.STUDY_ID_SYSTEM
    assert mapping.systems["local"] == fx.LOCAL_SYSTEM
    assert mapping.systems["ctcae_grade"] == fx.CTCAE_GRADE_SYSTEM
    assert mapping.mrn_type == (fx.V2_0203, "MR")


def test_02_mapping_errors_name_the_problem(tmp_path: Path) -> None:
    def load(text: str) -> FhirMapping:
        path = tmp_path / f"m{abs(hash(text))}.yaml"
        path.write_text(text, encoding="utf-8")
        return FhirMapping.load(path)

    base = "systems: {loinc: http://loinc.org}\nrules:\n"
    rule = "  - {{name: {n}, resource: Observation, codes: {{loinc: [8310-5]}}, outputs: [{o}]}}\n"
    vitals = "{entity: vitals, columns: {value: valueQuantity.value}}"
    with pytest.raises(MappingError, match="unknown entity"):
        load(base + rule.format(n="a", o="{entity: vital, columns: {}}"))
    with pytest.raises(MappingError, match="not part of 'vitals'"):
        load(base + rule.format(n="a", o="{entity: vitals, columns: {dose: x}}"))
    with pytest.raises(MappingError, match="mapped by both a and b"):
        load(base + rule.format(n="a", o=vitals) + rule.format(n="b", o=vitals))
    with pytest.raises(MappingError, match="unknown token"):
        load(base + rule.format(n="a", o="{entity: vitals, columns: {value: $nope}}"))
    with pytest.raises(MappingError, match="Cannot read FHIR mapping"):
        FhirMapping.load(tmp_path / "missing.yaml")


def test_03_every_bundle_resource_is_accounted_for(cohort: Path, bundles: Run) -> None:
    report = bundles.report
    for path in sorted((cohort / "fhir" / "bundles").glob("*.json")):
        entries = orjson.loads(path.read_bytes())["entry"]
        assert sum(report.outcomes[path.name].values()) == len(entries), path.name
    totals = report.totals()
    assert totals["rejected"] == len(bundles.rejected) == 3
    assert bundles.rules() == {RULE_MISSING_SUBJECT: 3}
    assert totals["ignored"] == report.resources_by_type["Encounter"] == 60
    assert report.unmapped_codes == Counter()
    assert report.unknown_resource_types == Counter()
    assert sum(b.frame.height for b in bundles.batches) == sum(report.rows_by_entity.values())


def test_04_every_ndjson_line_is_accounted_for(cohort: Path, ndjson: Run) -> None:
    report = ndjson.report
    for path in sorted((cohort / "fhir" / "ndjson").glob("*.ndjson")):
        lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        assert sum(report.outcomes[path.name].values()) == lines, path.name
    assert ndjson.rules() == {RULE_MISSING_SUBJECT: 3}
    assert report.files[0] == "Patient.ndjson"  # patients first: subjects resolve while streaming


def test_05_bundles_and_ndjson_yield_the_same_rows(bundles: Run, ndjson: Run) -> None:
    assert bundles.entities == ndjson.entities
    for entity in sorted(bundles.entities):
        assert_frame_equal(canonical(bundles.frame(entity)), canonical(ndjson.frame(entity)))
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


def test_08_coalesced_rows_reproduce_the_register(cohort: Path, bundles: Run) -> None:
    """Partial rows per resource, merged per patient, give back the truth register."""
    demo = bundles.frame("demographics").drop("source", "file", "row")
    merged = demo.group_by("patient_key").agg(pl.all().drop_nulls().first())
    infusion = bundles.frame("infusion").drop("source", "file", "row")
    dose = infusion.group_by("patient_key").agg(pl.col("dose_1e6_per_kg").drop_nulls().first())
    merged = merged.join(dose, on="patient_key", how="left")
    truth = pl.read_csv(cohort / "truth" / "patients.csv", infer_schema=False)
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
    assert [r for r in strict.rejected if r.rule_id != RULE_INVALID] == fast.rejected
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
    assert rejected.field == "component[0].valueQuantity.value"
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
    assert "not a Patient" in why["obs-ms-group"]
    vitals = result.frame("vitals")
    assert vitals["row"].to_list() == ["obs-ms-ok"]
    assert vitals["patient_key"].to_list() == ["pat-ms-1"]


def test_13_excluded_statuses_are_rejected_with_a_reason_stopped_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="cart_etl.extract.fhir.extract"):
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
    assert result.report.excluded_status[("Observation", "entered-in-error")] == 1
    assert "excluded with status entered-in-error" in caplog.text


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
    (dangling,) = result.rejected
    assert (dangling.row, dangling.rule_id) == ("ma-dangling-medication", RULE_UNMAPPED)
    assert result.report.ignored[("Medication", load_fhir_mapping().ignored["Medication"])] == 1


def test_15_medication_requests_are_orders_never_doses() -> None:
    result = run(CASES / "bundle_medication_request_only.json")
    assert "drugs" not in result.entities
    assert result.rejected == []
    assert result.report.medication_orders == 2
    assert result.report.totals() == {"emitted": 1, "ignored": 3}  # + the OperationOutcome


def test_16_bp_panel_gives_one_row_per_component() -> None:
    result = run(CASES / "bundle_bp_panel.json")
    vitals = result.frame("vitals").sort("row")
    assert vitals.select("row", "item_code", "value", "unit").rows() == [
        ("bp-1#component0", "8480-6", "84", "mm[Hg]"),
        ("bp-1#component1", "8462-4", "52", "mm[Hg]"),
        ("bp-2#component0", "8462-4", "61", "mm[Hg]"),
        ("bp-2#component2", "8480-6", "101", "mm[Hg]"),
    ]
    (mean_bp,) = result.rejected
    assert (mean_bp.row, mean_bp.field, mean_bp.value) == (
        "bp-2",
        "component[1].code",
        f"{LOINC}|8478-0",
    )
    assert result.report.unmapped_codes == {("Observation", LOINC, "8478-0"): 1}
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


def test_22_unknown_types_and_codes_are_reported() -> None:
    result = run(CASES / "bundle_unmapped_codes.json")
    rules = {r.row: r.rule_id for r in result.rejected}
    assert rules == {
        "un-glucose": RULE_UNMAPPED,
        "un-text-only": RULE_UNMAPPED,
        "un-allergy": RULE_UNKNOWN_TYPE,
        "un-height-inches": RULE_NO_OUTPUT,
    }
    report = result.report
    assert report.unmapped_codes == {
        ("Observation", LOINC, "2345-7"): 1,
        ("Observation", SNOMED, "33747003"): 1,
        ("Observation", "", ""): 1,
    }
    assert report.unknown_resource_types == {"AllergyIntolerance": 1}
    reasons = {rtype for rtype, _ in report.ignored}
    assert reasons == {"Encounter", "Observation"}  # "no progression" is an answer, not an error
    assert report.entries_without_resource == 1  # the DELETE entry
    summary = orjson.loads(orjson.dumps(report.to_dict()))
    assert summary["unknown_resource_types"] == {"AllergyIntolerance": 1}


def test_23_study_id_system_is_configurable_and_never_an_mrn() -> None:
    path = CASES / "bundle_patient_identifiers.json"
    default = dict(run(path).frame("demographics").select("row", "study_id").rows())
    assert default == {
        "pat-id-study": "CART-901",
        "pat-id-mrn-only": "pat-id-mrn-only",  # fallback: Patient.id
        "pat-id-mrn-in-study-system": "pat-id-mrn-in-study-system",  # MR-typed: never used
    }
    other = run(path, study_id_system="https://registry.example.org/sid/subject")
    custom = dict(other.frame("demographics").select("row", "study_id").rows())
    assert custom["pat-id-study"] == "REG-17"
    assert not any(v.startswith("MRN") for v in [*default.values(), *custom.values()])


def test_24_reference_cohort_study_ids_come_from_the_study_system(
    cohort: Path, bundles: Run
) -> None:
    demo = bundles.frame("demographics").filter(pl.col("study_id").is_not_null())
    truth = pl.read_csv(cohort / "truth" / "patients.csv", infer_schema=False)
    assert sorted(demo["study_id"]) == sorted(truth["study_id"])
    assert (demo["row"] == demo["patient_key"]).all()  # patient_key = Patient resource id


def test_25_ndjson_streams_in_batches_with_flat_memory(cohort: Path, tmp_path: Path) -> None:
    lines = (cohort / "fhir" / "ndjson" / "Observation.ndjson").read_bytes().splitlines()[:12000]
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    tracemalloc.start()
    try:
        heights = [
            b.frame.height for b in extract_fhir(path, batch_rows=1000) if isinstance(b, RawBatch)
        ]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(heights) <= 1000 and len(heights) > 10
    assert peak < path.stat().st_size / 4, (peak, path.stat().st_size)


def test_26_directory_with_bundles_and_ndjson_reads_both_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(CASES / "bundle_bp_panel.json", tmp_path / "a.json")
    (tmp_path / "sub").mkdir()
    shutil.copy(CASES / "ndjson_gzipped.ndjson.gz", tmp_path / "sub" / "b.ndjson.gz")
    with caplog.at_level(logging.WARNING, logger="cart_etl.extract.fhir.extract"):
        result = run(tmp_path)
    assert "both bundles and NDJSON" in caplog.text
    assert result.report.files == ["a.json", "sub/b.ndjson.gz"]
    assert set(result.frame("demographics")["file"]) == {"a.json", "sub/b.ndjson.gz"}


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
    with pytest.raises(SourceError, match="does not exist"):
        extract_fhir(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(SourceError, match="not a FHIR file"):
        extract_fhir(tmp_path / "notes.txt")
    with pytest.raises(ConfigurationError, match="Unknown FHIR mode"):
        extract_fhir(CASES / "bundle_bp_panel.json", mode="lenient")  # type: ignore[arg-type]
