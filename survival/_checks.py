"""Input checks shared by every survival function: clear errors that name the problem."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["check_survival"]


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
