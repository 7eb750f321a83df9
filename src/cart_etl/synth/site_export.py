"""Writer of the synthetic 'tianjin_ref' hospital export (HIS, nursing flowsheet, LIS, MAR, EMR)."""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, Self
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

import numpy as np
from openpyxl import Workbook
from openpyxl.writer.excel import ExcelWriter

from cart_etl.synth.defects import (
    DEFECT_CATALOGUE,
    SPACE_VARIANT_COUNT,
    Candidate,
    DefectPlanner,
    DefectRecord,
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
    DRUG_UNITS,
    SITE_TZ,
    ClinicalRecord,
    Demographics,
    DrugAdministration,
    LabResult,
    OxygenCharting,
    VasopressorInfusion,
    VitalSign,
)

__all__ = [
    "LAYOUTS",
    "MAR_SHEET",
    "SITE_NAME",
    "FileLayout",
    "SiteExportWriter",
    "oxygen_text",
    "xlsx_cell_text",
]

SITE_NAME: Final = "tianjin_ref"
MAR_SHEET: Final = "给药记录"

Cell = str | float | datetime  # xlsx cells keep native types; every CSV cell is a str
Row = list[Cell]

# --- local vocabulary (must agree with mappings/sites/tianjin_ref.yaml) ------------------------

SEX_NAMES: Final = {"M": "男", "F": "女"}
RISK_NAMES: Final = {True: "高危", False: "标危"}
YES_NO: Final = {True: "是", False: "否"}
CELL_SOURCE_NAMES: Final = {False: "自体", True: "供者来源"}  # keyed by Infusion.donor_derived

VITAL_ITEM_NAMES: Final = {
    "temp": "体温",
    "sbp": "收缩压",
    "dbp": "舒张压",
    "hr": "心率",
    "spo2": "血氧饱和度",
}
VITAL_UNIT_NAMES: Final = {"temp": "℃", "sbp": "mmHg", "dbp": "mmHg", "hr": "次/分", "spo2": "%"}
VITAL_DECIMALS: Final = {"temp": 1, "sbp": 0, "dbp": 0, "hr": 0, "spo2": 0}
OXYGEN_ITEM_NAME: Final = "吸氧方式"
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
FAHRENHEIT_UNIT: Final = "℉"

LAB_TEST_NAMES: Final = {
    "il6": "白细胞介素-6(IL-6)",
    "il10": "IL-10",
    "sil2r": "可溶性白介素-2受体(sIL-2R)",
    "tnf_alpha": "肿瘤坏死因子-α(TNF-α)",
    "ifn_gamma": "干扰素-γ(IFN-γ)",
    "crp": "C反应蛋白(CRP)",
    "ferritin": "铁蛋白",
    "wbc": "白细胞计数(WBC)",
    "anc": "中性粒细胞绝对值",
    "plt": "血小板计数",
    "hgb": "血红蛋白",
    "marrow_blasts": "骨髓原始细胞比例",
}
LAB_UNIT_NAMES: Final = {
    "il6": "pg/ml",
    "il10": "pg/ml",
    "sil2r": "U/ml",
    "tnf_alpha": "pg/ml",
    "ifn_gamma": "pg/ml",
    "crp": "mg/L",
    "ferritin": "ng/ml",
    "wbc": "×10^9/L",
    "anc": "×10^9/L",
    "plt": "×10^9/L",
    "hgb": "g/L",
    "marrow_blasts": "%",
}
CRP_ALT_UNIT: Final = "mg/dL"
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
# (low, high) printed in 参考范围; haemoglobin depends on sex (WS/T 405-2012 adult ranges).
LAB_REFERENCE_RANGES: Final[dict[str, tuple[float, float]]] = {
    "il6": (0, 7.0),
    "il10": (0, 9.1),
    "sil2r": (223, 710),
    "tnf_alpha": (0, 8.1),
    "ifn_gamma": (0, 7.8),
    "crp": (0, 10),
    "ferritin": (30, 400),
    "wbc": (3.5, 9.5),
    "anc": (1.8, 6.3),
    "plt": (125, 350),
    "marrow_blasts": (0, 5),
}
HGB_REFERENCE_RANGES: Final[dict[str, tuple[float, float]]] = {"M": (130, 175), "F": (115, 150)}
FLAG_HIGH: Final = "↑"
FLAG_LOW: Final = "↓"
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

DRUG_NAMES: Final = {
    "tocilizumab": "托珠单抗注射液(tocilizumab)",
    "methylprednisolone": "注射用甲泼尼龙琥珀酸钠",
    "dexamethasone": "地塞米松磷酸钠注射液",
    "prednisone": "醋酸泼尼松片",
    "gcsf": "重组人粒细胞刺激因子注射液(G-CSF)",
}
DOSE_UNIT_NAMES: Final = {"mg": "mg", "ug": "μg"}  # canonical DRUG_UNITS -> as printed
ROUTE_NAMES: Final = {"IV": "静脉滴注", "PO": "口服", "SC": "皮下注射", "IT": "鞘内注射"}
# Free-text fields: known canonical values are translated, anything else is written as is.
INDICATION_NAMES: Final = {
    "CRS": "细胞因子释放综合征(CRS)",
    "ICANS": "免疫效应细胞相关神经毒性综合征(ICANS)",
    "neutropenia": "中性粒细胞减少",
    "HLH": "噬血细胞综合征(HLH)",
    "prophylaxis": "预防用药",
}
# Tocilizumab is prescribed per kg (label 8 mg/kg; 4-8 mg/kg in the NCI 2016 protocol; 12 mg/kg
# under 30 kg), so a MAR may chart the prescription instead of the absolute dose.
TOCILIZUMAB_MG_PER_KG: Final = (8, 4, 12)

VASOPRESSOR_NAMES: Final = {
    "norepinephrine": "去甲肾上腺素",
    "dopamine": "多巴胺",
    "epinephrine": "肾上腺素",
    "phenylephrine": "去氧肾上腺素",
    "vasopressin": "血管加压素",
}
RATE_UNIT_NAMES: Final = {"ug/kg/min": "μg/kg/min", "U/min": "U/min"}
VASOPRESSOR_DEFAULT_UNITS: Final = {
    "norepinephrine": "ug/kg/min",
    "dopamine": "ug/kg/min",
    "epinephrine": "ug/kg/min",
    "phenylephrine": "ug/kg/min",
    "vasopressin": "U/min",
}

MRD_NEGATIVE: Final = "阴性"
INFECTION_SITE_NAMES: Final = {
    "lung": "肺部",
    "blood": "血流",
    "urinary_tract": "泌尿道",
    "skin_soft_tissue": "皮肤软组织",
    "gastrointestinal": "消化道",
    "cns": "中枢神经系统",
    "sinus": "鼻窦",
    "catheter": "导管相关",
    "unknown": "部位不明",
}
DEATH_CAUSE_NAMES: Final = {
    "disease_progression": "疾病进展",
    "relapse": "疾病复发",
    "infection": "感染",
    "CRS": "细胞因子释放综合征",
    "ICANS": "免疫效应细胞相关神经毒性综合征",
    "gvhd": "移植物抗宿主病",
    "other": "其他",
}

# --- file layouts ------------------------------------------------------------------------------

# Column roles decide which defects a cell can carry (see SiteExportWriter._candidates).
SID, MRN, DATE, NUM, TEXT, CODE, ITEM, RESULT, UNIT, DOSE, PLAIN = (
    "sid",
    "mrn",
    "date",
    "num",
    "text",
    "code",
    "item",
    "result",
    "unit",
    "dose",
    "plain",
)
_PADDED_ROLES: Final = frozenset({SID, MRN, NUM, TEXT, CODE, ITEM, RESULT, DOSE})
_NUMERIC_ROLES: Final = frozenset({NUM, RESULT})


@dataclass(frozen=True, slots=True)
class FileLayout:
    """One file of the export: name, codec, header and how dates are printed."""

    path: str  # file name inside the export directory
    encoding: str  # Python codec used to write ("utf-8-sig" = UTF-8 with BOM)
    columns: tuple[str, ...]
    roles: tuple[str, ...]
    datetime_format: str | None  # strftime/strptime format of every date cell; None = xlsx
    alternate_formats: tuple[str, ...]  # formats used by the mixed_date_format defect
    defect_rate: float
    kinds: frozenset[str]  # defect kinds this file can carry

    @property
    def has_time(self) -> bool:
        """True when the date cells carry a time of day."""
        return self.datetime_format is None or "%H" in self.datetime_format


def _layout(
    path: str,
    encoding: str,
    columns: Sequence[tuple[str, str]],
    datetime_format: str | None,
    alternates: tuple[str, ...],
    *,
    rate: float = 0.02,
    extra_kinds: Sequence[str] = (),
) -> FileLayout:
    """Build a layout; the possible kinds follow from the column roles."""
    roles = tuple(role for _, role in columns)
    kinds = {"trailing_space", "fullwidth_chars"}
    if NUM in roles or RESULT in roles:
        kinds.add("decimal_comma")
    if DATE in roles:
        kinds |= {"excel_serial_date", "mixed_date_format"}
    if path != "patients.csv":
        kinds.add("duplicated_row")
    return FileLayout(
        path=path,
        encoding=encoding,
        columns=tuple(name for name, _ in columns),
        roles=roles,
        datetime_format=datetime_format,
        alternate_formats=alternates,
        defect_rate=rate,
        kinds=frozenset(kinds | set(extra_kinds)),
    )


_DAY_ALTS: Final = ("%Y年%m月%d日", "%d/%m/%Y")
_MINUTE_ALTS: Final = ("%d/%m/%Y %H:%M", "%Y年%m月%d日 %H:%M")

PATIENTS: Final = _layout(
    "patients.csv",
    "gb18030",
    [
        ("研究编号", SID),
        ("住院号", SID),
        ("姓名", TEXT),
        ("性别", CODE),
        ("出生日期", DATE),
        ("诊断日期", DATE),
        ("筛选日期", DATE),
        ("身高(cm)", NUM),
        ("体重(kg)", NUM),
        ("危险分层", CODE),
        ("遗传学异常", TEXT),
        ("既往治疗线数", NUM),
        ("既往异基因造血干细胞移植", CODE),
        ("骨髓原始细胞(%)", NUM),
    ],
    "%Y-%m-%d",
    _DAY_ALTS,
)
CART_INFUSION: Final = _layout(
    "cart_infusion.csv",
    "utf-8-sig",
    [
        ("住院号", MRN),
        ("产品名称", TEXT),
        ("批号", TEXT),
        ("回输时间", DATE),
        ("回输细胞总数", NUM),
        ("剂量(×10^6/kg)", NUM),
        ("体重(kg)", NUM),
        ("细胞来源", CODE),
    ],
    "%Y-%m-%d %H:%M",
    _MINUTE_ALTS,
)
VITALS: Final = _layout(
    "vitals_flowsheet.csv",
    "utf-8-sig",
    [("住院号", MRN), ("记录时间", DATE), ("项目", ITEM), ("结果", RESULT), ("单位", UNIT)],
    "%Y/%m/%d %H:%M",
    (*_MINUTE_ALTS, "%Y-%m-%d %H:%M"),
    rate=0.012,
    extra_kinds=(
        "fahrenheit_temperature",
        "future_date",
        "missing_unit",
        "impossible_value",
        "mrn_typo",
    ),
)
LABS: Final = _layout(
    "lab_results.csv",
    "utf-8",
    [
        ("病历号", MRN),
        ("标本号", TEXT),
        ("采集时间", DATE),
        ("检验项目", ITEM),
        ("结果", RESULT),
        ("单位", UNIT),
        ("参考范围", PLAIN),
        ("异常标识", PLAIN),
    ],
    "%Y-%m-%dT%H:%M:%S%z",
    ("%Y/%m/%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"),
    rate=0.025,
    extra_kinds=(
        "timezone_less",
        "crp_mg_dl",
        "future_date",
        "missing_unit",
        "impossible_value",
        "mrn_typo",
    ),
)
MAR: Final = _layout(
    "mar.xlsx",
    "xlsx",
    [
        ("住院号", MRN),
        ("给药时间", DATE),
        ("药品名称", ITEM),
        ("剂量", DOSE),
        ("给药途径", CODE),
        ("用药目的", TEXT),
    ],
    None,
    ("%Y/%m/%d %H:%M:%S", "%Y年%m月%d日 %H:%M:%S"),
    extra_kinds=("dose_unit_g", "dose_unit_mg_per_kg", "future_date"),
)
VASOPRESSORS: Final = _layout(
    "vasopressors.csv",
    "utf-8",
    [
        ("住院号", MRN),
        ("药品", ITEM),
        ("开始时间", DATE),
        ("结束时间", DATE),
        ("速度", NUM),
        ("单位", UNIT),
    ],
    "%Y-%m-%d %H:%M:%S",
    ("%d/%m/%Y %H:%M:%S", "%Y年%m月%d日 %H:%M:%S"),
    extra_kinds=("future_date", "missing_unit"),
)
RESPONSE: Final = _layout(
    "response_day28.csv",
    "utf-8-sig",
    [
        ("住院号", MRN),
        ("评估日期", DATE),
        ("骨髓形态学", CODE),
        ("骨髓原始细胞(%)", NUM),
        ("MRD(流式,%)", NUM),
    ],
    "%Y/%m/%d",
    ("%Y年%m月%d日", "%Y-%m-%d"),
)
FOLLOWUP: Final = _layout(
    "followup.csv",
    "utf-8-sig",
    [
        ("住院号", MRN),
        ("末次随访日期", DATE),
        ("疾病进展日期", DATE),
        ("死亡日期", DATE),
        ("死亡原因", TEXT),
    ],
    "%Y-%m-%d",
    _DAY_ALTS,
)
INFECTIONS: Final = _layout(
    "infections.csv",
    "utf-8-sig",
    [("住院号", MRN), ("发生日期", DATE), ("感染部位", TEXT), ("病原体", TEXT), ("CTCAE分级", NUM)],
    "%Y-%m-%d",
    _DAY_ALTS,
)
ICANS: Final = _layout(
    "icans.csv",
    "utf-8-sig",
    [("住院号", MRN), ("评估时间", DATE), ("ICE评分", NUM), ("ICANS分级", NUM)],
    "%Y-%m-%d %H:%M",
    _MINUTE_ALTS,
)
CRS_RECORDED: Final = _layout(
    "crs_recorded.csv",
    "utf-8-sig",
    [("住院号", MRN), ("记录时间", DATE), ("CRS分级(ASTCT)", NUM)],
    "%Y/%m/%d %H:%M",
    _MINUTE_ALTS,
)

LAYOUTS: Final[dict[str, FileLayout]] = {
    layout.path: layout
    for layout in (
        PATIENTS,
        CART_INFUSION,
        VITALS,
        LABS,
        MAR,
        VASOPRESSORS,
        RESPONSE,
        FOLLOWUP,
        INFECTIONS,
        ICANS,
        CRS_RECORDED,
    )
}
"""Every file of the export by file name, in writing order."""

# The mar.xlsx package is rewritten with these so that two runs are byte-identical.
_XLSX_TIMESTAMP: Final = datetime(2024, 1, 1)  # noqa: DTZ001 - OOXML core properties are naive UTC
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)
_EOL: Final = "\r\n"  # Windows HIS exports

# --- formatting --------------------------------------------------------------------------------

DateFormatter = Callable[[date], str]
_TOKENS: Final = {
    "%Y": ("%04d", "year"),
    "%m": ("%02d", "month"),
    "%d": ("%02d", "day"),
    "%H": ("%02d", "hour"),
    "%M": ("%02d", "minute"),
    "%S": ("%02d", "second"),
}


def compile_datetime_format(fmt: str) -> DateFormatter:
    """A fast formatter for a strptime-style format (%Y %m %d %H %M %S %z only).

    Compiled to printf-style formatting of an ``attrgetter`` tuple, about twice as fast as
    ``strftime`` and independent of the C locale (formats contain CJK literals); ``%z``
    prints ``+08:00`` as in ISO 8601.
    """
    parts = [p for p in re.split(r"(%[YmdHMSz])", fmt) if p]
    has_offset = parts[-1] == "%z"
    if "%z" in parts[: len(parts) - has_offset]:
        raise ValueError(f"%z must end the format: {fmt!r}")
    if has_offset:
        parts.pop()
    template = "".join(_TOKENS[p][0] if p in _TOKENS else p.replace("%", "%%") for p in parts)
    getter = attrgetter(*(_TOKENS[p][1] for p in parts if p in _TOKENS))

    def plain(when: date) -> str:
        """Format without offset."""
        return template % getter(when)

    def with_offset(when: date) -> str:
        """Format with the ISO 8601 offset appended."""
        return template % getter(when) + _utc_offset(when)

    return with_offset if has_offset else plain


_OFFSET_TEXTS: dict[timedelta, str] = {}


def _utc_offset(when: date) -> str:
    """ISO 8601 offset of an aware datetime, e.g. '+08:00'."""
    offset = when.utcoffset() if isinstance(when, datetime) else None
    if offset is None:
        raise ValueError(f"naive datetime in an offset column: {when!r}")
    text = _OFFSET_TEXTS.get(offset)
    if text is None:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        hours, mins = divmod(abs(minutes), 60)
        text = _OFFSET_TEXTS[offset] = f"{sign}{hours:02d}:{mins:02d}"
    return text


_FORMATTERS: Final[dict[str, DateFormatter]] = {
    fmt: compile_datetime_format(fmt)
    for layout in LAYOUTS.values()
    for fmt in (layout.datetime_format, *layout.alternate_formats)
    if fmt is not None
}


def _local(when: datetime) -> datetime:
    """The site's wall time of an aware datetime."""
    if when.tzinfo is SITE_TZ:
        return when
    if when.tzinfo is None:
        raise ValueError(f"naive datetime in a ClinicalRecord: {when!r}")
    return when.astimezone(SITE_TZ)


def shortest_number(value: float) -> str:
    """Shortest round-tripping decimal text of ``value``, without exponent or '.0'."""
    if not math.isfinite(value):
        raise ValueError(f"non-finite value cannot be exported: {value!r}")
    text = repr(float(value))
    if "e" in text:
        return str(np.format_float_positional(value, trim="-"))
    return text.removesuffix(".0")


_FIXED_SPECS: Final = {n: f".{n}f" for n in range(4)}


def fixed_number(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` places, or more when that would lose information."""
    text = format(value, _FIXED_SPECS[decimals])
    if float(text) != value:
        return shortest_number(value)
    return text


_CACHE_LIMIT: Final = 1 << 16
NumberTexts = dict[float, str]


def _remember(texts: NumberTexts, value: float, decimals: int) -> str:
    """Format ``value`` and memoise it (charted values repeat: 37.2 ℃, 98 %)."""
    if len(texts) >= _CACHE_LIMIT:
        texts.clear()  # keeps memory flat if values are continuous
    text = texts[value] = fixed_number(value, decimals)
    return text


_VITAL_TEXTS: Final[dict[str, NumberTexts]] = {item: {} for item in VITAL_DECIMALS}
_LAB_TEXTS: Final[dict[str, NumberTexts]] = {test: {} for test in LAB_DECIMALS}


def xlsx_cell_text(value: object) -> str:
    """Text of an xlsx cell as recorded in DefectRecord values."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return shortest_number(value)
    return str(value)


def oxygen_text(charting: OxygenCharting) -> str:
    """Device and flow as the nurse charts them, e.g. '鼻导管 3L/min'."""
    name = OXYGEN_DEVICE_NAMES[charting.device]
    if charting.flow_l_min is None:
        return name
    return f"{name} {shortest_number(charting.flow_l_min)}L/min"


def _dose_text(admin: DrugAdministration) -> str:
    """Dose with the unit glued on, as the MAR prints it ('400mg', '300μg')."""
    return shortest_number(admin.dose) + DOSE_UNIT_NAMES[DRUG_UNITS[admin.drug]]


def _reference(test: str, sex: str) -> tuple[float, float]:
    """Reference interval of a test for a patient of ``sex``."""
    return HGB_REFERENCE_RANGES[sex] if test == "hgb" else LAB_REFERENCE_RANGES[test]


def reference_text(low: float, high: float) -> str:
    """参考范围 cell, e.g. '3.5-9.5'."""
    return f"{shortest_number(low)}-{shortest_number(high)}"


def _flag(value: float, low: float, high: float) -> str:
    """异常标识: ↑ above, ↓ below the reference interval, blank inside."""
    if value > high:
        return FLAG_HIGH
    if value < low:
        return FLAG_LOW
    return ""


def _opt_date(value: date | None, fmt: DateFormatter) -> str:
    """Formatted date or a blank cell."""
    return "" if value is None else fmt(value)


# --- row builders (one per file; rows are lists of cells, events are the model objects) --------

Event = VitalSign | OxygenCharting | LabResult | DrugAdministration | VasopressorInfusion | None


def _register_row(demo: Demographics) -> Row:
    """patients.csv row: the HIS register entry."""
    fmt = _FORMATTERS[PATIENTS.datetime_format or ""]
    return [
        demo.study_id,
        demo.mrn,
        demo.name,
        SEX_NAMES[demo.sex],
        fmt(demo.birth_date),
        fmt(demo.diagnosis_date),
        fmt(demo.screening_date),
        fixed_number(demo.height_cm, 1),
        fixed_number(demo.weight_kg, 1),
        RISK_NAMES[demo.is_high_risk],
        demo.risk_genetics,
        str(demo.lines_of_therapy),
        YES_NO[demo.prior_allo_sct],
        fixed_number(demo.marrow_blasts_pct, 1),
    ]


def _infusion_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """cart_infusion.csv rows (one, or none when not infused)."""
    inf = record.infusion
    if inf is None:
        return []
    fmt = _FORMATTERS[CART_INFUSION.datetime_format or ""]
    return [
        [
            mrn,
            inf.product,
            inf.lot,
            fmt(_local(inf.at)),
            shortest_number(inf.cells_total),
            fixed_number(inf.dose_1e6_per_kg, 1),
            fixed_number(inf.weight_kg, 1),
            CELL_SOURCE_NAMES[inf.donor_derived],
        ]
    ]


def _flowsheet_rows(mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
    """vitals_flowsheet.csv rows: every VitalSign and OxygenCharting, in time order."""
    events: list[VitalSign | OxygenCharting] = sorted(
        [*record.vitals, *record.oxygen], key=attrgetter("at")
    )
    fmt = _FORMATTERS[VITALS.datetime_format or ""]
    names, units, caches = VITAL_ITEM_NAMES, VITAL_UNIT_NAMES, _VITAL_TEXTS
    rows: list[Row] = []
    last_at: datetime | None = None
    stamp = ""
    # This loop runs ~7 M times for a 10 000-patient cohort, hence the local aliases.
    for ev in events:
        # Vitals are charted in rounds: one formatted time serves several rows.
        if ev.at != last_at:
            last_at = ev.at
            stamp = fmt(_local(ev.at))
        if type(ev) is VitalSign:
            item = ev.item
            texts = caches[item]
            text = texts.get(ev.value)
            if text is None:
                text = _remember(texts, ev.value, VITAL_DECIMALS[item])
            rows.append([mrn, stamp, names[item], text, units[item]])
        else:
            assert isinstance(ev, OxygenCharting)
            rows.append([mrn, stamp, OXYGEN_ITEM_NAME, oxygen_text(ev), ""])
    return rows, list(events)


def _mar_rows(mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
    """mar.xlsx rows, dates as naive local datetimes (native Excel date cells)."""
    events = sorted(record.drugs, key=attrgetter("at"))
    rows: list[Row] = [
        [
            mrn,
            _local(ev.at).replace(tzinfo=None),
            DRUG_NAMES[ev.drug],
            _dose_text(ev),
            ROUTE_NAMES[ev.route],
            INDICATION_NAMES.get(ev.indication, ev.indication),
        ]
        for ev in events
    ]
    return rows, list(events)


def _vasopressor_rows(mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
    """vasopressors.csv rows, by start time."""
    events = sorted(record.vasopressors, key=attrgetter("start"))
    fmt = _FORMATTERS[VASOPRESSORS.datetime_format or ""]
    rows: list[Row] = [
        [
            mrn,
            VASOPRESSOR_NAMES[ev.drug],
            fmt(_local(ev.start)),
            fmt(_local(ev.stop)),
            shortest_number(ev.rate),
            RATE_UNIT_NAMES[ev.rate_unit],
        ]
        for ev in events
    ]
    return rows, list(events)


def _response_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """response_day28.csv row (MRD 0 printed as 阴性)."""
    resp = record.response
    if resp is None:
        return []
    fmt = _FORMATTERS[RESPONSE.datetime_format or ""]
    mrd = MRD_NEGATIVE if resp.mrd_pct == 0 else shortest_number(resp.mrd_pct)
    return [
        [
            mrn,
            fmt(_local(resp.at).date()),
            resp.morphology,
            fixed_number(resp.marrow_blasts_pct, 1),
            mrd,
        ]
    ]


def _followup_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """followup.csv row; absent dates and causes are blank."""
    fu = record.follow_up
    fmt = _FORMATTERS[FOLLOWUP.datetime_format or ""]
    cause = "" if fu.death_cause is None else DEATH_CAUSE_NAMES.get(fu.death_cause, fu.death_cause)
    return [
        [
            mrn,
            fmt(fu.last_contact_date),
            _opt_date(fu.progression_date, fmt),
            _opt_date(fu.death_date, fmt),
            cause,
        ]
    ]


def _infection_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """infections.csv rows, by onset date."""
    fmt = _FORMATTERS[INFECTIONS.datetime_format or ""]
    return [
        [
            mrn,
            fmt(inf.onset_date),
            INFECTION_SITE_NAMES.get(inf.site, inf.site),
            inf.organism,
            str(inf.ctcae_grade),
        ]
        for inf in sorted(record.infections, key=attrgetter("onset_date"))
    ]


def _icans_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """icans.csv rows; an unassessed ICE score is blank."""
    fmt = _FORMATTERS[ICANS.datetime_format or ""]
    return [
        [mrn, fmt(_local(a.at)), "" if a.ice_score is None else str(a.ice_score), str(a.grade)]
        for a in sorted(record.icans, key=attrgetter("at"))
    ]


def _crs_rows(mrn: str, record: ClinicalRecord) -> list[Row]:
    """crs_recorded.csv row when the physician recorded a grade."""
    crs = record.recorded_crs
    if crs is None:
        return []
    fmt = _FORMATTERS[CRS_RECORDED.datetime_format or ""]
    return [[mrn, fmt(_local(crs.at)), str(crs.grade)]]


# --- sinks -------------------------------------------------------------------------------------


class _CsvSink:
    """One CSV file, header already written; counts data rows.

    Rows are joined by hand and written once per patient: calling ``csv.writer`` per row
    (one encode and one write each) dominated the run time. Rows that need quoting go
    through ``csv.writer`` so the bytes are exactly what it would have produced.
    """

    def __init__(self, path: Path, layout: FileLayout) -> None:
        """Open ``path`` in the layout's codec and write the header."""
        self._fh = path.open("w", encoding=layout.encoding, newline="", buffering=1 << 20)
        self._buffer = io.StringIO()
        self._quoting = csv.writer(self._buffer, lineterminator=_EOL)
        self._commas = len(layout.columns) - 1
        self._fh.write(self._quoted(list(layout.columns)))
        self.count = 0

    def write(self, rows: list[Row]) -> None:
        """Append rows (one encode and one write per call)."""
        lines = []
        for row in rows:
            line = ",".join(row)  # type: ignore[arg-type]  # CSV rows hold str only
            if line.count(",") != self._commas or '"' in line or "\n" in line or "\r" in line:
                lines.append(self._quoted(row))
            else:
                lines.append(line + _EOL)
        self._fh.write("".join(lines))
        self.count += len(rows)

    def _quoted(self, row: Row) -> str:
        """One row as ``csv.writer`` (QUOTE_MINIMAL) writes it, line ending included."""
        self._buffer.seek(0)
        self._buffer.truncate()
        self._quoting.writerow(row)
        return self._buffer.getvalue()

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()


class _XlsxSink:
    """The MAR workbook, streamed with openpyxl's write-only mode and saved deterministically."""

    def __init__(self, path: Path, layout: FileLayout) -> None:
        """Start a write-only workbook whose only sheet is the MAR."""
        self._path = path
        self._wb = Workbook(write_only=True)
        self._ws = self._wb.create_sheet(MAR_SHEET)
        self._ws.append(list(layout.columns))
        self.count = 0

    def write(self, rows: list[Row]) -> None:
        """Append rows to the streamed worksheet."""
        for row in rows:
            self._ws.append(row)
        self.count += len(rows)

    def close(self) -> None:
        """Save the workbook with fixed metadata and zip timestamps."""
        props = self._wb.properties
        props.creator = "HIS"
        props.created = _XLSX_TIMESTAMP
        props.modified = _XLSX_TIMESTAMP
        tmp = self._path.with_name(self._path.name + ".tmp")
        # Workbook.save() would stamp `modified` with the wall clock; ExcelWriter does not.
        with ZipFile(tmp, "w", ZIP_DEFLATED, allowZip64=True) as archive:
            ExcelWriter(self._wb, archive).save()
        _rewrite_zip(tmp, self._path)
        tmp.unlink()


def _rewrite_zip(src: Path, dst: Path) -> None:
    """Copy a zip with fixed member timestamps and attributes (zipfile stamps 'now')."""
    with ZipFile(src) as zin, ZipFile(dst, "w", ZIP_DEFLATED, allowZip64=True) as zout:
        for info in zin.infolist():
            member = ZipInfo(info.filename, date_time=_ZIP_TIME)
            member.compress_type = ZIP_DEFLATED
            member.create_system = 0
            member.external_attr = 0
            with zin.open(info) as reader, zout.open(member, "w") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)


# --- writer ------------------------------------------------------------------------------------


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


class SiteExportWriter:
    """Streams ClinicalRecords into the tianjin_ref HIS/LIS/EMR export, optionally defective.

    Memory stays flat: each call to ``write`` formats one patient's rows and hands them to
    buffered CSV writers or to openpyxl's write-only worksheet. With ``defects=True`` a
    seeded DefectPlanner alters a few cells (or inserts duplicate rows) before writing; the
    clean export (``defects=False``) is identical except at exactly those cells and rows.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        defects: bool,
        seed: int,
        defect_sink: Callable[[DefectRecord], None] | None = None,
    ) -> None:
        """Create the export directory and open every file (headers are written at once).

        Args:
            out_dir: ``<synth_out>/site_export``; DefectRecord paths start with its name.
            defects: Inject the defects of ``DEFECT_CATALOGUE``.
            seed: Cohort seed; only the defect planner draws from it.
            defect_sink: Receives each DefectRecord as it is injected (then ``close`` returns
                none), so registries of millions of rows keep memory flat.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        self._prefix = out_dir.name
        self._planner = DefectPlanner(seed) if defects else None
        self._sinks: dict[str, _CsvSink | _XlsxSink] = {
            name: _XlsxSink(out_dir / name, layout)
            if layout is MAR
            else _CsvSink(out_dir / name, layout)
            for name, layout in LAYOUTS.items()
        }
        self._defects: list[DefectRecord] = []
        self._defect_sink = defect_sink if defect_sink is not None else self._defects.append
        self._mrns: set[str] = set()  # register MRNs, so a typo never hits a real one
        self._specimens = 0
        self._typo_cache: tuple[str, list[str]] = ("", [])
        self._closed = False
        self._weight: float | None = None  # infusion weight of the patient being written

    def __enter__(self) -> Self:
        """Return the writer itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the files (also on error, so partial output stays readable)."""
        self.close()

    @property
    def rows_written(self) -> dict[str, int]:
        """Data rows written so far per file name (inserted duplicates included)."""
        return {name: sink.count for name, sink in self._sinks.items()}

    def write(self, record: ClinicalRecord) -> None:
        """Append one patient to every file it belongs in."""
        if self._closed:
            raise RuntimeError("SiteExportWriter is closed")
        if self._planner is not None:
            self._planner.start_patient()
        demo = record.demographics
        mrn = demo.mrn
        self._weight = record.infusion.weight_kg if record.infusion is not None else None
        self._mrns.add(mrn)
        self._typo_cache = ("", [])
        self._emit(PATIENTS, [_register_row(demo)], None, record)
        if record.infusion is not None:
            self._emit(CART_INFUSION, _infusion_rows(mrn, record), None, record)
            self._emit(VITALS, *_flowsheet_rows(mrn, record), record)
            self._emit(LABS, *self._lab_rows(mrn, record), record)
            self._emit(MAR, *_mar_rows(mrn, record), record)
            self._emit(VASOPRESSORS, *_vasopressor_rows(mrn, record), record)
            self._emit(RESPONSE, _response_rows(mrn, record), None, record)
        self._emit(FOLLOWUP, _followup_rows(mrn, record), None, record)
        if record.infusion is not None:
            self._emit(INFECTIONS, _infection_rows(mrn, record), None, record)
            self._emit(ICANS, _icans_rows(mrn, record), None, record)
            self._emit(CRS_RECORDED, _crs_rows(mrn, record), None, record)

    def close(self) -> list[DefectRecord]:
        """Flush and close every file; return the defects injected (empty when clean)."""
        if not self._closed:
            self._closed = True
            for sink in self._sinks.values():
                sink.close()
        return list(self._defects)

    # -- rows needing writer state --

    def _lab_rows(self, mrn: str, record: ClinicalRecord) -> tuple[list[Row], list[Event]]:
        """lab_results.csv rows; one specimen number per collection time and tube."""
        events = sorted(record.labs, key=attrgetter("at"))
        fmt = _FORMATTERS[LABS.datetime_format or ""]
        sex = record.demographics.sex
        specimens: dict[tuple[datetime, str], str] = {}
        ranges = {test: _reference(test, sex) for test in LAB_DECIMALS}
        range_texts = {test: reference_text(*bounds) for test, bounds in ranges.items()}
        rows: list[Row] = []
        last_at: datetime | None = None
        local, stamp = datetime.min.replace(tzinfo=SITE_TZ), ""  # set by the first row
        for ev in events:
            if ev.at != last_at:
                last_at = ev.at
                local = _local(ev.at)
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
                text = _remember(texts, ev.value, LAB_DECIMALS[ev.test])
            rows.append(
                [
                    mrn,
                    specimen,
                    stamp,
                    LAB_TEST_NAMES[ev.test],
                    text,
                    LAB_UNIT_NAMES[ev.test],
                    range_texts[ev.test],
                    _flag(ev.value, *ranges[ev.test]),
                ]
            )
        return rows, list(events)

    # -- defects --

    def _emit(
        self,
        layout: FileLayout,
        rows: list[Row],
        events: list[Event] | None,
        record: ClinicalRecord,
    ) -> None:
        """Inject this patient's defects into ``rows`` (if enabled) and write them."""
        if not rows:
            return
        sink = self._sinks[layout.path]
        if self._planner is not None:
            self._inject(self._planner, layout, rows, events, record, base=sink.count)
        sink.write(rows)

    def _inject(
        self,
        planner: DefectPlanner,
        layout: FileLayout,
        rows: list[Row],
        events: list[Event] | None,
        record: ClinicalRecord,
        *,
        base: int,
    ) -> None:
        """Alter picked rows in place, insert duplicates, and log one record per cell."""
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


_DATE_KINDS: Final = frozenset(
    {"excel_serial_date", "mixed_date_format", "timezone_less", "future_date"}
)
_UNIT_COL: Final = {layout.path: layout.columns.index("单位") for layout in (VITALS, LABS)}


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


def per_kg_text(dose_mg: float, weight_kg: float) -> str | None:
    """'8mg/kg' (or 4 / 12) when that prescription times the weight rounds to the dose."""
    for per_kg in TOCILIZUMAB_MG_PER_KG:
        if dose_mg == round(per_kg * weight_kg):
            return f"{per_kg}mg/kg"
    return None


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
        return value[: -len(_utc_offset(when))]
    if kind == "future_date":
        shifted = shift_to_future(when)
        if shifted is None or layout.datetime_format is None:
            return shifted
        return _FORMATTERS[layout.datetime_format](shifted)
    fmt = layout.alternate_formats[planner.variant(len(layout.alternate_formats))]
    text = _FORMATTERS[fmt](when)
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
