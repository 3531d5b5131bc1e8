"""Context for conditional densities: a deep-sets embedding of a variable number of objects, or an MLP of a
fixed feature vector (one jet and its event, for a per-jet regression).

A reconstructed event is a set of objects (jets, a lepton, the MET) of varying size. :class:`DeepSetEmbedding`
maps it to a fixed-size vector, invariant under permutations of the objects (Zaheer et al., "Deep Sets",
NeurIPS 2017): every object passes through the same network ``phi``, the results are pooled over the real
objects (padding masked out; sum and mean, so the multiplicity stays visible), and ``rho`` maps the pool,
together with per-event features, to the context. :class:`ConditionalDensity` puts it in front of a
conditional flow of :mod:`models.registry`; embedding and flow are trained together on the flow's likelihood
(as nu-Flows does: Leigh, Raine, Zoch, Golling, SciPost Phys. 14, 159 (2023)).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .training import has_own_objective


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1])



class DeepSetEmbedding(nn.Module):
    """``(objects (n, m, f), mask (n, m), event (n, g)) -> (n, out_features)``, invariant under permutations of
    the ``m`` object slots; slots with ``mask`` false (padding) do not contribute."""

    def __init__(self, object_features: int, out_features: int, event_features: int = 0,
                 hidden_features: Sequence[int] = (64, 64)):
        super().__init__()
        hidden = list(hidden_features)
        self.phi = mlp([object_features, *hidden])
        self.rho = mlp([2 * hidden[-1] + event_features, *hidden, out_features])
        self.object_features, self.event_features, self.out_features = object_features, event_features, out_features

    def forward(self, objects: Tensor, mask: Tensor, event: Tensor | None = None) -> Tensor:
        if objects.shape[-1] != self.object_features:
            raise ValueError(f"expected {self.object_features} features per object, got {objects.shape[-1]}")
        m = mask.to(objects.dtype).unsqueeze(-1)
        h = self.phi(objects) * m
        count = m.sum(dim=-2).clamp(min=1.0)
        pooled = [h.sum(dim=-2), h.sum(dim=-2) / count]
        if self.event_features:
            if event is None or event.shape[-1] != self.event_features:
                raise ValueError(f"expected {self.event_features} per-event features")
            pooled.append(event)
        return self.rho(torch.cat(pooled, dim=-1))


class MLPEmbedding(nn.Module):
    """``(features (n, f)) -> (n, out_features)``: a fixed-length context (e.g. one jet and its event) through an
    MLP; the features are standardised inside the module with the training set's mean and width
    (:meth:`fit_scaling`), so that a saved model carries its own input scaling."""

    def __init__(self, in_features: int, out_features: int, hidden_features: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp([in_features, *hidden_features, out_features])
        self.register_buffer("shift", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        self.in_features, self.out_features = in_features, out_features

    def fit_scaling(self, features) -> "MLPEmbedding":
        x = torch.as_tensor(features, dtype=torch.float32)
        self.shift.copy_(x.mean(dim=0))
        self.scale.copy_(x.std(dim=0).clamp(min=1e-6))
        return self

    def forward(self, features: Tensor) -> Tensor:
        if features.shape[-1] != self.in_features:
            raise ValueError(f"expected {self.in_features} context features, got {features.shape[-1]}")
        return self.net((features - self.shift) / self.scale)


EMBEDDINGS = {"deep_sets": DeepSetEmbedding, "mlp": MLPEmbedding}
"""Embedding kind -> class; a specification ``{"kind": ..., **arguments}`` (plain values, saved with a model
file) builds one through :func:`build_embedding`."""


def build_embedding(spec: dict) -> nn.Module:
    """The embedding of specification ``spec``: ``{"kind": "deep_sets", "object_features": f, "event_features":
    g, "out_features": k, "hidden_features": [...]}`` or ``{"kind": "mlp", "in_features": f, "out_features": k,
    "hidden_features": [...]}``."""
    args = dict(spec)
    kind = args.pop("kind", None)
    if kind not in EMBEDDINGS:
        raise ValueError(f"unknown embedding kind {kind!r}; known: {', '.join(EMBEDDINGS)}")
    return EMBEDDINGS[kind](**args)


class ConditionalDensity(nn.Module):
    """p(x | event) = flow(x | embedding(event)): ``model(objects, mask[, event])`` is a distribution with one
    batch entry per event, so it trains and samples through :mod:`models.training` like any flow, with the
    context given as the tuple ``(objects, mask[, event])``."""

    def __init__(self, flow: nn.Module, embedding: nn.Module):
        super().__init__()
        self.flow, self.embedding = flow, embedding
        if has_own_objective(flow):  # a flow trained on its own objective (flow matching)
            self.objective = self._flow_objective

    def _flow_objective(self, x: Tensor, *context: Tensor) -> Tensor:
        """The flow's training objective given the embedded context (trains the embedding with it)."""
        return self.flow.objective(x, self.embedding(*context))

    def forward(self, *context: Tensor) -> Distribution:
        return self.flow(self.embedding(*context))
