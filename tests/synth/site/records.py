"""A hand-made 24-patient cohort for the site-export writer tests, and readers of its files.

``RECORDS`` are variants of ``example_record()`` (own ids and weights, ~6 days of vitals,
daily labs, every oxygen device, two patients never infused); ``write_site_export``
writes them with ``SiteExportWriter``. The ``site_exports`` fixture (tests/synth/conftest.py)
holds one clean and one defective export of them.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from openpyxl import load_workbook

from cart_etl.synth.defects.catalogue import DefectRecord
from cart_etl.synth.model import (
    ClinicalRecord,
    DrugAdministration,
    IcansAssessment,
    LabResult,
    LabTest,
    OxygenCharting,
    VasopressorInfusion,
    VitalItem,
    VitalSign,
    example_record,
)
from cart_etl.synth.site.cells import xlsx_cell_text
from cart_etl.synth.site.layouts import LAYOUTS, MAR
from cart_etl.synth.site.writer import SiteExportWriter
from cart_etl.synth.vocab import MAR_SHEET

MAPPING = Path(__file__).resolve().parents[3] / "mappings" / "sites" / "tianjin_ref.yaml"
N_PATIENTS = 24
NOT_INFUSED = {20, 21}
SEED = 20240630

# Codes the study protocol fixes for the labs (LOINC).
EXPECTED_LOINC: dict[LabTest, str] = {
    "il6": "26881-3",
    "il10": "26848-2",
    "sil2r": "33209-6",
    "tnf_alpha": "3074-2",
    "ifn_gamma": "27415-9",
    "crp": "1988-5",
    "ferritin": "2276-4",
    "wbc": "6690-2",
    "anc": "751-8",
    "plt": "777-3",
    "hgb": "718-7",
    "marrow_blasts": "11118-7",
}


def variant_record(i: int) -> ClinicalRecord:
    """example_record() with its own ids, weight, ~6 days of vitals and daily labs."""
    base = example_record()
    assert base.infusion is not None
    t0 = base.infusion.at
    weight = 58.0 + (i % 4) * 5.5
    demo = replace(
        base.demographics,
        study_id=f"CART-{i:03d}",
        mrn=f"20210{48170 + 37 * i:05d}",
        sex="M" if i % 2 else "F",
        weight_kg=weight,
        name=f"测试患者{i}",
    )
    vitals = list(base.vitals)
    values: dict[VitalItem, float] = {"temp": 36.4, "sbp": 108, "dbp": 66, "hr": 84, "spo2": 96}
    for k in range(72):  # every 2 h for 6 days, one round of five items
        at = t0 + timedelta(hours=2 * k, minutes=15)
        for item, value in values.items():
            step = (k + i) % 9
            vitals.append(
                VitalSign(at, item, round(value + step * (0.1 if item == "temp" else 1), 1))
            )
    vitals.sort(key=lambda v: v.at)
    oxygen = [
        *base.oxygen,
        OxygenCharting(t0 + timedelta(hours=95), "face_mask", 8.0),
        OxygenCharting(t0 + timedelta(hours=97), "venturi", 6.0),
        OxygenCharting(t0 + timedelta(hours=99), "non_rebreather", 10.0),
        OxygenCharting(t0 + timedelta(hours=101), "cpap", None),
        OxygenCharting(t0 + timedelta(hours=103), "bipap", None),
        OxygenCharting(t0 + timedelta(hours=105), "mechanical_ventilation", None),
        OxygenCharting(t0 + timedelta(hours=107), "nasal_cannula", 2.5),
    ]
    labs = list(base.labs)
    for day in range(1, 15):
        at = t0 + timedelta(days=day, hours=-3)
        for n, test in enumerate(EXPECTED_LOINC):
            labs.append(LabResult(at, test, round(5.0 + 3.7 * day + n, 2)))
    toci = round(8 * weight)
    drugs = [
        replace(base.drugs[0], dose=float(toci)),
        *base.drugs[1:],
        DrugAdministration(t0 + timedelta(days=3), "dexamethasone", 10.0, "IV", "CRS"),
        DrugAdministration(t0 + timedelta(days=4), "prednisone", 30.0, "PO", "CRS"),
    ]
    vaso = [
        *base.vasopressors,
        VasopressorInfusion(
            t0 + timedelta(hours=40), t0 + timedelta(hours=44), "vasopressin", 0.03, "U/min"
        ),
    ]
    icans = [*base.icans, IcansAssessment(t0 + timedelta(days=3), None, 1)]
    record = replace(
        base,
        demographics=demo,
        infusion=replace(base.infusion, weight_kg=weight),
        vitals=vitals,
        oxygen=oxygen,
        labs=labs,
        drugs=drugs,
        vasopressors=vaso,
        icans=icans,
    )
    if i in NOT_INFUSED:
        record.infusion = None
    return record


RECORDS = [variant_record(i) for i in range(N_PATIENTS)]


def write_site_export(out_dir: Path, *, defects: bool, seed: int = SEED) -> list[DefectRecord]:
    with SiteExportWriter(out_dir, defects=defects, seed=seed) as writer:
        for record in RECORDS:
            writer.write(record)
    return writer.close()


@dataclass
class Exports:
    clean: Path
    dirty: Path
    defects: list[DefectRecord]


def read_export_file(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of an export file, every cell as text."""
    layout = LAYOUTS[path.name]
    if layout is MAR:
        wb = load_workbook(path)
        ws = wb[MAR_SHEET]
        rows = [[xlsx_cell_text(c) for c in row] for row in ws.iter_rows(values_only=True)]
        wb.close()
    else:
        with path.open(encoding=layout.encoding, newline="") as fh:
            rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def defects_by_file(defects: list[DefectRecord]) -> dict[str, list[DefectRecord]]:
    out: dict[str, list[DefectRecord]] = defaultdict(list)
    for d in defects:
        out[d.file.removeprefix("site_export/")].append(d)
    return out


def inserted_rows(records: list[DefectRecord]) -> list[int]:
    return sorted(int(d.row) for d in records if d.kind == "duplicated_row")


def clean_row(dirty_row: int, inserted: list[int]) -> int:
    """Row number in the clean file of a (non-inserted) row of the defective file."""
    return dirty_row - sum(1 for r in inserted if r < dirty_row)
