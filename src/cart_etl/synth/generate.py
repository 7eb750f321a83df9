"""`cart-etl synth`: write the site export, FHIR bundles/NDJSON and the truth tables."""

from __future__ import annotations

import csv
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from multiprocessing.pool import AsyncResult
from pathlib import Path

import numpy as np
import orjson

from cart_etl.contract import PATIENT_COLUMNS
from cart_etl.synth.calibrate.cohort import build_reference_cohort
from cart_etl.synth.calibrate.outcomes import draw_outcome
from cart_etl.synth.calibrate.plan import DATA_CUT, ENROL_END, ENROL_START, PatientPlan
from cart_etl.synth.calibrate.registry import draw_patient_plan
from cart_etl.synth.course.episode import DEX_TO_MP
from cart_etl.synth.course.record import simulate
from cart_etl.synth.defects.catalogue import DefectRecord
from cart_etl.synth.fhir.writer import FhirWriter
from cart_etl.synth.model import ClinicalRecord
from cart_etl.synth.site.writer import SiteExportWriter
from cart_etl.synth.vocab import SITE_NAME

REFERENCE_PATIENTS = 61
# The truth has exactly the columns of marts.patient (minus person_id): one contract.
TRUTH_COLUMNS: tuple[str, ...] = PATIENT_COLUMNS
# Facts the paper reports that are not patient columns: kept beside the truth for scoring.
SUPPLEMENT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "infusion_date",
    "crs_grade_recorded",
    "recorded_grade_disagrees",
    "crs_pattern",
    "crs_max_grade_mechanism",
    "pre_infusion_fever",
    "il6_before_first_toci",
    "il6_after_first_toci",
    "il6_fell_after_toci",
    "gcsf_total_ug",
    "lost_data_kind",
)
DEFECT_COLUMNS: tuple[str, ...] = (
    "file",
    "row",
    "field",
    "kind",
    "original_value",
    "injected_value",
    "study_id",
)


@dataclass
class SynthSummary:
    """What a synth run wrote."""

    out_dir: Path
    patients: int
    seed: int
    calibrated: bool
    defects: int
    files: dict[str, int] = field(default_factory=dict)


def _fmt(value: object) -> str:
    """Truth CSV cells: booleans as true/false, missing as empty, floats without noise."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{round(value, 4):g}" if abs(value) < 1e6 else f"{value:.1f}"
    return str(value)


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def truth_row(plan: PatientPlan, record: ClinicalRecord) -> dict[str, object]:
    """The values a correct pipeline must derive for this patient (README conventions)."""
    demo = record.demographics
    infused = record.infusion is not None
    monitored = plan.has_monitoring
    grade = plan.crs_grade if monitored else None
    onset_day = None
    if grade and record.infusion is not None and plan.crs_onset_h is not None:
        onset_at = record.infusion.at + timedelta(minutes=round(plan.crs_onset_h * 60))
        onset_day = (onset_at.date() - record.infusion.at.date()).days
    steroid = _systemic_steroid_mp(record) if infused else None
    return {
        "study_id": plan.study_id,
        "is_infused": infused,
        "exclusion_reason": plan.exclusion,
        "is_included": plan.is_included,
        "is_toci": bool(plan.toci_mg),
        "age_years": _age(
            demo.birth_date, record.infusion.at.date() if record.infusion else demo.screening_date
        ),
        "sex": demo.sex,
        "is_high_risk": demo.is_high_risk,
        "lines_of_therapy": demo.lines_of_therapy,
        "prior_allo_sct": demo.prior_allo_sct,
        "marrow_blasts_pct": demo.marrow_blasts_pct,
        "cart_dose_1e6_per_kg": record.infusion.dose_1e6_per_kg if record.infusion else None,
        "max_crs_grade": grade,
        "crs_onset_day": onset_day,
        "crs_duration_days": round((plan.crs_duration_min or 0) / 1440, 2) if grade else None,
        "has_icans": plan.icans_grade > 0 if monitored else None,
        "max_icans_grade": plan.icans_grade if monitored else None,
        "toci_doses": len(plan.toci_mg) if infused else None,
        "toci_cumulative_mg": float(sum(plan.toci_mg)) if infused else None,
        "steroid_mp_equiv_mg": steroid,
        "response_day28": plan.response,
        "os_days": plan.os_days if infused else None,
        "os_event": plan.os_event if infused else None,
        "pfs_days": plan.pfs_days if infused else None,
        "pfs_event": plan.pfs_event if infused else None,
        "serious_infection": plan.serious_infection if infused else None,
    }


def _systemic_steroid_mp(record: ClinicalRecord) -> float:
    """Planned steroid total, re-stated from the doses: IV/PO, study days 0-28, MP-equivalent."""
    assert record.infusion is not None
    day0 = record.infusion.at.date()
    factor = {"methylprednisolone": 1.0, "dexamethasone": DEX_TO_MP, "prednisone": 0.8}
    total = sum(
        d.dose * factor[d.drug]
        for d in record.drugs
        if d.drug in factor and d.route in ("IV", "PO") and 0 <= (d.at.date() - day0).days <= 28
    )
    return round(total, 2)


def supplement_row(plan: PatientPlan, record: ClinicalRecord) -> dict[str, object]:
    """Per-patient facts behind the paper's non-Table-2 figures."""
    il6_pre = il6_post = None
    toci = [d for d in record.drugs if d.drug == "tocilizumab"]
    if toci and plan.il6_falls is not None:
        first = toci[0].at
        key_il6 = [x for x in record.labs if x.test == "il6" and x.key]
        il6_pre = next((x.value for x in key_il6 if x.at < first), None)
        il6_post = next((x.value for x in key_il6 if x.at > first), None)
    gcsf = sum(d.dose for d in record.drugs if d.drug == "gcsf")
    recorded = record.recorded_crs.grade if record.recorded_crs else None
    grade = plan.crs_grade if plan.has_monitoring else None
    return {
        "study_id": plan.study_id,
        "infusion_date": record.infusion.at.date().isoformat() if record.infusion else None,
        "crs_grade_recorded": recorded,
        "recorded_grade_disagrees": (recorded != grade)
        if recorded is not None and grade is not None
        else None,
        "crs_pattern": plan.crs_pattern if grade else None,
        "crs_max_grade_mechanism": plan.crs_mechanism if grade else None,
        "pre_infusion_fever": plan.pre_infusion_fever and plan.has_monitoring,
        "il6_before_first_toci": il6_pre,
        "il6_after_first_toci": il6_post,
        "il6_fell_after_toci": plan.il6_falls if il6_pre is not None else None,
        "gcsf_total_ug": gcsf if record.infusion else None,
        "lost_data_kind": plan.lost_kind,
    }


def registry_plans(patients: int, seed: int) -> Iterator[PatientPlan]:
    """Uncalibrated registry: each patient drawn on its own stream (flat memory, any N)."""
    span = (ENROL_END - ENROL_START).days
    for index in range(patients):
        rng = np.random.default_rng([seed, 3, index])
        plan = draw_patient_plan(rng, index=index)
        when = ENROL_START + timedelta(days=int(rng.integers(0, span)))
        plan.planned_date = when
        plan.infusion_date = when if plan.is_infused else None
        draw_outcome(rng, plan)
        yield plan


def plans_for(patients: int, seed: int) -> tuple[Iterator[PatientPlan], bool]:
    """The calibrated reference cohort for 61 patients, a registry otherwise."""
    if patients == REFERENCE_PATIENTS:
        return iter(build_reference_cohort(seed)), True
    return registry_plans(patients, seed), False


# Above this size the FHIR writer runs in a second process (it re-simulates each patient
# from the same seed, so both outputs stay deterministic and memory stays flat).
PARALLEL_FHIR_FROM = 200


def background_after(index: int, patients: int, background: int) -> range:
    """Background patients written after cohort patient ``index``: spread evenly between
    the cohort's, so a cohort patient can sit anywhere in the hospital's export."""
    return range(background * index // patients, background * (index + 1) // patients)


def write_fhir(
    out_dir: Path, patients: int, seed: int, defects: bool, background: int = 0
) -> list[DefectRecord]:
    """Simulate every patient and write only the FHIR output (the parallel half of generate)."""
    plans, _ = plans_for(patients, seed)
    with FhirWriter(out_dir / "fhir", defects=defects, seed=seed) as writer:
        for index, plan in enumerate(plans):
            writer.write(simulate(plan, seed))
            for bg in background_after(index, patients, background):
                writer.write_background(bg)
        return writer.close()


def generate(
    out_dir: Path,
    *,
    patients: int = REFERENCE_PATIENTS,
    seed: int = 2025,
    defects: bool = True,
    fhir: bool = True,
    on_patient: Callable[[int], None] | None = None,
    background_patients: int = 0,
) -> SynthSummary:
    """Write the synthetic cohort under ``out_dir`` and return what was written.

    Layout: ``site_export/`` (mapping: ``mappings/sites/tianjin_ref.yaml``),
    ``fhir/bundles`` + ``fhir/ndjson``, ``truth/patients.csv``,
    ``truth/supplement.csv``, ``truth/defects.csv`` and ``manifest.json``.
    ``background_patients`` non-CAR-T patients of the hospital are added to the FHIR
    output only (interleaved with the cohort; see ``synth.fhir.background``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(exist_ok=True)
    plans, calibrated = plans_for(patients, seed)
    fhir_defects: list[DefectRecord] = []
    pool = None
    fhir_future: AsyncResult[list[DefectRecord]] | None = None
    if fhir and patients + background_patients >= PARALLEL_FHIR_FROM:
        pool = multiprocessing.get_context("spawn").Pool(1)
        fhir_future = pool.apply_async(
            write_fhir, (out_dir, patients, seed, defects, background_patients)
        )
    defects_fh = (truth_dir / "defects.csv").open("w", newline="", encoding="utf-8")
    defect_writer = csv.DictWriter(defects_fh, fieldnames=DEFECT_COLUMNS, lineterminator="\n")
    defect_writer.writeheader()
    n_site_defects = 0

    def site_defect(defect: DefectRecord) -> None:
        # Streamed to disk as injected: a 10 000-patient registry has ~10^5 defects.
        nonlocal n_site_defects
        defect_writer.writerow(asdict(defect))
        n_site_defects += 1

    try:
        with defects_fh:
            files, count = _write_site_and_truth(
                out_dir,
                plans,
                seed=seed,
                defects=defects,
                in_process_fhir=fhir and pool is None,
                background=(patients, background_patients),
                site_defect=site_defect,
                fhir_defects=fhir_defects,
                on_patient=on_patient,
            )
            if fhir_future is not None:
                fhir_defects.extend(fhir_future.get())
            # Site-export defects first, then FHIR: the same order whichever process wrote FHIR.
            for defect in fhir_defects:
                defect_writer.writerow(asdict(defect))
    except BaseException:
        if pool is not None:
            pool.terminate()  # do not leave a child writing FHIR after a failure or Ctrl-C
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    injected = n_site_defects + len(fhir_defects)
    summary = SynthSummary(out_dir, count, seed, calibrated, injected, files)
    manifest = {
        "generator": "cart-etl synth",
        "site": SITE_NAME,
        "site_mapping": f"mappings/sites/{SITE_NAME}.yaml",
        "patients": count,
        "seed": seed,
        "calibrated_to": "Zhou et al. Front Immunol 2025;16:1530623" if calibrated else None,
        "defects_injected": injected,
        "fhir": fhir,
        "data_cut": DATA_CUT.isoformat(),
        "site_export_rows": files,
    }
    if fhir and background_patients:
        manifest["fhir_background_patients"] = background_patients
    (out_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return summary


def _write_site_and_truth(
    out_dir: Path,
    plans: Iterator[PatientPlan],
    *,
    seed: int,
    defects: bool,
    in_process_fhir: bool,
    background: tuple[int, int],
    site_defect: Callable[[DefectRecord], None],
    fhir_defects: list[DefectRecord],
    on_patient: Callable[[int], None] | None,
) -> tuple[dict[str, int], int]:
    """Simulate each patient; write the site export, truth rows and (optionally) FHIR.

    ``background`` is (cohort patients, background patients) for ``background_after``.
    """
    truth_dir = out_dir / "truth"
    count = 0
    with (
        (truth_dir / "patients.csv").open("w", newline="", encoding="utf-8") as truth_fh,
        (truth_dir / "supplement.csv").open("w", newline="", encoding="utf-8") as sup_fh,
        SiteExportWriter(
            out_dir / "site_export", defects=defects, seed=seed, defect_sink=site_defect
        ) as site,
    ):
        fhir_writer = (
            FhirWriter(out_dir / "fhir", defects=defects, seed=seed) if in_process_fhir else None
        )
        truth = csv.DictWriter(truth_fh, fieldnames=TRUTH_COLUMNS, lineterminator="\n")
        sup = csv.DictWriter(sup_fh, fieldnames=SUPPLEMENT_COLUMNS, lineterminator="\n")
        truth.writeheader()
        sup.writeheader()
        try:
            for plan in plans:
                record = simulate(plan, seed)
                site.write(record)
                if fhir_writer is not None:
                    fhir_writer.write(record)
                    for bg in background_after(count, *background):
                        fhir_writer.write_background(bg)
                truth.writerow({k: _fmt(v) for k, v in truth_row(plan, record).items()})
                sup.writerow({k: _fmt(v) for k, v in supplement_row(plan, record).items()})
                count += 1
                if on_patient is not None:
                    on_patient(count)
        finally:
            if fhir_writer is not None:
                fhir_defects.extend(fhir_writer.close())
        site.close()
        files = dict(site.rows_written)
    return files, count
