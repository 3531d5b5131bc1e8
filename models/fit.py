"""Fitting one generator end to end: preprocessing, training, and the numbers that judge it.

:func:`fit_generator` takes the feature matrices of the train, validation and reference partitions and returns
the trained model with its preprocessing, the training history, the test NLL against a multivariate Gaussian
fitted to the same preprocessed data, and a timed sample (in feature space) as large as the reference partition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from analysis.features import BTAG_FEATURES, BTAG_SCORES, FEATURES
from analysis.ntuple import OPTIONAL_COLUMNS, ntuple_writer

from .baselines import gaussian_nll
from .flows import build_flow, count_parameters
from .io import save_generator
from .preprocessing import Preprocessor
from .training import (
    EpochRecord,
    TrainResult,
    TrainSettings,
    nll,
    sample_batches,
    train_model,
)


def generator_columns(available: Iterable[str], feature_units: str,
                      btag_working_points: Sequence[float]) -> tuple[list[str], list[str], list[float]]:
    """What a generator is trained on, given the ntuple columns ``available``: the 28 features, plus the jets'
    continuous b-tag scores where the source provides them (NanoAOD), in which case the b-tag levels are derived
    from generated scores at ``btag_working_points``; m_lv is derived for features in GeV.

    Returns ``(columns, derived, working_points)`` for :func:`fit_generator`.
    """
    available = set(available)
    scores = all(c in available for c in BTAG_SCORES)
    columns = FEATURES + (BTAG_SCORES if scores else [])
    derived = (["m_lv"] if feature_units == "GeV" else []) + (BTAG_FEATURES if scores else [])
    return columns, derived, ([float(w) for w in btag_working_points] if scores else [])


@dataclass
class GeneratorFit:
    model: torch.nn.Module
    preprocessor: Preprocessor
    result: TrainResult
    metrics: dict[str, Any]
    generated: np.ndarray  # sample of the size of the reference partition, in feature space


def fit_generator(
    name: str,
    hyper: dict[str, Any],
    partitions: dict[str, np.ndarray],
    features: list[str],
    settings: TrainSettings,
    derived: list[str] = (),
    on_epoch: Callable[[EpochRecord], None] | None = None,
    checkpoint_path: str | None = None,
    btag_working_points: list[float] = (),
) -> GeneratorFit:
    """Preprocess (fitted on ``partitions["train"]``), train zoo model ``name`` with early stopping on
    ``partitions["validation"]``, and assess it on ``partitions["reference"]``. ``derived`` features (and the
    ``btag_working_points`` that b-tag levels derived from scores need) go to the :class:`Preprocessor`. With
    ``checkpoint_path``, every new best state is written there (the last good checkpoint survives a failed
    training)."""
    if len(partitions["train"]) < 2:
        raise ValueError(f"flow {name!r}: the training partition holds {len(partitions['train'])} events; at "
                         "least 2 are needed")
    rng = np.random.default_rng(settings.seed)
    prep = Preprocessor(features, derived=list(derived), btag_working_points=btag_working_points)
    prep.fit(partitions["train"], rng)
    z = {p: prep.forward(x, rng) for p, x in partitions.items()}
    torch.manual_seed(settings.seed)
    model = build_flow(name, prep.flow_features, hyper)

    def checkpoint(state, rec):
        save_generator(checkpoint_path, name, hyper, state, prep, {"epoch": rec.epoch, "val_nll": rec.val_median_nll})

    result = train_model(model, z["train"], z["validation"], settings, on_epoch,
                         checkpoint if checkpoint_path else None)
    model.to("cpu")
    ref = torch.as_tensor(z["reference"], dtype=torch.float32)
    test_nll, test_median = nll(model, ref), nll(model, ref, statistic="median")
    gauss, gauss_median = gaussian_nll(z["train"], z["reference"]), gaussian_nll(z["train"], z["reference"], "median")
    n_ref = len(partitions["reference"])
    t0 = time.perf_counter()
    sample = np.concatenate(list(sample_batches(model, n_ref, 100_000, settings.seed)))
    sample_rate = n_ref / (time.perf_counter() - t0)
    history = [vars(h) for h in result.history]
    metrics = {
        "model": name, "seed": settings.seed, "hyperparameters": hyper, "parameters": count_parameters(model),
        "partition_sizes": {p: int(len(x)) for p, x in partitions.items()}, "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, "train_seconds": result.train_seconds,
        "train_events_per_s": float(np.median([h["events_per_s"] for h in history])),
        "sampling_events_per_s": sample_rate,
        "nll": {"validation_median": result.best_val_nll, "test": test_nll, "gaussian_test": gauss,
                "test_median": test_median, "gaussian_test_median": gauss_median},
        "history": history,
    }
    return GeneratorFit(model, prep, result, metrics, prep.inverse(sample))


def write_generated(path: str, model: torch.nn.Module, preprocessor: Preprocessor, n: int, first_event: int,
                    weight: float, seed: int, batch_size: int, metadata: dict[str, Any], device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> None:
    """Sample ``n`` background events and write them, batch by batch, as a flat ntuple with ``generated = 1``,
    ``label = 0``, event numbers from ``first_event`` and weight ``weight`` each. Memory is bounded by
    ``batch_size``, not by ``n``; the file appears only when complete."""
    done = 0
    with ntuple_writer(path, metadata, [f for f in preprocessor.features if f in OPTIONAL_COLUMNS]) as writer:
        for z in sample_batches(model, n, batch_size, seed, device):
            x = preprocessor.inverse(z)
            m = len(x)
            cols = dict(zip(preprocessor.features, x.T))
            cols.update(label=np.zeros(m, np.int32), generated=np.ones(m, np.int32), weight=np.full(m, weight),
                        event=np.arange(first_event + done, first_event + done + m))
            writer.extend(cols)
            done += m
            if progress is not None:
                progress(done, n)
