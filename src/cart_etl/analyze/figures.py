"""Figures 1-4 of Zhou et al. 2025 redrawn from the marts (matplotlib, Agg canvas, no pyplot).

Each ``figure_*`` function takes already computed results and returns a matplotlib
``Figure``; ``save`` writes one as PNG (``report`` draws all four).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.transforms import blended_transform_factory

from cart_etl.analyze.cohort import (
    CYTOKINE_LABELS,
    CYTOKINES,
    GROUP_NON_TOCI,
    GROUP_TOCI,
)
from cart_etl.analyze.outcomes import CytokineChange, DurationResult, GroupComparison
from cart_etl.analyze.survival import GROUP_LABELS, SurvivalResult, fmt_days

COLORS = {GROUP_TOCI: "#c0392b", GROUP_NON_TOCI: "#2c6fbb"}
DPI = 110


def p_label(p: float) -> str:
    """``p = 0.035`` or ``p < 0.001``, and the paper's star / ns."""
    mark = "*" if p < 0.05 else "ns"
    return f"p < 0.001 ({mark})" if p < 0.001 else f"p = {p:.3f} ({mark})"


def figure_consort(counts: dict[str, int]) -> Figure:
    """Figure 1: CONSORT flow from ``marts.consort`` (screened -> infused -> analysed)."""
    fig = Figure(figsize=(7.5, 6.2), dpi=DPI)
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")

    def box(x: float, y: float, text: str, w: float = 4.2, h: float = 0.9) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc="white", ec="black"
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=9)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "lw": 1.2})

    get = counts.get
    box(3.5, 9.2, f"Screened r/r B-ALL patients\nn = {get('screened', 0)}")
    box(8.0, 8.1, f"Not infused (paper: progressed)\nn = {get('excluded:not_infused', 0)}", w=3.4)
    arrow(3.5, 8.75, 3.5, 7.45)
    arrow(3.5, 8.1, 6.3, 8.1)
    box(3.5, 7.0, f"Received CD19 CAR-T\nn = {get('infused', 0)}")
    excluded = (
        f"Excluded\nfollow-up < 28 days: n = {get('excluded:followup_lt_28d', 0)}\n"
        f"data lost: n = {get('excluded:data_lost', 0)}"
    )
    box(8.0, 5.8, excluded, w=3.4, h=1.3)
    arrow(3.5, 6.55, 3.5, 4.95)
    arrow(3.5, 5.8, 6.3, 5.8)
    box(3.5, 4.5, f"Analysed\nn = {get('analysed', 0)}")
    arrow(2.4, 4.05, 1.8, 2.75)
    arrow(4.6, 4.05, 5.4, 2.75)
    box(1.8, 2.3, f"Tocilizumab\nn = {get('analysed:toci', 0)}", w=3.0)
    box(5.6, 2.3, f"No tocilizumab\nn = {get('analysed:no_toci', 0)}", w=3.0)
    ax.set_title("Figure 1. Study flow (from marts.consort)", fontsize=11)
    return fig


def _strip(ax: object, values: list[pd.Series], colors: list[str], labels: list[str]) -> None:
    """Box plot with the individual points (the paper's scatter-with-median style)."""
    rng = np.random.default_rng(0)
    data = [v.dropna().astype(float).to_numpy() for v in values]
    ax.boxplot(  # type: ignore[attr-defined]
        data, widths=0.5, showfliers=False, medianprops={"color": "black"}
    )
    for i, (v, c) in enumerate(zip(data, colors, strict=True), start=1):
        ax.scatter(  # type: ignore[attr-defined]
            i + rng.uniform(-0.12, 0.12, len(v)), v, s=14, color=c, alpha=0.8, zorder=3
        )
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)  # type: ignore[attr-defined]


def figure_efficacy_safety(
    response: pd.DataFrame,
    mrd: GroupComparison,
    durations: pd.DataFrame,
    duration: DurationResult,
    infection: GroupComparison,
    gcsf_values: pd.DataFrame,
    gcsf_p: float,
) -> Figure:
    """Figure 2: (A) day-28 response, (B) CRS duration by grade, (C) serious infection,
    (D) G-CSF total dose, by tocilizumab group."""
    fig = Figure(figsize=(11, 8.5), dpi=DPI)
    axes = fig.subplots(2, 2)
    groups = [GROUP_TOCI, GROUP_NON_TOCI]
    names = [GROUP_LABELS[g] for g in groups]
    # A: stacked percentages of response categories
    ax = axes[0, 0]
    shares = response[groups] / response[groups].sum() * 100
    bottom = np.zeros(2)
    palette = {"mrd_neg_cr": "#2e7d32", "mrd_pos_cr": "#9ccc65", "pr": "#ffb300", "nr": "#8d6e63"}
    legend = {"mrd_neg_cr": "MRD- CR", "mrd_pos_cr": "MRD+ CR", "pr": "PR", "nr": "NR"}
    for cat in shares.index:
        vals = shares.loc[cat].to_numpy(dtype=float)
        ax.bar(names, vals, bottom=bottom, color=palette[cat], label=legend[cat], width=0.55)
        for i, (v, n) in enumerate(zip(vals, response.loc[cat, groups], strict=True)):
            if v > 4:
                ax.text(i, bottom[i] + v / 2, f"{n}", ha="center", va="center", fontsize=8)
        bottom += vals
    ax.set_ylabel("% of patients")
    ax.set_ylim(0, 115)
    ax.legend(fontsize=7, loc="upper right", ncol=4)
    ax.set_title(f"A  Day-28 response; MRD- CR Fisher {p_label(mrd.test.p)}", fontsize=9)
    # B: CRS duration by grade stratum and group
    ax = axes[0, 1]
    series, colors, labels = [], [], []
    for stratum, grades in (("1-2", [1, 2]), ("3", [3])):
        for g in groups:
            sel = durations[(durations["group"] == g) & durations["max_crs_grade"].isin(grades)]
            series.append(sel["crs_duration_days"])
            colors.append(COLORS[g])
            labels.append(f"G{stratum}\n{'toci' if g == GROUP_TOCI else 'no toci'}")
    _strip(ax, series, colors, labels)
    ymax = float(durations["crs_duration_days"].max())
    for k, stratum in enumerate(("1-2", "3")):
        test = duration.by_grade.get(stratum, (None, None, None))[2]
        if test is not None:
            x0, x1 = 1 + 2 * k, 2 + 2 * k
            ax.plot([x0, x0, x1, x1], [ymax + 1, ymax + 1.4, ymax + 1.4, ymax + 1], color="k")
            ax.text((x0 + x1) / 2, ymax + 1.6, p_label(test.p), ha="center", fontsize=8)
    ax.set_ylim(-0.5, ymax + 3.5)
    ax.set_ylabel("CRS duration (days)")
    ax.set_title("B  CRS duration by maximum grade (Mann-Whitney)", fontsize=9)
    # C: serious infection
    ax = axes[1, 0]
    pct = [infection.toci.pct, infection.non_toci.pct]
    ns = [infection.toci, infection.non_toci]
    ax.bar(names, pct, color=[COLORS[g] for g in groups], width=0.55)
    for i, c in enumerate(ns):
        ax.text(i, pct[i] + 2, f"{c.n}/{c.denominator}", ha="center", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% with CTCAE grade >= 3 infection")
    ax.set_title(f"C  Serious infection; Fisher {p_label(infection.test.p)}", fontsize=9)
    # D: G-CSF
    ax = axes[1, 1]
    _strip(
        ax,
        [gcsf_values.loc[gcsf_values["group"] == g, "gcsf_total_ug"] for g in groups],
        [COLORS[g] for g in groups],
        names,
    )
    ax.set_ylabel("G-CSF total dose (µg)")
    ax.set_title(f"D  G-CSF total dose; Mann-Whitney {p_label(gcsf_p)}", fontsize=9)
    fig.suptitle("Figure 2. Efficacy and safety by tocilizumab group", fontsize=11)
    fig.tight_layout()
    return fig


def figure_cytokines(series: pd.DataFrame, changes: dict[str, CytokineChange]) -> Figure:
    """Figure 3: cytokines of the tocilizumab group around the first dose (hour 0), one
    thin line per patient and the median per day; last panel IL-6 before vs 24-72 h after."""
    fig = Figure(figsize=(12, 7.5), dpi=DPI)
    axes = fig.subplots(2, 3).ravel()
    for ax, item in zip(axes, CYTOKINES, strict=False):
        s = series[series["item"] == item]
        for _, p in s.groupby("person_id"):
            ax.plot(
                p["hours_from_first_toci"] / 24, p["value"], color="#c0392b", alpha=0.25, lw=0.8
            )
        if not s.empty:
            day = np.floor(s["hours_from_first_toci"] / 24)
            med = s.groupby(day)["value"].median()
            ax.plot(med.index, med.to_numpy(), color="black", lw=2, label="median")
        ax.axvline(0, color="grey", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlim(-10, 30)
        unit = s["unit"].iloc[0] if not s.empty else ""
        ax.set_ylabel(f"{CYTOKINE_LABELS[item]} ({unit})", fontsize=8)
        ax.set_xlabel("days from first tocilizumab dose", fontsize=8)
        c = changes[item]
        ptxt = f"; Wilcoxon {p_label(c.test.p)}" if c.test else ""
        ax.set_title(f"{CYTOKINE_LABELS[item]}: fell in {c.fell}/{c.monitored}{ptxt}", fontsize=8)
    ax = axes[5]
    il6 = changes["il6"]
    pairs = _il6_pairs(series)
    for _, row in pairs.iterrows():
        fell = row["after"] < row["before"]
        ax.plot(
            [0, 1],
            [row["before"], row["after"]],
            marker="o",
            ms=3,
            color="#2e7d32" if fell else "#c0392b",
            alpha=0.8,
        )
    ax.set_yscale("log")
    ax.set_xticks([0, 1], ["last before\nfirst dose", "first 24-72 h\nafter"], fontsize=8)
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel("IL-6 (pg/mL)", fontsize=8)
    ax.set_title(
        f"IL-6 fell in {il6.fell}/{il6.monitored} (green), stayed high in "
        f"{il6.monitored - il6.fell} (red)",
        fontsize=8,
    )
    fig.suptitle("Figure 3. Cytokines in the tocilizumab group around the first dose", fontsize=11)
    fig.tight_layout()
    return fig


def _il6_pairs(series: pd.DataFrame) -> pd.DataFrame:
    from cart_etl.analyze.outcomes import before_after

    return before_after(series, "il6")


def figure_survival(results: dict[str, SurvivalResult]) -> Figure:
    """Figure 4: Kaplan-Meier OS (A) and PFS (B) by group, log-rank p, numbers at risk."""
    fig = Figure(figsize=(12, 5.6), dpi=DPI)
    axes = fig.subplots(1, 2)
    for ax, (letter, key) in zip(axes, (("A", "os"), ("B", "pfs")), strict=True):
        res = results[key]
        for g, gs in res.groups.items():
            gs.fitter.plot_survival_function(
                ax=ax,
                ci_show=False,
                show_censors=True,
                color=COLORS[g],
                censor_styles={"marker": "|", "ms": 6},
            )
        title = "Overall survival" if key == "os" else "Progression-free survival"
        ax.set_title(f"{letter}  {title}; log-rank p = {res.logrank.p:.3f}", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("days since CAR-T infusion")
        ax.set_ylabel("probability")
        lines = []
        for g, gs in res.groups.items():
            lo, hi = gs.median_ci
            lines.append(
                f"{GROUP_LABELS[g]}: median {fmt_days(gs.median_days)} d "
                f"(95% CI {fmt_days(lo)}-{fmt_days(hi)})"
            )
        ax.text(0.02, 0.04, "\n".join(lines), transform=ax.transAxes, fontsize=7.5)
        times = list(next(iter(res.groups.values())).at_risk)
        ax.set_xlim(0, max(times) * 1.02 if times else 1)
        mixed = blended_transform_factory(ax.transData, ax.transAxes)
        ax.set_xticks(times)
        ax.tick_params(axis="x", labelsize=7)
        for row, (g, gs) in enumerate(res.groups.items()):
            y = -0.2 - 0.07 * row
            ax.text(
                -0.02,
                y,
                "toci" if g == GROUP_TOCI else "no toci",
                transform=ax.transAxes,
                ha="right",
                fontsize=7,
                color=COLORS[g],
            )
            for t, n in gs.at_risk.items():
                ax.text(t, y, str(n), transform=mixed, ha="center", fontsize=7, color=COLORS[g])
        ax.text(-0.02, -0.13, "at risk", transform=ax.transAxes, ha="right", fontsize=7)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("Figure 4. Survival by receipt of tocilizumab", fontsize=11)
    fig.subplots_adjust(bottom=0.27, top=0.88, wspace=0.25, left=0.08, right=0.98)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG (Agg canvas) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
