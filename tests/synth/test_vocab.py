"""The vocabularies the site writer prints agree with mappings/sites/tianjin_ref.yaml.

Most of them are read from that file (cart_etl.synth.vocab), so for those this checks the
reading; the ones kept explicit in the writer (dose units, oxygen devices) and the codes
the protocol fixes are checked against the mapping as written.
"""

from __future__ import annotations

from cart_etl.synth import vocab
from cart_etl.synth.site.labs import reference_text
from cart_etl.synth.site.mar import DOSE_UNIT_NAMES
from tests.synth.site.records import EXPECTED_LOINC

# Codes the study protocol fixes for drugs and vasopressors (RxNorm).
EXPECTED_RXNORM = {
    "tocilizumab": "612865",
    "methylprednisolone": "6902",
    "dexamethasone": "3264",
    "prednisone": "8640",
    "gcsf": "68442",
    "norepinephrine": "7512",
    "dopamine": "3628",
    "epinephrine": "3992",
    "phenylephrine": "8163",
    "vasopressin": "11149",
}


def test_writer_vocabularies_agree_with_mapping(site_mapping: dict) -> None:
    files = site_mapping["files"]
    reg = files["patients.csv"]["columns"]
    assert reg["性别"]["values"] == {v: k for k, v in vocab.SEX_NAMES.items()}
    assert reg["危险分层"]["values"] == {v: k for k, v in vocab.RISK_NAMES.items()}
    assert reg["既往异基因造血干细胞移植"]["values"] == {v: k for k, v in vocab.YES_NO.items()}
    source = files["cart_infusion.csv"]["columns"]["细胞来源"]["values"]
    assert source == {v: k for k, v in vocab.CELL_SOURCE_NAMES.items()}

    flow = files["vitals_flowsheet.csv"]
    vitals = {k: v for k, v in flow["items"].items() if v["target"] == "vitals"}
    assert {v["item"]: k for k, v in vitals.items()} == vocab.VITAL_ITEM_NAMES
    assert {v["item"]: v["default_unit"] for v in vitals.values()} == vocab.VITAL_UNIT_NAMES
    assert [k for k, v in flow["items"].items() if v["target"] == "oxygen"] == [
        vocab.OXYGEN_ITEM_NAME
    ]
    for printed in {*vocab.VITAL_UNIT_NAMES.values(), vocab.FAHRENHEIT_UNIT}:
        assert printed in flow["units"]

    labs = files["lab_results.csv"]
    assert {v["test"]: k for k, v in labs["tests"].items()} == vocab.LAB_TEST_NAMES
    assert {v["test"]: v["default_unit"] for v in labs["tests"].values()} == vocab.LAB_UNIT_NAMES
    assert {v["test"]: v["loinc"] for v in labs["tests"].values()} == EXPECTED_LOINC
    for printed in {*vocab.LAB_UNIT_NAMES.values(), vocab.CRP_ALT_UNIT}:
        assert printed in labs["units"]
    ranges = labs["reference_ranges"]
    for test, (low, high) in vocab.LAB_REFERENCE_RANGES.items():
        assert ranges[test] == reference_text(low, high)
    for sex, (low, high) in vocab.HGB_REFERENCE_RANGES.items():
        assert ranges["hgb"][sex] == reference_text(low, high)

    mar = files["mar.xlsx"]
    assert {v["drug"]: k for k, v in mar["drugs"].items()} == vocab.DRUG_NAMES
    assert {v["route"]: k for k, v in mar["routes"].items()} == vocab.ROUTE_NAMES
    assert {v: k for k, v in mar["indications"].items()} == vocab.INDICATION_NAMES
    for printed in {*DOSE_UNIT_NAMES.values(), "g", "mg/kg"}:
        assert printed in mar["dose_units"]

    vaso = files["vasopressors.csv"]
    assert {v["drug"]: k for k, v in vaso["drugs"].items()} == vocab.VASOPRESSOR_NAMES
    assert {vaso["units"][k]: k for k in vocab.RATE_UNIT_NAMES.values()} == vocab.RATE_UNIT_NAMES
    defaults = {v["drug"]: vaso["units"][v["default_unit"]] for v in vaso["drugs"].values()}
    assert defaults == vocab.VASOPRESSOR_DEFAULT_UNITS

    rxnorm = {v["drug"]: v["rxnorm"] for v in (*mar["drugs"].values(), *vaso["drugs"].values())}
    assert rxnorm == EXPECTED_RXNORM
    mrd = files["response_day28.csv"]["columns"]["MRD(流式,%)"]["special_values"]
    assert mrd == {vocab.MRD_NEGATIVE: 0.0}
    assert {
        v: k for k, v in files["followup.csv"]["death_causes"].items()
    } == vocab.DEATH_CAUSE_NAMES
    assert {v: k for k, v in files["infections.csv"]["sites"].items()} == vocab.INFECTION_SITE_NAMES
