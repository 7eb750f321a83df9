"""Every analysis result of one store, each computed at most once.

``Results(con)`` runs an analysis function the first time its result is asked for and keeps
the value, so the report, its figures, the published-vs-reproduced table and the arithmetic
of the known inconsistencies share one computation of each result (``cart-etl report``
used to compute Table 2 four times and most outcomes three times).
"""

from __future__ import annotations

from functools import cached_property

import duckdb
import pandas as pd

from cart_etl.analyze import outcomes
from cart_etl.analyze.agreement import Agreement, agreement
from cart_etl.analyze.cohort import (
    analysed_details,
    analysed_patients,
    consort_counts,
    cytokine_series,
    enrolment_months,
    toci_doses,
)
from cart_etl.analyze.regression import LogitResult, logistic_models
from cart_etl.analyze.stats import TestResult
from cart_etl.analyze.survival import SurvivalResult, survival
from cart_etl.analyze.table2 import Continuous, Table2Row, table2_frame, table2_rows


class Results:
    """Lazily computed, cached results of the analysis functions on one connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    @cached_property
    def consort(self) -> dict[str, int]:
        """``marts.consort`` as {box: patients}."""
        return consort_counts(self.con)

    @cached_property
    def enrolment_months(self) -> tuple[str, str] | None:
        """First and last month of an infusion."""
        return enrolment_months(self.con)

    @cached_property
    def patients(self) -> pd.DataFrame:
        """Analysed patients (``marts.patient``) with their group."""
        return analysed_patients(self.con)

    @cached_property
    def details(self) -> pd.DataFrame:
        """``marts.patient_detail`` of the analysed patients."""
        return analysed_details(self.con)

    @cached_property
    def table2_rows(self) -> list[Table2Row]:
        """Table 2 rows with both test families and their adjustments."""
        return table2_rows(self.con)

    @cached_property
    def table2(self) -> pd.DataFrame:
        """Table 2 display frame (``attrs["n"]``: patients per column)."""
        return table2_frame(self.table2_rows, self.patients)

    @cached_property
    def response(self) -> pd.DataFrame:
        """Day-28 response x group."""
        return outcomes.response_counts(self.con)

    @cached_property
    def mrd(self) -> outcomes.GroupComparison:
        """MRD-negative CR by group, Fisher exact."""
        return outcomes.mrd_negative_cr(self.con)

    @cached_property
    def infection(self) -> outcomes.GroupComparison:
        """Serious infection by group, Fisher exact."""
        return outcomes.serious_infection(self.con)

    @cached_property
    def crs_duration(self) -> outcomes.DurationResult:
        """CRS duration by group, overall and by grade."""
        return outcomes.crs_duration(self.con)

    @cached_property
    def crs_grades(self) -> dict[int, int]:
        """Analysed patients per maximum CRS grade."""
        return outcomes.crs_grade_counts(self.con)

    @cached_property
    def gcsf(self) -> tuple[Continuous, Continuous, TestResult]:
        """G-CSF total dose per group and Mann-Whitney U."""
        return outcomes.gcsf(self.con)

    @cached_property
    def tocilizumab(self) -> outcomes.TociSummary:
        """Tocilizumab use in the tocilizumab group."""
        return outcomes.tocilizumab(self.con)

    @cached_property
    def toci_doses(self) -> pd.DataFrame:
        """Tocilizumab administrations of the analysed patients."""
        return toci_doses(self.con)

    @cached_property
    def steroids(self) -> outcomes.SteroidSummary:
        """Systemic corticosteroid use."""
        return outcomes.steroids(self.con)

    @cached_property
    def icans(self) -> dict[str, int]:
        """ICANS patients overall, per group and with grade >= 3."""
        return outcomes.icans(self.con)

    @cached_property
    def cytokine_series(self) -> pd.DataFrame:
        """Cytokines of the tocilizumab group around the first dose."""
        return cytokine_series(self.con)

    @cached_property
    def cytokine_changes(self) -> dict[str, outcomes.CytokineChange]:
        """Per cytokine: monitored, fell, paired Wilcoxon test."""
        return outcomes.cytokine_changes_from(self.cytokine_series)

    @cached_property
    def survival(self) -> dict[str, SurvivalResult]:
        """OS and PFS by group with the log-rank tests."""
        return survival(self.con)

    @cached_property
    def logistic_models(self) -> dict[str, LogitResult]:
        """Supplementary Table S4 models."""
        return logistic_models(self.con)

    @cached_property
    def agreement(self) -> Agreement:
        """Derived vs recorded CRS grade."""
        return agreement(self.con)


def results_of(source: Results | duckdb.DuckDBPyConnection) -> Results:
    """``source`` itself, or a new ``Results`` over a connection."""
    return source if isinstance(source, Results) else Results(source)
