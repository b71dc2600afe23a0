"""`slidestream survival fit` on the real rossi table and on tables that used to end badly."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import survival
from slidestream.cli import main


@pytest.fixture
def rossi_csv(rossi, tmp_path):
    table = tmp_path / "rossi.csv"
    rossi.to_csv(table, index=False)
    return table


def _fit(*args):
    return main(["survival", "fit", *map(str, args)])


def test_fit_prints_summary_and_writes_plot(rossi, tmp_path, capsys, monkeypatch):
    table = tmp_path / "rossi.csv"
    frame = rossi.copy()
    frame.loc[3, "age"] = None  # one incomplete row is dropped and reported
    frame.to_csv(table, index=False)
    plot = tmp_path / "km.png"
    calls = []
    real = survival.plot_kaplan_meier
    monkeypatch.setattr(survival, "plot_kaplan_meier", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    code = _fit(table, "--time", "week", "--event", "arrest", "--time-unit", "weeks",
                "--covariates", "fin", "age", "prio", "--groups", "3", "--plot", plot)  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "431 samples" in out and "dropped 1 row" in out
    assert "prio" in out and "C-index" in out and "log-rank" in out and "hazard ratio" in out
    # Hazard ratios with their 95% CI, as lifelines' summary prints them.
    assert "exp(coef) lower 95%" in out and "exp(coef) upper 95%" in out
    model = survival.CoxPH().fit(
        frame.dropna()[["fin", "age", "prio"]], frame.dropna().week, frame.dropna().arrest
    )
    prio = next(line for line in out.splitlines() if line.startswith("prio"))
    hr_low, hr_high = np.exp(model.confidence_intervals()[2])
    assert f"{hr_low:.4g}" in prio and f"{hr_high:.4g}" in prio
    # In-sample figures are labelled as such.
    assert re.search(r"in-sample .*optimistic", out) and "--cv K" in out
    assert (
        f"C-index {model.score(frame.dropna()[['fin', 'age', 'prio']], frame.dropna().week, frame.dropna().arrest):.4f}"
        in out
    )
    ((args, kwargs),) = calls
    assert kwargs["time_label"] == "week" and kwargs["time_unit"] == "weeks"
    assert len(np.unique(args[3])) == 3 and "in-sample" in kwargs["title"]
    with Image.open(plot) as image:
        assert image.format == "PNG"


def test_cv_reports_cross_validated_figures(rossi, rossi_csv, tmp_path, capsys):
    plot = tmp_path / "km.png"
    assert (
        _fit(rossi_csv, "--time", "week", "--event", "arrest", "--cv", "4", "--seed", "2", "--plot", plot)
        == 0
    )
    out = capsys.readouterr().out
    X = rossi.drop(columns=["week", "arrest"])
    cv = survival.cross_validated_risk(survival.CoxPH(), X, rossi.week, rossi.arrest, n_folds=4, seed=2)
    assert "cross-validated (4 folds" in out
    assert f"C-index {cv.c_index:.4f} (pooled out-of-fold" in out
    p = survival.logrank_test(rossi.week, rossi.arrest, cv.group).p_value
    section = out.split("cross-validated (4 folds")[1]
    assert f"p = {p:.3g}" in section
    assert "Kaplan-Meier plot (cross-validated groups)" in out and plot.exists()


def test_perfect_separation_is_a_clear_message(tmp_path, capsys):
    rng = np.random.default_rng(0)
    event = rng.integers(0, 2, 60)
    table = tmp_path / "sep.csv"
    pd.DataFrame({"months": rng.exponential(10, 60).round(1), "dead": event, "marker": 3.0 * event,
                  "age": rng.normal(60, 5, 60)}).to_csv(table, index=False)  # fmt: skip
    assert _fit(table, "--time", "months", "--event", "dead") == 2
    err = capsys.readouterr().err
    assert "Singular matrix" not in err
    assert "perfect separation" in err and "'marker'" in err and "--alpha" in err
    assert (
        _fit(table, "--time", "months", "--event", "dead", "--alpha", "0.1", "--plot", tmp_path / "km.png")
        == 0
    )


def test_divergence_warns_on_the_console(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 200
    time, event = rng.exponential(1.0, n).round(2), rng.integers(0, 2, n)
    a = rng.normal(0, 50, n)
    b = -pd.Series(time).rank(method="min").to_numpy() - a  # a + b orders every event before its risk set
    table = tmp_path / "quasi.csv"
    pd.DataFrame({"t": time, "e": event, "a": a, "b": b}).to_csv(table, index=False)
    assert _fit(table, "--time", "t", "--event", "e", "--plot", tmp_path / "km.png") == 0
    captured = capsys.readouterr()
    assert re.search(r"^warning: CoxPH diverged.*involved: a, b\..*--alpha", captured.err, re.M)
    assert "NOT CONVERGED" in captured.out
    # The in-sample groups of a separated fit hold every event on one side: no finite hazard ratio, said so.
    assert "hazard ratio highest vs other groups: not estimable" in captured.out


def test_single_risk_value_prints_the_fit_and_says_why_no_plot(tmp_path, capsys):
    table = tmp_path / "flat.csv"
    pd.DataFrame({"t": [1, 2, 3, 4, 5, 6], "e": [1, 0, 1, 1, 0, 1], "site": 1.0}).to_csv(table, index=False)
    plot = tmp_path / "km.png"
    assert _fit(table, "--time", "t", "--event", "e", "--alpha", "1", "--plot", plot) == 0
    out = capsys.readouterr().out
    assert "site" in out and "C-index 0.5000" in out
    assert "Kaplan-Meier plot skipped: the predicted risk is the same for every sample" in out
    assert not plot.exists()


def test_fit_names_missing_columns(rossi_csv, capsys):
    assert _fit(rossi_csv, "--time", "weeks", "--event", "arrest") == 2
    assert "weeks" in capsys.readouterr().err


def test_fit_reports_bad_events(tmp_path, capsys):
    table = tmp_path / "bad.csv"
    table.write_text("t,e,x\n1,0,1\n2,2,3\n3,1,2\n4,1,5\n")
    assert _fit(table, "--time", "t", "--event", "e") == 2
    assert "0 (censored) or 1" in capsys.readouterr().err
