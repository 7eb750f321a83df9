"""CRS signs, episodes and ASTCT 2019 grades (rules in ``mappings/grading/crs_astct2019.json``).

Conventions (README "Truth columns and conventions"; reference/crs_grading.md section 1):
fever >= 38.0 C at or after the infusion; signs = fever, hypotension, supplemental oxygen,
a running vasopressor; an episode starts at a fever and absorbs every sign at most 48 h
after its current end; it is CRS when its onset is on study day 0-14. The grade is
evaluated at every charting time of the episode, per local clock hour.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from cart_etl.derive.rules import CrsRules
from cart_etl.derive.timeline import local_date, study_day

_SIGNS_SCHEMA = {
    "patient_key": pl.String,
    "start": pl.Datetime("us", "UTC"),
    "end": pl.Datetime("us", "UTC"),
    "is_fever": pl.Boolean,
}
EPISODE_SCHEMA: dict[str, pl.DataType] = {
    "patient_key": pl.String(),
    "episode_number": pl.Int32(),
    "onset_at": pl.Datetime("us", "UTC"),
    "end_at": pl.Datetime("us", "UTC"),
}


def _hour(col: str, tz: str) -> pl.Expr:
    """Local clock hour of an instant (fever and hypotension pair up within one hour)."""
    return pl.col(col).dt.convert_time_zone(tz).dt.truncate("1h").dt.replace_time_zone(None)


def derive_crs_signs(
    timeline: pl.DataFrame,
    vitals: pl.DataFrame,
    oxygen: pl.DataFrame,
    vasopressors: pl.DataFrame,
    rules: CrsRules,
) -> pl.DataFrame:
    """Every CRS sign at or after the infusion, as an interval (start, end, is_fever).

    Point signs (a febrile temperature, a systolic BP under the age threshold, a charted
    oxygen device other than room air) have start == end; a vasopressor spans start..stop.
    """
    tl = timeline.filter(pl.col("infusion_at").is_not_null()).select(
        "patient_key", "infusion_at", "sbp_below"
    )
    v = vitals.select("patient_key", "item", "value", "at").join(tl, on="patient_key")
    v = v.filter(pl.col("at") >= pl.col("infusion_at"))
    fever = v.filter((pl.col("item") == "temp") & (pl.col("value") >= rules.fever_c))
    hypo = v.filter((pl.col("item") == "sbp") & (pl.col("value") < pl.col("sbp_below")))
    o2 = (
        oxygen.select("patient_key", "device", "at")
        .join(tl, on="patient_key")
        .filter(
            (pl.col("at") >= pl.col("infusion_at"))
            & ~pl.col("device").is_in(list(rules.no_support_devices))
        )
    )
    vaso = vasopressors.select("patient_key", "start", "stop").join(tl, on="patient_key")
    vaso = vaso.filter(pl.col("stop") >= pl.col("infusion_at"))
    point = [
        f.select("patient_key", start=pl.col("at"), end=pl.col("at"), is_fever=pl.lit(is_fever))
        for f, is_fever in ((fever, True), (hypo, False), (o2, False))
    ]
    spans = vaso.select("patient_key", "start", end=pl.col("stop"), is_fever=pl.lit(False))
    return pl.concat([*point, spans]).cast(_SIGNS_SCHEMA)  # type: ignore[arg-type]


def derive_crs_episodes(signs: pl.DataFrame, rules: CrsRules) -> pl.DataFrame:
    """Chain signs into febrile episodes: (patient_key, episode_number, onset_at, end_at).

    Walk the signs in time order (a fever first at equal times): a sign less than
    ``max_gap_hours`` after the current episode's end extends it (to the later of the two
    ends); otherwise the episode closes, and only a fever opens the next one. A biphasic
    fever with a shorter afebrile gap is therefore one episode. Non-fever signs outside an
    episode (oxygen before any fever) belong to none.
    """
    gap = timedelta(hours=rules.max_gap_hours)
    ordered = signs.sort(["patient_key", "start", "end", pl.col("is_fever").not_()])
    keys = ordered.get_column("patient_key").to_list()
    starts = ordered.get_column("start").to_list()
    ends = ordered.get_column("end").to_list()
    fevers = ordered.get_column("is_fever").to_list()
    rows: list[tuple[str, int, object, object]] = []
    current: list = []  # [patient_key, number, onset, end]
    numbers: dict[str, int] = {}
    for key, start, end, is_fever in zip(keys, starts, ends, fevers, strict=True):
        if current and current[0] == key and start <= current[3] + gap:
            current[3] = max(current[3], end)
            continue
        if current:
            rows.append((current[0], current[1], current[2], current[3]))
            current = []
        if is_fever:
            numbers[key] = numbers.get(key, 0) + 1
            current = [key, numbers[key], start, end]
    if current:
        rows.append((current[0], current[1], current[2], current[3]))
    return pl.DataFrame(rows, schema=EPISODE_SCHEMA, orient="row")


def _vaso_count_col(rule: dict[str, object]) -> str:
    """Column counting the vasopressors running at t, without the rule's exclusions."""
    excluding = sorted(rule.get("excluding") or [])  # type: ignore[call-overload]
    return "_n_vaso_" + "_".join(excluding) if excluding else "_n_vaso"


def _hypotension_grade(rules: CrsRules) -> pl.Expr:
    """Hypotension grade from vasopressor counts and same-hour hypotension (rules top-down)."""
    expr: pl.Expr = pl.lit(0)
    # Build from the lowest rule up so that the highest matching rule wins.
    for rule in sorted(rules.hypotension_grades, key=lambda r: r["grade"]):
        if "min_vasopressors_excluding" in rule:
            cond = pl.col(_vaso_count_col(rule)) >= rule["min_vasopressors_excluding"]
        else:
            cond = pl.col("_hypotensive_hour")
        expr = pl.when(cond).then(pl.lit(rule["grade"])).otherwise(expr)
    return expr


def _hypoxia_grade(rules: CrsRules) -> pl.Expr:
    """Hypoxia grade from the device state; flow above the low-flow maximum is high flow."""
    ordered = sorted(rules.hypoxia_grades, key=lambda r: r["grade"])
    lowest = ordered[0]["grade"]  # any other supplemental oxygen device
    expr: pl.Expr = pl.lit(lowest)
    for rule in ordered:
        cond = pl.col("_device").is_in(rule["devices"])
        if "flow_l_min_above" in rule:
            cond = cond | (pl.col("_flow").fill_null(0.0) > rule["flow_l_min_above"])
        expr = pl.when(cond).then(pl.lit(rule["grade"])).otherwise(expr)
    none = pl.col("_device").is_null() | pl.col("_device").is_in(list(rules.no_support_devices))
    return pl.when(none).then(pl.lit(0)).otherwise(expr)


def _mechanism(rules: CrsRules) -> pl.Expr:
    """Which criterion set the grade at a time: oxygen wins ties (the more specific sign)."""
    oxy = (
        pl.when(pl.col("_oxy") >= 4)
        .then(pl.lit("positive_pressure"))
        .when(pl.col("_oxy") == 3)
        .then(pl.lit("high_flow_o2"))
        .otherwise(pl.lit("low_flow_o2"))
    )
    hyp = (
        pl.when(pl.col("_hyp") >= 4)
        .then(pl.lit("multiple_vasopressors"))
        .when(pl.col("_hyp") == 3)
        .then(pl.lit("vasopressor"))
        .otherwise(pl.lit("hypotension"))
    )
    return (
        pl.when(pl.col("_grade") <= rules.min_febrile_grade)
        .then(pl.lit("fever"))
        .when(pl.col("_oxy") >= pl.col("_hyp"))
        .then(oxy)
        .otherwise(hyp)
    )


def derive_crs_grades(
    episodes: pl.DataFrame,
    timeline: pl.DataFrame,
    vitals: pl.DataFrame,
    oxygen: pl.DataFrame,
    vasopressors: pl.DataFrame,
    drugs: pl.DataFrame,
    rules: CrsRules,
    tz: str,
) -> pl.DataFrame:
    """ASTCT 2019 maximum grade of each episode, its mechanism and first masking drug.

    At every charting time t of the episode (vital sign, oxygen charting, vasopressor
    start): if febrile in t's clock hour, or masked (tocilizumab or a systemic steroid given
    earlier in the episode), grade(t) = max(1, hypotension grade, hypoxia grade); else t does
    not count. Hypotension: 2 if hypotensive in that hour without a vasopressor, 3 with one
    vasopressor (vasopressin alone counts), 4 with >= 2 non-vasopressin vasopressors running.
    Hypoxia: the last device charted at or before t (in force for at most
    ``oxygen_state_valid_hours``). Episode grade = max over t, at least 1.
    """
    ep = episodes.select("patient_key", "episode_number", "onset_at", "end_at")
    if ep.is_empty():
        return ep.with_columns(
            max_grade=pl.lit(None, pl.Int32),
            grade_mechanism=pl.lit(None, pl.String),
            first_mask_at=pl.lit(None, pl.Datetime("us", "UTC")),
        )

    def within(frame: pl.DataFrame, col: str) -> pl.DataFrame:
        joined = frame.join(ep, on="patient_key")
        return joined.filter(pl.col(col).is_between(pl.col("onset_at"), pl.col("end_at")))

    v = vitals.select("patient_key", "item", "value", "at")
    times = pl.concat(
        [
            within(v.select("patient_key", "at"), "at"),
            within(oxygen.select("patient_key", "at"), "at"),
            within(vasopressors.select("patient_key", at=pl.col("start")), "at"),
        ]
    ).unique(["patient_key", "episode_number", "at"])
    febrile = (
        within(v.filter((pl.col("item") == "temp") & (pl.col("value") >= rules.fever_c)), "at")
        .select("patient_key", "episode_number", _hour=_hour("at", tz))
        .unique()
        .with_columns(_febrile=pl.lit(True))
    )
    masks = (
        within(
            drugs.filter(
                pl.col("drug").is_in(list(rules.masking_drugs))
                & ~pl.col("route").fill_null("").is_in(list(rules.masking_excluded_routes))
            ).select("patient_key", "at"),
            "at",
        )
        .group_by("patient_key", "episode_number")
        .agg(first_mask_at=pl.col("at").min())
    )
    sbp = timeline.select("patient_key", "sbp_below")
    hypo_hours = (
        v.filter(pl.col("item") == "sbp")
        .join(sbp, on="patient_key")
        .filter(pl.col("value") < pl.col("sbp_below"))
        .select("patient_key", _hour=_hour("at", tz))
        .unique()
        .with_columns(_hypotensive_hour=pl.lit(True))
    )
    t = (
        times.with_columns(_hour=_hour("at", tz))
        .join(febrile, on=["patient_key", "episode_number", "_hour"], how="left")
        .join(masks, on=["patient_key", "episode_number"], how="left")
        .filter(
            pl.col("_febrile").fill_null(False)
            | (pl.col("first_mask_at").is_not_null() & (pl.col("first_mask_at") <= pl.col("at")))
        )
        .join(hypo_hours, on=["patient_key", "_hour"], how="left")
        .with_columns(pl.col("_hypotensive_hour").fill_null(False))
        .with_row_index("_t")
    )
    # Vasopressors running at t, counted overall and without each rule's exclusions.
    running = (
        t.select("_t", "patient_key", "at")
        .join(vasopressors.select("patient_key", "drug", "start", "stop"), on="patient_key")
        .filter(pl.col("at").is_between(pl.col("start"), pl.col("stop")))
    )
    # One count column per rule (an empty join still yields every column; nulls become 0).
    counts = {
        _vaso_count_col(rule): (~pl.col("drug").is_in(rule.get("excluding") or [])).sum()
        for rule in rules.hypotension_grades
        if "min_vasopressors_excluding" in rule
    }
    n_vaso = running.group_by("_t").agg(**counts)
    t = t.join(n_vaso, on="_t", how="left").with_columns(pl.col(c).fill_null(0) for c in counts)
    # Oxygen state: the last device charted at or before t (any time, not only in the episode).
    o2 = oxygen.select(
        "patient_key", _o2_at=pl.col("at"), _device=pl.col("device"), _flow=pl.col("flow_l_min")
    ).sort("patient_key", "_o2_at", "_device", "_flow")
    t = t.sort("patient_key", "at").join_asof(
        o2,
        left_on="at",
        right_on="_o2_at",
        by="patient_key",
        strategy="backward",
        tolerance=timedelta(hours=rules.oxygen_state_valid_hours),
        check_sortedness=False,  # sorted above by (patient_key, at)
    )
    t = t.with_columns(_hyp=_hypotension_grade(rules), _oxy=_hypoxia_grade(rules))
    t = t.with_columns(
        _grade=pl.max_horizontal(pl.lit(rules.min_febrile_grade), "_hyp", "_oxy")
    ).with_columns(_mech=_mechanism(rules))
    best = (
        t.sort("_grade", "at", descending=[True, False])
        .group_by("patient_key", "episode_number", maintain_order=True)
        .agg(max_grade=pl.col("_grade").first(), grade_mechanism=pl.col("_mech").first())
    )
    return (
        ep.join(best, on=["patient_key", "episode_number"], how="left")
        .join(masks, on=["patient_key", "episode_number"], how="left")
        .with_columns(
            max_grade=pl.col("max_grade").fill_null(rules.min_febrile_grade).cast(pl.Int32),
            grade_mechanism=pl.col("grade_mechanism").fill_null("fever"),
        )
    )


def derive_episode_timing(
    graded: pl.DataFrame, timeline: pl.DataFrame, drugs: pl.DataFrame, rules: CrsRules, tz: str
) -> pl.DataFrame:
    """Study days, duration (hours and days, 2 decimals), CRS flag, time to first tocilizumab.

    Duration = (episode end - first fever) / 24 h (README: how the paper's odd-n median of
    6.1 days arises); is_crs = onset on study day 0..onset_window_days.
    """
    toci = drugs.filter(pl.col("drug") == "tocilizumab").select("patient_key", "at")
    first_toci = (
        graded.select("patient_key", "episode_number", "onset_at", "end_at")
        .join(toci, on="patient_key")
        .filter(pl.col("at").is_between(pl.col("onset_at"), pl.col("end_at")))
        .group_by("patient_key", "episode_number")
        .agg(first_toci_at=pl.col("at").min())
    )
    hours = (pl.col("end_at") - pl.col("onset_at")).dt.total_seconds() / 3600.0
    return (
        graded.join(timeline.select("patient_key", "day0"), on="patient_key", how="left")
        .join(first_toci, on=["patient_key", "episode_number"], how="left")
        .with_columns(
            onset_day=study_day(local_date("onset_at", tz)),
            end_day=study_day(local_date("end_at", tz)),
            duration_hours=hours,
            duration_days=(hours / 24.0).round(2),
            hours_onset_to_first_toci=(
                pl.col("first_toci_at") - pl.col("onset_at")
            ).dt.total_seconds()
            / 3600.0,
        )
        .with_columns(is_crs=pl.col("onset_day") <= rules.onset_window_days)
        .drop("day0")
    )


def derive_monitored(
    timeline: pl.DataFrame, vitals: pl.DataFrame, rules: CrsRules, tz: str
) -> pl.DataFrame:
    """Patients whose temperature was charted at/after the infusion on study days 0-14.

    Without it CRS cannot be graded (grade NULL) and the patient is ``data_lost``.
    """
    temps = (
        vitals.filter(pl.col("item") == "temp")
        .select("patient_key", "at")
        .join(timeline.select("patient_key", "infusion_at", "day0"), on="patient_key")
        .filter(pl.col("at") >= pl.col("infusion_at"))
        .with_columns(_day=study_day(local_date("at", tz)))
        .filter(pl.col("_day").is_between(0, rules.monitoring_window_days))
    )
    return temps.select("patient_key").unique().with_columns(monitored=pl.lit(True))


def derive_patient_crs(
    timeline: pl.DataFrame, monitored: pl.DataFrame, episodes: pl.DataFrame
) -> pl.DataFrame:
    """Per patient: max CRS grade over CRS episodes, onset day and duration of the first one.

    Not monitored -> all NULL; monitored without a CRS episode -> grade 0, onset/duration NULL.
    """
    crs = episodes.filter(pl.col("is_crs"))
    summary = (
        crs.sort("patient_key", "onset_at")
        .group_by("patient_key", maintain_order=True)
        .agg(
            max_crs_grade=pl.col("max_grade").max(),
            crs_onset_day=pl.col("onset_day").first(),
            crs_duration_days=pl.col("duration_days").first(),
            crs_episodes=pl.len().cast(pl.Int32),
            hours_onset_to_first_toci=pl.col("hours_onset_to_first_toci").drop_nulls().first(),
            crs_max_grade_mechanism=pl.col("grade_mechanism")
            .sort_by("max_grade", descending=True)
            .first(),
        )
    )
    out = (
        timeline.select("patient_key")
        .join(monitored, on="patient_key", how="left")
        .join(summary, on="patient_key", how="left")
        .with_columns(pl.col("monitored").fill_null(False))
    )
    return out.with_columns(
        max_crs_grade=pl.when(pl.col("monitored"))
        .then(pl.col("max_crs_grade").fill_null(0))
        .cast(pl.Int32),
        crs_episodes=pl.when(pl.col("monitored")).then(pl.col("crs_episodes").fill_null(0)),
        crs_onset_day=pl.when(pl.col("monitored")).then(pl.col("crs_onset_day")),
        crs_duration_days=pl.when(pl.col("monitored")).then(pl.col("crs_duration_days")),
    )
