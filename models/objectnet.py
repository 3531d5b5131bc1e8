"""A permutation-invariant classifier of reconstructed objects: a small transformer whose attention is biased by
Lorentz-invariant pair features, after the Particle Transformer (H. Qu, C. Li, S. Qian, "Particle Transformer
for Jet Tagging", ICML 2022, arXiv:2202.03772; pair features from A. Butter et al.'s review "physics layers
enable better performance for smaller datasets" and LorentzNet's Minkowski products, Gong et al., JHEP 07 (2022)
030).

The event is a set of objects (here: lepton, MET and up to 10 jets; padded slots masked) with per-object
features and four-momenta, plus a few event features. Each object is embedded by an MLP; the pair features of
every two objects (ln m_ij^2, ln Delta R_ij, ln k_T, ln z; computed from the four-momenta in the model, so they
need no storage) enter twice: as a message to each object, an edge MLP maximised over its partners (as an edge
convolution of a graph network does: "some partner makes a 125 GeV pair" reaches the object directly), and as an
additive attention bias per head in ``layers`` blocks of multi-head self-attention (pre-norm, padding masked);
masked mean and sum pooling and the event features feed an MLP head that gives the logit. No object order enters: permuting the slots (with their masks) leaves the output
unchanged (tested).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .embedding import mlp

PAIR_FEATURES = ("ln_m2", "ln_dr", "ln_kt", "ln_z")


def pair_features(p4: Tensor, eps: float = 1e-6) -> Tensor:
    """``(n, m, m, 4)`` Lorentz-invariant and boost-invariant pair features of the four-momenta ``p4``
    ``(n, m, 4)`` (E, px, py, pz in GeV): ln m_ij^2 of the pair, ln Delta R_ij, ln k_T = ln(min(pT_i, pT_j)
    Delta R_ij) and ln z = ln(min(pT_i, pT_j) / (pT_i + pT_j)), each floored at ``eps`` before the logarithm."""
    e, px, py, pz = p4.unbind(-1)
    pt = torch.sqrt(px**2 + py**2).clamp_min(eps)
    rap = 0.5 * torch.log(((e + pz).clamp_min(eps)) / ((e - pz).clamp_min(eps)))
    phi = torch.atan2(py, px)
    dphi = torch.remainder(phi[:, :, None] - phi[:, None, :] + torch.pi, 2 * torch.pi) - torch.pi
    dr = torch.sqrt((rap[:, :, None] - rap[:, None, :]) ** 2 + dphi**2)
    ptmin = torch.minimum(pt[:, :, None], pt[:, None, :])
    s = p4[:, :, None, :] + p4[:, None, :, :]
    m2 = s[..., 0] ** 2 - s[..., 1] ** 2 - s[..., 2] ** 2 - s[..., 3] ** 2
    feats = [m2.clamp_min(eps), dr.clamp_min(eps), (ptmin * dr).clamp_min(eps),
             (ptmin / (pt[:, :, None] + pt[:, None, :])).clamp_min(eps)]
    return torch.log(torch.stack(feats, dim=-1))


_mlp = partial(mlp, activation=nn.GELU)


class _Block(nn.Module):
    """Pre-norm self-attention with an additive attention bias, then a feed-forward layer; residual both."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = _mlp([dim, 2 * dim, dim])

    def forward(self, h: Tensor, bias: Tensor) -> Tensor:
        x = self.norm1(h)
        h = h + self.attn(x, x, x, attn_mask=bias, need_weights=False)[0]
        return h + self.ff(self.norm2(h))


class ObjectTransformer(nn.Module):
    """``(objects (n, m, f), p4 (n, m, 4), mask (n, m), event (n, g)) -> logit (n, 1)``. Inputs are standardised
    inside the module with the training set's means and widths (:meth:`fit_scaling`, real objects only), so a
    saved model carries its own scaling."""

    def __init__(self, object_features: int, event_features: int = 0, dim: int = 64, heads: int = 4,
                 layers: int = 2, pair: bool = True):
        super().__init__()
        self.object_features, self.event_features = object_features, event_features
        self.dim, self.heads, self.n_layers, self.pair = dim, heads, layers, pair
        self.embed = _mlp([object_features, dim, dim])
        self.pair_embed = _mlp([len(PAIR_FEATURES), 32, heads]) if pair else None
        self.edge = _mlp([len(PAIR_FEATURES), dim, dim]) if pair else None
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.head = _mlp([2 * dim + event_features, dim, 1])
        for name, size in (("obj", object_features), ("evt", event_features), ("pair", len(PAIR_FEATURES))):
            self.register_buffer(f"{name}_shift", torch.zeros(size))
            self.register_buffer(f"{name}_scale", torch.ones(size))

    def hyperparameters(self) -> dict:
        return {"object_features": self.object_features, "event_features": self.event_features, "dim": self.dim,
                "heads": self.heads, "layers": self.n_layers, "pair": self.pair}

    @torch.no_grad()
    def fit_scaling(self, objects, p4, mask, event) -> "ObjectTransformer":
        o, p, m = (torch.as_tensor(np.asarray(a)) for a in (objects, p4, mask))
        m = m.bool()
        real = o[m].float()
        self.obj_shift.copy_(real.mean(0))
        self.obj_scale.copy_(real.std(0).clamp_min(1e-6))
        if self.event_features:
            ev = torch.as_tensor(np.asarray(event)).float()
            self.evt_shift.copy_(ev.mean(0))
            self.evt_scale.copy_(ev.std(0).clamp_min(1e-6))
        if self.pair:
            sub = slice(0, min(len(o), 20_000))
            pf, pm = pair_features(p[sub].float()), m[sub, :, None] & m[sub, None, :]
            self.pair_shift.copy_(pf[pm].mean(0))
            self.pair_scale.copy_(pf[pm].std(0).clamp_min(1e-6))
        return self

    def forward(self, objects: Tensor, p4: Tensor, mask: Tensor, event: Tensor | None = None) -> Tensor:
        mask = mask.bool()
        n, m, _ = objects.shape
        h = self.embed((objects - self.obj_shift) / self.obj_scale)
        pad = torch.zeros(n, m, m, dtype=h.dtype, device=h.device).masked_fill(~mask[:, None, :], float("-inf"))
        bias = pad[:, None].expand(n, self.heads, m, m)
        if self.pair:
            pf = (pair_features(p4) - self.pair_shift) / self.pair_scale
            bias = bias + self.pair_embed(pf).permute(0, 3, 1, 2)
            partner = mask[:, None, :] & ~torch.eye(m, dtype=torch.bool, device=h.device)[None]
            msg = self.edge(pf).masked_fill(~partner[..., None], float("-inf")).amax(dim=2)
            h = h + torch.nan_to_num(msg, neginf=0.0) * mask[..., None].to(h.dtype)
        bias = bias.reshape(n * self.heads, m, m)
        for block in self.blocks:
            h = block(h, bias)
        w = mask.to(h.dtype)[..., None]
        total = (h * w).sum(dim=1)
        pooled = [total / w.sum(dim=1).clamp_min(1.0), total / m]
        if self.event_features:
            pooled.append((event - self.evt_shift) / self.evt_scale)
        return self.head(torch.cat(pooled, dim=-1))


def train_object_classifier(train: tuple, y_train: np.ndarray, val: tuple, y_val: np.ndarray, settings, seed: int,
                            on_epoch: Callable[[dict], None] | None = None
                            ) -> tuple[ObjectTransformer, list[dict], float]:
    """Train :class:`ObjectTransformer` on ``train`` = ``(objects, p4, mask, event)`` arrays with labels
    ``y_train`` (1 signal), early-stopped on ``val``, through the one loop of the network classifiers
    (:func:`models.classifiers.train_binary`); returns the model, its history and the training seconds.
    ``settings``: plain values ``dim``, ``heads``, ``layers``, ``pair_features``, ``epochs``, ``batch_size``,
    ``learning_rate``, ``weight_decay``, ``patience`` (e.g. a configuration's ``classifiers.transformer``)."""
    from .classifiers import train_binary

    torch.manual_seed(seed)
    model = ObjectTransformer(train[0].shape[-1], train[3].shape[-1] if len(train) > 3 else 0, settings.dim,
                              settings.heads, settings.layers, settings.pair_features)
    model.fit_scaling(*train)
    t0 = time.perf_counter()
    history = train_binary(model, train, y_train, val, y_val, epochs=settings.epochs,
                           batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                           weight_decay=settings.weight_decay, patience=settings.patience, seed=seed,
                           on_epoch=on_epoch, name="transformer")
    return model, history, time.perf_counter() - t0


@torch.no_grad()
def object_scores(model: ObjectTransformer, inputs: tuple, batch_size: int = 8192) -> np.ndarray:
    """Signal probability of each event of ``inputs`` = ``(objects, p4, mask, event)``, float64."""
    model.eval()
    n = len(inputs[0])
    out = np.empty(n)
    for lo in range(0, n, batch_size):
        chunk = tuple(torch.as_tensor(np.asarray(a[lo:lo + batch_size])) for a in inputs)
        chunk = (chunk[0].float(), chunk[1].float(), chunk[2].bool(), *(c.float() for c in chunk[3:]))
        out[lo:lo + batch_size] = torch.sigmoid(model(*chunk)[:, 0]).double().numpy()
    return out
