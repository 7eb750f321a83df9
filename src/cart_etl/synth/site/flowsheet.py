"""Writes the nursing flowsheet (vitals_flowsheet.csv): vital signs and oxygen support.

Long format, one row per charted item in time order: the local item name (体温, 收缩压,
...), the value with the item's usual number of places and its printed unit; oxygen rows
(吸氧方式) carry the device and flow as the nurse writes them ('鼻导管 3L/min') and no unit.
"""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter
from typing import Final

from cart_etl.synth.model import ClinicalRecord, OxygenCharting, VitalSign
from cart_etl.synth.site.cells import (
    FORMATTERS,
    NumberTexts,
    local_time,
    remember,
    shortest_number,
)
from cart_etl.synth.site.layouts import VITALS, Event, Row
from cart_etl.synth.vocab import OXYGEN_ITEM_NAME, VITAL_ITEM_NAMES, VITAL_UNIT_NAMES

VITAL_DECIMALS: Final = {"temp": 1, "sbp": 0, "dbp": 0, "hr": 0, "spo2": 0}
# Explicit: the site mapping holds match patterns for these (regexes, checked in order,
# e.g. '^储氧面罩' before '^面罩'), not the one text the nurse charts for each device.
OXYGEN_DEVICE_NAMES: Final = {
    "room_air": "未吸氧",
    "nasal_cannula": "鼻导管",
    "high_flow_nasal_cannula": "高流量",
    "face_mask": "面罩",
    "non_rebreather": "储氧面罩",
    "venturi": "文丘里面罩",
    "cpap": "无创呼吸机(CPAP)",
    "bipap": "无创呼吸机(BiPAP)",
    "mechanical_ventilation": "有创机械通气",
}

_VITAL_TEXTS: Final[dict[str, NumberTexts]] = {item: {} for item in VITAL_DECIMALS}


def oxygen_text(charting: OxygenCharting) -> str:
    """Device and flow as the nurse charts them, e.g. '鼻导管 3L/min'."""
    name = OXYGEN_DEVICE_NAMES[charting.device]
    if charting.flow_l_min is None:
        return name
    return f"{name} {shortest_number(charting.flow_l_min)}L/min"


def flowsheet_rows(mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
    """vitals_flowsheet.csv rows: every VitalSign and OxygenCharting, in time order."""
    events: list[VitalSign | OxygenCharting] = sorted(
        [*record.vitals, *record.oxygen], key=attrgetter("at")
    )
    fmt = FORMATTERS[VITALS.datetime_format or ""]
    names, units, caches = VITAL_ITEM_NAMES, VITAL_UNIT_NAMES, _VITAL_TEXTS
    rows: list[Row] = []
    last_at: datetime | None = None
    stamp = ""
    # This loop runs ~7 M times for a 10 000-patient cohort, hence the local aliases.
    for ev in events:
        # Vitals are charted in rounds: one formatted time serves several rows.
        if ev.at != last_at:
            last_at = ev.at
            stamp = fmt(local_time(ev.at))
        if type(ev) is VitalSign:
            item = ev.item
            texts = caches[item]
            text = texts.get(ev.value)
            if text is None:
                text = remember(texts, ev.value, VITAL_DECIMALS[item])
            rows.append([mrn, stamp, names[item], text, units[item]])
        else:
            assert isinstance(ev, OxygenCharting)
            rows.append([mrn, stamp, OXYGEN_ITEM_NAME, oxygen_text(ev), ""])
    return rows, list(events)
