"""A continuous normalizing flow trained by conditional flow matching, with exact densities.

The model is zuko's continuous normalizing flow (:class:`zuko.flows.CNF`: Chen et al., NeurIPS 2018; FFJORD,
Grathwohl et al., ICLR 2019), a vector field f(t, x | c) integrated from the data (t = 0) to a standard normal
(t = 1) with the adaptive Dormand-Prince method. It is *trained* not by maximum likelihood, which would integrate
the ODE and its Jacobian trace at every step, but by conditional flow matching (Lipman, Chen, Ben-Hamu, Nickel,
Le, ICLR 2023; with straight paths the rectified flow of Liu, Gong, Liu, ICLR 2023 and the I-CFM of Tong et al.,
TMLR 2024): for a data point x, a normal draw z and a uniform time t, the point x_t = (1 - t) x + t z moves with
velocity z - x, and the network regresses that velocity,

    L = E_{t, x, z} || f(t, x_t | c) - (z - x) ||^2 ,

whose minimiser is the marginal vector field that carries the data distribution to the normal one. Sampling
integrates the learned field from a normal draw back to t = 0; ``log_prob`` is the exact change of variables of
the same ODE (the full Jacobian trace, not Hutchinson's estimate), so the density of what is sampled and the
density that is reported belong to one map, up to the integration tolerances ``atol``/``rtol``.

The training loop (:func:`models.training.train_model`) uses :meth:`FlowMatching.objective` instead of the
negative log-likelihood for any model that has one; early stopping then follows the validation flow-matching loss,
evaluated with fixed noise so that epochs are compared on the same draws.
"""

from __future__ import annotations

from typing import Sequence

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Distribution


class FlowMatching(zuko.lazy.LazyDistribution):
    """p(x) or p(x | c) as a continuous normalizing flow trained by conditional flow matching.

    Arguments:
        features: modelled dimensions.
        context: size of the context vector (0: unconditional).
        hidden_features: widths of the vector field's hidden layers (SiLU activations).
        freqs: time-embedding frequencies (cos and sin of k pi t, k = 1..freqs).
        atol, rtol: tolerances of the adaptive ODE integration, for sampling and densities alike.
        validation_seed: seed of the fixed noise with which the loss is evaluated in ``eval`` mode.
    """

    def __init__(self, features: int, context: int = 0, hidden_features: Sequence[int] = (256, 256, 256),
                 freqs: int = 8, atol: float = 1e-5, rtol: float = 1e-4, validation_seed: int = 0) -> None:
        super().__init__()
        self.flow = zuko.flows.CNF(features, context, freqs=freqs, atol=atol, rtol=rtol, exact=True,
                                   hidden_features=tuple(hidden_features), activation=nn.SiLU)
        self.validation_seed = validation_seed

    @property
    def field(self) -> zuko.flows.FFJTransform:
        """The vector field f(t, x | c) (``field.f``), time 0 at the data and 1 at the normal base."""
        return self.flow.transform

    def forward(self, c: Tensor | None = None) -> Distribution:
        return self.flow(c)

    def objective(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """Per-event conditional flow-matching loss (the squared velocity error, averaged over the features).
        In ``eval`` mode the times and normal draws come from a generator seeded with ``validation_seed``, so the
        same events give the same loss at every call."""
        gen = None
        if not self.training:
            gen = torch.Generator(device=x.device).manual_seed(self.validation_seed)
        t = torch.rand(x.shape[:-1] + (1,), generator=gen, device=x.device, dtype=x.dtype)
        z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        xt = (1 - t) * x + t * z
        v = self.field.f(t[..., 0], xt, c)
        return (v - (z - x)).square().mean(dim=-1)
