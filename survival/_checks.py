"""Input checks shared by every survival function: clear errors that name the problem."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = ["check_survival", "split_target"]


def check_survival(time, event, *others, names: tuple[str, ...] = ()) -> tuple[np.ndarray, ...]:
    """(time float64, event bool, *others) after validation; `names` label `others` in messages."""
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event_raw = np.asarray(event).reshape(-1)
    if len(time) != len(event_raw):
        raise ValueError(f"time and event have different lengths ({len(time)} and {len(event_raw)})")
    if len(time) == 0:
        raise ValueError("no samples: time and event are empty")
    if np.isnan(time).any():
        raise ValueError(
            f"time has {int(np.isnan(time).sum())} NaN value(s) (first at index {int(np.argmax(np.isnan(time)))})"
        )
    if np.isinf(time).any():
        raise ValueError("time has infinite values")
    if (time < 0).any():
        raise ValueError(
            f"time has {int((time < 0).sum())} negative value(s) (first at index {int(np.argmax(time < 0))})"
        )
    values = np.unique(event_raw[~_isnan(event_raw)]) if event_raw.dtype.kind == "f" else np.unique(event_raw)
    if event_raw.dtype.kind == "f" and _isnan(event_raw).any():
        raise ValueError("event has NaN values; it must be 0 (censored) or 1 (event)")
    if not np.isin(values, [0, 1, True, False]).all():
        bad = [v for v in values.tolist() if v not in (0, 1)]
        raise ValueError(f"event must be 0 (censored) or 1 (event), found {bad[:5]}")
    event = event_raw.astype(bool)
    out = [time, event]
    for i, other in enumerate(others):
        arr = np.asarray(other)
        if len(arr) != len(time):
            name = names[i] if i < len(names) else f"argument {i + 3}"
            raise ValueError(f"{name} has {len(arr)} rows but time has {len(time)}")
        out.append(arr)
    if not event.any():
        warnings.warn("no events (all samples censored): survival estimates are uninformative", stacklevel=3)
    return tuple(out)


def _isnan(a: np.ndarray) -> np.ndarray:
    return np.isnan(a.astype(np.float64))


def split_target(y, event=None) -> tuple:
    """(time, event) from an estimator's target, in either convention.

    With `event` given, `y` is the time (``fit(X, time, event)``). Alone, `y` holds both, event first as
    scikit-survival orders them: a structured array (``sksurv.util.Surv.from_arrays(event, time)``), a two-column
    frame or an (n, 2) array. This form is what `cross_val_score`, `GridSearchCV` and a `Pipeline` pass on.
    """
    if event is not None:
        return y, event
    if y is None:
        raise ValueError("no survival target: pass y (event, time) or time and event, as fit(X, time, event)")
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 2:
            raise ValueError(f"y must have two columns (event, time), got {y.shape[1]}: {list(y.columns)}")
        first, second = y.iloc[:, 0].to_numpy(), y.iloc[:, 1].to_numpy()
    else:
        arr = np.asarray(y)
        if arr.dtype.names is not None:
            if len(arr.dtype.names) != 2:
                raise ValueError(f"y must have two fields (event, time), got {arr.dtype.names}")
            first, second = (arr[name] for name in arr.dtype.names)
        elif arr.ndim == 2 and arr.shape[1] == 2:
            first, second = arr[:, 0], arr[:, 1]
        else:
            raise ValueError(
                f"y of shape {arr.shape} holds no event: pass y as (event, time) (a structured array as "
                "sksurv.util.Surv.from_arrays makes, a two-column frame or an (n, 2) array), or time and event "
                "separately: fit(X, time, event)"
            )
    if not _is_binary(first) and _is_binary(second):
        raise ValueError(
            "y's columns look swapped: the first must be the event (0/1 or bool) and the second the time, "
            "as scikit-survival orders them"
        )
    return second, first


def _is_binary(a: np.ndarray) -> bool:
    try:
        values = np.unique(np.asarray(a, dtype=np.float64))
    except (TypeError, ValueError):
        return False
    return bool(np.isin(values, [0.0, 1.0]).all())
