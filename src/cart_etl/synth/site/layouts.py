"""File layouts of the tianjin_ref site export: name, codec, header, column roles, date format.

One ``FileLayout`` per exported file (``LAYOUTS``, in writing order). A column's role
(study id, MRN, date, number, free text, code, item, result, unit, dose, plain) decides
which defects its cells can carry; the layouts' headers, codecs and date formats are the
ones ``mappings/sites/tianjin_ref.yaml`` declares (tests keep the two in agreement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cart_etl.synth.model import (
    DrugAdministration,
    LabResult,
    OxygenCharting,
    VasopressorInfusion,
    VitalSign,
)

Cell = str | float | datetime  # xlsx cells keep native types; every CSV cell is a str
Row = list[Cell]
# The model object behind a row (None for one-row-per-patient files).
Event = VitalSign | OxygenCharting | LabResult | DrugAdministration | VasopressorInfusion | None

# Column roles decide which defects a cell can carry (see cart_etl.synth.defects.site).
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
