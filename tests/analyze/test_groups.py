"""The per-group summary of ``cart-etl demo`` (analyze.groups) and its CLI table."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from cart_etl import cli
from cart_etl.analyze.cohort import analysed_patients
from cart_etl.analyze.groups import group_summary

COLUMNS = ["group", "n", "median age", "CRS", "CRS >= 3", "median CRS days", "MRD- CR", "deaths"]


def test_group_summary_matches_the_analysed_patients(con):
    groups = group_summary(con)
    assert list(groups.columns) == COLUMNS
    assert list(groups["group"]) == ["toci", "no toci"]
    df = analysed_patients(con)
    for label, is_toci in (("toci", True), ("no toci", False)):
        row = groups.set_index("group").loc[label]
        sub = df[df["is_toci"] == is_toci]
        assert row["n"] == len(sub)
        assert row["median age"] == np.median(sub["age_years"])
        assert row["CRS"] == (sub["max_crs_grade"] >= 1).sum()
        assert row["CRS >= 3"] == (sub["max_crs_grade"] >= 3).sum()
        assert row["median CRS days"] == sub["crs_duration_days"].median()
        assert row["MRD- CR"] == (sub["response_day28"] == "mrd_neg_cr").sum()
        assert row["deaths"] == sub["os_event"].astype(bool).sum()
    assert groups["n"].sum() == len(df) == 45


@pytest.fixture
def printed(monkeypatch):
    """What the CLI console prints, on a terminal wide enough for the table."""
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=160))
    return buf


def test_cli_prints_the_group_table(con, printed):
    cli._print_groups(group_summary(con))
    out = printed.getvalue()
    assert "Analysed patients by group (marts.patient)" in out
    for col in COLUMNS:
        assert col in out
    assert "│ toci    │ 17 │" in out


def test_cli_group_table_prints_a_missing_median_as_none(printed):
    frame = pd.DataFrame({"group": ["toci"], "n": [3], "median CRS days": [np.nan]})
    cli._print_groups(frame)
    out = printed.getvalue()
    assert "None" in out and "nan" not in out
