"""Injects the catalogue's defects into the rows of the site export before they are written.

``SiteDefectInjector`` is given each patient's rows per file together with the model
events behind them. For the rows its ``DefectPlanner`` picks, it lists every (kind, column)
the cells can carry under the key and quarantine rules (a quarantine kind never touches a
row a truth column depends on, and never two rows of one item within 24 h), applies the
chosen one (dates, units, padding, full-width text, typos, duplicates) and reports one
``DefectRecord`` per changed cell.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Final, NamedTuple

from cart_etl.synth.defects.catalogue import DEFECT_CATALOGUE, DefectRecord
from cart_etl.synth.defects.planner import Candidate, DefectPlanner
from cart_etl.synth.defects.transforms import (
    SPACE_VARIANT_COUNT,
    celsius_to_fahrenheit,
    decimal_comma,
    digit_swap_positions,
    excel_serial,
    format_excel_serial,
    fullwidth_applies,
    is_plain_decimal,
    pad_applies,
    pad_spaces,
    scale_decimal,
    shift_to_future,
    swap_digits,
    to_fullwidth,
)
from cart_etl.synth.model import (
    ClinicalRecord,
    DrugAdministration,
    LabResult,
    OxygenCharting,
    VasopressorInfusion,
    VitalSign,
)
from cart_etl.synth.site.cells import FORMATTERS, utc_offset, xlsx_cell_text
from cart_etl.synth.site.layouts import (
    CODE,
    DATE,
    DOSE,
    ITEM,
    LABS,
    MAR,
    MRN,
    NUM,
    PATIENTS,
    RESULT,
    SID,
    TEXT,
    UNIT,
    VITALS,
    Cell,
    Event,
    FileLayout,
    Row,
)
from cart_etl.synth.site.mar import per_kg_text
from cart_etl.synth.vocab import (
    CRP_ALT_UNIT,
    DRUG_UNITS,
    FAHRENHEIT_UNIT,
    RATE_UNIT_NAMES,
    VASOPRESSOR_DEFAULT_UNITS,
    VITAL_UNIT_NAMES,
)

_PADDED_ROLES: Final = frozenset({SID, MRN, NUM, TEXT, CODE, ITEM, RESULT, DOSE})
_NUMERIC_ROLES: Final = frozenset({NUM, RESULT})
_DATE_KINDS: Final = frozenset(
    {"excel_serial_date", "mixed_date_format", "timezone_less", "future_date"}
)
_UNIT_COL: Final = {layout.path: layout.columns.index("单位") for layout in (VITALS, LABS)}


class _Meta(NamedTuple):
    """What the defect rules need to know about the model event behind a row."""

    key: bool
    item: tuple[str, str]  # (file, canonical item) for the quarantine spacing rule
    at: datetime | None
    event: Event


def _meta(layout: FileLayout, ev: Event) -> _Meta:
    """Key flag, item and time of the event behind a row (rows without events are key)."""
    if isinstance(ev, VitalSign):
        return _Meta(ev.key, (layout.path, ev.item), ev.at, ev)
    if isinstance(ev, OxygenCharting):
        return _Meta(ev.key, (layout.path, "oxygen"), ev.at, ev)
    if isinstance(ev, LabResult):
        return _Meta(ev.key, (layout.path, ev.test), ev.at, ev)
    if isinstance(ev, DrugAdministration):
        return _Meta(ev.key, (layout.path, ev.drug), ev.at, ev)
    if isinstance(ev, VasopressorInfusion):
        return _Meta(ev.key, (layout.path, ev.drug), ev.start, ev)
    return _Meta(True, (layout.path, ""), None, None)


class SiteDefectInjector:
    """Alters picked cells of each patient's rows in place and logs one record per cell.

    All randomness comes from the ``DefectPlanner`` seeded with the cohort seed, so the
    clean export never depends on it; rows are picked per patient and file in writing order.
    """

    def __init__(self, seed: int, prefix: str, sink: Callable[[DefectRecord], None]) -> None:
        """Create the injector.

        Args:
            seed: Cohort seed of the planner.
            prefix: Name of the export directory, the first part of DefectRecord paths.
            sink: Receives every DefectRecord as it is injected.
        """
        self._planner = DefectPlanner(seed)
        self._prefix = prefix
        self._defect_sink = sink
        self._mrns: set[str] = set()  # register MRNs, so a typo never hits a real one
        self._typo_cache: tuple[str, list[str]] = ("", [])
        self._weight: float | None = None  # infusion weight of the patient being written

    def start_patient(self, record: ClinicalRecord) -> None:
        """Begin the next patient (before any of its rows is injected)."""
        self._planner.start_patient()
        self._weight = record.infusion.weight_kg if record.infusion is not None else None
        self._mrns.add(record.demographics.mrn)
        self._typo_cache = ("", [])

    def inject(
        self,
        layout: FileLayout,
        rows: list[Row],
        events: list[Event] | None,
        record: ClinicalRecord,
        *,
        base: int,
    ) -> None:
        """Alter picked rows in place, insert duplicates, and log one record per cell."""
        planner = self._planner
        duplicated: list[int] = []
        study_id = record.demographics.study_id
        file = f"{self._prefix}/{layout.path}"
        for index, forced_only in planner.pick_rows(len(rows), layout.defect_rate, layout.kinds):
            row = rows[index]
            ev = events[index] if events is not None else None
            meta = _meta(layout, ev)
            candidates = self._candidates(planner, layout, row, meta, record)
            choice = planner.choose(candidates, forced_only=forced_only)
            if choice is None:
                continue
            kind, col = choice
            row_no = base + index + 1 + len(duplicated)
            if kind == "duplicated_row":
                duplicated.append(index)
                text = ",".join(_cell_text(layout, c) for c in row)
                self._defect_sink(
                    DefectRecord(file, str(row_no + 1), "*", kind, "", text, study_id)
                )
            else:
                changes = self._apply(planner, kind, col, layout, row)
                if changes is None:
                    continue
                for c, new in changes:
                    self._defect_sink(
                        DefectRecord(
                            file,
                            str(row_no),
                            layout.columns[c],
                            kind,
                            _cell_text(layout, row[c]),
                            _cell_text(layout, new),
                            study_id,
                        )
                    )
                    row[c] = new
            planner.mark(kind, meta.item, meta.at)
        for index in reversed(duplicated):
            rows.insert(index + 1, list(rows[index]))

    def _candidates(
        self,
        planner: DefectPlanner,
        layout: FileLayout,
        row: Row,
        meta: _Meta,
        record: ClinicalRecord,
    ) -> list[Candidate]:
        """Every (kind, column) this row could carry, honouring the key/quarantine rules."""
        ev = meta.event
        quarantinable = not meta.key and planner.quarantine_allowed(meta.item, meta.at)
        out: list[Candidate] = []
        for col, role in enumerate(layout.roles):
            value = row[col]
            if role == DATE:
                out.extend(_date_candidates(layout, col, value, quarantinable))
                continue
            if not isinstance(value, str) or value == "":
                continue
            if role in _PADDED_ROLES and pad_applies(value):
                out.append(("trailing_space", col))
            if role in _PADDED_ROLES and fullwidth_applies(value):
                out.append(("fullwidth_chars", col))
            if role in _NUMERIC_ROLES and is_plain_decimal(value):
                out.append(("decimal_comma", col))
            typo_file = layout is VITALS or layout is LABS
            if role == MRN and quarantinable and typo_file and self._typos(value):
                out.append(("mrn_typo", col))
            elif role == RESULT:
                out.extend(_result_candidates(layout, col, row, ev, quarantinable))
            elif role == UNIT and quarantinable and _unit_implied(ev, value):
                out.append(("missing_unit", col))
            elif role == DOSE and isinstance(ev, DrugAdministration):
                out.extend(_dose_candidates(col, ev, record))
        if layout is not PATIENTS:
            out.append(("duplicated_row", -1))
        return out

    def _typos(self, mrn: str) -> list[str]:
        """MRNs one adjacent-digit swap away that are not a registered MRN (memoised)."""
        if self._typo_cache[0] != mrn:
            typos = (swap_digits(mrn, pos) for pos in digit_swap_positions(mrn))
            self._typo_cache = (mrn, [t for t in typos if t not in self._mrns])
        return self._typo_cache[1]

    def _apply(
        self, planner: DefectPlanner, kind: str, col: int, layout: FileLayout, row: Row
    ) -> list[tuple[int, Cell]] | None:
        """New values of the cells a defect changes, or None when it does not apply."""
        value = row[col]
        if kind in _DATE_KINDS:
            new = _date_defect(planner, kind, layout, value)
            return None if new is None else [(col, new)]
        assert isinstance(value, str)
        if kind == "trailing_space":
            return [(col, pad_spaces(value, planner.variant(SPACE_VARIANT_COUNT)))]
        if kind == "fullwidth_chars":
            return [(col, to_fullwidth(value))]
        if kind == "decimal_comma":
            return [(col, decimal_comma(value))]
        if kind == "mrn_typo":
            typos = self._typos(value)
            return [(col, typos[planner.variant(len(typos))])]
        if kind == "dose_unit_mg_per_kg":
            text = (
                None
                if self._weight is None
                else per_kg_text(float(value.removesuffix("mg")), self._weight)
            )
            return None if text is None else [(col, text)]
        return _value_defect(kind, col, layout, value)


def _cell_text(layout: FileLayout, value: Cell) -> str:
    """A cell as text for DefectRecord (CSV cells are already text)."""
    return value if isinstance(value, str) else xlsx_cell_text(value)


def _date_candidates(
    layout: FileLayout, col: int, value: Cell, quarantinable: bool
) -> list[Candidate]:
    """Date defects a non-blank date cell can carry."""
    if value == "":
        return []
    out: list[Candidate] = [("excel_serial_date", col), ("mixed_date_format", col)]
    if layout is LABS:
        out.append(("timezone_less", col))
    if quarantinable:
        out.append(("future_date", col))
    return out


def _result_candidates(
    layout: FileLayout, col: int, row: Row, ev: Event, quarantinable: bool
) -> list[Candidate]:
    """Unit and range defects of a long-format result cell."""
    value = row[col]
    assert isinstance(value, str)
    out: list[Candidate] = []
    if isinstance(ev, VitalSign) and ev.item == "temp" and is_plain_decimal(value):
        if row[_UNIT_COL[layout.path]] == VITAL_UNIT_NAMES["temp"]:
            out.append(("fahrenheit_temperature", col))
        if quarantinable:
            out.append(("impossible_value", col))
    elif isinstance(ev, LabResult):
        if ev.test == "crp":
            out.append(("crp_mg_dl", col))
        if quarantinable and ev.value > 0:
            out.append(("impossible_value", col))
    return out


def _unit_implied(ev: Event, unit: str) -> bool:
    """True when the item alone determines the unit, so a blank unit is not ambiguous."""
    if isinstance(ev, VitalSign):
        return ev.item != "temp"  # ℃ vs ℉
    if isinstance(ev, LabResult):
        return ev.test != "crp"  # mg/L vs mg/dL
    if isinstance(ev, VasopressorInfusion):
        return unit == RATE_UNIT_NAMES[VASOPRESSOR_DEFAULT_UNITS[ev.drug]]
    return False


def _dose_candidates(col: int, ev: DrugAdministration, record: ClinicalRecord) -> list[Candidate]:
    """Dose-unit defects of a MAR dose cell."""
    out: list[Candidate] = []
    if DRUG_UNITS[ev.drug] == "mg":
        out.append(("dose_unit_g", col))
    inf = record.infusion
    if ev.drug == "tocilizumab" and inf is not None and per_kg_text(ev.dose, inf.weight_kg):
        out.append(("dose_unit_mg_per_kg", col))
    return out


def _parse_date(layout: FileLayout, value: Cell) -> datetime:
    """The datetime a clean date cell holds (xlsx cells already are datetimes)."""
    if isinstance(value, datetime):
        return value
    assert isinstance(value, str)
    assert layout.datetime_format is not None
    return datetime.strptime(value, layout.datetime_format)  # noqa: DTZ007 - local wall time


def _date_defect(planner: DefectPlanner, kind: str, layout: FileLayout, value: Cell) -> Cell | None:
    """New content of a date cell for a date defect, or None when it cannot be lossless."""
    when = _parse_date(layout, value)
    if kind == "excel_serial_date":
        if layout is MAR:
            return round(excel_serial(when), 6)
        return format_excel_serial(when, with_time=layout.has_time)
    if kind == "timezone_less":
        assert isinstance(value, str)
        return value[: -len(utc_offset(when))]
    if kind == "future_date":
        shifted = shift_to_future(when)
        if shifted is None or layout.datetime_format is None:
            return shifted
        return FORMATTERS[layout.datetime_format](shifted)
    fmt = layout.alternate_formats[planner.variant(len(layout.alternate_formats))]
    text = FORMATTERS[fmt](when)
    # Only keep variants that round-trip (e.g. no seconds dropped).
    return text if datetime.strptime(text, fmt) == when else None  # noqa: DTZ007


def _value_defect(
    kind: str, col: int, layout: FileLayout, value: str
) -> list[tuple[int, Cell]] | None:
    """Unit/range defects that rewrite a value (and possibly its unit cell)."""
    if kind == "fahrenheit_temperature":
        return [(col, celsius_to_fahrenheit(value)), (_UNIT_COL[layout.path], FAHRENHEIT_UNIT)]
    if kind == "crp_mg_dl":
        return [(col, scale_decimal(value, Decimal("0.1"))), (_UNIT_COL[layout.path], CRP_ALT_UNIT)]
    if kind == "dose_unit_g":
        return [(col, scale_decimal(value.removesuffix("mg"), Decimal("0.001")) + "g")]
    if kind == "missing_unit":
        return [(col, "")]
    if kind == "impossible_value":
        if layout is VITALS:
            return [(col, scale_decimal(value, Decimal(10)))]
        return [(col, "-" + value)]
    raise ValueError(f"unknown defect kind {kind!r} (catalogue: {sorted(DEFECT_CATALOGUE)})")
