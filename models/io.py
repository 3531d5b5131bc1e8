"""Saving and loading trained generators: weights, preprocessing state and specification in one file.

The file holds only tensors and plain Python values, written with ``torch.save`` (atomically) and read with
``torch.load(..., weights_only=True)``, so loading never executes code from the file.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

from analysis.io import InputError, atomic_path

from .registry import build
from .preprocessing import Preprocessor

FORMAT = "hepflows-flow-2"  # 2: relative azimuths cut at their sparsest angle


def save_generator(path: str | os.PathLike, name: str, hyper: dict[str, Any], state_dict: dict[str, torch.Tensor],
                   preprocessor: Preprocessor, metadata: dict[str, Any] | None = None) -> None:
    """Write a generator file atomically: the model's ``state_dict``, its preprocessing and specification."""
    payload = {
        "format": FORMAT,
        "model": name,
        "hyperparameters": hyper,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "preprocessing": preprocessor.state_dict(),
        "metadata": metadata or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_tensor_file(path: str | os.PathLike, rerun: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one :class:`InputError` naming the file for a
    missing, empty, truncated or corrupt file or one holding anything but tensors and plain values (without
    torch's advice to load it with ``weights_only=False``); ``rerun`` names the task that writes the file."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty; rerun {rerun} to write it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\n|$)", text)
        detail = found.group(1).strip() if found else text.splitlines()[0] if text else type(e).__name__
        if "Unsupported global" in detail:
            raise InputError(f"{path}: refusing to load a model file holding Python objects, not only tensors and "
                             f"plain values ({detail}); delete it and rerun {rerun}") from None
        raise InputError(f"{path}: not a readable model file, corrupt or not written by hepflows ({detail}); rerun "
                         f"{rerun} to write it again") from None
    except Exception as e:  # a cut-off archive (RuntimeError from the zip reader), EOFError, KeyError, ...
        text = str(e).split(". ")[0] if "PytorchStreamReader" in str(e) else str(e)
        raise InputError(f"{path}: not a readable model file, truncated or corrupt ({type(e).__name__}: {text}); "
                         f"rerun {rerun} to write it again") from None


def load_generator(path: str | os.PathLike, device: str = "cpu"):
    """Returns ``(model, preprocessor, payload)``; the model is in evaluation mode on ``device``."""
    payload = load_tensor_file(path, "TrainFlow")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and str(payload.get("format", "")).startswith("hepflows-flow-"):
            raise InputError(f"{path}: generator file format {payload['format']!r}, this hepflows reads {FORMAT!r}; "
                             "retrain it (e.g. run TrainFlow with a new --version)")
        raise InputError(f"{path}: not a hepflows generator file")
    try:
        prep = Preprocessor.from_state_dict(payload["preprocessing"])
        model = build(payload["model"], prep.flow_features, payload["hyperparameters"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a damaged payload of the right format
        raise InputError(f"{path}: not a valid generator file ({type(e).__name__}: {e}); rerun TrainFlow to write "
                         "it again") from None
    model.to(torch.device(device)).eval()
    return model, prep, payload


CONDITIONAL_FORMAT = "hepflows-conditional-1"


def save_conditional(path: str | os.PathLike, fit, metadata: dict[str, Any] | None = None) -> None:
    """Write a trained conditional model atomically: a :class:`models.fit.ConditionalFit` (flow, embedding and
    target preprocessing) or a :class:`models.regression.RegressionFit` (point estimate and quantiles), with
    the specification that rebuilds it and ``metadata`` (plain values)."""
    from .fit import ConditionalFit

    payload: dict[str, Any] = {"format": CONDITIONAL_FORMAT, "embedding": dict(fit.embedding),
                               "state_dict": {k: v.detach().cpu() for k, v in fit.model.state_dict().items()},
                               "metadata": metadata or {}}
    if isinstance(fit, ConditionalFit):
        table = fit.preprocessor.table
        payload.update(kind="flow", model=fit.name, hyperparameters=fit.hyper,
                       preprocessing=fit.preprocessor.state_dict(),
                       table=[{"name": f, "kind": table[f].kind, "unit": table[f].unit, "label": table[f].label}
                              for f in fit.preprocessor.features])
    else:
        payload.update(kind="regressor", targets=int(fit.model.targets), hidden_features=list(fit.hidden_features),
                       quantiles=list(fit.quantiles), delta=float(fit.delta))
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_conditional(path: str | os.PathLike, rerun: str = "TrainRegression"):
    """The fit written by :func:`save_conditional` (``ConditionalFit`` or ``RegressionFit``, on the CPU, in
    evaluation mode) and its metadata; one :class:`InputError` naming the file for anything else."""
    from .fit import ConditionalFit, build_conditional
    from .regression import RegressionFit, build_regressor
    from .training import TrainResult

    payload = load_tensor_file(path, rerun)
    if not isinstance(payload, dict) or payload.get("format") != CONDITIONAL_FORMAT:
        raise InputError(f"{path}: not a hepflows conditional-model file ({CONDITIONAL_FORMAT})")
    try:
        if payload["kind"] == "flow":
            from .features import Feature, FeatureTable

            table = FeatureTable([Feature(**{k: str(v) for k, v in f.items()}) for f in payload["table"]])
            prep = Preprocessor.from_state_dict(payload["preprocessing"], table=table)
            model = build_conditional(payload["model"], payload["hyperparameters"], prep.flow_features,
                                      payload["embedding"])
            model.load_state_dict(payload["state_dict"])
            fit = ConditionalFit(model.eval(), prep, TrainResult(), payload["model"], payload["hyperparameters"],
                                 payload["embedding"])
        elif payload["kind"] == "regressor":
            model = build_regressor(payload["embedding"], payload["targets"], payload["quantiles"],
                                    payload["hidden_features"])
            model.load_state_dict(payload["state_dict"])
            fit = RegressionFit(model.eval(), TrainResult(), payload["embedding"], payload["hidden_features"],
                                payload["quantiles"], payload["delta"])
        else:
            raise ValueError(f"unknown kind {payload['kind']!r}")
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: not a valid conditional-model file ({type(e).__name__}: {e}); rerun {rerun} to "
                         "write it again") from None
    return fit, payload["metadata"]
