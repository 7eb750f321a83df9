"""Background (non-CAR-T) patients of `cart-etl synth --background-patients N`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle

from cart_etl.synth.fhir.background import (
    background_key,
    background_patient_id,
    build_background_patient,
)
from cart_etl.synth.fhir.codes import LOCAL_SYSTEM, STUDY_ID_SYSTEM
from cart_etl.synth.fhir.context import Ref
from cart_etl.synth.fhir.elements import DUMP_OPTS
from cart_etl.synth.generate import background_after, generate

COHORT = 4
BACKGROUND = 16
# Codes of a CAR-T administration (the site's local code, ICD-10-PCS CAR-T introduction
# codes, HCPCS of the licensed products) and anything naming the product class.
CART_MARKERS = (
    "cart-infusion",
    "cart-dose",
    "cart-cells",
    "XW033C7",
    "XW043C7",
    "XW033H7",
    "XW043H7",
    "XW033M7",
    "XW043M7",
    "Q2041",
    "Q2042",
    "CAR-T",
    "CAR T",
    "chimeric antigen",
    LOCAL_SYSTEM,
    STUDY_ID_SYSTEM,
)

Resource = tuple[str, str, bytes, tuple[Ref, ...]]


def build(seed: int, index: int) -> list[Resource]:
    out: list[Resource] = []

    def emit(rtype: str, rid: str, body: dict[str, Any], refs: tuple[Ref, ...], flags: int) -> None:
        assert flags == 0
        out.append((rtype, rid, orjson.dumps(body, option=DUMP_OPTS), refs))

    build_background_patient(emit, seed, index)
    return out


@pytest.fixture(scope="module")
def many() -> list[list[Resource]]:
    return [build(2025, i) for i in range(300)]


@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("background")
    plain, mixed = root / "plain", root / "mixed"
    generate(plain, patients=COHORT, seed=7)
    generate(mixed, patients=COHORT, seed=7, background_patients=BACKGROUND)
    return plain, mixed


def test_resource_types_and_volume(many: list[list[Resource]]) -> None:
    types = Counter(r[0] for patient in many for r in patient)
    assert set(types) == {
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "MedicationAdministration",
        "Procedure",
        "Claim",
        "ExplanationOfBenefit",
        "Immunization",
    }
    assert types["Patient"] == len(many)
    mean = sum(len(p) for p in many) / len(many)
    assert 100 <= mean <= 300


def test_codes_of_a_hospital(many: list[list[Resource]]) -> None:
    text = b"\n".join(r[2] for patient in many for r in patient).decode()
    for code in ("8310-5", "8867-4", "85354-9", "8480-6", "8462-4", "29463-7"):
        assert f'"code":"{code}"' in text, code  # vital signs
    for code in ("718-7", "6690-2", "1988-5", "2160-0"):
        assert f'"code":"{code}"' in text, code  # labs
    for code in ("161", "2193", "3264", "612865"):
        assert f'"code":"{code}"' in text, code  # RxNorm, incl. non-CAR-T tocilizumab/dex
    assert "http://hl7.org/fhir/sid/icd-10-cm" in text
    toci = [
        r for p in many for r in p if r[0] == "MedicationAdministration" and b'"612865"' in r[2]
    ]
    assert toci, "some background patients get tocilizumab (RA, COVID-19)"


def test_no_cart_evidence_and_no_study_id(many: list[list[Resource]]) -> None:
    for patient in many:
        for rtype, _, body, _ in patient:
            text = body.decode()
            for marker in CART_MARKERS:
                assert marker.lower() not in text.lower(), (rtype, marker)
        (pat,) = [orjson.loads(r[2]) for r in patient if r[0] == "Patient"]
        assert pat["identifier"], "an MRN"
        for ident in pat["identifier"]:
            assert ident["system"] != STUDY_ID_SYSTEM
            assert ident["type"]["coding"][0]["code"] == "MR"


def test_ids_and_references(many: list[list[Resource]]) -> None:
    seen: set[str] = set()
    for index, patient in enumerate(many):
        pid = background_patient_id(index)
        assert patient[0][:2] == ("Patient", pid)
        ids = {r[1] for r in patient}
        assert len(ids) == len(patient)
        assert not ids & seen
        seen |= ids
        for _, _, _, refs in patient:
            for element, target, rid, _ in refs:
                if element in ("subject", "patient"):
                    assert (target, rid) == ("Patient", pid)
                else:
                    assert rid in ids
    assert "/" in background_key(0)  # no study id has a slash: no id collides with the cohort


def test_deterministic_for_a_seed() -> None:
    assert build(11, 5) == build(11, 5)
    assert build(11, 5) != build(12, 5)
    assert build(11, 5) != build(11, 6)


def test_bundles_validate_as_r4b(synth_pair: tuple[Path, Path]) -> None:
    _, mixed = synth_pair
    for index in range(3):
        path = mixed / "fhir" / "bundles" / f"{background_patient_id(index)}.json"
        Bundle.model_validate(orjson.loads(path.read_bytes()))


def test_interleaving_covers_every_background_patient() -> None:
    for cohort, background in ((1, 9), (4, 16), (61, 549), (7, 3), (5, 0)):
        spread = [i for k in range(cohort) for i in background_after(k, cohort, background)]
        assert spread == list(range(background))


def _lines(root: Path) -> dict[str, list[bytes]]:
    return {
        p.name: p.read_bytes().splitlines() for p in sorted((root / "fhir" / "ndjson").iterdir())
    }


def test_cohort_unchanged_by_background(synth_pair: tuple[Path, Path]) -> None:
    plain, mixed = synth_pair
    plain_lines, mixed_lines = _lines(plain), _lines(mixed)
    assert set(plain_lines) < set(mixed_lines)
    background_ids = set()
    for name, lines in mixed_lines.items():
        cohort = [x for x in lines if x in set(plain_lines.get(name, []))]
        assert cohort == plain_lines.get(name, []), name  # same bytes, same order
        background_ids |= {orjson.loads(x)["id"] for x in lines if x not in set(cohort)}
    patients = [orjson.loads(x) for x in mixed_lines["Patient.ndjson"]]
    assert len(patients) == COHORT + BACKGROUND
    assert sum(p["id"] in background_ids for p in patients) == BACKGROUND
    bundles = {p.name for p in (plain / "fhir" / "bundles").iterdir()}
    for name in bundles:
        a = (plain / "fhir" / "bundles" / name).read_bytes()
        assert a == (mixed / "fhir" / "bundles" / name).read_bytes(), name
    mixed_bundles = {p.name for p in (mixed / "fhir" / "bundles").iterdir()}
    assert len(mixed_bundles - bundles) == BACKGROUND
    # The site export and the truth stay the study's extract.
    for sub in ("site_export", "truth"):
        for path in sorted((plain / sub).iterdir()):
            if path.name != "defects.csv":  # FHIR defect rows name NDJSON line numbers
                assert path.read_bytes() == (mixed / sub / path.name).read_bytes(), path
