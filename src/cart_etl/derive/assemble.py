"""Assemble the per-patient facts of one batch of patients into the mart frames.

Everything here is per patient, so a bucket of patients can be derived alone (the run
derives bucket by bucket to keep memory flat). ``person_id`` is added at load time.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cart_etl.contract import DETAIL_COLUMNS, EPISODE_COLUMNS, PATIENT_COLUMNS
from cart_etl.derive import crs, flags, outcomes, treatment
from cart_etl.derive.measurements import derive_col_clinical_flag
from cart_etl.derive.rules import ClinicalRules
from cart_etl.derive.timeline import derive_timeline, local_date, study_day


@dataclass(frozen=True)
class Derived:
    """Mart frames of one batch, keyed by ``patient_key`` (and ``study_id``); one attribute
    per mart of ``cart_etl.load.marts.DERIVED_MARTS``, same name."""

    patient: pl.DataFrame
    patient_detail: pl.DataFrame
    crs_episode: pl.DataFrame
    treatment: pl.DataFrame
    lab_timeseries: pl.DataFrame


def _bool(col: str) -> pl.Expr:
    """Register flags arrive as the text 'true'/'false' after value mapping."""
    return (
        pl.col(col)
        .cast(pl.String)
        .str.to_lowercase()
        .replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean)
    )


def derive_all(
    accepted: dict[str, pl.DataFrame],
    tz: str,
    clinical: ClinicalRules,
) -> Derived:
    """Every derived fact of the patients in ``accepted`` (validated, staged frames).

    ``tz``: the site timezone (study days are local calendar days); ``clinical``: the rule
    sets of the run's mappings (``cart_etl.derive.rules.clinical_rules``).
    """
    rules, steroids, label, derivation = (
        clinical.crs,
        clinical.steroids,
        clinical.label,
        clinical.derivation,
    )
    demo = accepted["demographics"].unique("patient_key", keep="first")
    infusion = accepted["infusion"]
    vitals, labs, oxygen = accepted["vitals"], accepted["labs"], accepted["oxygen"]
    vitals, labs = derive_col_clinical_flag(vitals), derive_col_clinical_flag(labs)
    drugs, vaso = accepted["drugs"], accepted["vasopressors"]
    timeline = derive_timeline(demo, infusion, tz, rules)
    ids = timeline.select("patient_key", "study_id")

    signs = crs.derive_crs_signs(timeline, vitals, oxygen, vaso, rules)
    episodes = crs.derive_crs_episodes(signs, rules)
    graded = crs.derive_crs_grades(episodes, timeline, vitals, oxygen, vaso, drugs, rules, tz)
    episodes = crs.derive_episode_timing(graded, timeline, drugs, rules, tz)
    monitored = crs.derive_monitored(timeline, vitals, rules, tz)
    patient_crs = crs.derive_patient_crs(timeline, monitored, episodes)

    treat = treatment.derive_treatment(
        drugs, vaso, timeline, steroids, label, derivation.drug_classes, tz
    )
    summary = treatment.derive_treatment_summary(treat, label)
    response = outcomes.derive_response(accepted["response"], timeline, derivation, tz)
    survival = outcomes.derive_survival(accepted["follow_up"], timeline)
    infection = outcomes.derive_serious_infection(accepted["infections"], timeline, derivation)
    icans = outcomes.derive_icans(accepted["icans"], timeline, derivation, tz)
    il6 = outcomes.derive_il6_course(
        labs, summary.filter(pl.col("first_toci_at").is_not_null()), derivation
    )
    pre_fever = outcomes.derive_pre_infusion_fever(vitals, timeline, rules.fever_c, tz)
    recorded = (
        accepted["recorded_crs"]
        .group_by("patient_key")
        .agg(crs_grade_recorded=pl.col("grade").max().cast(pl.Int32))
    )
    dose = (  # the dose of the day-0 (earliest) infusion
        infusion.sort("patient_key", "at", nulls_last=True)
        .unique("patient_key", keep="first")
        .select("patient_key", cart_dose_1e6_per_kg="dose_1e6_per_kg")
    )

    wide = (
        timeline.join(demo.drop("study_id", "birth_date", "screening_date"), on="patient_key")
        .join(dose, on="patient_key", how="left")
        .join(patient_crs, on="patient_key", how="left")
        .join(summary, on="patient_key", how="left")
        .join(response, on="patient_key", how="left")
        .join(survival, on="patient_key", how="left")
        .join(infection, on="patient_key", how="left")
        .join(icans, on="patient_key", how="left")
        .join(il6, on="patient_key", how="left")
        .join(pre_fever, on="patient_key", how="left")
        .join(recorded, on="patient_key", how="left")
    )
    infused = pl.col("is_infused")
    monitored_ = pl.col("monitored").fill_null(False)
    wide = wide.with_columns(is_infused=pl.col("infusion_at").is_not_null())
    wide = flags.derive_exclusions(wide, derivation.min_follow_up_days).with_columns(
        is_toci=infused & (pl.col("toci_doses").fill_null(0) > 0),
        is_high_risk=_bool("is_high_risk"),
        prior_allo_sct=_bool("prior_allo_sct"),
        lines_of_therapy=pl.col("lines_of_therapy").cast(pl.Int32),
        toci_doses=pl.when(infused).then(pl.col("toci_doses").fill_null(0)),
        toci_cumulative_mg=pl.when(infused).then(pl.col("toci_cumulative_mg").fill_null(0.0)),
        steroid_mp_equiv_mg=pl.when(infused).then(
            pl.col("steroid_mp_equiv_mg").fill_null(0.0).round(2)
        ),
        os_event=pl.when(infused).then(pl.col("os_event")),
        pfs_event=pl.when(infused).then(pl.col("pfs_event")),
        serious_infection=pl.when(infused).then(pl.col("serious_infection").fill_null(False)),
        has_icans=pl.when(monitored_).then(pl.col("has_icans")),
        max_icans_grade=pl.when(monitored_).then(pl.col("max_icans_grade")),
        infusion_date=pl.col("day0"),
        gcsf_total_ug=pl.when(infused).then(pl.col("gcsf_total_ug").fill_null(0.0)),
        pre_infusion_fever=pl.col("pre_infusion_fever").fill_null(False),
        recorded_grade_disagrees=pl.col("crs_grade_recorded") != pl.col("max_crs_grade"),
        crs_max_grade_mechanism=pl.when(pl.col("max_crs_grade") > 0).then(
            pl.col("crs_max_grade_mechanism")
        ),
    )
    hours_since = (pl.col("at") - pl.col("infusion_at")).dt.total_seconds() / 3600.0
    first_toci = summary.select("patient_key", "first_toci_at")
    lab_parts = [
        frame.join(
            timeline.select("patient_key", "study_id", "day0", "infusion_at"), on="patient_key"
        )
        .join(first_toci, on="patient_key", how="left")
        .select(
            "patient_key",
            "study_id",
            category=pl.lit(category),
            item="item",
            measured_at="at",
            study_day=study_day(local_date("at", tz)),
            hours_since_infusion=hours_since,
            hours_from_first_toci=(pl.col("at") - pl.col("first_toci_at")).dt.total_seconds()
            / 3600.0,
            value="value",
            unit="unit",
            source_unit="source_unit",
            flag="flag",
        )
        for frame, category in ((labs, "lab"), (vitals, "vital"))
    ]
    return Derived(
        patient=wide.select("patient_key", *PATIENT_COLUMNS),
        patient_detail=wide.select("patient_key", *DETAIL_COLUMNS),
        crs_episode=episodes.join(ids, on="patient_key").select("patient_key", *EPISODE_COLUMNS),
        treatment=treat.join(ids, on="patient_key").select(
            "patient_key", "study_id", *[c for c in treat.columns if c != "patient_key"]
        ),
        lab_timeseries=pl.concat(lab_parts, how="vertical_relaxed"),
    )
