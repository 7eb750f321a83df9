"""Drug administrations: tocilizumab courses, corticosteroid MP equivalents, G-CSF, vasopressors."""

from __future__ import annotations

import polars as pl

from cart_etl.derive.rules import SteroidRules, TocilizumabLabel
from cart_etl.derive.timeline import local_date, study_day

TREATMENT_COLUMNS = (
    "patient_key",
    "drug",
    "drug_class",
    "route",
    "start_at",
    "stop_at",
    "study_day",
    "dose_number",
    "dose",
    "dose_unit",
    "dose_mg_per_kg",
    "rate",
    "rate_unit",
    "mp_equiv_mg",
    "counts_for_steroid_total",
    "exceeds_label_limit",
    "indication",
    "source_file",
    "source_row",
)


def derive_treatment(
    drugs: pl.DataFrame,
    vasopressors: pl.DataFrame,
    timeline: pl.DataFrame,
    steroids: SteroidRules,
    label: TocilizumabLabel,
    drug_classes: dict[str, str],
    tz: str,
) -> pl.DataFrame:
    """One row per administration (bolus) or vasopressor infusion, with normalised dose.

    MP equivalent = dose x factor (mg MP per mg drug); it counts towards the patient's total
    when the route is systemic (IV/PO) and the study day is in [0, 28] (README "Steroids").
    A tocilizumab dose exceeds the label when above the label maximum per dose (800 mg) or
    above the mg/kg alert for its weight. ``drug_classes``: ingredient -> class
    (``derive/derivation.yaml``); other drugs are class ``other``.
    """
    day0 = timeline.select("patient_key", "day0")
    factor = pl.col("drug").replace_strict(steroids.factors, default=None, return_dtype=pl.Float64)
    per_kg = pl.when(pl.col("dose_unit") == "mg").then(pl.col("dose") / pl.col("weight_kg"))
    d = (
        drugs.join(day0, on="patient_key", how="left")
        .with_columns(study_day=study_day(local_date("at", tz)), dose_mg_per_kg=per_kg)
        .with_columns(
            drug_class=pl.col("drug").replace_strict(drug_classes, default="other"),
            start_at=pl.col("at"),
            stop_at=pl.lit(None, pl.Datetime("us", "UTC")),
            rate=pl.lit(None, pl.Float64),
            rate_unit=pl.lit(None, pl.String),
            mp_equiv_mg=pl.col("dose") * factor,
            counts_for_steroid_total=factor.is_not_null()
            & pl.col("route").is_in(list(steroids.systemic_routes))
            & pl.col("study_day").is_between(steroids.first_day, steroids.last_day),
            exceeds_label_limit=(pl.col("drug") == "tocilizumab")
            & (
                (pl.col("dose") > label.label_max_mg_per_dose)
                | (
                    pl.col("dose_mg_per_kg")
                    > pl.when(pl.col("weight_kg") >= 30)
                    .then(label.alert_mg_per_kg_ge30)
                    .otherwise(label.alert_mg_per_kg_lt30)
                ).fill_null(False)
            ),
            source_file=pl.col("file"),
            source_row=pl.col("row"),
        )
    )
    v = vasopressors.join(day0, on="patient_key", how="left").with_columns(
        drug_class=pl.lit("vasopressor"),
        route=pl.lit("IV"),
        start_at=pl.col("start"),
        stop_at=pl.col("stop"),
        study_day=study_day(local_date("start", tz)),
        dose=pl.lit(None, pl.Float64),
        dose_unit=pl.lit(None, pl.String),
        dose_mg_per_kg=pl.lit(None, pl.Float64),
        mp_equiv_mg=pl.lit(None, pl.Float64),
        counts_for_steroid_total=pl.lit(False),
        exceeds_label_limit=pl.lit(False),
        indication=pl.lit(None, pl.String),
        source_file=pl.col("file"),
        source_row=pl.col("row"),
    )
    cols = [c for c in TREATMENT_COLUMNS if c != "dose_number"]
    out = pl.concat([d.select(cols), v.select(cols)], how="vertical_relaxed")
    return (
        out.sort("patient_key", "drug", "start_at", "source_file", "source_row")
        .with_columns(
            dose_number=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("patient_key", "drug")
        )
        .select(TREATMENT_COLUMNS)
    )


def derive_treatment_summary(treatment: pl.DataFrame, label: TocilizumabLabel) -> pl.DataFrame:
    """Per patient: tocilizumab course, MP-equivalent total, G-CSF total, vasopressor hours.

    toci_doses / toci_cumulative_mg count every tocilizumab administration (README);
    the course exceeds the label with > 3 doses in any 24 h or > 4 doses in total.
    """
    toci = treatment.filter(pl.col("drug") == "tocilizumab").sort("patient_key", "start_at")
    in_24h = (
        toci.rolling("start_at", period="24h", group_by="patient_key")
        .agg(n=pl.len())
        .group_by("patient_key")
        .agg(toci_max_doses_in_24h=pl.col("n").max().cast(pl.Int32))
    )
    course = toci.group_by("patient_key").agg(
        toci_doses=pl.len().cast(pl.Int32),
        toci_cumulative_mg=pl.col("dose").sum(),
        first_toci_at=pl.col("start_at").min(),
    )
    other = treatment.group_by("patient_key").agg(
        steroid_mp_equiv_mg=pl.col("mp_equiv_mg").filter(pl.col("counts_for_steroid_total")).sum(),
        gcsf_total_ug=pl.col("dose").filter(pl.col("drug") == "gcsf").sum(),
        vasopressor_hours=((pl.col("stop_at") - pl.col("start_at")).dt.total_seconds() / 3600.0)
        .filter(pl.col("drug_class") == "vasopressor")
        .sum(),
    )
    return (
        other.join(course, on="patient_key", how="left")
        .join(in_24h, on="patient_key", how="left")
        .with_columns(
            toci_exceeds_course_limit=(pl.col("toci_max_doses_in_24h") > label.max_doses_24h)
            | (pl.col("toci_doses") > label.max_doses_total)
        )
    )
