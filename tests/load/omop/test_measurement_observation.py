"""MEASUREMENT and OBSERVATION on the two hand-built patients.

Concept ids: omop_v54.md §3.4 (LOINC measurements, S7/S8) and §3.7 (UCUM units).
"""

from __future__ import annotations

from datetime import date, datetime

import polars as pl

from cart_etl.load.omop._common import ID_STRIDE
from cart_etl.load.omop.measurement import map_measurement
from cart_etl.load.omop.observation import map_observation


def test_01_vitals_keep_the_source_unit_and_value_as_written(inp):
    m = map_measurement(inp)
    temp = m.filter(measurement_concept_id=3020891, person_id=1).row(0, named=True)
    assert temp["value_as_number"] == 38.5
    assert temp["unit_concept_id"] == 586323  # Cel
    assert temp["unit_source_value"] == "[degF]"
    assert temp["value_source_value"] == "101.3"
    assert temp["measurement_source_value"] == "体温"  # outer spaces removed
    assert temp["measurement_datetime"] == datetime(2020, 4, 19, 10, 0)
    assert temp["measurement_type_concept_id"] == 32817


def test_02_lab_date_is_the_local_date(inp):
    il6 = map_measurement(inp).filter(measurement_concept_id=3023091).row(0, named=True)
    # 2020-04-19 22:30 UTC is 2020-04-20 06:30 in Asia/Shanghai.
    assert il6["measurement_date"] == date(2020, 4, 20)
    assert il6["unit_concept_id"] == 8845  # pg/mL
    assert il6["measurement_type_concept_id"] == 32856  # Lab


def test_03_unverified_lab_and_unit_are_zero_with_source_kept(inp):
    sil2r = map_measurement(inp).filter(measurement_source_value="可溶性白介素-2受体(sIL-2R)")
    assert sil2r["measurement_concept_id"].to_list() == [0]
    assert sil2r["unit_concept_id"].to_list() == [0]
    assert sil2r["unit_source_value"].to_list() == ["U/mL"]


def test_04_oxygen_flow_height_weight_mrd(inp):
    m = map_measurement(inp)
    assert m.filter(measurement_concept_id=3005629)["value_as_number"].to_list() == [3.0, 3.0, 8.0]
    assert set(m.filter(measurement_concept_id=3005629)["unit_concept_id"]) == {8698}
    assert m.filter(measurement_concept_id=3036277)["value_as_number"].to_list() == [160.0, 140.5]
    mrd = m.filter(measurement_source_value="MRD by flow cytometry (marrow)").row(0, named=True)
    assert mrd["value_as_concept_id"] == 9190  # Not detected
    assert mrd["value_source_value"] == "阴性"
    assert mrd["unit_concept_id"] == 8554


def test_05_ids_are_person_id_times_stride_plus_rank_and_visit_only_inside_the_admission(inp):
    m = map_measurement(inp)
    # Eleven measurements for A, three for B; keys restart at rank 1 for each person.
    assert m["person_id"].to_list() == [1] * 11 + [2] * 3
    assert m["measurement_id"].to_list() == [1 * ID_STRIDE + r for r in range(1, 12)] + [
        2 * ID_STRIDE + r for r in range(1, 4)
    ]
    inside = m.filter(pl.col("visit_occurrence_id").is_not_null())["measurement_date"]
    assert inside.min() >= date(2020, 4, 18) and inside.max() <= date(2020, 5, 16)


def test_06_icans_site_and_fhir_shapes_give_the_same_rows(inp):
    o = map_observation(inp)
    icans = o.filter(
        pl.col("observation_source_value").is_in(["ICE score", "ICANS grade (recorded)"])
    )
    assert icans.select("person_id", "observation_source_value", "value_as_number").rows() == [
        (1, "ICANS grade (recorded)", 1.0),
        (1, "ICE score", 8.0),
        (2, "ICANS grade (recorded)", 0.0),
        (2, "ICE score", 10.0),
    ]


def test_07_ctcae_grade_is_linked_to_its_infection_condition(inp):
    from cart_etl.load.omop.condition_occurrence import map_condition_occurrence

    o = map_observation(inp).filter(observation_source_value="infection CTCAE grade")
    cond = map_condition_occurrence(inp).filter(pl.col("condition_source_value").str.contains(":"))
    assert o["value_as_number"].to_list() == [3.0]
    assert o["observation_event_id"].to_list() == cond["condition_occurrence_id"].to_list()
    assert o["obs_event_field_concept_id"].to_list() == [1147127]


def test_08_register_facts_and_cart_dose(inp):
    o = map_observation(inp)
    assert set(o["observation_concept_id"]) == {0}
    dose = o.filter(observation_source_value="CAR-T dose").row(0, named=True)
    assert dose["value_as_number"] == 0.58 and dose["unit_source_value"] == "10*6/kg"
    genetics = o.filter(observation_source_value="risk genetics")["value_as_string"].to_list()
    assert genetics == ["复杂核型", "ETV6-RUNX1"]
