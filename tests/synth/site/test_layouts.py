"""The file layouts of the site export agree with mappings/sites/tianjin_ref.yaml."""

from __future__ import annotations

from cart_etl.synth.site.layouts import LAYOUTS, MAR
from cart_etl.synth.vocab import MAR_SHEET


def test_mapping_matches_layouts(site_mapping: dict) -> None:
    for name, layout in LAYOUTS.items():
        spec = site_mapping["files"][name]
        if layout is MAR:
            assert spec["format"] == "xlsx"
            assert spec["sheet"] == MAR_SHEET
            assert spec["datetime_cells"] == "excel_native"
        else:
            codec = {"utf-8-sig": ("utf-8", True), "utf-8": ("utf-8", False)}.get(
                layout.encoding, (layout.encoding, False)
            )
            assert (spec["encoding"], spec["bom"]) == codec, name
            assert (spec["delimiter"], spec["line_terminator"]) == (",", "\r\n")
            assert spec["datetime_format"] == layout.datetime_format, name
        assert tuple(spec["alternate_datetime_formats"]) == layout.alternate_formats, name
