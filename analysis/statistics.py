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

import numpy as np
from scipy import optimize, stats

#: expected-limit bands, in units of the standard deviation of the background-only expectation
BANDS: tuple[int, ...] = (-2, -1, 0, 1, 2)
_GAMMA_MIN = 1e-10  # pyhf's lower bound of staterror gammas


class StatisticsError(ValueError):
    """A statistical model that must not reach a fit, or a fit that failed; the message names the point."""


def build_workspace(signal: Sequence[float], background: Sequence[float],
                    background_stat: Sequence[float] | None = None, background_syst: float = 0.0,
                    lumi_uncertainty: float = 0.0, name: str = "point") -> dict[str, Any]:
    """HistFactory workspace (pyhf JSON) of one channel ``SR`` for the point ``name``.

    Args:
        signal: expected signal yield per bin at mu = 1.
        background: expected background yield per bin; every bin must be positive.
        background_stat: absolute statistical uncertainty of each background bin (sqrt of the sum of squared
            weights); ``None`` for a template of infinite statistics (no staterror modifier).
        background_syst: relative normalisation uncertainty of the background (0.1 = 10 %); 0 for none.
        lumi_uncertainty: relative luminosity uncertainty; 0 for none.

    The observations are the background-only Asimov data (the background template).
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
        "observations": [{"name": "SR", "data": b.tolist()}],
        "measurements": [{"name": name, "config": {"poi": "mu", "parameters": parameters}}],
        "version": "1.0.0",
    }


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
            types = {m["type"] for m in samples["signal"]["modifiers"]}
            if not types <= {"normfactor", "lumi"} or "normfactor" not in types:
                raise StatisticsError(f"{name}: signal modifiers must be the normfactor mu and lumi")
            for mod in samples["background"]["modifiers"]:
                if mod["type"] == "staterror":
                    stat_rel = np.asarray(mod["data"], dtype=float) / bkg
                elif mod["type"] == "normsys":
                    syst = (float(mod["data"]["hi"]), float(mod["data"]["lo"]))
                elif mod["type"] != "lumi":
                    raise StatisticsError(f"{name}: background modifier type {mod['type']!r} is not supported by "
                                          "the fast limit; use pyhf_expected_limits")
            bounds = (0.0, 10.0)
            for par in measurement["config"].get("parameters", []):
                if par["name"] == "lumi":
                    lumi = float(par["sigmas"][0])
                    bounds = tuple(par.get("bounds", [[0.0, 10.0]])[0])
        except (KeyError, IndexError, TypeError) as e:
            raise StatisticsError(f"workspace not in the layout of build_workspace: missing {e}") from None
        return cls(name, sig, bkg, stat_rel, syst, lumi, bounds)

    # -- likelihood ---------------------------------------------------------------------------------------------
    def _kappa(self, theta: float) -> tuple[float, float]:
        """normsys factor and d ln(kappa)/d theta (pyhf interpolation code 1, exponential)."""
        if self.syst is None:
            return 1.0, 0.0
        hi, lo = self.syst
        return (hi ** theta, math.log(hi)) if theta >= 0 else (lo ** -theta, -math.log(lo))

    def _profile_gamma(self, c: np.ndarray, a: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Per-bin gamma minimising lambda - n ln(lambda) + (gamma - 1)^2 / (2 sigma^2), lambda = c + a gamma:
        the largest root of a gamma^2 + (a^2 sigma^2 + c - a) gamma + (a sigma^2 c - n a sigma^2 - c) = 0."""
        if self.stat_rel is None:
            return np.ones_like(a)
        s2 = self.stat_rel ** 2
        A = a
        B = a * a * s2 + c - a
        C = a * s2 * c - n * a * s2 - c
        disc = np.sqrt(np.maximum(B * B - 4 * A * C, 0.0))
        q = -0.5 * (B + np.where(B >= 0, disc, -disc))
        with np.errstate(divide="ignore", invalid="ignore"):
            r1 = q / A
            r2 = np.where(q != 0, C / q, -np.inf)
        return np.maximum(np.maximum(r1, r2), _GAMMA_MIN)

    def _nll_and_grad(self, glob: np.ndarray, mu: float, n: np.ndarray) -> tuple[float, np.ndarray]:
        """NLL (up to a constant) with gammas profiled, and its gradient in the global parameters
        (theta of the normsys, if any, then lumi, if any)."""
        i = 0
        theta = lumi = None
        if self.syst is not None:
            theta, i = float(glob[i]), i + 1
        if self.lumi_sigma is not None:
            lumi = float(glob[i])
        kappa, dlnk = self._kappa(theta) if theta is not None else (1.0, 0.0)
        L = lumi if lumi is not None else 1.0
        a = L * kappa * self.background
        c = L * mu * self.signal
        gamma = self._profile_gamma(c, a, n)
        lam = c + a * gamma
        w = 1.0 - n / lam
        # Poisson deviance form, lambda - n - n ln(lambda / n): the same minimum, but O(1) near it even for
        # yields of 10^6 (keeps the minimiser's tolerances meaningful)
        with np.errstate(divide="ignore", invalid="ignore"):
            nll = float(np.sum(lam - n - np.where(n > 0, n * np.log(lam / n), 0.0)))
        grad = []
        if self.stat_rel is not None:
            nll += float(np.sum((gamma - 1.0) ** 2 / (2 * self.stat_rel ** 2)))
        if theta is not None:
            nll += 0.5 * theta * theta
            grad.append(float(np.sum(w * a * gamma)) * dlnk + theta)
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
        nominal = [0.0] * (self.syst is not None) + [1.0] * (self.lumi_sigma is not None)
        return self._nll_and_grad(np.asarray(nominal), 0.0, self.background)[0]

    def sqrt_qtilde_asimov(self, mu: float, start: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """sqrt(q~_mu) on the background-only Asimov data (whose unconditional fit is the nominal point)."""
        nll, glob = self.conditional_nll(mu, start=start)
        return math.sqrt(max(2.0 * (nll - self.asimov_minimum), 0.0)), glob


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


def pyhf_expected_limits(workspace: Mapping[str, Any], level: float = 0.05) -> dict[str, float]:
    """pyhf's own ``upper_limits.upper_limit`` (numpy backend, toms748 root finding) on the background-only
    Asimov data of ``workspace``; the reference for :func:`expected_limits` (seconds per limit, not ms)."""
    import pyhf

    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(dict(workspace))
    model = ws.model()
    pars = model.config.suggested_init()
    pars[model.config.poi_index] = 0.0
    data = model.expected_data(pars)
    _, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=None, level=level)
    return {str(n): float(v) for n, v in zip(BANDS, exp)}
