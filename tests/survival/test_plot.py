"""Kaplan-Meier figures: the curves, censor ticks, numbers at risk and labels a clinical reader checks."""

from __future__ import annotations

import sys

import matplotlib
import numpy as np
import pytest
from PIL import Image

import survival


@pytest.fixture
def two_arms():
    rng = np.random.default_rng(1)
    n = 120
    group = rng.integers(0, 2, n)
    t_event = rng.exponential(20 / np.exp(group))
    t_cens = rng.uniform(0, 40, n)
    return np.round(np.minimum(t_event, t_cens), 1), (t_event <= t_cens).astype(int), group


def _texts(artist, gid):
    return [t for t in artist.texts if t.get_gid() == gid] if gid else list(artist.texts)


def test_figure_shows_curves_censor_ticks_and_numbers_at_risk(two_arms):
    time, event, group = two_arms
    labels = {0: "low risk", 1: "high risk"}
    fig = survival.kaplan_meier_figure(time, event, group, labels, time_label="os_months", time_unit="months")
    ax, table = fig.axes
    assert ax.get_xlabel() == "os_months (months)"
    assert "log-rank p = " in ax.get_title()
    curves = [line for line in ax.get_lines() if line.get_gid() is None]
    ticks = [line for line in ax.get_lines() if line.get_gid() == "censor-ticks"]
    assert len(curves) == 2 and len(ticks) == 2
    for value, curve, tick in zip((0, 1), curves, ticks, strict=True):
        mask = group == value
        km = survival.kaplan_meier(time[mask], event[mask])
        np.testing.assert_allclose(curve.get_ydata(), km.survival)
        censored = np.unique(time[mask & (event == 0)])
        assert len(censored) > 5
        np.testing.assert_allclose(tick.get_xdata(), censored)  # one tick per censoring time, on the curve
        np.testing.assert_allclose(tick.get_ydata(), km.survival_at(censored))
        assert tick.get_marker() == "|" and tick.get_color() == curve.get_color()
    # Numbers at risk: one row per group, one count per x tick, by brute force over the samples.
    x_ticks = ax.get_xticks()
    rows = {}
    for text in _texts(table, "at-risk"):
        rows.setdefault(text.get_position()[1], []).append((text.get_position()[0], int(text.get_text())))
    assert len(rows) == 2
    for row, value in zip(sorted(rows), (0, 1), strict=True):
        positions, counts = zip(*sorted(rows[row]), strict=True)
        np.testing.assert_allclose(positions, x_ticks)
        assert list(counts) == [int(((time >= t) & (group == value)).sum()) for t in x_ticks]
    names = [t.get_text() for t in _texts(table, None)]
    assert "Number at risk" in names and "low risk" in names and "high risk" in names


def test_at_risk_matches_lifelines(two_arms):
    from lifelines import KaplanMeierFitter

    time, event, _ = two_arms
    ticks = np.array([0.0, 5.0, 10.0, 17.3, 30.0])
    table = KaplanMeierFitter().fit(time, event).event_table
    expected = [
        int(table["at_risk"][table.index >= t].iloc[0]) if (table.index >= t).any() else 0 for t in ticks
    ]
    assert survival.at_risk_counts(time, ticks).tolist() == expected


def test_png_written_atomically_without_touching_global_state(two_arms, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("plot_kaplan_meier must not switch the caller's matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", refuse)
    figures_before = (
        sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else []
    )
    time, event, group = two_arms
    path = survival.plot_kaplan_meier(tmp_path / "km.png", time, event, group, time_label="days")
    assert path == tmp_path / "km.png" and [p.name for p in tmp_path.iterdir()] == ["km.png"]
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[1] > 4.4 * 120  # room for the numbers-at-risk table under the axis
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures_before


def test_one_group_has_no_log_rank_title():
    fig = survival.kaplan_meier_figure([1, 2, 3, 4], [1, 0, 1, 1], [0, 0, 0, 0], at_risk=False)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "Kaplan-Meier"


def test_the_saved_picture_holds_every_label(two_arms, tmp_path):
    """Long group names ("predicted high risk") reach left of the figure's area; the PNG is cut to what is
    drawn, so nothing is clipped: no ink touches any edge of the picture."""
    time, event, group = two_arms
    labels = {0: "predicted low risk", 1: "predicted high risk"}
    path = survival.plot_kaplan_meier(tmp_path / "km.png", time, event, group, labels)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    for edge in (rgb[:, :2], rgb[:, -2:], rgb[:2], rgb[-2:]):
        assert edge.min() > 240
