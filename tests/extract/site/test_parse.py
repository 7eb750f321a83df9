"""Site mapping loader: typed specs, and errors that name file, key and fix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cart_etl.errors import ConfigurationError, MappingError
from cart_etl.extract.site.parse import load_site_mapping, parse_site_mapping
from cart_etl.extract.site.spec import SiteMapping, normalize_key
from tests.extract.conftest import CASES, MAPPINGS

TIANJIN_YAML = MAPPINGS / "sites" / "tianjin_ref.yaml"

FLOWSHEET = "vitals_flowsheet.csv"


@pytest.fixture(scope="module")
def tianjin_raw() -> dict[str, Any]:
    """The reference mapping as parsed YAML, to derive broken variants from."""
    return yaml.safe_load(TIANJIN_YAML.read_text(encoding="utf-8"))


def test_01_reference_mapping_loads_by_name(tianjin_mapping: SiteMapping) -> None:
    raw = yaml.safe_load(TIANJIN_YAML.read_text(encoding="utf-8"))
    assert tianjin_mapping.site == "tianjin_ref"
    assert tianjin_mapping.kind == "files"
    assert tianjin_mapping.timezone == "Asia/Shanghai"
    assert list(tianjin_mapping.files) == list(raw["files"])  # YAML order kept
    register = tianjin_mapping.files["patients.csv"]
    assert (register.encoding, register.patient_key) == ("gb18030", "住院号")
    assert tianjin_mapping.files["cart_infusion.csv"].encoding == "utf-8"
    assert tianjin_mapping.files["mar.xlsx"].format == "xlsx"
    assert tianjin_mapping.files["mar.xlsx"].sheet == "给药记录"
    assert tianjin_mapping.files[FLOWSHEET].layout == "long"
    assert tianjin_mapping.files[FLOWSHEET].entities == ("vitals", "oxygen")
    assert tianjin_mapping.files["lab_results.csv"].item_table == "tests"
    link = tianjin_mapping.patient_link
    assert link is not None
    assert (link.file, link.study_id_column, link.mrn_column) == (
        "patients.csv",
        "研究编号",
        "住院号",
    )
    # By path, the same mapping.
    assert load_site_mapping(TIANJIN_YAML).files.keys() == tianjin_mapping.files.keys()


def test_02_items_are_routed_after_nfkc_and_strip(tianjin_mapping: SiteMapping) -> None:
    flowsheet = tianjin_mapping.files[FLOWSHEET]
    labs = tianjin_mapping.files["lab_results.csv"]
    assert normalize_key(" ＳｐＯ２　") == "SpO2"
    found = flowsheet.find_item(" 体温 ")
    assert found is not None
    assert (found.code, found.target) == ("体温", "vitals")
    oxygen = flowsheet.find_item("吸氧方式  ")
    assert oxygen is not None
    assert oxygen.target == "oxygen"
    sil2r = labs.find_item("可溶性白介素－２受体(ｓＩＬ－２Ｒ)")
    assert sil2r is not None
    assert (sil2r.code, sil2r.target) == ("可溶性白介素-2受体(sIL-2R)", "labs")
    assert sil2r.attributes["loinc"] == "33209-6"
    assert flowsheet.find_item("呼吸频率") is None


def test_03_unknown_site_lists_the_available_ones() -> None:
    with pytest.raises(ConfigurationError) as err:
        load_site_mapping("tianjin", MAPPINGS)
    text = str(err.value)
    assert "tianjin_ref" in text
    assert "example_wide_en" in text
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_site_mapping(CASES / "no_such_mapping.yaml", MAPPINGS)


def test_04_unknown_entity_names_file_key_path_and_fix() -> None:
    with pytest.raises(MappingError) as err:
        load_site_mapping(CASES / "mapping_unknown_entity.yaml", MAPPINGS)
    text = str(err.value)
    assert "mapping_unknown_entity.yaml" in text
    assert "files.vitals_flowsheet.csv.items.体温.target: 'vital' is not an entity" in text
    assert "Fix: use one of:" in text
    assert "vitals" in err.value.fix  # type: ignore[operator]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``a/b/c`` (keys separated by '/') in the raw mapping."""

    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    """A mutation removing ``a/b/c``."""

    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = raw
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


FS = f"files/{FLOWSHEET}"

BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "column names no canonical column": (
        _set("files/cart_infusion.csv/columns/批号/field", "infusion.lot_no"),
        "files.cart_infusion.csv.columns.批号.field",
        "'lot_no' is not a column of infusion",
    ),
    "field names no entity": (
        _set("files/cart_infusion.csv/columns/批号/field", "infuson.lot"),
        "files.cart_infusion.csv.columns.批号.field",
        "'infuson' is not an entity",
    ),
    "patient key is not a column": (
        _set("files/icans.csv/patient_key", "病人号"),
        "files.icans.csv.patient_key",
        "'病人号' is not one of the declared columns",
    ),
    "unknown layout": (_set(f"{FS}/layout", "tall"), f"files.{FLOWSHEET}.layout", "'tall'"),
    "unknown encoding": (
        _set("files/patients.csv/encoding", "gb-9999"),
        "files.patients.csv.encoding",
        "not a known ASCII-compatible encoding",
    ),
    "encoding that is not ASCII-compatible": (
        _set("files/patients.csv/encoding", "utf-16"),
        "files.patients.csv.encoding",
        "not a known ASCII-compatible encoding",
    ),
    "misspelt key": (
        _set("files/cart_infusion.csv/columns/产品名称", {"feild": "infusion.product"}),
        "files.cart_infusion.csv.columns.产品名称.feild",
        "did you mean 'field'",
    ),
    "two item codes equal after NFKC": (
        _set(f"{FS}/items/体温 ", {"target": "vitals"}),
        f"files.{FLOWSHEET}.items.体温 ",
        "same item after NFKC + strip",
    ),
    "lookup names no table": (
        _set("files/mar.xlsx/columns/药品名称/lookup", "drug"),
        "files.mar.xlsx.columns.药品名称.lookup",
        "'drug' names no table",
    ),
    "register not declared": (
        _set("patient_link/file", "register.csv"),
        "patient_link.file",
        "'register.csv' is not declared under files",
    ),
    "long layout without item column": (
        _delete(f"{FS}/item_column"),
        f"files.{FLOWSHEET}",
        "a long layout needs item_column",
    ),
    "two columns fill one field": (
        _set("files/cart_infusion.csv/columns/批号/field", "infusion.product"),
        "files.cart_infusion.csv.columns",
        "infusion.product is filled by both",
    ),
    "item target not routed by the item column": (
        _set(f"{FS}/items/体温/target", "labs"),
        f"files.{FLOWSHEET}.items.体温.target",
        "'labs' is not routed by column '项目'",
    ),
    "unknown column type": (
        _set("files/icans.csv/columns/ICE评分/type", "numbr"),
        "files.icans.csv.columns.ICE评分.type",
        "'numbr' is not a column type",
    ),
    "unknown timezone": (_set("timezone", "Mars/Olympus"), "timezone", "not an IANA timezone"),
    "fixed and printed unit together": (
        _set(f"{FS}/columns/结果/unit_column", "单位"),
        f"files.{FLOWSHEET}.columns.结果",
        "both 'unit' and 'unit_column'",
    ),
    "files and tables together": (
        _set("tables", {"x": {}}),
        "(top level)",
        "declare exactly one of 'files'",
    ),
    "source kind disagrees": (
        _set("source", {"kind": "sql"}),
        "source.kind",
        "'sql' does not match the 'files' section",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_05_broken_mappings_name_the_key_path_and_fix(
    case: str, tianjin_raw: dict[str, Any], tmp_path: Path
) -> None:
    mutate, where, problem = BROKEN[case]
    raw = copy.deepcopy(tianjin_raw)
    if case == "fixed and printed unit together":
        raw["files"][FLOWSHEET]["columns"]["结果"]["unit"] = "℃"
    mutate(raw)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(MappingError) as err:
        load_site_mapping(path, MAPPINGS)
    text = str(err.value)
    assert f"broken.yaml: {where}: " in text
    assert problem in text
    assert err.value.fix


def test_06_invalid_yaml_and_non_mappings_are_mapping_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: x\nfiles: [\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"bad\.yaml: invalid YAML"):
        load_site_mapping(bad, MAPPINGS)
    with pytest.raises(MappingError, match="expected a site mapping"):
        parse_site_mapping(["not", "a", "mapping"], tmp_path / "list.yaml")


def _wide_raw() -> dict[str, Any]:
    return yaml.safe_load((MAPPINGS / "sites" / "example_wide_en.yaml").read_text("utf-8"))


WIDE = "files/vitals_wide.csv"

BROKEN_WIDE: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "column charts an unlisted item": (
        _set(f"{WIDE}/columns/HR/item", "Pulse"),
        "files.vitals_wide.csv.columns.HR.item",
        "'Pulse' is not in files.vitals_wide.csv.items",
    ),
    "item without a column": (
        _set(f"{WIDE}/items/RR", {"target": "vitals"}),
        "files.vitals_wide.csv.items.RR",
        "no column charts this item",
    ),
    "wide item without target": (
        _set(f"{WIDE}/items/HR", {"loinc": "8867-4"}),
        "files.vitals_wide.csv.items.HR.target",
        "missing",
    ),
    "item column in a flat file": (
        _set("files/meds.csv/columns/dose/item", "dose"),
        "files.meds.csv.columns.dose.item",
        "'item' is only used by layout: wide",
    ),
    "shared column feeds no item": (
        _set(f"{WIDE}/columns/charted_at/field", "vitals[].at | labs[].at"),
        "files.vitals_wide.csv.columns.charted_at.field",
        "no item of files.vitals_wide.csv.items feeds 'labs'",
    ),
    "row-level unit in a wide file": (
        _set(f"{WIDE}/columns/nurse/field", "unit"),
        "files.vitals_wide.csv.columns.nurse.field",
        "a wide row has no single unit",
    ),
    "unit column not declared": (
        _set(f"{WIDE}/columns/Temp/unit_column", "Temperature unit"),
        "files.vitals_wide.csv.columns.Temp.unit_column",
        "'Temperature unit' is not a declared column",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_WIDE), ids=list(BROKEN_WIDE))
def test_07_broken_wide_mappings_name_the_key_path(case: str, tmp_path: Path) -> None:
    mutate, where, problem = BROKEN_WIDE[case]
    raw = _wide_raw()
    mutate(raw)
    with pytest.raises(MappingError) as err:
        parse_site_mapping(raw, tmp_path / "wide.yaml")
    assert f"wide.yaml: {where}: " in str(err.value)
    assert problem in str(err.value)


def test_08_a_database_site_uses_the_same_specs_under_tables(tmp_path: Path) -> None:
    raw = _wide_raw()
    raw["source"] = {"kind": "sql"}
    raw["tables"] = {}
    for name, spec in raw.pop("files").items():
        for key in ("format", "encoding", "delimiter", "quotechar", "quoting"):
            spec.pop(key, None)
        raw["tables"][name.removesuffix(".csv")] = spec
    raw["patient_link"]["file"] = "patients"
    mapping = parse_site_mapping(raw, tmp_path / "db.yaml")
    assert mapping.kind == "sql"
    spec = mapping.files["vitals_wide"]
    assert (spec.format, spec.table, spec.where) == ("sql", "vitals_wide", "tables.vitals_wide")
    assert spec.outputs[0].assigns[-1].literal == "local:example_wide_en:vitals_wide:Temp"
    raw["tables"]["labs"]["encoding"] = "utf-8"
    with pytest.raises(MappingError, match=r"tables\.labs\.encoding: a database table has no"):
        parse_site_mapping(raw, tmp_path / "db.yaml")
