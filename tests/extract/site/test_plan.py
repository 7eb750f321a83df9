"""Extraction plans: what each record of a file spec copies from which column."""

from __future__ import annotations

from pathlib import Path

from cart_etl.contract import ENTITY_COLUMNS
from cart_etl.extract.site.parse import parse_site_mapping
from cart_etl.extract.site.spec import SiteMapping

FLOWSHEET = "vitals_flowsheet.csv"


def _assigns(mapping: SiteMapping, file: str, entity: str) -> dict[str, str | None]:
    """canonical column -> source column (or constant) of one output."""
    output = next(o for o in mapping.files[file].outputs if o.entity == entity)
    return {a.column: a.source or a.literal for a in output.assigns}


def test_01_plans_locate_values_without_interpreting_them(tianjin_mapping: SiteMapping) -> None:
    system = "local:tianjin_ref:vitals_flowsheet.csv:"
    assert _assigns(tianjin_mapping, FLOWSHEET, "vitals") == {
        "at": "记录时间",
        "item_code": "项目",
        "item_system": system + "项目",
        "value": "结果",
        "unit": "单位",
    }
    # The charted oxygen text goes whole into device_code; the flow is parsed downstream.
    # The routing item is kept too, so a padded item name is still reported by validation.
    assert _assigns(tianjin_mapping, FLOWSHEET, "oxygen") == {
        "at": "记录时间",
        "item_code": "项目",
        "device_code": "结果",
        "device_system": system + "结果",
        "flow_unit": "单位",
    }
    assert _assigns(tianjin_mapping, "mar.xlsx", "drugs")["drug_system"] == (
        "local:tianjin_ref:mar.xlsx:药品名称"
    )
    assert _assigns(tianjin_mapping, "patients.csv", "demographics")["study_id"] == "研究编号"


def test_02_names_and_mrns_are_never_entity_columns(tianjin_mapping: SiteMapping) -> None:
    register = tianjin_mapping.files["patients.csv"]
    assert register.columns["姓名"].role == "private"
    assert register.columns["住院号"].role == "patient_key"
    for spec in tianjin_mapping.files.values():
        sources = {a.source for o in spec.outputs for a in o.assigns}
        assert "姓名" not in sources
        assert spec.patient_key not in sources


def test_03_every_mapped_column_is_used_by_an_output(tianjin_mapping: SiteMapping) -> None:
    for spec in tianjin_mapping.files.values():
        sources = {a.source for o in spec.outputs for a in o.assigns}
        for name, column in spec.columns.items():
            if column.role in {"value", "unit"} and any(t.column for t in column.targets.values()):
                assert name in sources, f"{spec.name}: {name} is mapped but never extracted"


def test_04_wide_layout_plans_one_record_per_item(wide_mapping: SiteMapping) -> None:
    spec = wide_mapping.files["vitals_wide.csv"]
    assert spec.layout == "wide"
    assert [o.item for o in spec.outputs] == ["Temp", "SBP", "DBP", "HR", "SpO2", "O2"]
    temp = {a.column: a for a in spec.outputs[0].assigns}
    assert temp["value"].source == "Temp"
    assert temp["unit"].source == "Temp unit"  # units printed in their own column
    assert (temp["item_code"].literal, temp["item_system"].literal) == (
        "Temp",
        "local:example_wide_en:vitals_wide.csv:Temp",
    )
    sbp = {a.column: a for a in spec.outputs[1].assigns}
    assert (sbp["unit"].literal, sbp["unit"].when) == ("mmHg", "SBP")  # fixed unit
    oxygen = spec.outputs[-1]
    assert oxygen.entity == "oxygen"
    assert oxygen.present == ("O2 device", "O2 flow (L/min)")
    assigns = {a.column: a for a in oxygen.assigns}
    assert assigns["device_code"].source == "O2 device"
    assert assigns["flow_l_min"].source == "O2 flow (L/min)"
    assert (assigns["flow_unit"].literal, assigns["flow_unit"].when) == ("L/min", "O2 flow (L/min)")
    assert wide_mapping.files["patients.csv"].columns["full_name"].role == "private"


def test_05_every_canonical_entity_is_reachable_from_a_field() -> None:
    # Each entity column can be named in a field (coded ones by their short name).
    raw = {
        "site": "all",
        "timezone": "UTC",
        "files": {
            f"{entity}.csv": {
                "patient_key": "mrn",
                "columns": {
                    "mrn": "demographics.mrn",
                    **{
                        col: f"{entity}[].{col.removesuffix('_code')}"
                        for col in columns
                        if not col.endswith("_system")
                    },
                },
            }
            for entity, columns in ENTITY_COLUMNS.items()
        },
    }
    mapping = parse_site_mapping(raw, Path("all.yaml"))
    for entity, columns in ENTITY_COLUMNS.items():
        (output,) = mapping.files[f"{entity}.csv"].outputs
        assert {a.column for a in output.assigns} == set(columns)
