"""Supplementary Table S4: logistic regression of receiving tocilizumab on Table 2 covariates.

Model: logit P(tocilizumab) = b0 + b'x, maximum likelihood (statsmodels ``Logit``), odds
ratios exp(b) with Wald 95 % CI and p. With 45 patients and 17 events the fit is fragile:
events per variable are reported (< 10 is a warning, Peduzzi et al., J Clin Epidemiol
1996;49:1373-9); separation is checked directly (a covariate level with no event or no
non-event) and from the optimiser (non-convergence, statsmodels' separation warnings,
|log OR| > 10), and such a model is reported as *not estimable* instead of printing its
diverging odds ratios.

Models:
* ``baseline`` - characteristics known before treatment: age (per 10 years), male sex,
  high risk, lines of therapy, prior allo-SCT, marrow blasts 30-50 % and > 50 % (vs < 30 %,
  the Table 2 categories), CAR-T dose.
* ``with_crs_grade`` - baseline + maximum CRS grade (indicators of grades 1, 2, 3+ vs 0),
  the post-infusion Table 2 row that decided treatment; tocilizumab was only given for
  grade >= 2, so this model separates.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import statsmodels.api as sm

from cart_etl.analyze.cohort import analysed_patients

EPV_WARNING = 10
MAX_ABS_LOG_OR = 10.0


@dataclass
class LogitResult:
    """One model's coefficients (OR, CI, p) or the reason it could not be estimated."""

    model: str
    n: int
    events: int
    covariates: list[str]
    table: pd.DataFrame | None  # index covariate; columns or, ci_low, ci_high, p
    estimable: bool
    problems: list[str] = field(default_factory=list)

    @property
    def events_per_variable(self) -> float:
        """Events (tocilizumab patients) per covariate."""
        return self.events / max(1, len(self.covariates))


def design(df: pd.DataFrame, with_crs_grade: bool = False) -> pd.DataFrame:
    """Covariate matrix (no intercept) from analysed patients."""
    blasts = df["marrow_blasts_pct"].astype(float)
    x = pd.DataFrame(
        {
            "age_per_10y": df["age_years"].astype(float) / 10,
            "male": (df["sex"] == "M").astype(float),
            "high_risk": df["is_high_risk"].astype(float),
            "lines_of_therapy": df["lines_of_therapy"].astype(float),
            "prior_allo_sct": df["prior_allo_sct"].astype(float),
            "marrow_blasts_30_50pct": blasts.between(30, 50).astype(float),
            "marrow_blasts_gt50pct": (blasts > 50).astype(float),
            "cart_dose_1e6_per_kg": df["cart_dose_1e6_per_kg"].astype(float),
        },
        index=df.index,
    )
    if with_crs_grade:
        grade = df["max_crs_grade"].astype(float)
        x["crs_grade_1"] = (grade == 1).astype(float)
        x["crs_grade_2"] = (grade == 2).astype(float)
        x["crs_grade_3plus"] = (grade >= 3).astype(float)
    return x


def separation_problems(x: pd.DataFrame, y: pd.Series) -> list[str]:
    """Binary covariates (and their reference level) with no event or no non-event."""
    problems = []
    indicators = [c for c in x.columns if set(x[c].dropna().unique()) <= {0.0, 1.0}]
    grade_cols = [c for c in indicators if c.startswith("crs_grade_")]
    levels = {c: x[c] == 1 for c in indicators}
    if grade_cols:
        levels["crs_grade_0 (reference)"] = (x[grade_cols] == 0).all(axis=1)
    for name, mask in levels.items():
        if mask.sum() == 0:
            continue
        ev = int(y[mask].sum())
        if ev == 0 or ev == int(mask.sum()):
            kind = "no" if ev == 0 else "only"
            problems.append(
                f"quasi-complete separation: {name} has {kind} tocilizumab patients "
                f"({ev}/{int(mask.sum())})"
            )
    return problems


def fit_logit(x: pd.DataFrame, y: pd.Series, model: str) -> LogitResult:
    """Maximum-likelihood logistic fit with honest failure reporting."""
    data = pd.concat([x, y.rename("y")], axis=1).dropna()
    xs, ys = data[x.columns], data["y"].astype(float)
    result = LogitResult(model, len(data), int(ys.sum()), list(x.columns), None, True)
    if result.events_per_variable < EPV_WARNING:
        result.problems.append(
            f"{result.events} events for {len(x.columns)} covariates "
            f"({result.events_per_variable:.1f} per variable, < {EPV_WARNING}): estimates "
            "are unstable and p-values unreliable"
        )
    sep = separation_problems(xs, ys)
    if sep:
        result.problems += sep
        result.estimable = False
        return result
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = sm.Logit(ys, sm.add_constant(xs)).fit(disp=0, maxiter=200)
        except (np.linalg.LinAlgError, ValueError) as exc:
            result.problems.append(f"fit failed: {type(exc).__name__}: {exc}")
            result.estimable = False
            return result
    for w in caught:
        name = type(w.message).__name__
        if "Separation" in name or "Convergence" in name:
            result.problems.append(f"statsmodels: {name}: {w.message}")
            result.estimable = False
    if not fit.mle_retvals.get("converged", True):
        result.problems.append("the optimiser did not converge")
        result.estimable = False
    params = fit.params.drop("const")
    if (params.abs() > MAX_ABS_LOG_OR).any() or not np.isfinite(fit.bse).all():
        result.problems.append("diverging coefficients (|log OR| > 10): separation")
        result.estimable = False
    ci = fit.conf_int().drop("const")
    result.table = pd.DataFrame(
        {
            "or": np.exp(params),
            "ci_low": np.exp(ci[0]),
            "ci_high": np.exp(ci[1]),
            "p": fit.pvalues.drop("const"),
        }
    )
    return result


def logistic_models(con: duckdb.DuckDBPyConnection) -> dict[str, LogitResult]:
    """The ``baseline`` and ``with_crs_grade`` models on the analysed patients."""
    df = analysed_patients(con)
    y = df["is_toci"].astype(float)
    return {
        "baseline": fit_logit(design(df), y, "baseline"),
        "with_crs_grade": fit_logit(design(df, with_crs_grade=True), y, "with_crs_grade"),
    }


def significant_covariates(result: LogitResult, alpha: float = 0.05) -> list[str]:
    """Covariates with p < alpha in an estimable model."""
    if result.table is None or not result.estimable:
        return []
    return [str(c) for c, p in result.table["p"].items() if not math.isnan(p) and p < alpha]
