"""Hazard ratio between risk groups, with confidence interval and Wald p-value."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from survival._checks import check_survival
from survival.coxph import CoxPH

__all__ = ["HazardRatio", "hazard_ratio"]


@dataclass(frozen=True)
class HazardRatio:
    hazard_ratio: float
    lower: float
    upper: float
    p_value: float
    ci: float


def hazard_ratio(time, event, group, ties: str = "efron", ci: float = 0.95) -> HazardRatio:
    """Hazard ratio of `group` true (e.g. predicted high risk) over false, from a one-covariate Cox model.

    `group` may also be numeric; the ratio is then per unit. A group holding every event that happens while
    both groups are at risk has no finite ratio: a ValueError says so (perfect separation of 'group').
    """
    time, event, group = check_survival(time, event, group, names=("group",))
    x = np.asarray(group, dtype=np.float64)
    if np.unique(x).size < 2:
        raise ValueError("group has a single value: a hazard ratio needs two groups")
    model = CoxPH(ties=ties, ci=ci).fit(pd.DataFrame({"group": x}), time, event)
    row = model.summary.iloc[0]
    lower, upper = model.confidence_intervals()[0]
    return HazardRatio(
        float(np.exp(model.coef_[0])), float(np.exp(lower)), float(np.exp(upper)), float(row["p"]), ci
    )
