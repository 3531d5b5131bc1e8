"""The statistical model (pyhf HistFactory workspaces) and expected CLs upper limits on the signal strength.

One channel of classifier-score bins; samples ``signal`` (normfactor ``mu``) and ``background`` with a per-bin
statistical uncertainty of the template (``staterror``, Gaussian constraint, relative size
sqrt(sum w^2)/sum w of the sample the template came from), an optional normalisation systematic (``normsys``,
exponential interpolation) and an optional luminosity uncertainty (``lumi``, on both samples).

Expected limits use the background-only Asimov data set and the asymptotic formulae of Cowan, Cranmer, Gross and
Vitells, Eur. Phys. J. C 71 (2011) 1554 (arXiv:1007.1727) with the test statistic q~_mu, exactly as
``pyhf.infer.intervals.upper_limits.upper_limit`` computes them, but along a faster exact route:

* On the background-only Asimov data the unconditional fit is known without fitting (mu_hat = 0, every nuisance
  parameter at its nominal value), and the expected CLs of band n depends on mu only through
  x = sqrt(q~_mu,A): CLs_k = Phi(k - x) / Phi(k) for band k (k = -2 ... 2). So each band's limit is the root of
  sqrt(q~_mu,A) = x_n with x_n solved in closed form; the five bands need only conditional fits at trial mu.
* In a conditional fit the per-bin gammas of the statistical uncertainty are profiled in closed form (the
  stationarity condition is a quadratic in gamma); only the global nuisance parameters (normalisation systematic,
  luminosity) are left to a bounded quasi-Newton minimiser with analytic gradients (envelope theorem).

The likelihood is read from the pyhf workspace itself, and :func:`pyhf_expected_limits` gives pyhf's own
``upper_limit`` on the same workspace for comparison (agreement within 1 % is tested).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import numba
import numpy as np
from scipy import optimize, stats

from .numeric import pairwise_sum

#: expected-limit bands, in units of the standard deviation of the background-only expectation
BANDS: tuple[int, ...] = (-2, -1, 0, 1, 2)
_GAMMA_MIN = 1e-10  # pyhf's lower bound of staterror gammas


@numba.njit(cache=True, error_model="numpy")
def _quadratic_gamma(c: np.ndarray, a: np.ndarray, n: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Per-bin gamma minimising lambda - n ln(lambda) + (gamma - 1)^2 / (2 s2), lambda = c + a gamma:
    the largest root of a gamma^2 + (a^2 s2 + c - a) gamma + (a s2 c - n a s2 - c) = 0 (in the numerically
    stable form q = -(B + sign(B) sqrt(disc)) / 2, roots q / A and C / q), at least :data:`_GAMMA_MIN`."""
    out = np.empty(c.shape[0])
    for i in range(c.shape[0]):
        A = a[i]
        B = a[i] * a[i] * s2[i] + c[i] - a[i]
        C = a[i] * s2[i] * c[i] - n[i] * a[i] * s2[i] - c[i]
        v = B * B - 4.0 * A * C
        if v < 0.0:
            v = 0.0
        disc = np.sqrt(v)
        q = -0.5 * (B + (disc if B >= 0 else -disc))
        r1 = q / A
        r2 = C / q if q != 0 else -np.inf
        m = r1 if (r1 >= r2 or r1 != r1) else r2  # np.maximum: NaN propagates
        out[i] = m if (m >= _GAMMA_MIN or m != m) else _GAMMA_MIN
    return out


@numba.njit(cache=True, error_model="numpy")
def _profile_two(c: np.ndarray, a: np.ndarray, n: np.ndarray, s2: np.ndarray, r2: np.ndarray
                 ) -> tuple[np.ndarray, float, np.ndarray]:
    """Per-bin staterror gamma x (Gaussian width^2 ``s2``) and generator factor y (width^2 ``r2``) minimising
    lambda - n ln(lambda) + (x - 1)^2 / (2 s2) + (y - 1)^2 / (2 r2), lambda = c + a x y: the quadratic of the
    combined width as the start, then Newton steps on (x, y) per bin, halved while any lambda would turn
    non-positive, until the largest step is below 1e-12 (30 at most). Returns (x y, the constraint terms, x)."""
    k = c.shape[0]
    p = _quadratic_gamma(c, a, n, s2 + r2)
    x = np.empty(k)
    y = np.empty(k)
    for i in range(k):
        x[i] = 1.0 + (p[i] - 1.0) * s2[i] / (s2[i] + r2[i])
        y[i] = 1.0 + (p[i] - 1.0) * r2[i] / (s2[i] + r2[i])
    dx, dy, nx, ny = np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    for _ in range(30):
        for i in range(k):
            lam = c[i] + a[i] * x[i] * y[i]
            w = 1.0 - n[i] / lam
            q = n[i] / (lam * lam)
            fx = w * a[i] * y[i] + (x[i] - 1.0) / s2[i]
            fy = w * a[i] * x[i] + (y[i] - 1.0) / r2[i]
            hxx = q * a[i] * a[i] * y[i] * y[i] + 1.0 / s2[i]
            hyy = q * a[i] * a[i] * x[i] * x[i] + 1.0 / r2[i]
            hxy = q * a[i] * a[i] * x[i] * y[i] + w * a[i]
            det = hxx * hyy - hxy * hxy
            dx[i] = (hyy * fx - hxy * fy) / det
            dy[i] = (hxx * fy - hxy * fx) / det
        step = 1.0
        for _ in range(30):  # keep lambda positive
            positive = True
            for i in range(k):
                nx[i] = x[i] - step * dx[i]
                ny[i] = y[i] - step * dy[i]
                if not (c[i] + a[i] * nx[i] * ny[i] > 0):
                    positive = False
            if positive:
                break
            step *= 0.5
        mx, my = 0.0, 0.0  # max |dx|, max |dy| with NaN propagating (np.max), then Python's max of the two
        for i in range(k):
            ax, ay = abs(dx[i]), abs(dy[i])
            if ax > mx or ax != ax:
                mx = ax if mx == mx else mx
            if ay > my or ay != ay:
                my = ay if my == my else my
        for i in range(k):
            x[i] = nx[i] if (nx[i] >= _GAMMA_MIN or nx[i] != nx[i]) else _GAMMA_MIN
            y[i] = ny[i]
        if (my if my > mx else mx) * step < 1e-12:  # quadratic convergence: done
            break
    terms = np.empty(k)
    for i in range(k):
        terms[i] = (x[i] - 1.0) * (x[i] - 1.0) / (2 * s2[i]) + (y[i] - 1.0) * (y[i] - 1.0) / (2 * r2[i])
    return x * y, pairwise_sum(terms), x


class StatisticsError(ValueError):
    """A statistical model that must not reach a fit, or a fit that failed; the message names the point."""


def build_workspace(signal: Sequence[float], background: Sequence[float],
                    background_stat: Sequence[float] | None = None, background_syst: float = 0.0,
                    lumi_uncertainty: float = 0.0, name: str = "point",
                    generator_uncertainty: Sequence[float] | None = None,
                    observations: Sequence[float] | None = None,
                    generator_shape: Sequence[float] | None = None) -> dict[str, Any]:
    """HistFactory workspace (pyhf JSON) of one channel ``SR`` for the point ``name``.

    Args:
        signal: expected signal yield per bin at mu = 1.
        background: expected background yield per bin; every bin must be positive.
        background_stat: absolute statistical uncertainty of each background bin (sqrt of the sum of squared
            weights); ``None`` for a template of infinite statistics (no staterror modifier).
        background_syst: relative normalisation uncertainty of the background (0.1 = 10 %); 0 for none.
        lumi_uncertainty: relative luminosity uncertainty; 0 for none.
        generator_uncertainty: absolute uncertainty of each background bin from the generator itself (the
            spread of an ensemble of generator replicas, :mod:`analysis.generator_uncertainty`); one ``histosys``
            modifier ``generator_bin<i>`` per bin (Gaussian constraint, symmetric, acting on bin i only), so
            every bin's generator uncertainty is an independent nuisance parameter next to the staterror;
            ``None`` for none. At most 100 % of the bin.
        generator_shape: absolute shift of each background bin under a coherent generator systematic (e.g.
            the statistical uncertainty of a non-closure correction measured against independent simulation):
            one ``histosys`` modifier ``generator_shape`` moving every bin together (Gaussian constraint,
            symmetric); a 2-D array (one row per shape) gives several independent ones, ``generator_shape``,
            ``generator_shape1``, ...; ``None`` for none.
        observations: the observed data per bin; default: the background-only Asimov data (the background
            template). The spurious-signal test puts an independent simulated template here.
    """
    s = np.asarray(signal, dtype=float)
    b = np.asarray(background, dtype=float)
    if s.ndim != 1 or s.shape != b.shape or len(s) == 0:
        raise StatisticsError(f"{name}: signal ({s.shape}) and background ({b.shape}) need the same, "
                              "non-zero number of bins")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(b))):
        raise StatisticsError(f"{name}: non-finite template values (signal {s.tolist()}, background {b.tolist()})")
    empty = np.flatnonzero(b <= 0)
    if len(empty):
        raise StatisticsError(f"{name}: background bin(s) {empty.tolist()} empty or negative "
                              f"({b[empty].tolist()}); merge bins before the fit (an empty background bin gives "
                              "a falsely strong limit)")
    if np.any(s < 0) or s.sum() <= 0:
        raise StatisticsError(f"{name}: the signal template is zero or negative (total {s.sum():g}); no limit "
                              "on its strength can be set")
    if background_syst < 0 or not background_syst < 1 or lumi_uncertainty < 0 or not lumi_uncertainty < 1:
        raise StatisticsError(f"{name}: systematic sizes must lie in [0, 1) (background {background_syst}, "
                              f"luminosity {lumi_uncertainty})")
    sig_mods: list[dict] = [{"name": "mu", "type": "normfactor", "data": None}]
    bkg_mods: list[dict] = []
    if background_stat is not None:
        err = np.asarray(background_stat, dtype=float)
        if err.shape != b.shape or np.any(~np.isfinite(err)) or np.any(err < 0):
            raise StatisticsError(f"{name}: background statistical uncertainties must be finite, non-negative, "
                                  "one per bin")
        bkg_mods.append({"name": "staterror_SR", "type": "staterror", "data": err.tolist()})
    if generator_uncertainty is not None:
        gen = np.asarray(generator_uncertainty, dtype=float)
        if gen.shape != b.shape or np.any(~np.isfinite(gen)) or np.any(gen < 0):
            raise StatisticsError(f"{name}: generator uncertainties must be finite, non-negative, one per bin")
        gen = np.minimum(gen, b)
        for i in np.flatnonzero(gen > 0):
            hi, lo = b.copy(), b.copy()
            hi[i] += gen[i]
            lo[i] -= gen[i]
            bkg_mods.append({"name": f"generator_bin{i}", "type": "histosys",
                             "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()}})
    if generator_shape is not None:
        shapes = np.asarray(generator_shape, dtype=float)
        shapes = shapes[None, :] if shapes.ndim == 1 else shapes
        if (shapes.ndim != 2 or shapes.shape[1:] != b.shape or np.any(~np.isfinite(shapes))
                or np.any(np.abs(shapes) >= b)):
            raise StatisticsError(f"{name}: each generator shape must be finite, one value per bin, smaller than "
                                  "the bin")
        for j, shape in enumerate(sh for sh in shapes if np.any(sh != 0)):
            bkg_mods.append({"name": _shape_name(j), "type": "histosys",
                             "data": {"hi_data": (b + shape).tolist(), "lo_data": (b - shape).tolist()}})
    if background_syst > 0:
        bkg_mods.append({"name": "bkg_norm", "type": "normsys",
                         "data": {"hi": 1.0 + background_syst, "lo": 1.0 - background_syst}})
    parameters: list[dict] = [{"name": "mu", "bounds": [[0.0, 1e4]], "inits": [1.0]}]
    if lumi_uncertainty > 0:
        for mods in (sig_mods, bkg_mods):
            mods.append({"name": "lumi", "type": "lumi", "data": None})
        parameters.append({"name": "lumi", "auxdata": [1.0], "sigmas": [lumi_uncertainty],
                           "bounds": [[max(1e-3, 1 - 10 * lumi_uncertainty), 1 + 10 * lumi_uncertainty]],
                           "inits": [1.0]})
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": s.tolist(), "modifiers": sig_mods},
            {"name": "background", "data": b.tolist(), "modifiers": bkg_mods}]}],
        "observations": [{"name": "SR", "data": (b if observations is None else
                                                 _checked_observations(observations, b, name)).tolist()}],
        "measurements": [{"name": name, "config": {"poi": "mu", "parameters": parameters}}],
        "version": "1.0.0",
    }


def _shape_name(j: int) -> str:
    """Name of the j-th coherent generator shape modifier (the first keeps the historical name)."""
    return "generator_shape" if j == 0 else f"generator_shape{j}"


def _checked_observations(observations: Sequence[float], b: np.ndarray, name: str) -> np.ndarray:
    obs = np.asarray(observations, dtype=float)
    if obs.shape != b.shape or np.any(~np.isfinite(obs)) or np.any(obs < 0):
        raise StatisticsError(f"{name}: observations must be finite, non-negative, one per bin")
    return obs


@dataclasses.dataclass(frozen=True)
class ChannelModel:
    """The likelihood of a workspace written by :func:`build_workspace`, as arrays."""

    name: str
    signal: np.ndarray
    background: np.ndarray
    stat_rel: np.ndarray | None  # relative staterror sigma per bin, None: no staterror
    syst: tuple[float, float] | None  # normsys (hi, lo)
    lumi_sigma: float | None
    lumi_bounds: tuple[float, float] = (0.0, 10.0)
    gen_rel: np.ndarray | None = None  # relative generator uncertainty per bin (histosys generator_bin<i>)
    observed: np.ndarray | None = None  # the workspace's observations
    shape: np.ndarray | None = None  # absolute shifts of the coherent histosys generator_shape[j], (shapes, bins)

    @property
    def mu_lower_bound(self) -> float:
        """The lowest signal strength a fit may reach: the bin with the largest signal-to-background ratio keeps
        half its background expectation (every bin's expectation stays positive under the nuisance parameters)."""
        return -0.5 * float(np.min(self.background / np.maximum(self.signal, 1e-300)))

    @classmethod
    def from_workspace(cls, workspace: Mapping[str, Any]) -> "ChannelModel":
        """Read the model from a pyhf JSON workspace; :class:`StatisticsError` if its structure is not the one
        of :func:`build_workspace` (then use :func:`pyhf_expected_limits`)."""
        try:
            measurement = workspace["measurements"][0]
            name = measurement["name"]
            channels = workspace["channels"]
            if len(channels) != 1:
                raise StatisticsError(f"{name}: one channel expected, found {len(channels)}")
            samples = {s["name"]: s for s in channels[0]["samples"]}
            if set(samples) != {"signal", "background"}:
                raise StatisticsError(f"{name}: samples 'signal' and 'background' expected, found {sorted(samples)}")
            if measurement["config"]["poi"] != "mu":
                raise StatisticsError(f"{name}: parameter of interest 'mu' expected")
            sig = np.asarray(samples["signal"]["data"], dtype=float)
            bkg = np.asarray(samples["background"]["data"], dtype=float)
            stat_rel, syst, lumi = None, None, None
            shapes: dict[str, np.ndarray] = {}
            gen_rel = np.zeros_like(bkg)
            types = {m["type"] for m in samples["signal"]["modifiers"]}
            if not types <= {"normfactor", "lumi"} or "normfactor" not in types:
                raise StatisticsError(f"{name}: signal modifiers must be the normfactor mu and lumi")
            for mod in samples["background"]["modifiers"]:
                if mod["type"] == "staterror":
                    stat_rel = np.asarray(mod["data"], dtype=float) / bkg
                elif mod["type"] == "normsys":
                    syst = (float(mod["data"]["hi"]), float(mod["data"]["lo"]))
                elif mod["type"] == "histosys" and mod["name"].startswith("generator_shape"):
                    hi = np.asarray(mod["data"]["hi_data"], dtype=float) - bkg
                    lo = bkg - np.asarray(mod["data"]["lo_data"], dtype=float)
                    if not np.allclose(hi, lo, rtol=1e-9, atol=1e-12 * bkg.max()):
                        raise StatisticsError(f"{name}: histosys {mod['name']!r} must be symmetric; use "
                                              "pyhf_expected_limits")
                    shapes[mod["name"]] = hi
                elif mod["type"] == "histosys" and mod["name"].startswith("generator_bin"):
                    i = int(mod["name"][len("generator_bin"):])
                    hi = np.asarray(mod["data"]["hi_data"], dtype=float) - bkg
                    lo = bkg - np.asarray(mod["data"]["lo_data"], dtype=float)
                    others = np.delete(np.abs(hi) + np.abs(lo), i)
                    if not (np.all(others <= 1e-9 * bkg.max()) and math.isclose(hi[i], lo[i], rel_tol=1e-9)
                            and hi[i] >= 0):
                        raise StatisticsError(f"{name}: histosys {mod['name']!r} must shift bin {i} alone, "
                                              "symmetrically; use pyhf_expected_limits")
                    gen_rel[i] = hi[i] / bkg[i]
                elif mod["type"] != "lumi":
                    raise StatisticsError(f"{name}: background modifier type {mod['type']!r} is not supported by "
                                          "the fast limit; use pyhf_expected_limits")
            bounds = (0.0, 10.0)
            for par in measurement["config"].get("parameters", []):
                if par["name"] == "lumi":
                    lumi = float(par["sigmas"][0])
                    bounds = tuple(par.get("bounds", [[0.0, 10.0]])[0])
            observed = np.asarray(workspace["observations"][0]["data"], dtype=float)
            if observed.shape != bkg.shape:
                raise StatisticsError(f"{name}: {len(observed)} observations for {len(bkg)} bins")
            if shapes and set(shapes) != {_shape_name(j) for j in range(len(shapes))}:
                raise StatisticsError(f"{name}: generator shapes {sorted(shapes)} are not numbered 0..n-1")
            shape = np.stack([shapes[_shape_name(j)] for j in range(len(shapes))]) if shapes else None
        except (KeyError, IndexError, TypeError, ValueError) as e:
            if isinstance(e, StatisticsError):
                raise
            raise StatisticsError(f"workspace not in the layout of build_workspace: missing {e}") from None
        return cls(name, sig, bkg, stat_rel, syst, lumi, bounds, gen_rel if np.any(gen_rel > 0) else None,
                   observed, shape)

    # -- likelihood ---------------------------------------------------------------------------------------------
    def _kappa(self, theta: float) -> tuple[float, float]:
        """normsys factor and d ln(kappa)/d theta (pyhf interpolation code 1, exponential)."""
        if self.syst is None:
            return 1.0, 0.0
        hi, lo = self.syst
        return (hi ** theta, math.log(hi)) if theta >= 0 else (lo ** -theta, -math.log(lo))

    def _profile_bins(self, c: np.ndarray, a: np.ndarray, n: np.ndarray,
                      gen: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Profile the per-bin nuisance parameters at fixed global ones: lambda = c + a x y with the staterror
        gamma x (Gaussian, width stat_rel) and the generator factor y = 1 + gen_rel theta (theta standard
        normal), either of them possibly absent.

        One kind alone: the stationarity condition is a quadratic (closed form). Both: the quadratic of the
        combined width sqrt(stat_rel^2 + gen_rel^2) gives a start within second order, then Newton steps on
        (x, y) per bin (2x2 Hessians) converge to machine precision. ``gen``: the generator widths relative to
        the current background (they change when the coherent shape moves it). Returns (x y per bin, their
        constraint terms in the NLL, the staterror gamma x alone). Compiled (:func:`_quadratic_gamma`,
        :func:`_profile_two`): the limit scan profiles about 10^6 times."""
        st = self.stat_rel
        if st is None and gen is None:
            return np.ones_like(a), 0.0, np.ones_like(a)
        if gen is None or st is None:
            s2 = (st if gen is None else gen) ** 2
            x = _quadratic_gamma(c, a, n, s2)
            return x, float(np.sum((x - 1.0) ** 2 / (2 * s2))), (x if gen is None else np.ones_like(a))
        return _profile_two(c, a, n, st ** 2, np.maximum(gen, 1e-12) ** 2)

    def _nll_and_grad(self, glob: np.ndarray, mu: float, n: np.ndarray) -> tuple[float, np.ndarray]:
        """NLL (up to a constant) with gammas profiled, and its gradient in the global parameters
        (theta of the normsys, if any, then lumi, if any)."""
        i = 0
        theta = lumi = shape = None
        if self.syst is not None:
            theta, i = float(glob[i]), i + 1
        if self.shape is not None:
            k = len(self.shape)
            shape, i = np.asarray(glob[i:i + k], dtype=float), i + k
        if self.lumi_sigma is not None:
            lumi = float(glob[i])
        kappa, dlnk = self._kappa(theta) if theta is not None else (1.0, 0.0)
        L = lumi if lumi is not None else 1.0
        nominal = self.background if shape is None else self.background + shape @ self.shape
        if np.any(nominal <= 0):  # several shapes together emptied a bin: outside the model, the step backs off
            return math.inf, np.zeros(len(glob))
        a = L * kappa * nominal
        c = L * mu * self.signal
        gen = None if self.gen_rel is None else self.gen_rel * self.background / nominal
        gamma, constraint, stat_gamma = self._profile_bins(c, a, n, gen)
        lam = c + a * gamma
        w = 1.0 - n / lam
        # Poisson deviance form, lambda - n - n ln(lambda / n): the same minimum, but O(1) near it even for
        # yields of 10^6 (keeps the minimiser's tolerances meaningful)
        with np.errstate(divide="ignore", invalid="ignore"):
            nll = float(np.sum(lam - n - np.where(n > 0, n * np.log(lam / n), 0.0)))
        grad = []
        nll += constraint
        if theta is not None:
            nll += 0.5 * theta * theta
            grad.append(float(np.sum(w * a * gamma)) * dlnk + theta)
        if shape is not None:
            nll += 0.5 * float(shape @ shape)
            # the shapes are additive inside the staterror gamma: d lambda_i / d shape_j = L kappa gamma_stat,i
            # shape_j,i
            grad.extend((self.shape @ (w * L * kappa * stat_gamma) + shape).tolist())
        if lumi is not None:
            nll += (lumi - 1.0) ** 2 / (2 * self.lumi_sigma ** 2)
            grad.append(float(np.sum(w * lam)) / L + (lumi - 1.0) / self.lumi_sigma ** 2)
        return nll, np.asarray(grad)

    def conditional_nll(self, mu: float, data: np.ndarray | None = None, start: np.ndarray | None = None
                        ) -> tuple[float, np.ndarray]:
        """Minimum of the NLL at fixed ``mu`` over all nuisance parameters; returns (NLL, global parameters)."""
        n = self.background if data is None else data
        glob0 = []
        bounds = []
        if self.syst is not None:
            glob0.append(0.0)
            bounds.append((-5.0, 5.0))
        if self.shape is not None:
            # every shape alone keeps every bin positive within its bounds
            for sh in self.shape:
                limit = float(np.min(self.background / np.maximum(np.abs(sh), 1e-300)))
                glob0.append(0.0)
                bounds.append((-min(5.0, 0.99 * limit), min(5.0, 0.99 * limit)))
        if self.lumi_sigma is not None:
            glob0.append(1.0)
            bounds.append(self.lumi_bounds)
        if not glob0:
            return self._nll_and_grad(np.zeros(0), mu, n)[0], np.zeros(0)
        x0 = np.asarray(glob0 if start is None else start, dtype=float)
        if len(x0) == 1:  # one global parameter: bounded Brent, robust at the kink of the exponential normsys
            def f1(v):
                return self._nll_and_grad(np.asarray([v]), mu, n)[0]
            res = optimize.minimize_scalar(f1, bounds=bounds[0], method="bounded", options={"xatol": 1e-9})
            if not res.success:
                raise StatisticsError(f"{self.name}: conditional fit at mu = {mu:g} failed: {res.message}")
            return float(res.fun), np.asarray([res.x])
        newton = _bounded_newton(lambda v: self._nll_and_grad(v, mu, n), x0, bounds)
        if newton is not None:
            return newton
        res = optimize.minimize(self._nll_and_grad, x0, args=(mu, n), jac=True, method="L-BFGS-B",
                                bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-8, "maxiter": 500})
        if not res.success:  # line-search trouble near the optimum: polish without derivatives
            res = optimize.minimize(lambda v: self._nll_and_grad(v, mu, n)[0], res.x, method="Powell",
                                    bounds=bounds, options={"xtol": 1e-9, "ftol": 1e-14})
            if not res.success:
                raise StatisticsError(f"{self.name}: conditional fit at mu = {mu:g} failed: {res.message}")
        return float(res.fun), res.x

    @functools.cached_property
    def asimov_minimum(self) -> float:
        """NLL of the background-only Asimov data at its unconditional minimum, the nominal point."""
        nominal = [0.0] * (self.syst is not None) + [0.0] * (0 if self.shape is None else len(self.shape)) + [
            1.0] * (self.lumi_sigma is not None)
        return self._nll_and_grad(np.asarray(nominal), 0.0, self.background)[0]

    def sqrt_qtilde_asimov(self, mu: float, start: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """sqrt(q~_mu) on the background-only Asimov data (whose unconditional fit is the nominal point)."""
        nll, glob = self.conditional_nll(mu, start=start)
        return math.sqrt(max(2.0 * (nll - self.asimov_minimum), 0.0)), glob


def _bounded_newton(fg, x0: np.ndarray, bounds: list[tuple[float, float]], gtol: float = 1e-7,
                    max_iter: int = 40) -> tuple[float, np.ndarray] | None:
    """Minimise a smooth function of a few parameters with Newton steps (Hessian by finite differences of the
    analytic gradient ``fg(x) -> (f, grad)``), backtracking and projection onto ``bounds``. Returns (f, x) once
    the projected gradient is below ``gtol`` or the Newton step below 1e-9, None if it does not get there (the
    caller falls back to L-BFGS-B). A handful of iterations where L-BFGS-B needs tens of evaluations at these tolerances."""
    lo = np.array([b[0] for b in bounds], dtype=float)
    hi = np.array([b[1] for b in bounds], dtype=float)
    x = np.clip(np.asarray(x0, dtype=float), lo, hi)
    f, g = fg(x)
    k = len(x)
    for _ in range(max_iter):
        free = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        if np.max(np.abs(np.where(free, g, 0.0))) < gtol:
            return float(f), x
        h = 1e-6 * np.maximum(1.0, np.abs(x))
        H = np.empty((k, k))
        for i in range(k):
            xp = x.copy()
            xp[i] += h[i]
            H[:, i] = (fg(xp)[1] - g) / h[i]
        H = 0.5 * (H + H.T)
        eig = np.linalg.eigvalsh(H)
        if eig[0] <= 1e-12 * max(abs(eig[-1]), 1.0):
            H = H + (abs(eig[0]) + 1e-6 * max(abs(eig[-1]), 1.0)) * np.eye(k)
        step = np.zeros(k)
        step[free] = np.linalg.solve(H[np.ix_(free, free)], g[free])
        if np.max(np.abs(step)) < 1e-9:  # the remaining gradient is the inner profiling's rounding noise
            return float(f), x
        t = 1.0
        for _ in range(30):
            xn = np.clip(x - t * step, lo, hi)
            fn, gn = fg(xn)
            if fn <= f + 1e-4 * float(g @ (xn - x)) or abs(fn - f) < 1e-13 * max(1.0, abs(f)):
                break
            t *= 0.5
        else:  # no decrease along a tiny step: at the minimum up to the inner profiling's rounding
            return (float(f), x) if np.max(np.abs(step)) < 1e-6 else None
        x, f, g = xn, fn, gn
    return None


def band_targets(level: float = 0.05) -> dict[int, float]:
    """For each band k, the value x_k of sqrt(q~_mu,A) at which the expected CLs equals ``level``:
    Phi(k - x) / Phi(k) = level, so x_k = k - Phi^-1(level Phi(k)). (pyhf's asymptotic calculator evaluates
    the background-only distribution's ``expected_value(n)`` at n = -k; band -2 is the lowest limit.)"""
    return {k: float(k - stats.norm.ppf(level * stats.norm.cdf(k))) for k in BANDS}


def expected_limits(workspace: Mapping[str, Any], level: float = 0.05) -> dict[str, float]:
    """Expected CLs upper limits on ``mu`` at confidence 1 - ``level``: ``{"-2": ..., "-1": ..., "0": median,
    "1": ..., "2": ...}`` (asymptotic, q~_mu, background-only Asimov data), along the exact fast route of this
    module. :class:`StatisticsError` naming the point if the model is unusable or a fit fails."""
    model = ChannelModel.from_workspace(workspace)
    b, s = model.background, model.signal
    if np.any(b <= 0) or s.sum() <= 0:
        raise StatisticsError(f"{model.name}: empty background bin or zero signal; no limit")
    targets = band_targets(level)
    cache: dict[float, tuple[float, np.ndarray]] = {}
    last = [None]

    def h(mu: float) -> float:
        if mu not in cache:
            cache[mu] = model.sqrt_qtilde_asimov(mu, start=last[0])
            last[0] = cache[mu][1]
        return cache[mu][0]

    # sqrt(q~_mu,A) rises almost linearly from 0 at mu = 0: secant steps from the origin converge in a few
    # conditional fits; a bracketing Brent search is the fallback. First guess: the statistics-only Gaussian
    # approximation sqrt(q_A) ~ mu sqrt(sum s^2 / b), then the previous band's secant.
    slope = math.sqrt(float(np.sum(s * s / b)))
    limits = {}
    for n in (0, -1, 1, -2, 2):
        x = targets[n]
        limits[str(n)] = _solve(h, x, x / slope, model.name, n)
        slope = x / limits[str(n)]
    return {str(n): limits[str(n)] for n in BANDS}


def _solve(h, x: float, mu0: float, name: str, band: int, rtol: float = 1e-7) -> float:
    """Root of h(mu) = x for an increasing ``h`` with h(0) = 0, starting from ``mu0``."""
    p_mu, p_h, mu = 0.0, 0.0, mu0
    for _ in range(20):
        hm = h(mu)
        if hm == p_h:
            break
        new = mu + (x - hm) * (mu - p_mu) / (hm - p_h)
        if not (new > 0 and math.isfinite(new)):
            break
        p_mu, p_h, mu = mu, hm, new
        if abs(mu - p_mu) <= rtol * mu:
            return mu

    def g(m: float) -> float:
        return h(m) - x

    lo, hi = mu0 / 2, mu0 * 2
    for _ in range(60):
        if g(lo) < 0:
            break
        lo *= 0.5
    else:
        raise StatisticsError(f"{name}: no lower bracket for the band {band:+d} limit")
    for _ in range(60):
        if g(hi) > 0:
            break
        lo, hi = hi, hi * 2.0
    else:
        raise StatisticsError(f"{name}: the band {band:+d} limit lies beyond mu = {hi:g}; the signal is too small "
                              "for this background model")
    try:
        return float(optimize.brentq(g, lo, hi, xtol=1e-12, rtol=rtol))
    except (ValueError, RuntimeError) as e:
        raise StatisticsError(f"{name}: root finding of the band {band:+d} limit failed: {e}") from None


@dataclasses.dataclass(frozen=True)
class SignalFit:
    """Unconditional fit of the signal strength to a workspace's observations (mu free in sign)."""

    mu_hat: float
    error_down: float  # profile-likelihood interval: 2 (NLL(mu) - NLL(mu_hat)) = 1
    error_up: float
    significance: float  # sign(mu_hat) sqrt(2 (NLL(0) - NLL(mu_hat))), the likelihood-ratio significance
    # the lower end of the allowed range of mu (where the bin with the largest signal-to-background ratio would
    # lose half its expectation) cuts the fit: ``at_bound``, the minimum lies on it (the data want a deficit
    # where the signal is that the model cannot describe; mu_hat is truncated, its true value lower);
    # ``truncated``, the 68 % interval reaches it (error_down is only the distance to the bound)
    at_bound: bool = False
    truncated: bool = False

    @property
    def error(self) -> float:
        """The symmetrised 68 % interval half-width; the upper half-width where the interval is truncated below."""
        return self.error_up if self.truncated else 0.5 * (self.error_down + self.error_up)

    def to_dict(self) -> dict[str, float]:
        return {"mu_hat": self.mu_hat, "error": self.error, "error_down": self.error_down,
                "error_up": self.error_up, "significance": self.significance, "at_bound": self.at_bound,
                "truncated": self.truncated}


def _scale_guess(model: ChannelModel) -> float:
    """The statistics-only Gaussian width of mu, 1 / sqrt(sum s^2 / b): a scale for brackets."""
    return 1.0 / math.sqrt(float(np.sum(model.signal ** 2 / model.background)))


def fit_signal_strength(workspace: Mapping[str, Any], data: Sequence[float] | None = None,
                        interval: bool = True) -> SignalFit:
    """Best-fit signal strength to the observations of ``workspace`` (or ``data``), with its profile-likelihood
    interval and likelihood-ratio significance; negative values allowed as far as every bin keeps half its
    background expectation (a minimum on that bound is flagged ``at_bound``, an interval reaching it
    ``truncated``). The spurious-signal test fits background-only pseudo-data this way: a faithful background
    model gives mu_hat compatible with zero. ``interval=False`` skips the interval (NaN errors)."""
    model = ChannelModel.from_workspace(workspace)
    n = model.observed if data is None else np.asarray(data, dtype=float)
    lo = model.mu_lower_bound
    scale = _scale_guess(model)
    cache: dict[float, float] = {}
    last = [None]  # warm start: the nuisance parameters of the previous fit

    def h(mu: float) -> float:
        if mu not in cache:
            cache[mu], last[0] = model.conditional_nll(mu, n, start=last[0])
        return cache[mu]

    hi = scale
    while h(hi) <= h(0.5 * hi) and hi < 1e6:  # the minimum lies below hi
        hi *= 2.0
    low = max(-scale, lo)  # never below the bound (a bracket beyond it gave mu_hat < lo and a negative error)
    while low > lo and h(low) <= h(0.5 * low):  # ... and above low
        low = max(2.0 * low, lo)
    res = optimize.minimize_scalar(h, bounds=(low, hi), method="bounded",
                                   options={"xatol": 1e-4 * scale})
    mu_hat, h_min = float(res.x), float(res.fun)
    h0 = h(0.0)
    if h0 < h_min:  # the minimiser stopped on a flat stretch: zero is at least as good
        mu_hat, h_min = 0.0, h0
    # bounded Brent stops within a few xatol of an end of the bracket; on the bound the NLL still falls towards it
    at_bound = low == lo and mu_hat - lo <= 1e-3 * scale and h(lo) <= h_min

    def crossing(direction: float) -> tuple[float, bool]:
        """Distance from mu_hat to where 2 (NLL - NLL_min) = 1, and whether the bound cut it there first."""
        step = scale
        for _ in range(60):
            mu = mu_hat + direction * step
            if direction < 0 and mu <= lo:
                if 2.0 * (h(lo) - h_min) < 1.0:  # the interval reaches the bound: truncated there
                    return mu_hat - lo, True
                mu = lo
            if 2.0 * (h(mu) - h_min) > 1.0:
                root = optimize.brentq(lambda m: 2.0 * (h(m) - h_min) - 1.0, mu_hat + direction * step / 2
                                       if step > scale else mu_hat, mu, xtol=1e-4 * scale)
                return abs(root - mu_hat), False
            step *= 2.0
        raise StatisticsError(f"{model.name}: no 68 % interval of mu found")

    z = math.copysign(math.sqrt(max(2.0 * (h0 - h_min), 0.0)), mu_hat)
    if not interval:
        return SignalFit(mu_hat, math.nan, math.nan, z, at_bound, at_bound)
    (down, cut), (up, _) = crossing(-1.0), crossing(1.0)
    return SignalFit(mu_hat, down, up, z, at_bound, at_bound or cut)


def observed_limit(workspace: Mapping[str, Any], level: float = 0.05, fit: SignalFit | None = None) -> float:
    """Observed CLs upper limit on mu from the workspace's observations, asymptotic with q~_mu as in pyhf's
    ``AsymptoticCalculator``: test statistic sqrt(q~) - sqrt(q_A) below sqrt(q_A), (q~ - q_A) / (2 sqrt(q_A))
    above, CLs+b = Phi(-(t + sqrt(q_A))), CLb = Phi(-t). q_A is taken on the background-only Asimov data with
    nominal nuisance parameters (pyhf uses the post-fit ones; the difference is tested to be small). ``fit``: the
    result of :func:`fit_signal_strength` on the same observations, if already known."""
    model = ChannelModel.from_workspace(workspace)
    n = model.observed
    fit = fit_signal_strength(workspace, interval=False) if fit is None else fit
    mu_floor = max(fit.mu_hat, 0.0)
    h_floor, start_obs = model.conditional_nll(mu_floor, n)
    start_asimov = [None]

    def cls(mu: float) -> float:
        nonlocal start_obs
        q = 0.0
        if fit.mu_hat <= mu:
            h_mu, start_obs = model.conditional_nll(mu, n, start=start_obs)
            q = max(2.0 * (h_mu - h_floor), 0.0)
        sqa, start_asimov[0] = model.sqrt_qtilde_asimov(mu, start=start_asimov[0])
        sq = math.sqrt(q)
        if sqa <= 0.0:
            return 1.0
        t = sq - sqa if sq <= sqa else (q - sqa * sqa) / (2.0 * sqa)
        return float(math.exp(stats.norm.logsf(t + sqa) - stats.norm.logsf(t)))  # no 0/0 far in the tail

    lo = mu_floor + 1e-9 * _scale_guess(model)
    hi = mu_floor + 2.0 * _scale_guess(model)
    for _ in range(60):
        if cls(hi) < level:
            break
        lo, hi = hi, hi * 2.0
    else:
        raise StatisticsError(f"{model.name}: no observed limit below mu = {hi:g}")
    return float(optimize.brentq(lambda m: cls(m) - level, lo, hi, xtol=1e-8, rtol=1e-5))


def _pyhf_model(workspace: Mapping[str, Any], poi_upper: float | None = None):
    import pyhf

    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(dict(workspace))
    model = ws.model()
    bounds = model.config.suggested_bounds()
    if poi_upper is not None:
        bounds[model.config.poi_index] = (bounds[model.config.poi_index][0], poi_upper)
    return pyhf, ws, model, bounds


def pyhf_expected_limits(workspace: Mapping[str, Any], level: float = 0.05,
                         bands: tuple[int, ...] | None = None) -> dict[str, float]:
    """pyhf's own expected CLs limits on the background-only Asimov data of ``workspace`` (numpy backend): for
    each band the root of pyhf's expected CLs (``pyhf.infer.hypotest`` with q~_mu, its expected set) at
    ``level``, by Brent's method in a window of [1/2, 2] x the :func:`expected_limits` value (only the window:
    every CLs value is pyhf's; pyhf's ``upper_limit`` with its default POI bounds [0, 10^4] returned NaN on the
    stored quickstart workspaces, and its own bracketing failed on narrow windows). The reference for
    :func:`expected_limits` (seconds per limit, not ms). ``bands`` (e.g. ``(0,)``): only those, each costs about
    ten pyhf fits."""
    fast = expected_limits(workspace, level)
    pyhf, _, model, bounds = _pyhf_model(workspace, poi_upper=10.0 * fast["2"])
    pars = model.config.suggested_init()
    pars[model.config.poi_index] = 0.0
    data = model.expected_data(pars)
    cache: dict[float, np.ndarray] = {}

    def expected_cls(mu: float) -> np.ndarray:
        if mu not in cache:
            _, exp = pyhf.infer.hypotest(mu, data, model, par_bounds=bounds, test_stat="qtilde",
                                         return_expected_set=True)
            cache[mu] = np.asarray(exp, dtype=float).ravel()
        return cache[mu]

    out = {}
    for i, band in enumerate(BANDS):  # pyhf's expected set runs from band -2 (lowest limit) to +2
        if bands is not None and band not in bands:
            continue
        root = optimize.brentq(lambda mu: expected_cls(mu)[i] - level, 0.5 * fast[str(band)], 2.0 * fast[str(band)],
                               xtol=1e-10, rtol=1e-7)
        out[str(band)] = float(root)
    return out


def pyhf_signal_fit(workspace: Mapping[str, Any]) -> tuple[float, float, float]:
    """pyhf's best fit of mu (POI bounds widened to negative values) to the workspace's observations and its
    profile-likelihood interval from pyhf's fixed-POI fits: (mu_hat, error_down, error_up); the reference for
    :func:`fit_signal_strength` (the numpy backend's scipy optimiser gives no Hessian)."""
    model_ = ChannelModel.from_workspace(workspace)
    lo = model_.mu_lower_bound
    scale = _scale_guess(model_)
    pyhf, ws, model, bounds = _pyhf_model(workspace, poi_upper=200.0 * scale + 10.0)
    bounds[model.config.poi_index] = (lo, bounds[model.config.poi_index][1])
    data = ws.data(model)
    pars, twice_min = pyhf.infer.mle.fit(data, model, par_bounds=bounds, return_fitted_val=True)
    mu_hat = float(pars[model.config.poi_index])

    def dq(mu: float) -> float:
        _, v = pyhf.infer.mle.fixed_poi_fit(mu, data, model, par_bounds=bounds, return_fitted_val=True)
        return float(v - twice_min) - 1.0

    errors = []
    for direction in (-1.0, 1.0):
        step = scale
        while mu_hat + direction * step > lo and dq(mu_hat + direction * step) < 0:
            step *= 2.0
        end = mu_hat + direction * step
        if end <= lo:
            if dq(lo) < 0:  # the interval reaches the bound
                errors.append(mu_hat - lo)
                continue
            end = lo
        root = optimize.brentq(dq, mu_hat, end, xtol=1e-6 * scale)
        errors.append(abs(root - mu_hat))
    return mu_hat, errors[0], errors[1]


def pyhf_observed_limit(workspace: Mapping[str, Any], level: float = 0.05) -> float:
    """pyhf's observed CLs upper limit (toms748) for the workspace's observations; the reference for
    :func:`observed_limit`."""
    upper = 1.5 * observed_limit(workspace, level)
    pyhf, ws, model, bounds = _pyhf_model(workspace, poi_upper=10.0 * upper)
    obs, _ = pyhf.infer.intervals.upper_limits.toms748_scan(ws.data(model), model, upper / 1000, upper, level=level,
                                                            par_bounds=bounds, rtol=1e-8, atol=1e-10)
    return float(obs)
