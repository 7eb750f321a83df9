"""pipeline.run on data synth/ did not write: a hand-made English site, its timezone, site
folders outside the repository and what etl.runs records of the rules applied."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
import yaml

from cart_etl.config import Settings
from cart_etl.pipeline import Source, run, validate_only

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "cases"
# tests/cases/site_wide_en with EX-001 infused at 23:30 London time (GMT, = 23:30 UTC):
# day 0 is 2021-03-01 in London but would be 2021-03-02 in Shanghai (07:30 +08:00).
LATE = CASES / "site_london_infusion_before_midnight"


def _query(store: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _site_folder(tmp_path: Path, overrides: dict[str, dict]) -> Path:
    folder = tmp_path / "st_mary_site"
    folder.mkdir()
    shutil.copy(REPO / "mappings" / "sites" / "example_wide_en.yaml", folder / "site.yaml")
    for rel, doc in overrides.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(yaml.safe_dump(doc), encoding="utf-8")
    return folder


def test_01_study_days_and_omop_dates_use_the_site_timezone(tmp_path):
    """Europe/London site (mapping ``timezone:``), not the Asia/Shanghai default of Settings."""
    result = run(Source(str(LATE), "example_wide_en"), tmp_path / "s.duckdb")
    assert result.status == "succeeded", result.failures
    assert Settings().site_timezone == "Asia/Shanghai"  # the default the bug used
    (day0,) = _query(
        result.store, "SELECT infusion_date FROM marts.patient_detail WHERE study_id = 'EX-001'"
    )[0]
    assert day0 == date(2021, 3, 1)
    # Temperatures charted 2021-03-01 20:00 and 2021-03-02 08:00 London: study days 0 and 1
    # (in Shanghai time both would fall on 2021-03-02, day 0).
    days = _query(
        result.store,
        "SELECT strftime(measured_at AT TIME ZONE 'Europe/London', '%Y-%m-%d %H:%M'), study_day "
        "FROM marts.lab_timeseries WHERE study_id = 'EX-001' AND item = 'temp' ORDER BY 1",
    )
    assert ("2021-03-01 20:00", 0) in days and ("2021-03-02 08:00", 1) in days
    visit = _query(
        result.store,
        "SELECT visit_start_date, visit_start_datetime, visit_end_date FROM omop.visit_occurrence "
        "WHERE person_id = 1",
    )[0]
    assert visit[0] == date(2021, 3, 1) and str(visit[1]) == "2021-03-01 23:30:00"
    assert visit[2] == date(2021, 3, 29)  # day 28


def test_02_site_folder_outside_the_repository_is_layered_and_recorded(tmp_path):
    folder = _site_folder(
        tmp_path,
        {
            # St Mary's calls temperatures above 38 C impossible (a deliberately odd limit: the
            # 38.4 C charting of EX-001 on 2021-03-01 20:00 must be quarantined).
            "validation/plausibility.yaml": {"measurements": {"temp": {"hard": [30, 38]}}},
            "derive/derivation.yaml": {"drug_classes": {"dexamethasone": "steroid_local"}},
        },
    )
    plain = validate_only(Source(str(LATE), "example_wide_en"), expectations=False)[0]
    layered = validate_only(Source(str(LATE), str(folder)), expectations=False)[0]
    extra = {(c.file, c.row, c.rule_id) for c in layered.quarantined} - {
        (c.file, c.row, c.rule_id) for c in plain.quarantined
    }
    assert ("vitals_wide.csv", "3:Temp", "measurement.value.hard_range") in extra
    result = run(Source(str(LATE), str(folder)), tmp_path / "s.duckdb")
    assert result.status == "succeeded", result.failures
    classes = _query(
        result.store, "SELECT DISTINCT drug_class FROM marts.treatment WHERE drug = 'dexamethasone'"
    )
    assert classes == [("steroid_local",)]
    (checksums,) = _query(
        result.store, "SELECT input_checksums FROM etl.runs WHERE status = 'succeeded'"
    )[0]
    recorded = json.loads(checksums)
    assert recorded["_site_dir"] == str(folder)
    assert {
        "rules:site/site.yaml",
        "rules:site/validation/plausibility.yaml",
        "rules:site/derive/derivation.yaml",
        "rules:mappings/validation/plausibility.yaml",
    } <= set(recorded)


def test_03_an_edited_site_override_reruns_an_unchanged_export(tmp_path):
    folder = _site_folder(tmp_path, {"derive/derivation.yaml": {"periods": {"admission_days": 28}}})
    store = tmp_path / "s.duckdb"
    assert run(Source(str(LATE), str(folder)), store).status == "succeeded"
    assert run(Source(str(LATE), str(folder)), store).status == "skipped"
    (folder / "derive" / "derivation.yaml").write_text(
        yaml.safe_dump({"periods": {"admission_days": 14}}), encoding="utf-8"
    )
    again = run(Source(str(LATE), str(folder)), store)
    assert again.status == "succeeded"
    assert _query(
        store, "SELECT visit_end_date FROM omop.visit_occurrence WHERE person_id = 1"
    ) == [(date(2021, 3, 15),)]


def test_04_mappings_root_outside_the_repository(tmp_path, monkeypatch):
    """CART_ETL_MAPPINGS pointing at a copy of mappings/ elsewhere (crashed before #10)."""
    root = tmp_path / "site_rules"
    shutil.copytree(REPO / "mappings", root)
    monkeypatch.setenv("CART_ETL_MAPPINGS", str(root))
    result = run(Source(str(LATE), "example_wide_en"), tmp_path / "s.duckdb")
    assert result.status == "succeeded", result.failures
    (checksums,) = _query(result.store, "SELECT input_checksums FROM etl.runs")[0]
    recorded = json.loads(checksums)
    assert recorded["_mappings_root"] == str(root.resolve())
    assert recorded["_site_file"] == str((root / "sites" / "example_wide_en.yaml").resolve())


def test_05_unknown_site_is_a_configuration_error(tmp_path):
    from cart_etl.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="Unknown site"):
        run(Source(str(LATE), "no_such_site"), tmp_path / "s.duckdb")


def test_06_fhir_profile_folder_outside_the_repository(tmp_path):
    """--fhir-profile DIR layers FHIR rule overrides over mappings/ like a site folder.

    tests/cases/bundle_temperature_degF.json charts 38.5 Cel at 2021-03-06 06:00 (+08:00);
    a profile that calls temperatures above 38 C impossible quarantines it.
    """
    bundle = CASES / "bundle_temperature_degF.json"
    profile = tmp_path / "hospital_fhir"
    (profile / "validation").mkdir(parents=True)
    (profile / "validation" / "plausibility.yaml").write_text(
        yaml.safe_dump({"measurements": {"temp": {"hard": [30, 38]}}}), encoding="utf-8"
    )
    (profile / "fhir").mkdir()
    (profile / "fhir" / "concept_map.csv").write_text(
        "source_system,source_code,source_display,target,item,note,citation\n"
        "http://loinc.org,8331-1,Oral temperature,vital,temp,,LOINC 2.77\n",
        encoding="utf-8",
    )
    plain = validate_only(Source(str(bundle), fhir=True), expectations=False)[0]
    layered = validate_only(
        Source(str(bundle), fhir=True, fhir_profile=str(profile)), expectations=False
    )[0]

    def hard(outcome):
        return [c.value for c in outcome.quarantined if c.rule_id == "measurement.value.hard_range"]

    assert "38.5" not in hard(plain) and "38.5" in hard(layered)
    result = run(Source(str(bundle), fhir=True, fhir_profile=str(profile)), tmp_path / "s.duckdb")
    assert result.status == "succeeded", result.failures
    recorded = json.loads(_query(result.store, "SELECT input_checksums FROM etl.runs")[0][0])
    assert recorded["_site_dir"] == str(profile.resolve())
    assert {
        "rules:site/fhir/concept_map.csv",
        "rules:site/validation/plausibility.yaml",
        "rules:mappings/fhir/concepts.yaml",
        "rules:mappings/fhir/targets.yaml",
        "rules:mappings/fhir/concept_map.csv",
    } <= set(recorded)
    with pytest.raises(Exception, match="FHIR profile folder"):
        run(Source(str(bundle), fhir=True, fhir_profile=str(tmp_path / "no")), tmp_path / "t.db")


def _every_text_value(store: Path) -> list[str]:
    """Every VARCHAR / JSON value of every table of the store, as text."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        columns = con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
            "WHERE data_type IN ('VARCHAR', 'JSON')"
        ).fetchall()
        out: list[str] = []
        for schema, table, column in columns:
            rows = con.execute(
                f'SELECT DISTINCT "{column}"::VARCHAR FROM {schema}.{table} '
                f'WHERE "{column}" IS NOT NULL'
            ).fetchall()
            out += [r[0] for r in rows]
        return out
    finally:
        con.close()


def test_07_an_mrn_typed_into_free_text_never_reaches_the_store(tmp_path):
    """meds.csv of tests/cases/hardening_mrn_in_free_text: an indication 'CRS, see H1004821
    notes' (the patient's own MRN) and a medication 'Dexamethasone H1005376' (another
    patient's MRN; an unknown drug, so quarantined with its text as the value)."""
    case = CASES / "hardening_mrn_in_free_text"
    mrns = ("H1004821", "H1005376", "H1006112", "H1007459")  # patients.csv hospital_number
    result = run(Source(str(case), "example_wide_en"), tmp_path / "s.duckdb")
    assert result.status == "succeeded", result.failures
    leaked = [v for v in _every_text_value(result.store) if any(m in v for m in mrns)]
    assert leaked == []
    (indication,) = _query(
        result.store,
        "SELECT indication FROM marts.treatment WHERE source_row = '1' AND drug = 'tocilizumab'",
    )[0]
    assert indication == "CRS, see <redacted> notes"
    unknown = _query(result.store, "SELECT value FROM etl.quarantine WHERE rule_id = 'drug.known'")
    assert unknown == [("Dexamethasone <redacted>",)]
