"""Invertible per-feature preprocessing of the 28 HIGGS features for normalizing flows.

Each feature gets a transform chosen by its type, fitted on training data only, with an exact inverse:

- **positive** (pT, MET, masses): a Gaussian-rank transform, ``Phi^-1(F(x))`` with ``F`` the empirical CDF of
  the training data interpolated linearly between 1000 quantiles (as scikit-learn's ``QuantileTransformer``,
  ties averaged the same way). Long tails such as log(MET) at small MET would otherwise reach |z| ~ 15, which
  coupling flows extrapolate badly. The inverse interpolates back, so generated values stay within the
  training range and positive. A point mass at the lower edge (m_lv sits exactly at m_W whenever the W-mass
  constraint has a real solution) is first dequantised like a discrete level: spread uniformly over
  ``[a (1 - 2 %), a)``, where no event lies, and snapped back to ``a`` by the inverse;
- **bounded** (pseudorapidities): the probit (inverse normal CDF) of the value scaled into the training range
  (widened by 0.1 %), so generated values stay inside the acceptance;
- **angle** (azimuths): the lepton azimuth, and every other azimuth *relative to the lepton's* wrapped into
  [-pi, pi), each mapped by ``logit`` of its position on the circle. Events are symmetric under a global
  rotation, so the physics sits in the differences; each is mapped by the probit of its position on the circle
  (a uniform angle becomes a standard normal); the inverse adds the lepton azimuth back and wraps;
- **discrete** (b-tag levels): uniform dequantisation (Uria, Murray, Larochelle 2013; Theis, van den Oord,
  Bethge 2016) over intervals as wide as each level's training frequency: level k becomes
  ``C_k + u (C_(k+1) - C_k)`` with ``C`` the cumulative frequencies, which is exactly uniform on [0, 1], then
  the probit (exactly standard normal). Equal-width intervals would force the flow to model steps in density
  where a rare level sits between common ones. The inverse finds the interval and returns the exact level.

The probit rather than the logit: it maps the edges of a bounded interval to Gaussian tails (|z| < 4.8 for
1e-6 from an edge) instead of logistic ones (|z| up to 13.8), which coupling flows extrapolate badly.

**Derived** features, deterministic functions of others (``m_lv`` of the lepton and the MET, through the W-mass
constraint, for features in GeV), are not given to the flow: the data lie on a lower-dimensional manifold in
them, which flows sharpen onto until held-out events get absurd likelihoods. ``forward`` drops them and
``inverse`` recomputes them from the generated inputs (:data:`analysis.features.DERIVED_FEATURES`), so
generated events are exactly self-consistent.

Finally every column is standardised to zero mean and unit variance. The state is a dict of tensors and plain
Python values, so it is saved next to the model weights and loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from analysis.features import ANGLE_FEATURES, BTAG_FEATURES, DERIVED_FEATURES

KINDS = ("positive", "bounded", "angle", "discrete")
_EPS = 1e-9
_MAX_LEVELS = 16
_ATOM_FRACTION = 0.05  # a single value carrying more than this fraction of events is a point mass
_ATOM_WIDTH = 0.02  # relative width of the interval below the point mass that it is spread over
_N_QUANTILES = 1000


class PreprocessingError(ValueError):
    """Training data that the preprocessing cannot represent (e.g. a negative pT, a non-discrete b tag)."""


def feature_kind(name: str) -> str:
    """The transform type of a HIGGS feature, from its name."""
    if name in BTAG_FEATURES:
        return "discrete"
    if name in ANGLE_FEATURES:
        return "angle"
    if name.endswith("_eta"):
        return "bounded"
    return "positive"


def _probit(u: np.ndarray) -> np.ndarray:
    return ndtri(np.clip(u, _EPS, 1.0 - _EPS))


def _cdf(y: np.ndarray) -> np.ndarray:
    return ndtr(y)


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


class Preprocessor:
    """Fit on training data, then map features to flow space (``forward``) and back (``inverse``)."""

    def __init__(self, features: list[str], reference_angle: str | None = "lepton_phi",
                 derived: list[str] | tuple[str, ...] = ()):
        unknown = [d for d in derived if d not in DERIVED_FEATURES or d not in features]
        if unknown:
            raise PreprocessingError(f"cannot derive {unknown}; derivable: {sorted(DERIVED_FEATURES)}")
        self.features = list(features)
        self.derived = [f for f in self.features if f in derived]
        self.modelled = [i for i, f in enumerate(self.features) if f not in self.derived]
        self.kinds = [feature_kind(f) for f in self.features]
        self.reference = self.features.index(reference_angle) if reference_angle in self.features else -1
        self.low = np.zeros(len(features))
        self.high = np.ones(len(features))
        self.levels: dict[int, np.ndarray] = {}
        self.cumulative: dict[int, np.ndarray] = {}
        self.atoms: dict[int, float] = {}
        self.quantiles: dict[int, np.ndarray] = {}
        self.mean = np.zeros(len(features))
        self.std = np.ones(len(features))
        self.fitted = False

    # ----------------------------------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, rng: np.random.Generator | None = None) -> "Preprocessor":
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise PreprocessingError(f"expected data of shape (n, {len(self.features)}), got {x.shape}")
        if len(x) < 2:
            raise PreprocessingError(f"need at least 2 training events to fit the preprocessing, got {len(x)}")
        if not np.all(np.isfinite(x)):
            raise PreprocessingError("training data contain NaN or infinite values")
        for i, (name, kind) in enumerate(zip(self.features, self.kinds)):
            col = x[:, i]
            if kind == "positive" and np.any(col <= 0):
                raise PreprocessingError(f"feature {name}: expected positive values, minimum is {col.min()}")
            if kind == "positive":
                values, counts = np.unique(col, return_counts=True)
                top = int(np.argmax(counts))
                if counts[top] > _ATOM_FRACTION * len(col) and top == 0:  # a point mass at the lower edge
                    self.atoms[i] = float(values[top])
            if kind == "bounded":
                lo, hi = col.min(), col.max()
                pad = 1e-3 * max(hi - lo, 1e-6)
                self.low[i], self.high[i] = lo - pad, hi + pad
            if kind == "discrete":
                levels = np.unique(col)
                if len(levels) > _MAX_LEVELS:
                    raise PreprocessingError(f"feature {name}: {len(levels)} distinct values, not a discrete "
                                             f"b-tag level (at most {_MAX_LEVELS})")
                self.levels[i] = levels
                freq = np.array([(col == v).mean() for v in levels])
                self.cumulative[i] = np.concatenate([[0.0], np.cumsum(freq)])
                self.cumulative[i][-1] = 1.0
        rng = rng or np.random.default_rng(0)
        probs = np.linspace(0.0, 1.0, _N_QUANTILES)
        for i, kind in enumerate(self.kinds):
            if kind == "positive":
                self.quantiles[i] = np.quantile(self._dequantise_atom(i, x[:, i], rng), probs)
        self.fitted = True
        y = self._transform(x, rng, standardise=False)
        self.mean = y.mean(axis=0)
        self.std = y.std(axis=0)
        self.std[self.std < 1e-12] = 1.0
        return self

    def _dequantise_atom(self, i: int, col: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if i not in self.atoms:
            return col
        a = self.atoms[i]
        return np.where(col <= a, a * (1.0 - _ATOM_WIDTH * rng.uniform(size=len(col))), col)

    def _gauss_rank(self, i: int, col: np.ndarray) -> np.ndarray:
        q = self.quantiles[i]
        probs = np.linspace(0.0, 1.0, len(q))
        # average of the interpolations from below and from above: ties map to the middle of their plateau
        u = 0.5 * (np.interp(col, q, probs) - np.interp(-col, -q[::-1], -probs[::-1]))
        return _probit(u)

    def _transform(self, x: np.ndarray, rng: np.random.Generator, standardise: bool = True) -> np.ndarray:
        y = np.empty_like(x, dtype=np.float64)
        ref = x[:, self.reference] if self.reference >= 0 else None
        for i, kind in enumerate(self.kinds):
            col = x[:, i]
            if kind == "positive":
                y[:, i] = self._gauss_rank(i, self._dequantise_atom(i, col, rng))
            elif kind == "bounded":
                y[:, i] = _probit((col - self.low[i]) / (self.high[i] - self.low[i]))
            elif kind == "angle":
                phi = col if (i == self.reference or ref is None) else _wrap(col - ref)
                y[:, i] = _probit((phi + np.pi) / (2 * np.pi))
            else:
                levels = self.levels[i]
                idx = np.clip(np.searchsorted(levels, col), 0, len(levels) - 1)
                # map values not seen in training onto the nearest level
                lower = np.clip(idx - 1, 0, len(levels) - 1)
                idx = np.where(np.abs(levels[lower] - col) < np.abs(levels[idx] - col), lower, idx)
                cum = self.cumulative[i]
                y[:, i] = _probit(cum[idx] + rng.uniform(size=len(col)) * (cum[idx + 1] - cum[idx]))
        return (y - self.mean) / self.std if standardise else y

    @property
    def flow_features(self) -> int:
        """Dimension of the flow space (features minus derived ones)."""
        return len(self.modelled)

    def forward(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Features -> flow space (float64), shape ``(n, flow_features)``. Dequantisation noise comes from
        ``rng`` (seeded default)."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.forward called before fit")
        x = np.asarray(x, dtype=np.float64)
        return self._transform(x, rng or np.random.default_rng(0))[:, self.modelled]

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Flow space -> features, inside the physical bounds (pT > 0, angles wrapped, b tags on levels), with
        derived features recomputed from the others."""
        z = np.asarray(z, dtype=np.float64)
        full = np.zeros((len(z), len(self.features)))
        full[:, self.modelled] = z
        y = full * self.std + self.mean
        x = np.empty_like(y)
        ref = None
        if self.reference >= 0:
            ref = _cdf(y[:, self.reference]) * 2 * np.pi - np.pi
        for i, kind in enumerate(self.kinds):
            col = y[:, i]
            if kind == "positive":
                q = self.quantiles[i]
                x[:, i] = np.interp(_cdf(col), np.linspace(0.0, 1.0, len(q)), q)
                if i in self.atoms:
                    x[:, i] = np.maximum(x[:, i], self.atoms[i])
            elif kind == "bounded":
                x[:, i] = self.low[i] + _cdf(col) * (self.high[i] - self.low[i])
            elif kind == "angle":
                phi = _cdf(col) * 2 * np.pi - np.pi
                x[:, i] = phi if (i == self.reference or ref is None) else _wrap(phi + ref)
            else:
                levels = self.levels[i]
                idx = np.clip(np.searchsorted(self.cumulative[i], _cdf(col), side="right") - 1, 0, len(levels) - 1)
                x[:, i] = levels[idx]
        for name in self.derived:
            inputs, fn = DERIVED_FEATURES[name]
            x[:, self.features.index(name)] = fn(*(x[:, self.features.index(f)] for f in inputs))
        return x

    # ----------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Tensors and plain values only: safe for ``torch.load(..., weights_only=True)``."""
        return {
            "features": list(self.features),
            "derived": list(self.derived),
            "reference": int(self.reference),
            "low": torch.as_tensor(self.low),
            "high": torch.as_tensor(self.high),
            "mean": torch.as_tensor(self.mean),
            "std": torch.as_tensor(self.std),
            "levels": {str(i): torch.as_tensor(v) for i, v in self.levels.items()},
            "cumulative": {str(i): torch.as_tensor(v) for i, v in self.cumulative.items()},
            "atoms": {str(i): float(a) for i, a in self.atoms.items()},
            "quantiles": {str(i): torch.as_tensor(v) for i, v in self.quantiles.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "Preprocessor":
        features = list(state["features"])
        ref = int(state["reference"])
        p = cls(features, reference_angle=features[ref] if ref >= 0 else None, derived=state.get("derived", []))
        p.low, p.high = state["low"].numpy(), state["high"].numpy()
        p.mean, p.std = state["mean"].numpy(), state["std"].numpy()
        p.levels = {int(i): v.numpy() for i, v in state["levels"].items()}
        p.cumulative = {int(i): v.numpy() for i, v in state["cumulative"].items()}
        p.atoms = {int(i): float(a) for i, a in state.get("atoms", {}).items()}
        p.quantiles = {int(i): v.numpy() for i, v in state["quantiles"].items()}
        p.fitted = True
        return p
