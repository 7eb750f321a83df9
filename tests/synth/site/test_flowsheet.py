"""Tests of the nursing flowsheet rows: time order, and oxygen texts the mapping parses."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime

import pytest

from cart_etl.synth.model import SITE_TZ, OxygenCharting, OxygenDevice
from cart_etl.synth.site.flowsheet import OXYGEN_DEVICE_NAMES, oxygen_text
from tests.synth.site.records import Exports, read_export_file


def test_flowsheet_is_in_time_order_per_patient(site_exports: Exports) -> None:
    _, rows = read_export_file(site_exports.clean / "vitals_flowsheet.csv")
    by_mrn: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_mrn[row[0]].append(row[1])
    for stamps in by_mrn.values():
        parsed = [datetime.strptime(s, "%Y/%m/%d %H:%M") for s in stamps]
        assert parsed == sorted(parsed)


@pytest.mark.parametrize("device", list(OXYGEN_DEVICE_NAMES))
@pytest.mark.parametrize("flow", [None, 3.0, 2.5, 40.0])
def test_oxygen_patterns_parse_writer_text(
    site_mapping: dict, device: OxygenDevice, flow: float | None
) -> None:
    spec = site_mapping["files"]["vitals_flowsheet.csv"]["oxygen_devices"]
    text = oxygen_text(OxygenCharting(datetime(2021, 3, 5, tzinfo=SITE_TZ), device, flow))
    matches = [d["device"] for d in spec["devices"] if re.search(d["pattern"], text)]
    assert matches == [device]
    found = re.search(spec["flow_regex"], text)
    assert (None if found is None else float(found.group(1))) == flow
