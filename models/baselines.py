"""Reference density models that a trained flow must beat."""

from __future__ import annotations

import numpy as np
from scipy import stats


def gaussian_nll(train: np.ndarray, test: np.ndarray, statistic: str = "mean") -> float:
    """Mean (or, with ``statistic="median"``, median) negative log-likelihood per event of ``test`` under a
    multivariate Gaussian fitted (maximum likelihood) to ``train``: the natural baseline for a flow trained on the
    same preprocessed data."""
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, bias=True)
    values = -stats.multivariate_normal(mean=mean, cov=cov, allow_singular=True).logpdf(test)
    return float(np.median(values) if statistic == "median" else values.mean())
