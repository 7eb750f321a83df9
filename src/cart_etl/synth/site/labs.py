"""Writes the LIS export (lab_results.csv): one row per result, by collection time.

Each row names its specimen (one LIS number per collection time and tube, e.g. cytokines
and blood counts go to different tubes), the local test name, the result with the test's
usual number of places, the printed unit, the reference range (haemoglobin by sex) and the
↑/↓ flag. Timestamps are ISO 8601 with the site's UTC offset.
"""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter
from typing import Final

from cart_etl.synth.model import SITE_TZ, ClinicalRecord
from cart_etl.synth.site.cells import (
    FORMATTERS,
    NumberTexts,
    local_time,
    remember,
    shortest_number,
)
from cart_etl.synth.site.layouts import LABS, Event, Row
from cart_etl.synth.vocab import (
    FLAG_HIGH,
    FLAG_LOW,
    HGB_REFERENCE_RANGES,
    LAB_REFERENCE_RANGES,
    LAB_TEST_NAMES,
    LAB_UNIT_NAMES,
)

LAB_DECIMALS: Final = {
    "il6": 2,
    "il10": 2,
    "sil2r": 0,
    "tnf_alpha": 2,
    "ifn_gamma": 2,
    "crp": 2,
    "ferritin": 1,
    "wbc": 2,
    "anc": 2,
    "plt": 0,
    "hgb": 0,
    "marrow_blasts": 2,
}
# Specimen-number prefix per tube/panel: LIS numbers specimens, not results.
LAB_PANELS: Final = {
    "il6": "C",
    "il10": "C",
    "sil2r": "C",
    "tnf_alpha": "C",
    "ifn_gamma": "C",
    "crp": "B",
    "ferritin": "B",
    "wbc": "H",
    "anc": "H",
    "plt": "H",
    "hgb": "H",
    "marrow_blasts": "M",
}

_LAB_TEXTS: Final[dict[str, NumberTexts]] = {test: {} for test in LAB_DECIMALS}


def reference(test: str, sex: str) -> tuple[float, float]:
    """Reference interval of a test for a patient of ``sex``."""
    return HGB_REFERENCE_RANGES[sex] if test == "hgb" else LAB_REFERENCE_RANGES[test]


def reference_text(low: float, high: float) -> str:
    """参考范围 cell, e.g. '3.5-9.5'."""
    return f"{shortest_number(low)}-{shortest_number(high)}"


def flag(value: float, low: float, high: float) -> str:
    """异常标识: ↑ above, ↓ below the reference interval, blank inside."""
    if value > high:
        return FLAG_HIGH
    if value < low:
        return FLAG_LOW
    return ""


class LabRows:
    """Builds lab_results.csv rows, numbering specimens across the whole export."""

    def __init__(self) -> None:
        """Start specimen numbering at 1."""
        self._specimens = 0

    def __call__(self, mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
        """lab_results.csv rows; one specimen number per collection time and tube."""
        events = sorted(record.labs, key=attrgetter("at"))
        fmt = FORMATTERS[LABS.datetime_format or ""]
        sex = record.demographics.sex
        specimens: dict[tuple[datetime, str], str] = {}
        ranges = {test: reference(test, sex) for test in LAB_DECIMALS}
        range_texts = {test: reference_text(*bounds) for test, bounds in ranges.items()}
        rows: list[Row] = []
        last_at: datetime | None = None
        local, stamp = datetime.min.replace(tzinfo=SITE_TZ), ""  # set by the first row
        for ev in events:
            if ev.at != last_at:
                last_at = ev.at
                local = local_time(ev.at)
                stamp = fmt(local)
            panel = LAB_PANELS[ev.test]
            specimen = specimens.get((local, panel))
            if specimen is None:
                self._specimens += 1
                specimen = (
                    f"{panel}{local.year % 100:02d}{local.month:02d}{local.day:02d}"
                    f"{self._specimens:07d}"
                )
                specimens[local, panel] = specimen
            texts = _LAB_TEXTS[ev.test]
            text = texts.get(ev.value)
            if text is None:
                text = remember(texts, ev.value, LAB_DECIMALS[ev.test])
            rows.append(
                [
                    mrn,
                    specimen,
                    stamp,
                    LAB_TEST_NAMES[ev.test],
                    text,
                    LAB_UNIT_NAMES[ev.test],
                    range_texts[ev.test],
                    flag(ev.value, *ranges[ev.test]),
                ]
            )
        return rows, list(events)
