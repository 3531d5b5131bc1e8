"""Invertible per-feature preprocessing for normalizing flows (the HIGGS features by default).

Each feature gets a transform chosen by its kind in a :class:`models.features.FeatureTable` (an application
passes its own; the default is the HIGGS table of :func:`analysis.features.feature_table`), fitted on training
data only, with an exact inverse:

- **positive** (pT, MET, masses): a Gaussian-rank transform, ``Phi^-1(F(x))`` with ``F`` the empirical CDF of
  the training data interpolated linearly between 1000 quantiles (as scikit-learn's ``QuantileTransformer``,
  ties averaged the same way). Long tails such as log(MET) at small MET would otherwise reach |z| ~ 15, which
  coupling flows extrapolate badly. The inverse interpolates back, so generated values stay within the
  training range and positive. A point mass at the lower edge (m_lv sits exactly at m_W whenever the W-mass
  constraint has a real solution) is first dequantised like a discrete level: spread uniformly over
  ``[a (1 - 2 %), a)``, where no event lies, and snapped back to ``a`` by the inverse;
- **standard**: only the final standardisation (an affine map, so densities in flow space and in feature space
  differ by a constant: what a mode estimate needs);
- **real** (continuous b-tag discriminants, where the source provides them; momentum components): the same
  Gaussian-rank transform, without the positivity requirement (NanoAOD fills undefined discriminants with
  negative values);
- **bounded** (pseudorapidities): the probit (inverse normal CDF) of the value scaled into the training range
  (widened by 0.1 %), so generated values stay inside the acceptance;
- **angle** (azimuths): events are symmetric under a global rotation, so the physics sits in the azimuths
  *relative to the lepton's*. The lepton azimuth itself is uniform and mapped by the probit of its position on
  the circle. Every other azimuth is taken relative to the lepton and the circle is cut where the training
  density is lowest (jets are isolated from the lepton, so near 0; the neutrino sits near it, so the MET cut
  lies near pi), then Gaussian-rank transformed like a positive feature. Cutting at +-pi instead would put the
  dense back-to-back region of the jets at both ends of the interval, i.e. in both Gaussian tails, which
  coupling flows smear out (on the quickstart a classifier told generated from simulated relative azimuths apart with
  an AUC of 0.72). The inverse adds the cut and the lepton azimuth back and wraps;
- **discrete** (b-tag levels): uniform dequantisation (Uria, Murray, Larochelle 2013; Theis, van den Oord,
  Bethge 2016) over intervals as wide as each level's training frequency: level k becomes
  ``C_k + u (C_(k+1) - C_k)`` with ``C`` the cumulative frequencies, which is exactly uniform on [0, 1], then
  the probit (exactly standard normal). Equal-width intervals would force the flow to model steps in density
  where a rare level sits between common ones. The inverse finds the interval and returns the exact level.

The probit rather than the logit: it maps the edges of a bounded interval to Gaussian tails (|z| < 4.8 for
1e-6 from an edge) instead of logistic ones (|z| up to 13.8), which coupling flows extrapolate badly.

**Derived** features, deterministic functions of others, are not given to the flow; ``forward`` drops them and
``inverse`` recomputes them from the generated inputs (:func:`analysis.features.derivations`), so generated
events are exactly self-consistent:

- ``m_lv``, a function of the lepton and the MET through the W-mass constraint (features in GeV): the data lie
  on a lower-dimensional manifold in it, which flows sharpen onto until held-out events get absurd likelihoods;
- the b-tag levels, when the continuous scores are among the features (``btag_working_points`` given): the
  flow models the four smooth scores and each level is the number of working points its score passes. A flow
  smears the joint distribution of four dequantised levels: on the quickstart, events with no tagged jet among
  the four were 7.0 % of a RealNVP sample (simulated: 0.6 %) and with three 10.8 % (5.1 %); from generated
  scores, 4.0 % and 6-7 %.

**Ordered** features (the jets' pT, which the skim stores in decreasing order): the flow models the leading
value and, for each following one, its ratio to the one before, in (0, 1], Gaussian-rank transformed like a
positive feature; the inverse multiplies back. Generated ratios stay inside the training range, so every
generated event is in order by construction (a flow given the four pTs independently put 7 % of the events out
of order on the quickstart).

Finally every column is standardised to zero mean and unit variance. The state is a dict of tensors and plain
Python values, so it is saved next to the model weights and loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from .features import KINDS, FeatureTable  # noqa: F401  (KINDS: the transforms this module implements)
_EPS = 1e-9
_MAX_LEVELS = 16
_ATOM_FRACTION = 0.05  # a single value carrying more than this fraction of events is a point mass
_ATOM_WIDTH = 0.02  # relative width of the interval below the point mass that it is spread over
_N_QUANTILES = 1000
_CUT_BINS = 72  # histogram bins (5 degrees) on the circle in which the cut of a relative azimuth is chosen


class PreprocessingError(ValueError):
    """Training data that the preprocessing cannot represent (e.g. a negative pT, a non-discrete b tag)."""


def higgs_table(btag_working_points=()) -> FeatureTable:
    """The default table: the HIGGS features and extra ntuple columns of the background generator."""
    from analysis.features import feature_table

    return feature_table(btag_working_points)


def feature_kind(name: str) -> str:
    """The transform kind of a feature of the default (HIGGS) table."""
    return higgs_table().kind(name)


def _probit(u: np.ndarray) -> np.ndarray:
    return ndtri(np.clip(u, _EPS, 1.0 - _EPS))


def _cdf(y: np.ndarray) -> np.ndarray:
    return ndtr(y)


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _sparsest_angle(phi: np.ndarray, bins: int = _CUT_BINS) -> float:
    """Centre of the least populated bin of a circular histogram of ``phi``, smoothed over three bins
    (wrapping around), in [-pi, pi)."""
    counts, edges = np.histogram(phi, bins=bins, range=(-np.pi, np.pi))
    smooth = counts + np.roll(counts, 1) + np.roll(counts, -1)
    k = int(np.argmin(smooth))
    return float(0.5 * (edges[k] + edges[k + 1]))


FROM_TABLE = object()
"""Default of ``Preprocessor(reference_angle=...)``: the feature table's reference azimuth."""


class Preprocessor:
    """Fit on training data, then map features to flow space (``forward``) and back (``inverse``)."""

    def __init__(self, features: list[str], reference_angle: str | None | object = FROM_TABLE,
                 derived: list[str] | tuple[str, ...] = (), btag_working_points: list[float] | tuple = (),
                 ordered: list[str] | tuple[str, ...] = (), table: FeatureTable | None = None):
        self.btag_working_points = [float(w) for w in btag_working_points]
        self.table = table if table is not None else higgs_table(self.btag_working_points)
        if reference_angle is FROM_TABLE:
            reference_angle = self.table.reference_angle
        unknown = [f for f in features if f not in self.table]
        if unknown:
            raise PreprocessingError(f"features {unknown} are not in the feature table")
        bad = [f for f in ordered if f not in features or self.table.kind(f) != "positive" or f in derived]
        if bad or len(set(ordered)) != len(ordered):
            raise PreprocessingError(f"ordered features must be distinct, positive, modelled features; got "
                                     f"{list(ordered)} (not usable: {bad})")
        self.ordered = [features.index(f) for f in ordered]
        self._derivations = self.table.derivations()
        unknown = [d for d in derived if d not in self._derivations or d not in features]
        if unknown:
            raise PreprocessingError(f"cannot derive {unknown}; derivable: {sorted(self._derivations)}")
        missing = sorted({i for d in derived for i in self._derivations[d][0] if i not in features})
        if missing:
            raise PreprocessingError(f"derived features {list(derived)} need the inputs {missing}")
        self.features = list(features)
        self.derived = [f for f in self.features if f in derived]
        self.modelled = [i for i, f in enumerate(self.features) if f not in self.derived]
        self.kinds = [self.table.kind(f) for f in self.features]
        self.reference = self.features.index(reference_angle) if reference_angle in self.features else -1
        self.low = np.zeros(len(features))
        self.high = np.ones(len(features))
        self.levels: dict[int, np.ndarray] = {}
        self.cumulative: dict[int, np.ndarray] = {}
        self.atoms: dict[int, float] = {}
        self.quantiles: dict[int, np.ndarray] = {}
        self.cuts: dict[int, float] = {}  # relative azimuths: where the circle is cut open
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
        if self.ordered:
            cols = x[:, self.ordered]
            if np.any(cols <= 0) or np.any(np.diff(cols, axis=1) > 0):
                names = [self.features[i] for i in self.ordered]
                raise PreprocessingError(f"ordered features {names}: the training data are not positive and in "
                                         "decreasing order in every event")
            x = self._to_ratios(x)
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
            if kind in ("positive", "real"):
                self.quantiles[i] = np.quantile(self._dequantise_atom(i, x[:, i], rng), probs)
            elif self._relative(i):
                rel = _wrap(x[:, i] - x[:, self.reference])
                self.cuts[i] = _sparsest_angle(rel)
                self.quantiles[i] = np.quantile(self._open_circle(i, rel), probs)
        self.fitted = True
        y = self._transform(x, rng, standardise=False, ratios=False)
        self.mean = y.mean(axis=0)
        self.std = y.std(axis=0)
        self.std[self.std < 1e-12] = 1.0
        return self

    def _dequantise_atom(self, i: int, col: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if i not in self.atoms:
            return col
        a = self.atoms[i]
        return np.where(col <= a, a * (1.0 - _ATOM_WIDTH * rng.uniform(size=len(col))), col)

    def _relative(self, i: int) -> bool:
        """Whether feature ``i`` is an azimuth taken relative to the reference (lepton) azimuth."""
        return self.kinds[i] == "angle" and self.reference >= 0 and i != self.reference

    def _open_circle(self, i: int, rel: np.ndarray) -> np.ndarray:
        """A relative azimuth as a position in [0, 2 pi) counted from the cut."""
        return (rel - self.cuts[i]) % (2 * np.pi)

    def _gauss_rank(self, i: int, col: np.ndarray) -> np.ndarray:
        q = self.quantiles[i]
        probs = np.linspace(0.0, 1.0, len(q))
        # average of the interpolations from below and from above: ties map to the middle of their plateau
        u = 0.5 * (np.interp(col, q, probs) - np.interp(-col, -q[::-1], -probs[::-1]))
        return _probit(u)

    def _to_ratios(self, x: np.ndarray) -> np.ndarray:
        """The ordered features as the leading value and the ratios of each to the one before."""
        if not self.ordered:
            return x
        x = np.array(x, dtype=np.float64)
        cols = x[:, self.ordered]
        x[:, self.ordered[1:]] = cols[:, 1:] / cols[:, :-1]
        return x

    def _from_ratios(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`_to_ratios` (in place)."""
        if self.ordered:
            x[:, self.ordered] = np.cumprod(x[:, self.ordered], axis=1)
        return x

    def _transform(self, x: np.ndarray, rng: np.random.Generator, standardise: bool = True,
                   ratios: bool = True) -> np.ndarray:
        if ratios:
            x = self._to_ratios(x)
        y = np.empty_like(x, dtype=np.float64)
        ref = x[:, self.reference] if self.reference >= 0 else None
        for i, kind in enumerate(self.kinds):
            col = x[:, i]
            if kind in ("positive", "real"):
                y[:, i] = self._gauss_rank(i, self._dequantise_atom(i, col, rng))
            elif kind == "standard":
                y[:, i] = col
            elif kind == "bounded":
                y[:, i] = _probit((col - self.low[i]) / (self.high[i] - self.low[i]))
            elif self._relative(i):
                y[:, i] = self._gauss_rank(i, self._open_circle(i, _wrap(col - ref)))
            elif kind == "angle":
                y[:, i] = _probit((col + np.pi) / (2 * np.pi))
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
            if kind in ("positive", "real"):
                q = self.quantiles[i]
                x[:, i] = np.interp(_cdf(col), np.linspace(0.0, 1.0, len(q)), q)
                if i in self.atoms:
                    x[:, i] = np.maximum(x[:, i], self.atoms[i])
            elif kind == "standard":
                x[:, i] = col
            elif kind == "bounded":
                x[:, i] = self.low[i] + _cdf(col) * (self.high[i] - self.low[i])
            elif self._relative(i):
                q = self.quantiles[i]
                x[:, i] = _wrap(np.interp(_cdf(col), np.linspace(0.0, 1.0, len(q)), q) + self.cuts[i] + ref)
            elif kind == "angle":
                x[:, i] = _cdf(col) * 2 * np.pi - np.pi
            else:
                levels = self.levels[i]
                idx = np.clip(np.searchsorted(self.cumulative[i], _cdf(col), side="right") - 1, 0, len(levels) - 1)
                x[:, i] = levels[idx]
        self._from_ratios(x)
        for name in self.derived:
            inputs, fn = self._derivations[name]
            x[:, self.features.index(name)] = fn(*(x[:, self.features.index(f)] for f in inputs))
        return x

    # ----------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Tensors and plain values only: safe for ``torch.load(..., weights_only=True)``."""
        return {
            "features": list(self.features),
            "kinds": list(self.kinds),
            "derived": list(self.derived),
            "btag_working_points": list(self.btag_working_points),
            "reference": int(self.reference),
            "ordered": [self.features[i] for i in self.ordered],
            "low": torch.as_tensor(self.low),
            "high": torch.as_tensor(self.high),
            "mean": torch.as_tensor(self.mean),
            "std": torch.as_tensor(self.std),
            "levels": {str(i): torch.as_tensor(v) for i, v in self.levels.items()},
            "cumulative": {str(i): torch.as_tensor(v) for i, v in self.cumulative.items()},
            "atoms": {str(i): float(a) for i, a in self.atoms.items()},
            "quantiles": {str(i): torch.as_tensor(v) for i, v in self.quantiles.items()},
            "cuts": {str(i): float(c) for i, c in self.cuts.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict, table: FeatureTable | None = None) -> "Preprocessor":
        """The preprocessor saved by :meth:`state_dict`; ``table`` as given to the constructor (the derived
        features' functions come from it). A table whose kinds differ from the saved ones is refused."""
        features = list(state["features"])
        ref = int(state["reference"])
        p = cls(features, reference_angle=features[ref] if ref >= 0 else None, derived=state["derived"],
                btag_working_points=state["btag_working_points"], ordered=state.get("ordered", []), table=table)
        saved = [("real" if k == "score" else k) for k in state.get("kinds", p.kinds)]
        if saved != p.kinds:
            changed = [f for f, a, b in zip(features, saved, p.kinds) if a != b]
            raise PreprocessingError(f"the feature table gives other kinds than the saved preprocessing for "
                                     f"{changed}; retrain")
        p.low, p.high = state["low"].numpy(), state["high"].numpy()
        p.mean, p.std = state["mean"].numpy(), state["std"].numpy()
        p.levels = {int(i): v.numpy() for i, v in state["levels"].items()}
        p.cumulative = {int(i): v.numpy() for i, v in state["cumulative"].items()}
        p.atoms = {int(i): float(a) for i, a in state.get("atoms", {}).items()}
        p.quantiles = {int(i): v.numpy() for i, v in state["quantiles"].items()}
        p.cuts = {int(i): float(c) for i, c in state["cuts"].items()}
        p.fitted = True
        return p
