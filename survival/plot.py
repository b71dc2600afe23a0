"""Kaplan-Meier curves of risk groups with the log-rank p-value (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from survival.kaplan_meier import kaplan_meier
from survival.logrank import logrank_test

__all__ = ["plot_kaplan_meier"]


def plot_kaplan_meier(path, time, event, groups, labels: dict | None = None, title: str = "") -> Path:
    """Write a PNG of one Kaplan-Meier curve (with confidence band) per group; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time, event, groups = np.asarray(time, float), np.asarray(event), np.asarray(groups)
    test = logrank_test(time, event, groups)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for value in test.groups:
        mask = groups == value
        km = kaplan_meier(time[mask], event[mask])
        name = (labels or {}).get(value, str(value))
        line = ax.step(km.timeline, km.survival, where="post", label=f"{name} (n={mask.sum()})")[0]
        ax.fill_between(km.timeline, km.lower, km.upper, step="post", alpha=0.15, color=line.get_color())
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"Kaplan-Meier by group, log-rank p = {test.p_value:.3g}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
