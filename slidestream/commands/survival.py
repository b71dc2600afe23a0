"""`slidestream survival fit TABLE.csv`: Cox model summary, C-index, risk groups, Kaplan-Meier plot."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


def register(sub) -> None:
    p = sub.add_parser("survival", help="survival statistics (Cox model, Kaplan-Meier, log-rank)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    fit = verbs.add_parser(
        "fit",
        help="fit a Cox model on a table and plot Kaplan-Meier curves of risk groups",
        description="Fits CoxPH on TABLE.csv, prints coefficients, hazard ratios with CIs, p-values and the "
        "C-index, splits samples into risk groups by predicted risk and writes a Kaplan-Meier plot with the "
        "log-rank p-value. Rows with missing values in the used columns are dropped (and counted).",
    )
    fit.add_argument("table", metavar="TABLE.csv")
    fit.add_argument("--time", required=True, help="column with follow-up time")
    fit.add_argument("--event", required=True, help="column with 1 = event, 0 = censored")
    fit.add_argument("--covariates", nargs="+", help="columns to use (default: every other numeric column)")
    fit.add_argument(
        "--groups", type=int, default=2, help="risk groups by predicted-risk quantiles (default 2)"
    )
    fit.add_argument("--ties", choices=["efron", "breslow"], default="efron")
    fit.add_argument("--alpha", type=float, default=0.0, help="L2 penalty (default 0)")
    fit.add_argument("--plot", help="Kaplan-Meier PNG (default: TABLE.km.png beside the table)")
    fit.set_defaults(func=run_fit)


@dataclass(frozen=True)
class FitConfig:
    table: Path
    time: str
    event: str
    covariates: tuple[str, ...] | None
    groups: int
    ties: str
    alpha: float
    plot: Path


def fit_table(config: FitConfig) -> dict:
    """Fit, report and plot; returns the model, risk groups and test results."""
    import survival

    df = pd.read_csv(config.table)
    missing = [c for c in (config.time, config.event, *(config.covariates or ())) if c not in df.columns]
    if missing:
        raise ValueError(f"{config.table}: no column(s) {missing}; columns are {list(df.columns)}")
    covariates = list(config.covariates or [c for c in df.select_dtypes("number").columns
                                            if c not in (config.time, config.event)])  # fmt: skip
    if not covariates:
        raise ValueError(f"{config.table}: no numeric covariate columns; name them with --covariates")
    used = df[[config.time, config.event, *covariates]]
    complete = used.dropna()
    dropped = len(used) - len(complete)
    model = survival.CoxPH(ties=config.ties, alpha=config.alpha)
    model.fit(complete[covariates], complete[config.time], complete[config.event])
    risk = model.predict(complete[covariates])
    if not 2 <= config.groups <= 10:
        raise ValueError("--groups must be between 2 and 10")
    edges = np.quantile(risk, np.linspace(0, 1, config.groups + 1)[1:-1])
    group = np.searchsorted(edges, risk, side="right")
    names = (
        ["low risk", "high risk"] if config.groups == 2 else [f"risk Q{i + 1}" for i in range(config.groups)]
    )
    labels = dict(enumerate(names))
    time, event = complete[config.time].to_numpy(), complete[config.event].to_numpy()
    test = survival.logrank_test(time, event, group)
    hr = survival.hazard_ratio(time, event, group == group.max())
    survival.plot_kaplan_meier(config.plot, time, event, group, labels,
                               title=f"Cox risk groups, log-rank p = {test.p_value:.3g}")  # fmt: skip
    return {"model": model, "dropped": dropped, "n": len(complete), "events": int(event.sum()), "logrank": test,
            "hazard_ratio": hr,
            "c_index": model.score(complete[covariates], time, event)}  # fmt: skip


def run_fit(args) -> int:
    table = Path(args.table)
    if not table.exists():
        print(f"error: {table}: no such file", file=sys.stderr)
        return 2
    config = FitConfig(table, args.time, args.event, tuple(args.covariates) if args.covariates else None,
                       args.groups, args.ties, args.alpha,
                       Path(args.plot) if args.plot else table.with_suffix(".km.png"))  # fmt: skip
    try:
        result = fit_table(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = result["model"]
    print(f"Cox proportional hazards ({config.ties} ties, alpha={config.alpha}) on {result['n']} samples, "
          f"{result['events']} events")  # fmt: skip
    if result["dropped"]:
        print(f"dropped {result['dropped']} row(s) with missing values")
    with pd.option_context("display.width", 120, "display.float_format", "{:.4g}".format):
        print(model.summary.to_string())
    print(
        f"log partial likelihood {model.loglik_:.4f} (null {model.loglik_null_:.4f}); C-index {result['c_index']:.4f}"
    )
    test, hr = result["logrank"], result["hazard_ratio"]
    print(
        f"{config.groups} risk groups: log-rank chi2 {test.statistic:.3f} (df {test.df}), p = {test.p_value:.3g}"
    )
    print(f"hazard ratio highest vs other groups: {hr.hazard_ratio:.3f} (95% CI {hr.lower:.3f}-{hr.upper:.3f}), "
          f"p = {hr.p_value:.3g}")  # fmt: skip
    print(f"Kaplan-Meier plot: {config.plot}")
    return 0
