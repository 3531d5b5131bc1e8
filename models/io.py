"""Saving and loading trained generators: weights, preprocessing state and specification in one file.

The file holds only tensors and plain Python values, written with ``torch.save`` (atomically) and read with
``torch.load(..., weights_only=True)``, so loading never executes code from the file.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from analysis.io import InputError, atomic_path

from .flows import build_flow
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


def load_generator(path: str | os.PathLike, device: str = "cpu"):
    """Returns ``(model, preprocessor, payload)``; the model is in evaluation mode on ``device``."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and str(payload.get("format", "")).startswith("hepflows-flow-"):
            raise InputError(f"{path}: generator file format {payload['format']!r}, this hepflows reads {FORMAT!r}; "
                             "retrain it (e.g. run TrainFlow with a new --version)")
        raise InputError(f"{path}: not a hepflows generator file")
    prep = Preprocessor.from_state_dict(payload["preprocessing"])
    model = build_flow(payload["model"], prep.flow_features, payload["hyperparameters"])
    model.load_state_dict(payload["state_dict"])
    model.to(torch.device(device)).eval()
    return model, prep, payload
