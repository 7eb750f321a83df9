"""Background patients of a whole-hospital FHIR export: the hospital's non-CAR-T patients.

A Bulk export of a hospital holds every patient, most of them never near a CAR-T product.
``build_background_patient`` writes one such patient: a Patient (MRN typed MR, no study id),
a few ambulatory, emergency and inpatient Encounters, chronic and acute Conditions
(SNOMED CT + ICD-10-CM), vital signs (temperature, heart rate, the blood-pressure panel,
SpO2, weight) and laboratory results (blood count, CRP, basic metabolic panel) in LOINC,
MedicationRequests and MedicationAdministrations in RxNorm, non-CAR-T Procedures, and the
Claim / ExplanationOfBenefit / Immunization resources a hospital export carries.

Some background patients get drugs the cohort also gets, for their own reasons: tocilizumab
for rheumatoid arthritis or severe COVID-19, dexamethasone for COVID-19, prednisone and
methylprednisolone for asthma/COPD exacerbations. A cohort selection that keys on drugs
instead of the CAR-T administration picks them up. No background resource carries a CAR-T
code (local ``cart-infusion``, ICD-10-PCS XW033C7/XW043C7/...), the study-id system or the
site's local CodeSystem.

Everything is a pure function of ``(seed, index)``: each patient draws from its own
``random.Random`` stream (string seeds are hashed with SHA-512, so the stream does not
depend on the Python hash seed) and its resource ids are uuid5 of ``"background/<index>"``
(no study id contains a slash, so no id can collide with a cohort resource). The module
holds no state between patients: memory stays flat in the number of patients.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from typing import Final

import orjson

from cart_etl.synth.calibrate.plan import DATA_CUT
from cart_etl.synth.fhir.codes import (
    CONDITION_CLINICAL,
    GENDER,
    LOINC,
    MRN_SYSTEM,
    MRN_TYPE_CODE,
    RXNORM,
    SNOMED,
    UCUM,
    V2_0203,
    V3_ACT_CODE,
)
from cart_etl.synth.fhir.context import Emit, Ref, id_maker
from cart_etl.synth.fhir.elements import (
    BP_PANEL_CC,
    CAT_ENC_DX,
    CAT_LAB,
    CAT_PROBLEM,
    CAT_VITAL,
    LAB_CC,
    ROUTE_CC,
    VER_CONFIRMED,
    VITAL_CC,
    Json,
    concept,
    frag,
    loinc,
)
from cart_etl.synth.vocab import FHIR_SYSTEMS

ICD10CM: Final = FHIR_SYSTEMS["icd10cm"]
CVX: Final = "http://hl7.org/fhir/sid/cvx"
CLAIM_TYPE: Final = "http://terminology.hl7.org/CodeSystem/claim-type"
PROCESS_PRIORITY: Final = "http://terminology.hl7.org/CodeSystem/processpriority"
ADJUDICATION: Final = "http://terminology.hl7.org/CodeSystem/adjudication"
PAYEE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/payeetype"
HOSPITAL: Final = {"display": "Tianjin Reference Hospital"}
INSURER: Final = {"display": "Urban Employee Basic Medical Insurance"}
SITE_OFFSET: Final = timezone(timedelta(hours=8))  # Asia/Shanghai: no DST since 1991

# Background patients are first seen in this window (the registry's years and some before).
FIRST_VISIT: Final = date(2018, 1, 1)
VISIT_DAYS: Final = (DATA_CUT - FIRST_VISIT).days - 400

_SURNAMES: Final = (
    "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
)
_GIVEN: Final = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰萍鹏辉建华俊峰"


def _dx(snomed: str, icd: str, text: str) -> orjson.Fragment:
    """Pre-serialized Condition.code: SNOMED CT and ICD-10-CM codings plus text."""
    return frag(
        {
            "coding": [
                {"system": SNOMED, "code": snomed, "display": text},
                {"system": ICD10CM, "code": icd},
            ],
            "text": text,
        }
    )


def _rx(code: str, name: str) -> orjson.Fragment:
    return frag(concept(RXNORM, code, name, name))


def _sct(code: str, name: str) -> orjson.Fragment:
    return frag(concept(SNOMED, code, name, name))


def _lab(code: str, text: str) -> orjson.Fragment:
    return frag(concept(LOINC, code, text))


# Chronic problems: key -> (Condition.code, ICD-10-CM, prevalence, maintenance drugs).
_CHRONIC: Final[dict[str, tuple[orjson.Fragment, str, float, tuple[str, ...]]]] = {
    "htn": (_dx("38341003", "I10", "Hypertension"), "I10", 0.30, ("lisinopril", "amlodipine")),
    "t2dm": (_dx("44054006", "E11.9", "Type 2 diabetes mellitus"), "E11.9", 0.15, ("metformin",)),
    "hld": (_dx("55822004", "E78.5", "Hyperlipidemia"), "E78.5", 0.20, ("atorvastatin",)),
    "asthma": (_dx("195967001", "J45.909", "Asthma"), "J45.909", 0.06, ("albuterol",)),
    "copd": (
        _dx("13645005", "J44.9", "Chronic obstructive pulmonary disease"),
        "J44.9",
        0.05,
        ("tiotropium", "albuterol"),
    ),
    "ckd": (_dx("709044004", "N18.9", "Chronic kidney disease"), "N18.9", 0.05, ()),
    "gerd": (
        _dx("235595009", "K21.9", "Gastroesophageal reflux disease"),
        "K21.9",
        0.10,
        ("omeprazole",),
    ),
    "oa": (_dx("239873007", "M17.9", "Osteoarthritis of knee"), "M17.9", 0.08, ("ibuprofen",)),
    "mdd": (_dx("35489007", "F32.9", "Depressive disorder"), "F32.9", 0.06, ("sertraline",)),
    "afib": (_dx("49436004", "I48.91", "Atrial fibrillation"), "I48.91", 0.04, ("apixaban",)),
    "hypothyroid": (
        _dx("40930008", "E03.9", "Hypothyroidism"),
        "E03.9",
        0.05,
        ("levothyroxine",),
    ),
    # Rheumatoid arthritis: monthly tocilizumab infusions (non-CAR-T tocilizumab).
    "ra": (
        _dx("69896004", "M06.9", "Rheumatoid arthritis"),
        "M06.9",
        0.02,
        ("methotrexate", "tocilizumab"),
    ),
}
# Acute reasons for a visit: key -> (Condition.code, ICD-10-CM, weight, inpatient share).
_ACUTE: Final[dict[str, tuple[orjson.Fragment, str, float, float]]] = {
    "pneumonia": (_dx("233604007", "J18.9", "Pneumonia"), "J18.9", 0.14, 0.6),
    "uti": (_dx("68566005", "N39.0", "Urinary tract infection"), "N39.0", 0.12, 0.2),
    "cellulitis": (_dx("128045006", "L03.90", "Cellulitis"), "L03.90", 0.08, 0.3),
    "covid19": (_dx("840539006", "U07.1", "COVID-19"), "U07.1", 0.08, 0.5),
    "bronchitis": (_dx("10509002", "J20.9", "Acute bronchitis"), "J20.9", 0.12, 0.0),
    "gastroenteritis": (_dx("25374005", "K52.9", "Gastroenteritis"), "K52.9", 0.10, 0.1),
    "chest-pain": (_dx("29857009", "R07.9", "Chest pain"), "R07.9", 0.12, 0.3),
    "appendicitis": (_dx("74400008", "K35.80", "Acute appendicitis"), "K35.80", 0.04, 1.0),
    "hip-fracture": (
        _dx("5913000", "S72.009A", "Fracture of neck of femur"),
        "S72.009A",
        0.03,
        1.0,
    ),
    "exacerbation": (
        _dx("195951007", "J44.1", "Acute exacerbation of chronic obstructive airways disease"),
        "J44.1",
        0.05,
        0.5,
    ),
    "back-pain": (_dx("279039007", "M54.5", "Low back pain"), "M54.5", 0.12, 0.0),
}
_ACUTE_KEYS: Final = tuple(_ACUTE)
_ACUTE_WEIGHTS: Final = tuple(v[2] for v in _ACUTE.values())

# Drug -> (medicationCodeableConcept, dose, UCUM unit, route, sig text).
_DRUGS: Final[dict[str, tuple[orjson.Fragment, float, str, str, str]]] = {
    "lisinopril": (_rx("29046", "lisinopril"), 10, "mg", "PO", "10 mg PO once daily"),
    "amlodipine": (_rx("17767", "amlodipine"), 5, "mg", "PO", "5 mg PO once daily"),
    "metformin": (_rx("6809", "metformin"), 500, "mg", "PO", "500 mg PO twice daily"),
    "atorvastatin": (_rx("83367", "atorvastatin"), 20, "mg", "PO", "20 mg PO at night"),
    "albuterol": (_rx("435", "albuterol"), 0.1, "mg", "PO", "2 puffs inhaled as needed"),
    "tiotropium": (_rx("69120", "tiotropium"), 0.018, "mg", "PO", "18 ug inhaled once daily"),
    "omeprazole": (_rx("7646", "omeprazole"), 20, "mg", "PO", "20 mg PO once daily"),
    "ibuprofen": (_rx("5640", "ibuprofen"), 400, "mg", "PO", "400 mg PO three times daily"),
    "sertraline": (_rx("36437", "sertraline"), 50, "mg", "PO", "50 mg PO once daily"),
    "apixaban": (_rx("1364430", "apixaban"), 5, "mg", "PO", "5 mg PO twice daily"),
    "levothyroxine": (_rx("10582", "levothyroxine"), 0.05, "mg", "PO", "50 ug PO once daily"),
    "methotrexate": (_rx("6851", "methotrexate"), 15, "mg", "PO", "15 mg PO once weekly"),
    "tocilizumab": (_rx("612865", "tocilizumab"), 8, "mg/kg", "IV", "8 mg/kg IV every 4 weeks"),
    "dexamethasone": (_rx("3264", "dexamethasone"), 6, "mg", "IV", "6 mg IV once daily"),
    "prednisone": (_rx("8640", "prednisone"), 40, "mg", "PO", "40 mg PO once daily for 5 days"),
    "methylprednisolone": (
        _rx("6902", "methylprednisolone"),
        40,
        "mg",
        "IV",
        "40 mg IV every 12 hours",
    ),
    "acetaminophen": (_rx("161", "acetaminophen"), 500, "mg", "PO", "500 mg PO every 6 h PRN"),
    "ceftriaxone": (_rx("2193", "ceftriaxone"), 1000, "mg", "IV", "1 g IV once daily"),
    "azithromycin": (_rx("18631", "azithromycin"), 500, "mg", "PO", "500 mg PO once daily"),
    "amoxicillin": (_rx("723", "amoxicillin"), 500, "mg", "PO", "500 mg PO three times daily"),
    "nitrofurantoin": (_rx("7454", "nitrofurantoin"), 100, "mg", "PO", "100 mg PO twice daily"),
    "cephalexin": (_rx("2231", "cephalexin"), 500, "mg", "PO", "500 mg PO four times daily"),
    "heparin": (_rx("5224", "heparin"), 5000, "[iU]", "SC", "5000 units SC every 12 hours"),
    "ondansetron": (_rx("26225", "ondansetron"), 4, "mg", "IV", "4 mg IV every 8 h PRN"),
    "morphine": (_rx("7052", "morphine"), 2, "mg", "IV", "2 mg IV every 4 h PRN"),
}
# Acute problem -> what the visit prescribes (outpatient) / gives on the ward (inpatient).
_ACUTE_DRUGS: Final[dict[str, tuple[str, ...]]] = {
    "pneumonia": ("ceftriaxone", "azithromycin"),
    "uti": ("nitrofurantoin",),
    "cellulitis": ("cephalexin",),
    "covid19": ("dexamethasone",),
    "bronchitis": ("amoxicillin",),
    "gastroenteritis": ("ondansetron",),
    "chest-pain": ("acetaminophen",),
    "appendicitis": ("ceftriaxone", "morphine"),
    "hip-fracture": ("morphine",),
    "exacerbation": ("prednisone", "methylprednisolone", "albuterol"),
    "back-pain": ("ibuprofen",),
}
_ROUTES: Final = {"PO": ROUTE_CC["PO"], "IV": ROUTE_CC["IV"], "SC": ROUTE_CC["SC"]}

# Procedures (SNOMED CT): acute problem -> procedure of that visit.
_PROCEDURES: Final[dict[str, orjson.Fragment]] = {
    "cxr": _sct("399208008", "Plain chest X-ray"),
    "ecg": _sct("29303009", "Electrocardiographic procedure"),
    "echo": _sct("40701008", "Echocardiography"),
    "appendectomy": _sct("80146002", "Appendectomy"),
    "hip-repair": _sct("179326001", "Hemiarthroplasty of hip"),
    "urine-culture": _sct("117010004", "Urine culture"),
    "ct-head": _sct("303653007", "Computed tomography of head"),
    "colonoscopy": _sct("73761001", "Colonoscopy"),
    "physiotherapy": _sct("91251008", "Physical therapy procedure"),
    "venipuncture": _sct("82078001", "Collection of blood specimen for laboratory"),
}
_ACUTE_PROCEDURES: Final[dict[str, tuple[str, ...]]] = {
    "pneumonia": ("cxr",),
    "uti": ("urine-culture",),
    "covid19": ("cxr",),
    "chest-pain": ("ecg", "echo"),
    "appendicitis": ("appendectomy",),
    "hip-fracture": ("cxr", "hip-repair", "physiotherapy"),
    "exacerbation": ("cxr",),
    "back-pain": ("physiotherapy",),
}
_ROUTINE_PROCEDURES: Final = ("ecg", "venipuncture", "colonoscopy", "ct-head")

# Laboratory panels: (key, code, unit, mean, sd, decimals).
_CBC: Final = (
    ("hgb", LAB_CC["hgb"], "g/L", 135.0, 15.0, 0),
    ("wbc", LAB_CC["wbc"], "10*9/L", 7.0, 2.0, 2),
    ("plt", LAB_CC["plt"], "10*9/L", 240.0, 60.0, 0),
)
_BMP: Final = (
    ("creatinine", _lab("2160-0", "Creatinine, serum"), "umol/L", 80.0, 18.0, 0),
    ("sodium", _lab("2951-2", "Sodium, serum"), "mmol/L", 140.0, 3.0, 0),
    ("potassium", _lab("2823-3", "Potassium, serum"), "mmol/L", 4.2, 0.4, 1),
    ("glucose", _lab("2345-7", "Glucose, serum"), "mmol/L", 5.6, 1.2, 1),
)
_CRP: Final = (("crp", LAB_CC["crp"], "mg/L", 8.0, 10.0, 1),)
_LIPIDS: Final = (
    ("cholesterol", _lab("2093-3", "Cholesterol, serum"), "mmol/L", 4.8, 0.9, 2),
    ("hba1c", _lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), "%", 6.2, 0.9, 1),
)

_WEIGHT_CC: Final = frag(loinc("body-weight"))
_TEMP_CC, _HR_CC, _SPO2_CC = VITAL_CC["temp"], VITAL_CC["hr"], VITAL_CC["spo2"]
_SBP_CC, _DBP_CC = VITAL_CC["sbp"], VITAL_CC["dbp"]

_ENC_CLASS: Final = {
    "AMB": frag({"system": V3_ACT_CODE, "code": "AMB", "display": "ambulatory"}),
    "EMER": frag({"system": V3_ACT_CODE, "code": "EMER", "display": "emergency"}),
    "IMP": frag({"system": V3_ACT_CODE, "code": "IMP", "display": "inpatient encounter"}),
}
_ENC_TYPE: Final = {
    "AMB": frag([{"text": "Outpatient visit"}]),
    "EMER": frag([{"text": "Emergency department visit"}]),
    "IMP": frag([{"text": "Hospital admission"}]),
}
_ACTIVE: Final = frag(concept(CONDITION_CLINICAL, "active", "active"))
_RESOLVED: Final = frag(concept(CONDITION_CLINICAL, "resolved", "resolved"))
_MRN_TYPE: Final = frag(
    concept(V2_0203, MRN_TYPE_CODE, "Medical record number", "Medical record number")
)
_CLAIM_TYPE: Final = {
    "AMB": frag({"coding": [{"system": CLAIM_TYPE, "code": "professional"}]}),
    "EMER": frag({"coding": [{"system": CLAIM_TYPE, "code": "professional"}]}),
    "IMP": frag({"coding": [{"system": CLAIM_TYPE, "code": "institutional"}]}),
}
_PRIORITY: Final = frag({"coding": [{"system": PROCESS_PRIORITY, "code": "normal"}]})
_PAYEE: Final = frag({"type": {"coding": [{"system": PAYEE_TYPE, "code": "provider"}]}})
_SUBMITTED: Final = frag({"coding": [{"system": ADJUDICATION, "code": "submitted"}]})
_BENEFIT: Final = frag({"coding": [{"system": ADJUDICATION, "code": "benefit"}]})
_PROVIDER: Final = frag(HOSPITAL)
_INSURANCE: Final = frag([{"sequence": 1, "focal": True, "coverage": INSURER}])
_EOB_INSURANCE: Final = frag([{"focal": True, "coverage": INSURER}])  # EOB: no sequence
# Immunizations: (CVX code, display, probability per year of follow-up).
_VACCINES: Final = (
    (frag(concept(CVX, "140", "Influenza, seasonal, injectable", "Influenza vaccine")), 0.35),
    (frag(concept(CVX, "208", "COVID-19, mRNA, 30 mcg/0.3 mL", "COVID-19 vaccine")), 0.25),
    (frag(concept(CVX, "33", "Pneumococcal polysaccharide PPV23", "Pneumococcal vaccine")), 0.05),
    (frag(concept(CVX, "115", "Tdap", "Tdap vaccine")), 0.05),
)


def _q(value: float, unit: str) -> Json:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def background_key(index: int) -> str:
    """Id namespace of background patient ``index`` (no study id contains a slash)."""
    return f"background/{index}"


def background_mrn(index: int, year: int) -> str:
    """MRN: year + 7 digits (11 characters; cohort MRNs have 10, so the two never collide).

    ``index * 7919 mod 10**7`` is a bijection on 0..10**7-1: distinct patients get
    distinct MRNs (below ten million background patients).
    """
    return f"{year}{(index * 7919 + 1_234_567) % 10_000_000:07d}"


class _Builder:
    """Builds one background patient's resources and hands them to ``emit``."""

    def __init__(self, emit: Emit, seed: int, index: int) -> None:
        self.emit = emit
        self.rng = random.Random(f"cart-etl/background/{seed}/{index}")
        self.ids = id_maker(background_key(index))
        self.index = index
        self.pid = self.ids("Patient")
        self.subject: tuple[Ref, ...] = (("subject", "Patient", self.pid, False),)
        self.patient_ref: tuple[Ref, ...] = (("patient", "Patient", self.pid, False),)
        self.n = 0  # running resource number, the discriminator of every id

    def next_id(self) -> str:
        self.n += 1
        return self.ids(str(self.n))

    def build(self) -> None:
        rng = self.rng
        first = FIRST_VISIT + timedelta(days=rng.randrange(VISIT_DAYS))
        age = rng.randint(18, 90)
        sex = "M" if rng.random() < 0.5 else "F"
        birth = first.replace(year=first.year - age, day=min(first.day, 28))
        self.weight = round(rng.gauss(70.0 if sex == "M" else 60.0, 10.0), 1)
        chronic = [k for k, v in _CHRONIC.items() if rng.random() < v[2] * (0.5 + age / 60)]
        self.chronic = chronic
        self.add_patient(sex, birth, first)
        for key in chronic:
            code = _CHRONIC[key][0]
            onset = first - timedelta(days=rng.randrange(30, 3650))
            body: Json = {
                "resourceType": "Condition",
                "id": self.next_id(),
                "clinicalStatus": _ACTIVE,
                "verificationStatus": VER_CONFIRMED,
                "category": CAT_PROBLEM,
                "code": code,
                "onsetDateTime": onset,
                "recordedDate": first,
            }
            self.emit("Condition", body["id"], body, self.subject, 0)
        day = first
        for _ in range(rng.randint(2, 6)):
            self.encounter(day)
            day += timedelta(days=rng.randint(20, 200))
            if day >= DATA_CUT:
                break
        self.immunizations(first, day)

    def add_patient(self, sex: str, birth: date, first: date) -> None:
        rng = self.rng
        name = rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.randint(1, 2)))
        body: Json = {
            "resourceType": "Patient",
            "id": self.pid,
            "identifier": [
                {
                    "use": "usual",
                    "type": _MRN_TYPE,
                    "system": MRN_SYSTEM,
                    "value": background_mrn(self.index, first.year),
                }
            ],
            "name": [{"text": name}],
            "gender": GENDER[sex],
            "birthDate": birth,
        }
        self.emit("Patient", self.pid, body, (), 0)

    def encounter(self, day: date) -> None:
        """One visit: Encounter, diagnosis, vitals, labs, orders, doses, procedures, claims."""
        rng = self.rng
        routine = rng.random() < 0.35 and bool(self.chronic)
        acute = None if routine else rng.choices(_ACUTE_KEYS, _ACUTE_WEIGHTS)[0]
        if acute is None:
            cls = "AMB"
        elif rng.random() < _ACUTE[acute][3]:
            cls = "IMP"
        else:
            cls = "EMER" if rng.random() < 0.4 else "AMB"
        start = datetime(
            day.year, day.month, day.day, rng.randint(7, 20), rng.randrange(60), tzinfo=SITE_OFFSET
        )
        los = rng.randint(2, 8) if cls == "IMP" else 0
        end = start + (timedelta(days=los) if los else timedelta(minutes=rng.randint(20, 240)))
        eid = self.next_id()
        enc: Json = {
            "resourceType": "Encounter",
            "id": eid,
            "status": "finished",
            "class": _ENC_CLASS[cls],
            "type": _ENC_TYPE[cls],
            "period": {"start": start, "end": end},
        }
        if acute is not None:
            enc["reasonCode"] = [_ACUTE[acute][0]]
        self.emit("Encounter", eid, enc, self.subject, 0)
        ctx: tuple[Ref, ...] = (*self.subject, ("encounter", "Encounter", eid, False))
        med_ctx: tuple[Ref, ...] = (*self.subject, ("context", "Encounter", eid, False))
        icd = []
        if acute is not None:
            code, icd_code, *_ = _ACUTE[acute]
            icd.append(icd_code)
            body: Json = {
                "resourceType": "Condition",
                "id": self.next_id(),
                "clinicalStatus": _RESOLVED,
                "verificationStatus": VER_CONFIRMED,
                "category": CAT_ENC_DX,
                "code": code,
                "onsetDateTime": start,
                "abatementDateTime": end + timedelta(days=rng.randint(3, 20)),
                "recordedDate": start,
            }
            self.emit("Condition", body["id"], body, ctx, 0)
        icd += [_CHRONIC[k][1] for k in self.chronic[:3]]
        sick = acute in ("pneumonia", "covid19", "cellulitis", "uti", "appendicitis")
        # Vital signs: once per visit, every 6 h on the ward.
        n_vitals = 1 if los == 0 else los * 4
        step = timedelta(hours=6)
        at = start + timedelta(minutes=10)
        for k in range(n_vitals):
            self.vitals(at, ctx, febrile=sick and k < 8, weigh=k % 8 == 0)
            at += step
        # Labs: at most visits, daily on the ward.
        if los or rng.random() < 0.6:
            at = start + timedelta(minutes=40)
            panels = (_CBC, _BMP, _CRP) if (sick or los) else (_CBC, _BMP)
            for _ in range(max(1, los)):
                for panel in panels:
                    self.labs(panel, at, ctx, inflamed=sick)
                at += timedelta(days=1)
            if routine and rng.random() < 0.5:
                self.labs(_LIPIDS, start + timedelta(minutes=40), ctx, inflamed=False)
        # Orders: maintenance drugs renewed at routine visits, the acute problem's drugs.
        drugs = [d for k in self.chronic if routine or rng.random() < 0.2 for d in _CHRONIC[k][3]]
        acute_drugs = _ACUTE_DRUGS.get(acute, ()) if acute is not None else ()
        if acute == "covid19" and los >= 4 and rng.random() < 0.3:
            acute_drugs = (*acute_drugs, "tocilizumab")  # severe COVID-19 (RECOVERY)
        for drug in (*drugs, *acute_drugs):
            self.order(drug, start, ctx)
        # Doses: on the ward daily (PRN acetaminophen, heparin prophylaxis, the acute drugs);
        # an RA patient's tocilizumab infusion at a routine visit.
        if los:
            self.ward_doses(acute_drugs, start, los, med_ctx)
        elif "ra" in self.chronic and routine:
            self.dose("tocilizumab", start + timedelta(minutes=60), med_ctx)
        elif acute_drugs and cls == "EMER":
            self.dose(acute_drugs[0], start + timedelta(minutes=30), med_ctx)
        # Procedures.
        codes = _ACUTE_PROCEDURES.get(acute, ()) if acute is not None else ()
        if routine and rng.random() < 0.3:
            codes = (rng.choice(_ROUTINE_PROCEDURES),)
        for i, key in enumerate(codes):
            when = start + timedelta(hours=1 + i * 20)
            body = {
                "resourceType": "Procedure",
                "id": self.next_id(),
                "status": "completed",
                "code": _PROCEDURES[key],
                "performedDateTime": min(when, end),
            }
            self.emit("Procedure", body["id"], body, ctx, 0)
        self.claim(cls, start, end, icd, n_vitals)

    def vitals(self, at: datetime, ctx: tuple[Ref, ...], *, febrile: bool, weigh: bool) -> None:
        rng, emit, ids = self.rng, self.emit, self.next_id
        temp = round(rng.gauss(38.3 if febrile else 36.7, 0.5 if febrile else 0.3), 1)
        sbp = round(rng.gauss(128, 15))
        dbp = round(rng.gauss(78, 9))
        readings = [
            (_TEMP_CC, {"value": temp, "unit": "°C", "system": UCUM, "code": "Cel"}),
            (
                _HR_CC,
                {"value": round(rng.gauss(80, 12)), "unit": "/min", "system": UCUM, "code": "/min"},
            ),
            (
                _SPO2_CC,
                {
                    "value": min(100, round(rng.gauss(97, 1.5))),
                    "unit": "%",
                    "system": UCUM,
                    "code": "%",
                },
            ),
        ]
        if weigh:
            weight = round(self.weight + rng.gauss(0, 0.8), 1)
            readings.append(
                (_WEIGHT_CC, {"value": weight, "unit": "kg", "system": UCUM, "code": "kg"})
            )
        for code, value in readings:
            rid = ids()
            body: Json = {
                "resourceType": "Observation",
                "id": rid,
                "status": "final",
                "category": CAT_VITAL,
                "code": code,
                "effectiveDateTime": at,
                "valueQuantity": value,
            }
            emit("Observation", rid, body, ctx, 0)
        rid = ids()
        bp: Json = {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "category": CAT_VITAL,
            "code": BP_PANEL_CC,
            "effectiveDateTime": at,
            "component": [
                {
                    "code": _SBP_CC,
                    "valueQuantity": {
                        "value": sbp,
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
                {
                    "code": _DBP_CC,
                    "valueQuantity": {
                        "value": dbp,
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
            ],
        }
        emit("Observation", rid, bp, ctx, 0)

    def labs(
        self,
        panel: tuple[tuple[str, orjson.Fragment, str, float, float, int], ...],
        at: datetime,
        ctx: tuple[Ref, ...],
        *,
        inflamed: bool,
    ) -> None:
        gauss, emit, ids = self.rng.gauss, self.emit, self.next_id
        for key, code, unit, mean, sd, decimals in panel:
            scale = 3.0 if inflamed and key in ("crp", "wbc") else 1.0
            value = round(abs(gauss(mean * scale, sd * scale)), decimals)
            rid = ids()
            body: Json = {
                "resourceType": "Observation",
                "id": rid,
                "status": "final",
                "category": CAT_LAB,
                "code": code,
                "effectiveDateTime": at,
                "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
            }
            emit("Observation", rid, body, ctx, 0)

    def order(self, drug: str, at: datetime, ctx: tuple[Ref, ...]) -> None:
        code, _, _, _, sig = _DRUGS[drug]
        rid = self.next_id()
        body: Json = {
            "resourceType": "MedicationRequest",
            "id": rid,
            "status": "completed",
            "intent": "order",
            "medicationCodeableConcept": code,
            "authoredOn": at,
            "dosageInstruction": [{"text": sig}],
        }
        self.emit("MedicationRequest", rid, body, ctx, 0)

    def dose(
        self, drug: str, at: datetime, ctx: tuple[Ref, ...], reason: str | None = None
    ) -> None:
        code, amount, unit, route, _ = _DRUGS[drug]
        if unit == "mg/kg":
            amount, unit = round(amount * self.weight), "mg"
        rid = self.next_id()
        body: Json = {
            "resourceType": "MedicationAdministration",
            "id": rid,
            "status": "completed",
            "medicationCodeableConcept": code,
            "effectiveDateTime": at,
            "dosage": {"route": _ROUTES[route], "dose": _q(amount, unit)},
        }
        if reason is not None:
            body["reasonCode"] = [{"text": reason}]
        self.emit("MedicationAdministration", rid, body, ctx, 0)

    def ward_doses(
        self, acute_drugs: tuple[str, ...], start: datetime, los: int, ctx: tuple[Ref, ...]
    ) -> None:
        rng = self.rng
        day = start.replace(hour=9, minute=0)
        once = [d for d in acute_drugs if d != "tocilizumab"]
        for k in range(los):
            day += timedelta(days=1)
            for drug in once:
                self.dose(drug, day, ctx)
            self.dose("heparin", day + timedelta(hours=1), ctx)
            self.dose("heparin", day + timedelta(hours=13), ctx)
            for _ in range(rng.randint(0, 3)):
                self.dose("acetaminophen", day + timedelta(hours=rng.randint(0, 14)), ctx, "pain")
            if k == 1 and "tocilizumab" in acute_drugs:
                self.dose("tocilizumab", day + timedelta(hours=2), ctx, "COVID-19 pneumonia")

    def claim(self, cls: str, start: datetime, end: datetime, icd: list[str], items: int) -> None:
        rng = self.rng
        total = round(rng.uniform(150, 800) * (1 + items / 4), 2)
        cid = self.next_id()
        period = {"start": start, "end": end}
        diagnosis = [
            {
                "sequence": i + 1,
                "diagnosisCodeableConcept": {"coding": [{"system": ICD10CM, "code": c}]},
            }
            for i, c in enumerate(icd)
        ]
        money = {"value": total, "currency": "CNY"}
        claim: Json = {
            "resourceType": "Claim",
            "id": cid,
            "status": "active",
            "type": _CLAIM_TYPE[cls],
            "use": "claim",
            "billablePeriod": period,
            "created": end,
            "provider": _PROVIDER,
            "priority": _PRIORITY,
            "insurance": _INSURANCE,
            "diagnosis": diagnosis,
            "total": money,
        }
        self.emit("Claim", cid, claim, self.patient_ref, 0)
        paid = round(total * rng.uniform(0.5, 0.9), 2)
        eob: Json = {
            "resourceType": "ExplanationOfBenefit",
            "id": self.next_id(),
            "status": "active",
            "type": _CLAIM_TYPE[cls],
            "use": "claim",
            "created": end + timedelta(days=rng.randint(5, 40)),
            "insurer": INSURER,
            "provider": _PROVIDER,
            "payee": _PAYEE,
            "outcome": "complete",
            "billablePeriod": period,
            "insurance": _EOB_INSURANCE,
            "diagnosis": diagnosis,
            "total": [
                {"category": _SUBMITTED, "amount": money},
                {"category": _BENEFIT, "amount": {"value": paid, "currency": "CNY"}},
            ],
            "payment": {"amount": {"value": paid, "currency": "CNY"}},
        }
        refs = (*self.patient_ref, ("claim", "Claim", cid, False))
        self.emit("ExplanationOfBenefit", eob["id"], eob, refs, 0)

    def immunizations(self, first: date, last: date) -> None:
        rng = self.rng
        years = max(1, (last - first).days // 365 + 1)
        for year in range(years):
            for code, p in _VACCINES:
                if rng.random() >= p:
                    continue
                day = first + timedelta(days=365 * year + rng.randrange(300))
                if day >= DATA_CUT:
                    continue
                rid = self.next_id()
                body: Json = {
                    "resourceType": "Immunization",
                    "id": rid,
                    "status": "completed",
                    "vaccineCode": code,
                    "occurrenceDateTime": day,
                    "primarySource": True,
                }
                self.emit("Immunization", rid, body, self.patient_ref, 0)


def background_patient_id(index: int) -> str:
    """Resource id of background patient ``index``'s Patient (also its bundle's file name)."""
    return id_maker(background_key(index))("Patient")


def background_bundle_id(index: int) -> str:
    """Resource id of background patient ``index``'s transaction Bundle."""
    return id_maker(background_key(index))("Bundle")


def build_background_patient(emit: Emit, seed: int, index: int) -> None:
    """Hand every resource of background patient ``index`` to ``emit``, in bundle order."""
    _Builder(emit, seed, index).build()
