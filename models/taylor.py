"""Taylor-coefficient introspection of a network (Wunsch, Friese, Wolf, Quast, "Identifying the relevant
dependencies of the neural network response on characteristics of the input space", Comput. Softw. Big Sci. 2
(2018) 5, arXiv:1803.08782).

The network output f, expanded around each event x,

    f(x + d) = f(x) + sum_i t_i d_i + sum_{i <= j} t_ij d_i d_j + sum_{i <= j <= k} t_ijk d_i d_j d_k + ...,

has the coefficients t_i = df/dx_i, t_ij = d2f/dx_i dx_j / (n_i! n_j!) (so t_ii = f_ii / 2 and t_ij = f_ij for
i != j; likewise for third order), where n_i counts how often index i appears. Their mean absolute values over a
data set, <|t_i|> and <|t_ij|>, rank what the network uses: single features (first order) and combinations
(second order), the latter invisible to permutation importance. Inputs should be standardised (each in units of
its spread) so that the coefficients compare across features; :func:`mlp_standardised` gives the project's MLP
classifier in that form.

Computed with ``torch.autograd``: the gradient of the summed output is every event's gradient, and one more
backward pass per input gives a row of every event's Hessian (``d`` passes for all second-order coefficients).
This is the algorithm of the ``tayloranalysis`` package (L. Sowa, A. Monsch; a test checks that both give the same
numbers), written here because that package is GPL-3.0 (this project: MIT) and needs the model wrapped. All
second-order coefficients of a (128, 128, 64) MLP on 28 inputs for 10^5 events take 5.4 s on 2 cores, against
7.7 s with the package and 23.9 s with ``torch.func`` (``vmap`` of ``hessian``) (``benchmarks/taylor.py``,
``benchmarks/results/2026-12-06-taylor-cost.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations_with_replacement
from typing import Callable, Sequence

import numpy as np
import torch


@dataclass
class TaylorCoefficients:
    """Mean absolute Taylor coefficients over a data set: ``first`` ``(d,)``, ``second`` ``(d, d)`` (upper
    triangle incl. the diagonal filled, lower triangle zero), ``third`` ``(d, d, d)`` (``i <= j <= k`` filled) or
    None, for the inputs ``names``, over ``events`` events."""

    names: list[str]
    first: np.ndarray
    second: np.ndarray | None
    third: np.ndarray | None
    events: int

    def ranking(self, top: int | None = None) -> list[tuple[str, float]]:
        """All coefficients, first and second order together, by decreasing <|t|>: ``("m_bb", v)``,
        ``("m_bb, m_wwbb", v)``."""
        items = [(n, float(v)) for n, v in zip(self.names, self.first)]
        if self.second is not None:
            d = len(self.names)
            items += [(f"{self.names[i]}, {self.names[j]}", float(self.second[i, j]))
                      for i, j in combinations_with_replacement(range(d), 2)]
        items.sort(key=lambda kv: -kv[1])
        return items[:top] if top else items

    def top(self, order: int) -> tuple[str, ...]:
        """The inputs of the largest coefficient of ``order`` (1 or 2)."""
        if order == 1:
            return (self.names[int(np.argmax(self.first))],)
        i, j = np.unravel_index(int(np.argmax(self.second)), self.second.shape)
        return (self.names[i], self.names[j])

    def to_dict(self) -> dict:
        out = {"names": self.names, "events": self.events, "first": self.first.tolist()}
        if self.second is not None:
            out["second"] = self.second.tolist()
        if self.third is not None:
            out["third"] = self.third.tolist()
        return out


def _factorial_weights(d: int, order: int) -> torch.Tensor:
    """1 / prod(n_i!) over the multiplicities of the index tuple, as a dense ``(d,) * order`` tensor."""
    if order == 2:
        w = torch.ones(d, d)
        w.diagonal().fill_(0.5)
        return w
    idx = torch.arange(d)
    i, j, k = torch.meshgrid(idx, idx, idx, indexing="ij")
    same = (i == j).int() + (j == k).int() + (i == k).int()
    # all different: 1; two equal (same == 1): 1/2; all equal (same == 3): 1/6
    return torch.where(same == 0, 1.0, torch.where(same == 1, 0.5, 1.0 / 6.0))


def _upper(t: np.ndarray) -> np.ndarray:
    """Keep the ``i <= j (<= k)`` entries of a symmetric coefficient array, zero elsewhere."""
    d = t.shape[0]
    if t.ndim == 2:
        return np.triu(t)
    i, j, k = np.meshgrid(*(np.arange(d),) * 3, indexing="ij")
    return np.where((i <= j) & (j <= k), t, 0.0)


def _derivatives(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """Per-event derivatives of ``fn`` at the events ``x`` ``(n, d)``: the gradient ``(n, d)``, with ``order >= 2``
    the Hessian ``(n, d, d)``, with ``order == 3`` the third derivatives ``(n, d, d, d)`` (entries ``i <= j``
    computed, the rest by symmetry). Events are independent, so the gradient of a sum over events is every
    event's gradient: one backward pass per row of the Hessian (``d`` in all; ``d (d + 1) / 2`` more for third
    order)."""
    x = x.detach().clone().requires_grad_(True)
    n, d = x.shape
    grad = torch.autograd.grad(fn(x).sum(), x, create_graph=order > 1)[0]
    out = [grad.detach()]
    if order == 1:
        return out
    rows = [torch.autograd.grad(grad[:, i].sum(), x, create_graph=order > 2, retain_graph=True)[0]
            for i in range(d)]
    out.append(torch.stack([r.detach() for r in rows], dim=1))
    if order == 3:
        third = torch.zeros(n, d, d, d)
        for i in range(d):
            for j in range(i, d):
                t = torch.autograd.grad(rows[i][:, j].sum(), x, retain_graph=True, allow_unused=True)[0]
                if t is not None:
                    third[:, i, j] = third[:, j, i] = t.detach()
        out.append(third)
    return out


def taylor_coefficients(fn: Callable[..., torch.Tensor], x: np.ndarray | torch.Tensor,
                        names: Sequence[str] | None = None, order: int = 2, batch_size: int = 8192,
                        weights: np.ndarray | None = None,
                        given: Sequence[torch.Tensor] = ()) -> TaylorCoefficients:
    """<|t_i|>, <|t_ij|> (``order >= 2``) and <|t_ijk|> (``order == 3``) of the scalar function ``fn`` (a batch
    ``(n, d)`` -> ``(n,)`` or ``(n, 1)``, events independent: no batch normalisation in training mode) over the
    events ``x``, optionally weighted by ``weights``, in batches of ``batch_size`` events. ``given``: per-event
    tensors (first axis ``n``) held fixed, not differentiated, e.g. the rest of a conditional model's context;
    ``fn`` is called as ``fn(x_batch, *given_batch)``."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    n, d = x.shape
    names = list(names) if names is not None else [f"x{i}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"{len(names)} names for {d} inputs")
    w = torch.ones(n, dtype=torch.float64) if weights is None else torch.as_tensor(np.asarray(weights, np.float64))
    factors = [None] + [_factorial_weights(d, k).double() for k in range(2, order + 1)]
    sums = [torch.zeros((d,) * k, dtype=torch.float64) for k in range(1, order + 1)]
    for lo in range(0, n, batch_size):
        wb = w[lo:lo + batch_size]
        held = [g[lo:lo + batch_size] for g in given]
        for k, t in enumerate(_derivatives(lambda v: fn(v, *held), x[lo:lo + batch_size], order)):
            t = t.double().abs() if factors[k] is None else (t.double() * factors[k]).abs()
            sums[k] += torch.tensordot(wb, t, dims=1)
    means = [s.numpy() / float(w.sum()) for s in sums]
    return TaylorCoefficients(names, means[0], _upper(means[1]) if order >= 2 else None,
                              _upper(means[2]) if order == 3 else None, n)


def mlp_standardised(model: torch.nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                       Callable[[np.ndarray], np.ndarray]]:
    """For :class:`models.classifiers.MLPClassifier`: ``(fn, transform)`` where ``transform`` maps raw features to
    the network's standardised inputs (log1p where the model compresses, minus shift, over scale) and ``fn`` is the
    network's logit on them, so coefficients are per unit spread of each input. The logit (log-odds) rather than
    the probability: its derivatives do not vanish where the network is confident, and a sum of evidence is what
    a Taylor expansion describes."""
    model = model.eval()

    def transform(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(x, np.float32))
            z = torch.where(model.log_mask, torch.log1p(t.clamp_min(0)), t)
            return ((z - model.shift) / model.scale).numpy()

    def fn(z: torch.Tensor) -> torch.Tensor:
        return model.net(z)[..., 0]

    return fn, transform


def posterior_mean(model: torch.nn.Module, context: Callable[..., tuple]) -> Callable[..., torch.Tensor]:
    """For a conditional density ``model(*context) -> distribution`` (:class:`models.embedding.ConditionalDensity`):
    ``fn(z, *fixed)``, the posterior mean of the first target feature (in the flow's order and standardised
    space) given the context ``context(z, *fixed)`` built from the inputs ``z`` ``(n, d)``; a smooth function of
    the context whose Taylor coefficients (:func:`taylor_coefficients` with ``given=fixed``) say which inputs move
    the posterior. Exact for the autoregressive mixture (:class:`models.flows.AutoregressiveMoG`; its first
    feature's mixture depends on the context alone); a model without ``first_mean`` is refused (a mixture has no
    reparameterised sample, so later features' means would need a biased estimate)."""

    def fn(z: torch.Tensor, *fixed: torch.Tensor) -> torch.Tensor:
        dist = model(*context(z, *fixed))
        if not hasattr(dist, "first_mean"):
            raise TypeError(f"{type(dist).__name__} has no exact posterior mean (first_mean)")
        return dist.first_mean()

    return fn
