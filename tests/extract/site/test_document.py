"""The pydantic models of a site mapping: unknown keys, no coercion, free-form lookups and items."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cart_etl.errors import MappingError
from cart_etl.extract.site.parse import parse_site_mapping
from tests.extract.conftest import MAPPINGS

TIANJIN_YAML = MAPPINGS / "sites" / "tianjin_ref.yaml"
FLOWSHEET = "vitals_flowsheet.csv"
INFUSION = "files/cart_infusion.csv"


@pytest.fixture(scope="module")
def tianjin_raw() -> dict[str, Any]:
    return yaml.safe_load(TIANJIN_YAML.read_text(encoding="utf-8"))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = raw
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()

# mutation, key path, problem, fix (fragments of the message)
INVALID: dict[str, tuple[Callable[[dict[str, Any]], None], str, str, str]] = {
    "typo at the top level": (_set("sitee", "x"), "sitee", "unknown key 'sitee'", "'site'?"),
    "typo of a mapping-valued spec key": (
        _set(f"{INFUSION}/colums", {"x": "infusion.lot"}),
        "files.cart_infusion.csv.colums",
        "unknown key 'colums'",
        "did you mean 'columns'?",
    ),
    "typo in an item": (
        _set(f"files/{FLOWSHEET}/items/体温/targt", "vitals"),
        f"files.{FLOWSHEET}.items.体温.targt",
        "unknown key 'targt'",
        "did you mean 'target'? Known keys: target.",
    ),
    "typo in patient_link": (
        _set("patient_link/filee", "patients.csv"),
        "patient_link.filee",
        "unknown key 'filee'",
        "did you mean 'file'?",
    ),
    "typo in source": (
        _set("source", {"knd": "files"}),
        "source.knd",
        "unknown key 'knd'",
        "did you mean 'kind'?",
    ),
    "unknown column key": (
        _set(f"{INFUSION}/columns/批号", {"field": "infusion.lot", "colour": "red"}),
        "files.cart_infusion.csv.columns.批号.colour",
        "unknown key 'colour'",
        "Known keys: blank, field, item,",
    ),
    "unknown scalar spec key": (
        _set(f"{INFUSION}/owner", "ward 3"),
        "files.cart_infusion.csv.owner",
        "unknown key 'owner'",
        "Known keys: alternate_datetime_formats,",
    ),
    "text where a number is expected": (
        _set(f"{INFUSION}/header_row", "2"),
        "files.cart_infusion.csv.header_row",
        "'2' is not a row number",
        "use 1 or more.",
    ),
    "text where a boolean is expected": (
        _set(f"{INFUSION}/bom", "yes"),
        "files.cart_infusion.csv.bom",
        "expected true or false, got 'yes'",
        "write true or false.",
    ),
    "a key that is not text": (
        lambda raw: raw["files"]["cart_infusion.csv"]["columns"].update({1: "infusion.lot"}),
        "files.cart_infusion.csv.columns.1",
        "key 1 is not text",
        "quote the key",
    ),
    "a required key missing": (
        _set(f"{INFUSION}/patient_key", _DELETE),
        "files.cart_infusion.csv.patient_key",
        "missing",
        "add patient_key:",
    ),
    "an empty section": (
        _set("files", None),
        "files",
        "expected files: <name>: <spec> (a mapping), got None",
        "write files:",
    ),
    "a file-only key on a table": (
        lambda raw: raw.update(tables={"t": {**raw.pop("files")["icans.csv"], "sheet": "x"}}),
        "tables.t.bom",
        "a database table has no file format, encoding or CSV dialect",
        "remove 'bom'",
    ),
    "a lookup naming no table": (
        _set(f"files/{FLOWSHEET}/columns/项目/lookup", "item"),
        f"files.{FLOWSHEET}.columns.项目.lookup",
        f"'item' names no table of files.{FLOWSHEET}",
        f"add files.{FLOWSHEET}.item or use one of: items,",
    ),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_01_invalid_mappings_name_the_file_key_path_problem_and_fix(
    case: str, tianjin_raw: dict[str, Any]
) -> None:
    mutate, where, problem, fix = INVALID[case]
    raw = copy.deepcopy(tianjin_raw)
    mutate(raw)
    with pytest.raises(MappingError) as err:
        parse_site_mapping(raw, Path("broken.yaml"))
    assert err.value.message.startswith(f"broken.yaml: {where}: "), err.value.message
    assert problem in err.value.message
    assert fix in (err.value.fix or "")


def test_02_a_typo_is_reported_before_what_it_causes(tianjin_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(tianjin_raw)
    raw["files"]["icans.csv"]["colums"] = raw["files"]["icans.csv"].pop("columns")
    with pytest.raises(MappingError) as err:
        parse_site_mapping(raw, Path("broken.yaml"))
    assert "files.icans.csv.colums: unknown key 'colums'" in str(
        err.value
    )  # not "columns: missing"


def test_03_lookup_tables_and_item_attributes_are_free_form(tianjin_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(tianjin_raw)
    raw["files"]["icans.csv"]["grades"] = {"I": 1, "II": 2}
    raw["files"][FLOWSHEET]["items"]["体温"]["snomed"] = "386725007"
    mapping = parse_site_mapping(raw, Path("ok.yaml"))
    assert mapping.files["icans.csv"].lookups["grades"] == {"I": 1, "II": 2}
    assert "grades" not in mapping.files["icans.csv"].options
    temperature = mapping.files[FLOWSHEET].items["体温"]
    assert temperature.target == "vitals"
    assert temperature.attributes["snomed"] == "386725007"
    assert "target" not in temperature.attributes
