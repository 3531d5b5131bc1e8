"""The one registry of density models: names, hyperparameters and their defaults, and how to build each.

Every application (the background generator, a conditional regression, unfolding) builds its model through
:func:`build` with the number of modelled features and, for a conditional density p(x | c), the size of the
context vector ``c``. The analysis configuration validates ``flows.models`` and ``flows.hyperparameters``
against :data:`MODELS`, so the zoo is listed here and nowhere else. This module imports no torch: the
configuration can check names without loading a deep-learning stack; :func:`build` imports the model code.

========================  ==================================================================================
name                      model
========================  ==================================================================================
``maf``                   masked autoregressive flow with affine transforms (Papamakarios, Pavlakou, Murray,
                          NeurIPS 2017), ``zuko.flows.MAF``
``nsf``                   autoregressive rational-quadratic neural spline flow (Durkan, Bekasov, Murray,
                          Papamakarios, NeurIPS 2019), ``zuko.flows.NSF``
``nsf_coupling``          the same splines in coupling form (``passes=2``): sampling costs a few network
                          evaluations instead of one per feature
``realnvp``               affine coupling flow (Dinh, Sohl-Dickstein, Bengio, ICLR 2017), ``zuko.flows.RealNVP``
``made_mog``              autoregressive mixture of Gaussians on a MADE network (Germain et al., ICML 2015; the
                          MADEMoG of Papamakarios et al. 2017), the best model of Gavranovic and Kersevan, EPJC 84
                          (2024) 911 and the configurations' default background generator
``cfm``                   continuous normalizing flow (``zuko.flows.CNF``) trained by conditional flow matching
                          (Lipman et al., ICLR 2023), exact densities; :mod:`models.flow_matching`
========================  ==================================================================================
"""

from __future__ import annotations

from typing import Any, Mapping

MODELS: dict[str, dict[str, Any]] = {
    "maf": {"transforms": 5, "hidden_features": [128, 128]},
    "nsf": {"transforms": 3, "hidden_features": [128, 128], "bins": 8},
    "nsf_coupling": {"transforms": 6, "hidden_features": [128, 128], "bins": 8},
    "realnvp": {"transforms": 8, "hidden_features": [128, 128]},
    "made_mog": {"components": 10, "hidden_features": [256, 256]},
    "cfm": {"hidden_features": [256, 256, 256], "freqs": 8, "atol": 1e-5, "rtol": 1e-4},
}
"""Model name -> its hyperparameters with their defaults (chosen by measurement on the quickstart, README
*Flows*). A configuration may override any of them, and nothing else."""

TEST_NLL_EVENTS: dict[str, int] = {"cfm": 2000}
"""Models whose density integrates an ODE with its exact Jacobian trace (about 0.1 s per event on 2 cores): the
test NLL of a trained generator is measured on this many reference events (others: the whole partition)."""


def hyperparameters(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of model ``name`` updated by ``overrides``; unknown names and keys raise ``ValueError``."""
    if name not in MODELS:
        raise ValueError(f"unknown flow model {name!r}; the zoo has: {', '.join(MODELS)}")
    hyper = dict(MODELS[name])
    for key, value in (overrides or {}).items():
        if key not in hyper:
            raise ValueError(f"flow model {name!r}: unknown hyperparameter {key!r}; known: {', '.join(hyper)}")
        hyper[key] = list(value) if isinstance(value, (list, tuple)) else value
    return hyper


def build(name: str, features: int, overrides: Mapping[str, Any] | None = None, context: int = 0):
    """Instantiate model ``name`` for ``features`` modelled dimensions, conditional on a context vector of size
    ``context`` (0: an unconditional density). Returns a ``zuko.lazy.LazyDistribution``: ``model(c)`` is the
    distribution p(x | c) (``model()`` when unconditional), with ``log_prob`` and ``sample``."""
    import zuko

    from .flow_matching import FlowMatching
    from .flows import MADEMoG

    h = hyperparameters(name, overrides)
    hidden = tuple(h["hidden_features"])
    if features < 1 or context < 0:
        raise ValueError(f"flow model {name!r}: need at least one feature and a context size >= 0, got "
                         f"{features} and {context}")
    if name == "maf":
        return zuko.flows.MAF(features, context, transforms=h["transforms"], hidden_features=hidden)
    if name == "nsf":
        return zuko.flows.NSF(features, context, transforms=h["transforms"], bins=h["bins"], hidden_features=hidden)
    if name == "nsf_coupling":
        return zuko.flows.NSF(features, context, transforms=h["transforms"], bins=h["bins"], hidden_features=hidden,
                              passes=2)
    if name == "realnvp":
        return zuko.flows.RealNVP(features, context, transforms=h["transforms"], hidden_features=hidden)
    if name == "cfm":
        return FlowMatching(features, context, hidden_features=hidden, freqs=h["freqs"], atol=h["atol"],
                            rtol=h["rtol"])
    return MADEMoG(features, context=context, components=h["components"], hidden_features=list(hidden))
