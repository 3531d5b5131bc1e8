"""Point-estimate regression with per-event quantiles: the classical baseline of the conditional flows.

The CMS b-jet energy regression (CMS, Comput. Softw. Big Sci. 4 (2020) 10, arXiv:1912.06046) is a feed-forward
network trained with a Huber loss for the central value and quantile (pinball) losses for the 25 % and 75 %
quantiles, whose half distance is the per-jet resolution. :class:`QuantileRegressor` is that network for any
number of targets, behind any context embedding of :mod:`models.embedding` (an MLP of a fixed feature vector,
or a deep-sets embedding of the objects of an event: the feed-forward baseline of a neutrino regression).
Targets are standardised inside the module (training mean and width), so the Huber threshold ``delta`` is in
units of the target's width. It trains through the one loop of :mod:`models.training` with its own objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .embedding import build_embedding
from .training import EpochRecord, TrainResult, TrainSettings, _rows, _tensor, train_model

QUANTILES = (0.16, 0.25, 0.75, 0.84)
"""Quantile levels predicted beside the central value: the 50 % (0.25-0.75) and 68 % (0.16-0.84) intervals."""


class QuantileRegressor(nn.Module):
    """``model(*context) -> (n, targets, 1 + len(quantiles))``: the central value, then the quantiles, in target
    units. ``embedding`` maps the context to a vector of ``embedding.out_features``; a ``hidden`` MLP head
    follows."""

    def __init__(self, embedding: nn.Module, targets: int, quantiles: Sequence[float] = QUANTILES,
                 hidden_features: Sequence[int] = (64, 64)):
        super().__init__()
        if any(not 0 < q < 1 for q in quantiles):
            raise ValueError(f"quantile levels must lie in (0, 1), got {list(quantiles)}")
        self.embedding, self.targets = embedding, targets
        self.register_buffer("levels", torch.tensor(list(quantiles), dtype=torch.float32))
        self.register_buffer("y_shift", torch.zeros(targets))
        self.register_buffer("y_scale", torch.ones(targets))
        sizes = [embedding.out_features, *hidden_features, targets * (1 + len(quantiles))]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.head = nn.Sequential(*layers[:-1])

    def fit_scaling(self, y) -> "QuantileRegressor":
        y = torch.as_tensor(np.asarray(y), dtype=torch.float32)
        self.y_shift.copy_(y.mean(dim=0))
        self.y_scale.copy_(y.std(dim=0).clamp(min=1e-6))
        return self

    def standardised(self, *context: Tensor) -> Tensor:
        """The prediction in standardised target units, ``(n, targets, 1 + q)``."""
        out = self.head(self.embedding(*context))
        return out.reshape(len(out), self.targets, 1 + len(self.levels))

    def forward(self, *context: Tensor) -> Tensor:
        return self.standardised(*context) * self.y_scale[:, None] + self.y_shift[:, None]


def huber_quantile_loss(model: QuantileRegressor, y: Tensor, context, delta: float = 1.0) -> Tensor:
    """Per-event loss: the Huber loss of the central value plus the pinball losses of the quantiles, summed over
    targets, all in standardised target units."""
    pred = model.standardised(*context) if isinstance(context, tuple) else model.standardised(context)
    z = (y - model.y_shift) / model.y_scale
    central = nn.functional.huber_loss(pred[..., 0], z, reduction="none", delta=delta)
    err = z[..., None] - pred[..., 1:]
    pinball = torch.maximum(model.levels * err, (model.levels - 1) * err)
    return central.sum(dim=-1) + pinball.sum(dim=(-1, -2))


@dataclass
class RegressionFit:
    model: QuantileRegressor
    result: TrainResult
    embedding: dict[str, Any]  # the embedding's specification (models.embedding.build_embedding)
    hidden_features: list[int] = field(default_factory=list)
    quantiles: list[float] = field(default_factory=lambda: list(QUANTILES))
    delta: float = 1.0


def build_regressor(embedding: dict[str, Any], targets: int, quantiles: Sequence[float] = QUANTILES,
                    hidden_features: Sequence[int] = (64, 64)) -> QuantileRegressor:
    return QuantileRegressor(build_embedding(embedding), targets, quantiles, hidden_features)


def fit_regressor(targets: dict[str, np.ndarray], contexts: dict[str, Any], embedding: dict[str, Any],
                  settings: TrainSettings, hidden_features: Sequence[int] = (64, 64),
                  quantiles: Sequence[float] = QUANTILES, delta: float = 1.0,
                  on_epoch: Callable[[EpochRecord], None] | None = None) -> RegressionFit:
    """Train a :class:`QuantileRegressor` on ``targets["train"]`` ``(n, d)`` given ``contexts["train"]`` (an
    array, or a tuple of arrays for a deep-sets embedding), early-stopped on the mean validation loss."""
    torch.manual_seed(settings.seed)
    model = build_regressor(embedding, targets["train"].shape[1], quantiles, hidden_features)
    model.fit_scaling(targets["train"])
    if hasattr(model.embedding, "fit_scaling"):
        model.embedding.fit_scaling(contexts["train"])

    def objective(m, y, c):
        return huber_quantile_loss(m, y, c, delta)

    result = train_model(model, targets["train"], targets["validation"], settings, on_epoch,
                         c_train=contexts["train"], c_val=contexts["validation"], objective=objective)
    model.to("cpu")
    return RegressionFit(model, result, dict(embedding), list(hidden_features), list(quantiles), delta)


@torch.no_grad()
def predict(model: QuantileRegressor, context, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """``(central (n, d), quantiles (n, d, q))`` in target units, the quantiles sorted per event (a network's
    quantiles may cross; sorting keeps each interval's levels honest)."""
    model.eval()
    ctx = _tensor(context)
    n = len(ctx[0]) if isinstance(ctx, tuple) else len(ctx)
    out = []
    for i in range(0, n, batch_size):
        c = _rows(ctx, slice(i, i + batch_size))
        out.append((model(*c) if isinstance(c, tuple) else model(c)).double().numpy())
    pred = np.concatenate(out) if out else np.zeros((0, model.targets, 1 + len(model.levels)))
    return pred[..., 0], np.sort(pred[..., 1:], axis=-1)
