"""Survival statistics: Cox partial likelihood (Breslow, Efron) in torch and numpy, CoxPH, concordance
(Harrell, Uno), Kaplan-Meier, log-rank, hazard ratios. Needs numpy, scipy, pandas, scikit-learn (CoxPH is a
scikit-learn estimator) and torch; the Kaplan-Meier plots need matplotlib, the `plot` extra, imported only
when a plot is drawn.

Convention: higher risk means an earlier event.
"""

from survival._newton import ConvergenceWarning
from survival.concordance import concordance_index, concordance_index_ipcw
from survival.cox_loss import CoxHead, cox_loss
from survival.coxph import CoxPH
from survival.hazard import HazardRatio, hazard_ratio
from survival.kaplan_meier import KaplanMeier, kaplan_meier
from survival.logrank import LogRankResult, logrank_test
from survival.partial_likelihood import SortedSurvival, partial_likelihood
from survival.plot import at_risk_counts, kaplan_meier_figure, plot_kaplan_meier
from survival.validation import CrossValidatedRisk, cross_validated_risk, risk_groups, stratified_folds

__all__ = [
    "ConvergenceWarning",
    "CoxHead",
    "CoxPH",
    "CrossValidatedRisk",
    "HazardRatio",
    "KaplanMeier",
    "LogRankResult",
    "SortedSurvival",
    "at_risk_counts",
    "concordance_index",
    "concordance_index_ipcw",
    "cox_loss",
    "cross_validated_risk",
    "hazard_ratio",
    "kaplan_meier",
    "kaplan_meier_figure",
    "logrank_test",
    "partial_likelihood",
    "plot_kaplan_meier",
    "risk_groups",
    "stratified_folds",
]
