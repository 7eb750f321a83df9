"""CONDITION_OCCURRENCE, DRUG_EXPOSURE, PROCEDURE_OCCURRENCE, DEVICE_EXPOSURE on two patients.

Expected concept ids are those verified in ../shared/reference/omop_v54.md (§3.2-3.5).
"""

from __future__ import annotations

from datetime import date, datetime

from cart_etl.load.omop._common import ID_STRIDE
from cart_etl.load.omop.condition_occurrence import map_condition_occurrence
from cart_etl.load.omop.device_exposure import map_device_exposure
from cart_etl.load.omop.drug_exposure import map_drug_exposure
from cart_etl.load.omop.procedure_occurrence import map_procedure_occurrence


def test_01_conditions_b_all_crs_icans_infection(inp):
    c = map_condition_occurrence(inp)
    # person_id * ID_STRIDE + rank within the person: four rows for A, one for B.
    assert c["condition_occurrence_id"].to_list() == [
        1 * ID_STRIDE + 1,
        1 * ID_STRIDE + 2,
        1 * ID_STRIDE + 3,
        1 * ID_STRIDE + 4,
        2 * ID_STRIDE + 1,
    ]
    assert c["person_id"].to_list() == [1, 1, 1, 1, 2]
    # B-cell ALL 4173963 (S7); CRS, ICANS and infections have no verified concept -> 0.
    assert c["condition_concept_id"].to_list() == [4173963, 0, 0, 0, 4173963]
    assert c["condition_source_value"].to_list() == [
        "B-ALL (register diagnosis date)",
        "D89.833",
        "G92.01",
        "肺部: Klebsiella pneumoniae",
        "B-ALL (register diagnosis date)",
    ]
    assert c["condition_type_concept_id"].to_list() == [32817, 32882, 32817, 32817, 32817]


def test_02_crs_condition_spans_the_episode_in_local_time(inp):
    row = map_condition_occurrence(inp).filter(condition_source_value="D89.833").row(0, named=True)
    # onset 02:00 UTC = 10:00 local; end 16:00 UTC = 00:00 local next day.
    assert row["condition_start_datetime"] == datetime(2020, 4, 19, 10, 0)
    assert row["condition_end_date"] == date(2020, 4, 20)
    assert row["visit_occurrence_id"] == 1
    assert row["condition_status_source_value"] == "ASTCT 2019 grade 3 (derived)"


def test_03_febrile_episode_after_day_14_is_not_a_crs_condition(inp):
    c = map_condition_occurrence(inp)
    crs = c.filter(c["condition_source_value"].str.starts_with("D89"))
    assert crs["condition_start_date"].to_list() == [date(2020, 4, 19)]


def test_04_drug_exposures_mar_vasopressor_and_cart_product(inp):
    d = map_drug_exposure(inp)
    assert d["person_id"].to_list() == [1] * 6
    assert d["drug_exposure_id"].to_list() == [1 * ID_STRIDE + r for r in range(1, 7)]
    # CAR-T product 0 (academic), tocilizumab 40171288, norepinephrine 1321341,
    # methylprednisolone 1506270, tocilizumab, G-CSF 0 (filgrastim unverified).
    assert d["drug_concept_id"].to_list() == [0, 40171288, 1321341, 1506270, 40171288, 0]
    assert d["quantity"].to_list() == [2.9e7, 400.0, None, 80.0, 400.0, 300.0]
    assert d["sig"].to_list()[1:] == ["8mg/kg", "0.1 ug/kg/min", "80mg", "400mg", "300μg"]
    assert d["route_source_value"].to_list()[1] == "静脉滴注"
    assert d["lot_number"].to_list()[0] == "CT200418-40"
    assert set(d["drug_type_concept_id"]) == {32818}
    assert d["visit_occurrence_id"].to_list() == [1] * 6


def test_05_vasopressor_exposure_ends_at_the_stop_time(inp):
    d = map_drug_exposure(inp).filter(drug_concept_id=1321341).row(0, named=True)
    assert d["drug_exposure_start_datetime"] == datetime(2020, 4, 19, 13, 0)
    assert d["drug_exposure_end_datetime"] == datetime(2020, 4, 19, 20, 0)
    assert d["dose_unit_source_value"] == "ug/kg/min"


def test_06_procedures_infusion_oxygen_runs_vasopressor(inp):
    p = map_procedure_occurrence(inp)
    # CAR-T infusion 0 (unverified), O2 by nasal cannula 4155151, vasopressor therapy
    # 3655896, O2 by mask 4162736. The room-air charting splits the two oxygen runs.
    assert p["procedure_concept_id"].to_list() == [0, 4155151, 3655896, 4162736]
    assert p["procedure_datetime"].to_list()[1] == datetime(2020, 4, 19, 11, 0)
    assert p["procedure_end_datetime"].to_list()[1] == datetime(2020, 4, 19, 13, 0)
    assert p["procedure_source_value"].to_list()[1] == "鼻导管 3L/min"


def test_07_device_exposure_one_row_per_oxygen_run(inp):
    d = map_device_exposure(inp)
    # Oxygen nasal cannula 4224038 (S7); face mask has no verified Device concept -> 0.
    assert d["device_concept_id"].to_list() == [4224038, 0]
    assert d["device_source_value"].to_list() == ["鼻导管 3L/min", "面罩 8L/min"]
    assert d["device_exposure_start_date"].to_list() == [date(2020, 4, 19)] * 2
    assert d["quantity"].to_list() == [1, 1]
