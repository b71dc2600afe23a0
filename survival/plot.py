"""Kaplan-Meier curves of groups as clinical readers expect them: confidence bands, censor ticks, the log-rank p
and a numbers-at-risk table under the axis (lifelines' `add_at_risk_counts` convention).

Drawn on a `matplotlib.figure.Figure` without pyplot, so the caller's backend and open figures are untouched
(a notebook keeps its inline plots). matplotlib is the `plot` extra.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from survival._checks import check_survival
from survival.kaplan_meier import kaplan_meier
from survival.logrank import logrank_test

__all__ = ["at_risk_counts", "kaplan_meier_figure", "plot_kaplan_meier"]


def at_risk_counts(time, ticks) -> np.ndarray:
    """Samples still at risk at each tick: follow-up time >= tick (events and censorings at the tick count)."""
    time = np.sort(np.asarray(time, dtype=np.float64))
    return len(time) - np.searchsorted(time, np.asarray(ticks, dtype=np.float64), side="left")


def kaplan_meier_figure(time, event, groups, labels: dict | None = None, title: str = "", *,
                        time_label: str = "time", time_unit: str | None = None, at_risk: bool = True):  # fmt: skip
    """A Figure with one Kaplan-Meier curve per group (band, censor ticks) and, with `at_risk`, the numbers at
    risk of each group at the x ticks. `labels` maps group values to names; `time_unit` is appended to the x
    label. With two or more groups the default title carries the log-rank p-value.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    time, event, groups = check_survival(time, event, groups, names=("groups",))
    values = np.unique(groups)
    names = [str((labels or {}).get(v, v)) for v in values]
    rows = len(values) if at_risk else 0
    fig = Figure(figsize=(6.4, 4.4 + 0.22 * (rows + 1) * at_risk), dpi=120)
    if at_risk:
        grid = fig.add_gridspec(2, 1, height_ratios=[4.4, 0.22 * (rows + 1) + 0.35], hspace=0.32)
        ax, table = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    else:
        ax, table = fig.add_subplot(), None
    colours = []
    for value, name in zip(values, names, strict=True):
        mask = groups == value
        km = kaplan_meier(time[mask], event[mask])
        line = ax.step(km.timeline, km.survival, where="post", label=f"{name} (n={int(mask.sum())})")[0]
        colour = line.get_color()
        colours.append(colour)
        ax.fill_between(km.timeline, km.lower, km.upper, step="post", alpha=0.15, color=colour)
        censored = np.unique(time[mask & ~event])
        ax.plot(censored, km.survival_at(censored), linestyle="none", marker="|", markersize=8,
                markeredgewidth=1.2, color=colour, gid="censor-ticks")  # fmt: skip
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", marker="|", linestyle="none", markersize=8, label="censored"))
    ax.legend(handles=handles, loc="best", fontsize="small")
    ax.set_xlabel(f"{time_label} ({time_unit})" if time_unit else time_label)
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, float(time.max()) * 1.02 or 1.0)  # all times 0 would make an empty axis
    if not title and len(values) >= 2:
        title = f"Kaplan-Meier by group, log-rank p = {logrank_test(time, event, groups).p_value:.3g}"
    ax.set_title(title or "Kaplan-Meier", fontsize="medium")
    if table is not None:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        ax.set_xticks(ticks)
        _draw_at_risk(
            table, ax, ticks, [at_risk_counts(time[groups == v], ticks) for v in values], names, colours
        )
    fig.subplots_adjust(
        left=0.22 if at_risk else 0.12, right=0.96, top=0.93, bottom=0.06 if at_risk else 0.12
    )
    return fig


def _draw_at_risk(table, ax, ticks, counts, names, colours) -> None:
    """Rows of counts under the curves' x ticks, labelled with the group names in their curves' colours."""
    table.set_xlim(ax.get_xlim())
    table.set_ylim(len(names) - 0.5, -1.2)
    table.axis("off")
    table.text(-0.07, -1, "Number at risk", transform=table.get_yaxis_transform(), ha="right",
               fontsize="small", fontweight="bold")  # fmt: skip
    for row, (name, colour, row_counts) in enumerate(zip(names, colours, counts, strict=True)):
        table.text(-0.07, row, name, transform=table.get_yaxis_transform(), ha="right", va="center",
                   color=colour, fontsize="small")  # fmt: skip
        for tick, count in zip(ticks, row_counts, strict=True):
            table.text(tick, row, str(int(count)), ha="center", va="center", fontsize="small", gid="at-risk")


def plot_kaplan_meier(path, time, event, groups, labels: dict | None = None, title: str = "", *,
                      time_label: str = "time", time_unit: str | None = None) -> Path:  # fmt: skip
    """Write `kaplan_meier_figure` to `path` (format from the suffix, PNG by default), atomically; returns it."""
    fig = kaplan_meier_figure(time, event, groups, labels, title, time_label=time_label, time_unit=time_unit)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fig.savefig(
            partial, format=path.suffix.lstrip(".").lower() or "png", bbox_inches="tight", pad_inches=0.1
        )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
