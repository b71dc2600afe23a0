import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def rossi() -> pd.DataFrame:
    """The recidivism data bundled with lifelines (432 released prisoners, many tied weeks)."""
    from lifelines.datasets import load_rossi

    return load_rossi()


@pytest.fixture
def synthetic_survival():
    rng = np.random.default_rng(0)
    n = 400
    X = rng.normal(size=(n, 3))
    true = np.array([0.8, -0.5, 0.0])
    t_event = rng.exponential(1.0 / np.exp(X @ true))
    t_cens = rng.exponential(1.5, n)
    time = np.round(np.minimum(t_event, t_cens), 1)  # rounding creates ties
    event = (t_event <= t_cens).astype(int)
    return X, time, event, true
