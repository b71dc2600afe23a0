"""`slidestream survival fit TABLE.csv`: Cox model summary, in-sample and cross-validated C-index and risk groups,
Kaplan-Meier plot."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slidestream.commands._common import non_negative_float, non_negative_int, positive_int

EXAMPLES = """examples:
  slidestream survival fit patients.csv --time os_months --event death --time-unit months
  slidestream survival fit patients.csv --time os_months --event death --covariates age stage --cv 5
  slidestream survival fit patients.csv --time days --event relapse --alpha 0.1 --groups 3"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("survival", help="survival statistics (Cox model, Kaplan-Meier, log-rank)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    fit = verbs.add_parser(
        "fit",
        help="fit a Cox model on a table and plot Kaplan-Meier curves of risk groups",
        description="Fits CoxPH on TABLE.csv and prints each covariate's coefficient and hazard ratio with\n"
        "95% CIs and p-values. The C-index and the log-rank test of risk groups (split by predicted-risk\n"
        "quantiles) are in-sample, hence optimistic; --cv K adds cross-validated ones (each sample's risk and\n"
        "group from a model fitted without it), which the Kaplan-Meier plot then shows. Rows with missing\n"
        "values in the used columns are dropped (and counted).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument(
        "table", metavar="TABLE.csv", help="comma-separated table, one row per sample (patient or slide)"
    )
    fit.add_argument("--time", required=True, help="column with follow-up time")
    fit.add_argument("--event", required=True, help="column with 1 = event, 0 = censored")
    fit.add_argument("--time-unit", help="unit of the time column, for the plot's axis (e.g. months)")
    fit.add_argument("--covariates", nargs="+", help="columns to use (default: every other numeric column)")
    fit.add_argument(
        "--groups", type=positive_int, default=2, help="risk groups by predicted-risk quantiles (default 2)"
    )
    fit.add_argument(
        "--ties", choices=["efron", "breslow"], default="efron", help="tie method (default efron)"
    )
    fit.add_argument(
        "--alpha",
        type=non_negative_float,
        default=0.0,
        help="L2 penalty (default 0); > 0 for separated or collinear data",
    )
    fit.add_argument(
        "--cv", type=positive_int, metavar="K", help="also report K-fold cross-validated risk groups"
    )
    fit.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the --cv fold split (default 0)"
    )
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
    cv: int | None = None
    seed: int = 0
    time_unit: str | None = None


@dataclass(frozen=True)
class GroupTest:
    """Risk groups and their comparison; `skipped` says why there is none (e.g. a single risk value)."""

    group: np.ndarray
    logrank: object = None
    hazard_ratio: object = None
    hazard_ratio_note: str = ""
    skipped: str = ""


@dataclass(frozen=True)
class FitReport:
    model: object
    n: int
    events: int
    dropped: int
    c_index: float  # in-sample
    in_sample: GroupTest
    cv: object = None  # survival.CrossValidatedRisk
    cv_groups: GroupTest | None = None
    plot: Path | None = None
    plot_skipped: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _compare_groups(time, event, group, risk) -> GroupTest:
    import survival

    if np.unique(risk).size < 2:
        return GroupTest(group, skipped="the predicted risk is the same for every sample, so "
                                        "there are no risk groups to compare")  # fmt: skip
    if np.unique(group).size < 2:
        return GroupTest(group, skipped="all samples fall in one risk group (too many tied risks)")
    logrank = survival.logrank_test(time, event, group)
    try:
        return GroupTest(group, logrank, survival.hazard_ratio(time, event, group == group.max()))
    except ValueError:  # the groups separate the events: no finite hazard ratio
        note = "not estimable: one group holds every event while both are at risk (an infinite ratio)"
        return GroupTest(group, logrank, hazard_ratio_note=note)


def fit_table(config: FitConfig) -> FitReport:
    """Fit, compare risk groups (in-sample, and cross-validated with `cv`) and plot; warnings are collected."""
    import survival

    if not 2 <= config.groups <= 10:
        raise ValueError("--groups must be between 2 and 10")
    import pandas as pd  # here: every command's parser is built at start, and pandas costs 0.3 s to import

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
    X = complete[covariates]
    time, event = complete[config.time].to_numpy(), complete[config.event].to_numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = survival.CoxPH(ties=config.ties, alpha=config.alpha).fit(X, time, event)
        risk = model.predict(X)
        in_sample = _compare_groups(time, event, survival.risk_groups(risk, config.groups), risk)
        cv = cv_groups = None
        if config.cv:
            cv = survival.cross_validated_risk(model, X, time, event, config.cv, config.groups, config.seed)
            cv_groups = _compare_groups(time, event, cv.group, cv.risk)
        shown = cv_groups if cv_groups is not None else in_sample
        labels = _group_names(config.groups)
        plot = None
        if not shown.skipped:
            which = f"{config.cv}-fold cross-validated" if cv_groups is not None else "in-sample"
            plot = survival.plot_kaplan_meier(
                config.plot, time, event, shown.group, labels,
                title=f"Cox risk groups ({which}), log-rank p = {shown.logrank.p_value:.3g}",
                time_label=config.time, time_unit=config.time_unit,
            )  # fmt: skip
    messages = tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
    return FitReport(model, len(complete), int(event.astype(bool).sum()), len(used) - len(complete),
                     model.score(X, time, event), in_sample, cv, cv_groups, plot,
                     f"Kaplan-Meier plot skipped: {shown.skipped}" if shown.skipped else "", messages)  # fmt: skip


def _group_names(n: int) -> dict:
    names = ["low risk", "high risk"] if n == 2 else [f"risk Q{i + 1}" for i in range(n)]
    return dict(enumerate(names))


def _print_groups(test: GroupTest, n_groups: int, indent: str = "  ") -> None:
    if test.skipped:
        print(f"{indent}risk groups: none ({test.skipped})")
        return
    lr, hr = test.logrank, test.hazard_ratio
    print(
        f"{indent}{n_groups} risk groups: log-rank chi2 {lr.statistic:.3f} (df {lr.df}), p = {lr.p_value:.3g}"
    )
    if hr is None:
        print(f"{indent}hazard ratio highest vs other groups: {test.hazard_ratio_note}")
        return
    print(f"{indent}hazard ratio highest vs other groups: {hr.hazard_ratio:.3f} "
          f"(95% CI {hr.lower:.3f}-{hr.upper:.3f}), p = {hr.p_value:.3g}")  # fmt: skip


def run_fit(args) -> int:
    table = Path(args.table)
    if not table.exists():
        print(f"error: {table}: no such file", file=sys.stderr)
        return 2
    config = FitConfig(table, args.time, args.event, tuple(args.covariates) if args.covariates else None,
                       args.groups, args.ties, args.alpha,
                       Path(args.plot) if args.plot else table.with_suffix(".km.png"),
                       args.cv, args.seed, args.time_unit)  # fmt: skip
    try:
        report = fit_table(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for message in report.warnings:
        print(f"warning: {message}", file=sys.stderr)
    model = report.model
    print(f"Cox proportional hazards ({config.ties} ties, alpha={config.alpha}) on {report.n} samples, "
          f"{report.events} events" + ("" if model.converged_ else " -- NOT CONVERGED, see the warning"))  # fmt: skip
    if report.dropped:
        print(f"dropped {report.dropped} row(s) with missing values")
    print("exp(coef) is the hazard ratio per unit of the covariate, with its 95% CI:")
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):  # fmt: skip
        print(model.summary.to_string())
    print(f"log partial likelihood {model.loglik_:.4f} (null {model.loglik_null_:.4f})")
    print("in-sample (the model was fitted on these same samples, so these figures are optimistic; "
          "--cv K reports cross-validated ones):")  # fmt: skip
    print(f"  C-index {report.c_index:.4f}")
    _print_groups(report.in_sample, config.groups)
    if report.cv is not None:
        folds = report.cv.fold_c_index
        print(f"cross-validated ({config.cv} folds stratified by event, seed {config.seed}; each sample's risk "
              "and group come from the model fitted without its fold):")  # fmt: skip
        print(f"  C-index {report.cv.c_index:.4f} (pooled out-of-fold risks); per fold mean "
              f"{np.nanmean(folds):.4f}, sd {np.nanstd(folds):.4f}")  # fmt: skip
        _print_groups(report.cv_groups, config.groups)
    if report.plot is not None:
        which = "cross-validated" if report.cv is not None else "in-sample"
        print(f"Kaplan-Meier plot ({which} groups): {report.plot}")
    else:
        print(report.plot_skipped)
    return 0
