"""Fitting one generator end to end: preprocessing, training, and the numbers that judge it; and, for the
conditional applications, :func:`fit_conditional` and :func:`sample_posterior`.

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

from analysis.features import BTAG_FEATURES, BTAG_SCORES, FEATURES, JET_MASS_FEATURES, JET_MASSES
from analysis.ntuple import OPTIONAL_COLUMNS, ntuple_writer

from .baselines import gaussian_nll
from .flows import count_parameters
from .registry import TEST_NLL_EVENTS, build
from .io import save_generator
from .preprocessing import Preprocessor
from .training import (
    EpochRecord,
    TrainResult,
    TrainSettings,
    has_own_objective,
    nll_values,
    sample_batches,
    train_model,
)


def ordered_columns(training: dict[str, np.ndarray], ordered: Sequence[str]) -> list[str]:
    """``ordered`` (e.g. the jets' pT) if the training data hold them positive and in decreasing order in every
    event (as the skim stores jets in GeV), else none: what the :class:`Preprocessor` may model as ratios."""
    if not ordered or any(f not in training for f in ordered):
        return []
    cols = np.stack([np.asarray(training[f], np.float64) for f in ordered], axis=1)
    return list(ordered) if len(cols) and np.all(cols > 0) and np.all(np.diff(cols, axis=1) <= 0) else []


def generator_columns(available: Iterable[str], feature_units: str, btag_working_points: Sequence[float],
                      derive_masses: bool = False, derive_lv: bool = True) -> tuple[list[str], list[str], list[float]]:
    """What a generator is trained on, given the ntuple columns ``available``: the 28 features, plus the jets'
    continuous b-tag scores where the source provides them (NanoAOD), in which case the b-tag levels are derived
    from generated scores at ``btag_working_points``; m_lv is derived for features in GeV. With
    ``derive_masses`` (features in GeV, jet masses and b-tag scores available), the four jets' masses are
    modelled too and the six jet-dependent high-level masses derived from the generated objects, so that they
    are exactly consistent with them. ``derive_lv`` false: m_lv is modelled too (features whose m_lv is not the
    W-mass solution's, e.g. with a regressed neutrino).

    Returns ``(columns, derived, working_points)`` for :func:`fit_generator`.
    """
    available = set(available)
    scores = all(c in available for c in BTAG_SCORES)
    masses = derive_masses and scores and feature_units == "GeV" and all(c in available for c in JET_MASSES)
    columns = FEATURES + (BTAG_SCORES if scores else []) + (JET_MASSES if masses else [])
    derived = (["m_lv"] if feature_units == "GeV" and derive_lv else []) + (BTAG_FEATURES if scores else []) \
        + (JET_MASS_FEATURES if masses else [])
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
    ordered: list[str] = (),
    nll_events: int | None = None,
) -> GeneratorFit:
    """Preprocess (fitted on ``partitions["train"]``), train zoo model ``name`` with early stopping on
    ``partitions["validation"]``, and assess it on ``partitions["reference"]``. ``derived`` features (and the
    ``btag_working_points`` that b-tag levels derived from scores need, and the ``ordered`` features, modelled as
    ratios so that they stay in decreasing order) go to the :class:`Preprocessor`. With
    ``checkpoint_path``, every new best state is written there (the last good checkpoint survives a failed
    training). ``nll_events`` > 0 computes the test NLL on that many reference events only (0: all; None: the
    registry's :data:`~models.registry.TEST_NLL_EVENTS` for the model, which caps the models whose density
    integrates an ODE, :mod:`models.flow_matching`, at seconds per thousand events)."""
    if len(partitions["train"]) < 2:
        raise ValueError(f"flow {name!r}: the training partition holds {len(partitions['train'])} events; at "
                         "least 2 are needed")
    rng = np.random.default_rng(settings.seed)
    prep = Preprocessor(features, derived=list(derived), btag_working_points=btag_working_points,
                        ordered=list(ordered))
    prep.fit(partitions["train"], rng)
    z = {p: prep.forward(x, rng) for p, x in partitions.items()}
    torch.manual_seed(settings.seed)
    model = build(name, prep.flow_features, hyper)

    def checkpoint(state, rec):
        save_generator(checkpoint_path, name, hyper, state, prep, {"epoch": rec.epoch, "val_nll": rec.val_median_nll})

    result = train_model(model, z["train"], z["validation"], settings, on_epoch,
                         checkpoint if checkpoint_path else None)
    model.to("cpu")
    if nll_events is None:
        nll_events = TEST_NLL_EVENTS.get(name, 0)
    ref = torch.as_tensor(z["reference"][:nll_events or None], dtype=torch.float32)
    values = nll_values(model, ref)
    test_nll, test_median = float(values.mean()), float(np.median(values))
    z_ref = z["reference"][:len(ref)]
    gauss, gauss_median = gaussian_nll(z["train"], z_ref), gaussian_nll(z["train"], z_ref, "median")
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
        "early_stopping": _stopping(model),
        "nll": {"validation_median": result.best_val_nll, "test": test_nll, "gaussian_test": gauss,
                "test_events": int(len(ref)),
                "test_median": test_median, "gaussian_test_median": gauss_median},
        "history": history,
    }
    return GeneratorFit(model, prep, result, metrics, prep.inverse(sample))


def _stopping(model: torch.nn.Module) -> str:
    """What ``nll.validation_median`` of a generator's metrics holds (the quantity early stopping followed)."""
    if has_own_objective(model):
        return "mean validation flow-matching loss (fixed noise)"
    return "median validation negative log-likelihood"


def write_generated(path: str, model: torch.nn.Module, preprocessor: Preprocessor, n: int, first_event: int,
                    weight: float, seed: int, batch_size: int, metadata: dict[str, Any], device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None,
                    accept: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None) -> None:
    """Sample ``n`` background events and write them, batch by batch, as a flat ntuple with ``generated = 1``,
    ``label = 0``, event numbers from ``first_event`` and weight ``weight`` each. Memory is bounded by
    ``batch_size``, not by ``n``; the file appears only when complete.

    With ``accept`` (columns -> boolean mask), events outside the physical support are rejected and sampling goes
    on until ``n`` are accepted: the sample then follows the flow's density restricted to the support and
    renormalised, ``p(x) / A`` with ``A`` the acceptance, which is written to the metadata (``acceptance``,
    ``log_acceptance``: add ``-log_acceptance`` to the flow's log-density of an accepted event)."""
    done = drawn = accepted = 0
    optional = [f for f in preprocessor.features if f in OPTIONAL_COLUMNS]
    with ntuple_writer(path, metadata, optional) as writer:
        stream = sample_batches(model, n if accept is None else 2**62, batch_size, seed, device)
        for z in stream:
            x = preprocessor.inverse(z)
            cols = dict(zip(preprocessor.features, x.T))
            drawn += len(x)
            if accept is not None:
                keep = np.asarray(accept(cols), dtype=bool)
                accepted += int(keep.sum())
                take = np.flatnonzero(keep)[:n - done]
                cols = {k: v[take] for k, v in cols.items()}
                if drawn >= 100 * (n + batch_size) and accepted < 0.01 * drawn:
                    raise ValueError(f"{path}: fewer than 1 % of the generated events lie in the physical support "
                                     f"({accepted} of {drawn}); the flow is unusable")
            m = len(cols[preprocessor.features[0]])
            cols.update(label=np.zeros(m, np.int32), generated=np.ones(m, np.int32), weight=np.full(m, weight),
                        event=np.arange(first_event + done, first_event + done + m))
            writer.extend(cols)
            done += m
            if progress is not None:
                progress(done, n)
            if done >= n:
                break
        stream.close()
        if accept is not None:
            acceptance = accepted / drawn
            metadata.update(acceptance=acceptance, log_acceptance=float(np.log(acceptance)), drawn=drawn)

@dataclass
class ConditionalFit:
    model: torch.nn.Module
    preprocessor: Preprocessor
    result: TrainResult
    name: str = ""
    hyper: dict[str, Any] | None = None
    embedding: dict[str, Any] | None = None  # specification (models.embedding.build_embedding)


def build_conditional(name: str, hyper: dict[str, Any], features: int, embedding: dict[str, Any]):
    """Model ``name`` of the registry, conditional on the output of the embedding of specification
    ``embedding`` (:func:`models.embedding.build_embedding`)."""
    from .embedding import ConditionalDensity, build_embedding

    emb = build_embedding(embedding)
    return ConditionalDensity(build(name, features, hyper, context=emb.out_features), emb)


def fit_conditional(name: str, hyper: dict[str, Any], targets: dict[str, np.ndarray], contexts: dict[str, Any],
                    target_names: list[str], table, settings: TrainSettings, embedding: dict[str, Any],
                    on_epoch: Callable[[EpochRecord], None] | None = None) -> ConditionalFit:
    """A conditional density p(target | event) for any application: ``targets[p]`` ``(n, d)`` and
    ``contexts[p]`` for the partitions ``train`` and ``validation`` (a tuple (objects, mask, event features) for
    a ``deep_sets`` embedding, one array for an ``mlp`` one); the target preprocessing from ``table`` (a
    :class:`models.features.FeatureTable`), the model ``name`` of the registry behind the embedding of
    specification ``embedding``, trained together by the one loop with early stopping."""
    rng = np.random.default_rng(settings.seed)
    prep = Preprocessor(list(target_names), table=table).fit(targets["train"], rng)
    z = {p: prep.forward(targets[p], rng) for p in ("train", "validation")}
    torch.manual_seed(settings.seed)
    model = build_conditional(name, hyper, prep.flow_features, embedding)
    if hasattr(model.embedding, "fit_scaling"):
        model.embedding.fit_scaling(contexts["train"])
    result = train_model(model, z["train"], z["validation"], settings, on_epoch,
                         c_train=contexts["train"], c_val=contexts["validation"])
    model.to("cpu")
    return ConditionalFit(model, prep, result, name, dict(hyper), dict(embedding))


@torch.no_grad()
def sample_posterior(fit: ConditionalFit, context, n_samples: int, seed: int,
                     batch_size: int = 50_000, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """``n_samples`` draws of the target per event, ``(S, n, d)`` in target units, and the model's log-density
    of each draw in flow space ``(S, n)`` (for a target table of kind ``standard`` it orders the draws as the
    density of the target does: the mode is the draw of highest value). Events go through in chunks of
    ``batch_size // n_samples``, so memory stays bounded by ``batch_size`` draws however many events there
    are."""
    from .training import _given, _rows, _tensor

    model, prep = fit.model.eval().to(torch.device(device)), fit.preprocessor
    n = len(context[0]) if isinstance(context, tuple) else len(context)
    chunk = max(1, batch_size // n_samples)
    torch.manual_seed(seed)
    z_all, lp_all = [], []
    for lo in range(0, n, chunk):
        c = _tensor(_rows(context if not isinstance(context, list) else tuple(context), slice(lo, lo + chunk)),
                    torch.device(device))
        dist = _given(model, c)
        z = dist.sample((n_samples,))  # (S, m, d)
        lp = dist.log_prob(z)  # (S, m)
        z_all.append(z.to("cpu", torch.float64).numpy())
        lp_all.append(lp.to("cpu", torch.float64).numpy())
    model.to("cpu")
    z = np.concatenate(z_all, axis=1) if z_all else np.zeros((n_samples, 0, prep.flow_features))
    log_prob = np.concatenate(lp_all, axis=1) if lp_all else np.zeros((n_samples, 0))
    x = prep.inverse(z.reshape(-1, z.shape[-1]))
    return x.reshape(n_samples, n, -1), log_prob
