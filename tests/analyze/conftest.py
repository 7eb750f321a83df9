"""Fixture store for the analysis tests: a TEST DOUBLE of the pipeline (`cart-etl run`).

The real pipeline (issue #5) derives the marts from the raw exports. Until it exists, this
module fills `marts.*` (DDL: ``schemas/marts.sql``) straight from the synthetic reference
cohort: ``truth/patients.csv`` -> ``marts.patient`` (person_id = 1-based row order),
``truth/supplement.csv`` -> ``marts.patient_detail``, and the canonical clinical records
(``build_reference_cohort`` + ``simulate``) -> ``marts.treatment``, ``marts.lab_timeseries``,
``marts.crs_episode`` and ``marts.consort``. Nothing here is used by ``src/``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cart_etl.synth.calibrate import PatientPlan, build_reference_cohort
from cart_etl.synth.course import DEX_TO_MP, simulate
from cart_etl.synth.generate import generate
from cart_etl.synth.model import SITE_TZ, ClinicalRecord

REPO = Path(__file__).resolve().parents[2]
MARTS_DDL = REPO / "schemas" / "marts.sql"
SEED = 2025
DRUG_CLASS = {
    "tocilizumab": "anti_il6",
    "methylprednisolone": "corticosteroid",
    "dexamethasone": "corticosteroid",
    "prednisone": "corticosteroid",
    "gcsf": "growth_factor",
}
MP_FACTOR = {"methylprednisolone": 1.0, "dexamethasone": DEX_TO_MP, "prednisone": 0.8}


def _bool_frame(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in df.columns:
        if len(df[col].dropna()) and set(df[col].dropna().unique()) <= {"true", "false"}:
            df[col] = df[col].map({"true": True, "false": False}).astype("boolean")
    return df


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


def _treatment_rows(pid: int, rec: ClinicalRecord) -> list[dict[str, object]]:
    assert rec.infusion is not None
    day0 = rec.infusion.at.date()
    rows: list[dict[str, object]] = []
    counter: dict[str, int] = {}
    for i, d in enumerate(sorted(rec.drugs, key=lambda x: x.at)):
        counter[d.drug] = counter.get(d.drug, 0) + 1
        day = (d.at.astimezone(SITE_TZ).date() - day0).days
        systemic = d.drug in MP_FACTOR and d.route in ("IV", "PO")
        rows.append(
            {
                "person_id": pid,
                "study_id": rec.demographics.study_id,
                "drug": d.drug,
                "drug_class": DRUG_CLASS[d.drug],
                "route": d.route,
                "start_at": _utc(d.at),
                "stop_at": None,
                "study_day": day,
                "dose_number": counter[d.drug],
                "dose": d.dose,
                "dose_unit": "ug" if d.drug == "gcsf" else "mg",
                "dose_mg_per_kg": d.dose / rec.infusion.weight_kg if d.drug != "gcsf" else None,
                "rate": None,
                "rate_unit": None,
                "mp_equiv_mg": d.dose * MP_FACTOR[d.drug] if systemic else None,
                "counts_for_steroid_total": systemic and 0 <= day <= 28,
                "exceeds_label_limit": d.drug == "tocilizumab" and d.dose > 800,
                "indication": d.indication,
                "source_file": "mar.xlsx",
                "source_row": str(i + 1),
            }
        )
    for i, v in enumerate(rec.vasopressors):
        counter[v.drug] = counter.get(v.drug, 0) + 1
        rows.append(
            {
                "person_id": pid,
                "study_id": rec.demographics.study_id,
                "drug": v.drug,
                "drug_class": "vasopressor",
                "route": "IV",
                "start_at": _utc(v.start),
                "stop_at": _utc(v.stop),
                "study_day": (v.start.astimezone(SITE_TZ).date() - day0).days,
                "dose_number": counter[v.drug],
                "dose": None,
                "dose_unit": None,
                "dose_mg_per_kg": None,
                "rate": v.rate,
                "rate_unit": v.rate_unit,
                "mp_equiv_mg": None,
                "counts_for_steroid_total": False,
                "exceeds_label_limit": False,
                "indication": "CRS",
                "source_file": "vasopressors.csv",
                "source_row": str(i + 1),
            }
        )
    return rows


def _lab_rows(pid: int, rec: ClinicalRecord, first_toci: datetime | None) -> list[dict]:
    assert rec.infusion is not None
    day0, t0 = rec.infusion.at.date(), rec.infusion.at
    return [
        {
            "person_id": pid,
            "study_id": rec.demographics.study_id,
            "category": "lab",
            "item": x.test,
            "measured_at": _utc(x.at),
            "study_day": (x.at.astimezone(SITE_TZ).date() - day0).days,
            "hours_since_infusion": (x.at - t0).total_seconds() / 3600,
            "hours_from_first_toci": (x.at - first_toci).total_seconds() / 3600
            if first_toci
            else None,
            "value": x.value,
            "unit": {"sil2r": "U/mL"}.get(x.test, "pg/mL"),
            "source_unit": None,
            "flag": None,
        }
        for x in rec.labs
        if x.at >= t0 - timedelta(days=3)
    ]


def _episode_row(pid: int, plan: PatientPlan, rec: ClinicalRecord, grade: int) -> dict:
    assert rec.infusion is not None and plan.crs_onset_h is not None
    onset = rec.infusion.at + timedelta(minutes=round(plan.crs_onset_h * 60))
    end = onset + timedelta(minutes=int(plan.crs_duration_min or 0))
    toci = [d.at for d in rec.drugs if d.drug == "tocilizumab"]
    masks = [
        d.at for d in rec.drugs if d.drug in DRUG_CLASS and d.drug != "gcsf" and d.route != "IT"
    ]
    day0 = rec.infusion.at.date()
    return {
        "person_id": pid,
        "study_id": plan.study_id,
        "episode_number": 1,
        "is_crs": True,
        "onset_at": _utc(onset),
        "end_at": _utc(end),
        "onset_day": (onset.date() - day0).days,
        "end_day": (end.astimezone(SITE_TZ).date() - day0).days,
        "duration_hours": (end - onset).total_seconds() / 3600,
        "duration_days": round((end - onset).total_seconds() / 86400, 2),
        "max_grade": grade,
        "grade_mechanism": plan.crs_mechanism,
        "first_mask_at": _utc(min(masks)) if masks else None,
        "first_toci_at": _utc(min(toci)) if toci else None,
        "hours_onset_to_first_toci": (min(toci) - onset).total_seconds() / 3600 if toci else None,
    }


def _consort(patients: pd.DataFrame) -> pd.DataFrame:
    inc = patients[patients["is_included"] == True]  # noqa: E712
    rows = [("screened", len(patients)), ("infused", int(patients["is_infused"].sum()))]
    for reason in ("not_infused", "followup_lt_28d", "data_lost"):
        rows.append((f"excluded:{reason}", int((patients["exclusion_reason"] == reason).sum())))
    rows += [
        ("analysed", len(inc)),
        ("analysed:toci", int((inc["is_toci"] == True).sum())),  # noqa: E712
        ("analysed:no_toci", int((inc["is_toci"] == False).sum())),  # noqa: E712
    ]
    return pd.DataFrame([{"step": i + 1, "box": b, "patients": n} for i, (b, n) in enumerate(rows)])


def build_fixture_store(cohort_dir: Path, store: Path) -> None:
    """Fill a DuckDB file's marts from the synthetic cohort (the pipeline test double)."""
    patients = _bool_frame(cohort_dir / "truth" / "patients.csv")
    patients.insert(0, "person_id", range(1, len(patients) + 1))
    pid = dict(zip(patients["study_id"], patients["person_id"], strict=True))
    sup = _bool_frame(cohort_dir / "truth" / "supplement.csv")
    plans = {p.study_id: p for p in build_reference_cohort(SEED)}
    detail, treatment, labs, episodes = [], [], [], []
    truth_by_id = patients.set_index("study_id")
    for s in sup.itertuples(index=False):
        plan = plans[s.study_id]
        rec = simulate(plan, SEED)
        toci = sorted(d.at for d in rec.drugs if d.drug == "tocilizumab")
        fu = rec.follow_up
        grade = truth_by_id.loc[s.study_id, "max_crs_grade"]
        row = {
            "person_id": pid[s.study_id],
            "study_id": s.study_id,
            "infusion_at": _utc(rec.infusion.at) if rec.infusion else None,
            "infusion_date": rec.infusion.at.date() if rec.infusion else None,
            "last_contact_date": fu.last_contact_date,
            "progression_date": fu.progression_date,
            "death_date": fu.death_date,
            "crs_episodes": int(grade > 0) if pd.notna(grade) else None,
            "crs_grade_recorded": s.crs_grade_recorded,
            "recorded_grade_disagrees": s.recorded_grade_disagrees,
            "crs_max_grade_mechanism": s.crs_max_grade_mechanism,
            "pre_infusion_fever": s.pre_infusion_fever,
            "first_toci_at": _utc(toci[0]) if toci else None,
            "il6_before_first_toci": s.il6_before_first_toci,
            "il6_after_first_toci": s.il6_after_first_toci,
            "il6_fell_after_toci": s.il6_fell_after_toci,
            "gcsf_total_ug": s.gcsf_total_ug,
            "lost_data_kind": s.lost_data_kind,
        }
        detail.append(row)
        if rec.infusion is None:
            continue
        treatment += _treatment_rows(pid[s.study_id], rec)
        labs += _lab_rows(pid[s.study_id], rec, toci[0] if toci else None)
        if pd.notna(grade) and grade > 0:
            ep = _episode_row(pid[s.study_id], plan, rec, int(grade))
            row["hours_onset_to_first_toci"] = ep["hours_onset_to_first_toci"]
            episodes.append(ep)
    frames = {
        "patient": patients,
        "patient_detail": pd.DataFrame(detail),
        "treatment": pd.DataFrame(treatment),
        "lab_timeseries": pd.DataFrame(labs),
        "crs_episode": pd.DataFrame(episodes),
        "consort": _consort(patients),
    }
    if store.exists():
        store.unlink()
    con = duckdb.connect(str(store))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE SCHEMA marts")
        con.execute(MARTS_DDL.read_text(encoding="utf-8"))
        for name, frame in frames.items():
            con.register("frame", frame)
            con.execute(f"INSERT INTO marts.{name} BY NAME SELECT * FROM frame")
            con.unregister("frame")
    finally:
        con.close()


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calibrated reference cohort without defects and without FHIR (about 3 s)."""
    out = tmp_path_factory.mktemp("analyze_cohort")
    generate(out, patients=61, seed=SEED, defects=False, fhir=False)
    return out


@pytest.fixture(scope="session")
def store_path(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file whose marts hold the reference cohort (pipeline test double)."""
    path = tmp_path_factory.mktemp("analyze_store") / "store.duckdb"
    build_fixture_store(cohort_dir, path)
    return path


@pytest.fixture(scope="session")
def con(store_path: Path) -> duckdb.DuckDBPyConnection:
    """Read-only connection to the fixture store, as an analyst opens it."""
    from cart_etl.load.duckdb_store import connect

    connection = connect(store_path, read_only=True)
    yield connection
    connection.close()
