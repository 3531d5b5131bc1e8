"""Vectorised relativistic kinematics for the event generator.

Four-momenta are numpy arrays of shape ``(..., 4)`` holding ``(E, px, py, pz)`` in GeV. The generator boosts
every decay product several times per event, so the boost is a few fused numpy expressions rather than a call
through the ``vector`` package (about six times faster at 10^5 events); ``tests/analysis/test_kinematics.py``
checks it against ``vector``'s ``boost_p4``.
"""

from __future__ import annotations

import numpy as np

E, PX, PY, PZ = 0, 1, 2, 3


def from_pt_eta_phi_m(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, m: np.ndarray | float) -> np.ndarray:
    """Four-momenta from transverse momentum, pseudorapidity, azimuth and mass."""
    pt = np.asarray(pt, dtype=np.float64)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px * px + py * py + pz * pz + np.square(m))
    return np.stack([e, px, py, pz], axis=-1)


def from_pt_y_phi_m(pt: np.ndarray, y: np.ndarray, phi: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Four-momenta from transverse momentum, rapidity, azimuth and mass."""
    mt = np.sqrt(np.square(m) + np.square(pt))
    return np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], axis=-1)


def pt(p: np.ndarray) -> np.ndarray:
    return np.sqrt(p[..., PX] ** 2 + p[..., PY] ** 2)


def phi(p: np.ndarray) -> np.ndarray:
    return np.arctan2(p[..., PY], p[..., PX])


def eta(p: np.ndarray) -> np.ndarray:
    """Pseudorapidity; finite for any non-zero transverse momentum."""
    return np.arcsinh(p[..., PZ] / np.maximum(pt(p), 1e-12))


def mass(p: np.ndarray) -> np.ndarray:
    """Invariant mass; tiny negative m^2 from rounding are clipped to zero."""
    m2 = p[..., E] ** 2 - p[..., PX] ** 2 - p[..., PY] ** 2 - p[..., PZ] ** 2
    return np.sqrt(np.maximum(m2, 0.0))


def delta_phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Azimuthal difference of angles in [-pi, pi], wrapped into [-pi, pi] (one conditional shift suffices)."""
    d = a - b
    return np.where(d > np.pi, d - 2 * np.pi, np.where(d < -np.pi, d + 2 * np.pi, d))


def wrap_phi(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Lorentz-boost four-momenta ``p`` by velocity ``beta`` (shape ``(..., 3)``).

    Boosting a particle at rest by ``beta`` gives it velocity ``beta``; ``boost(p, -beta)`` is the inverse.
    """
    b2 = np.sum(beta * beta, axis=-1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p[..., 1:], axis=-1)
    coef = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    out = np.empty(np.broadcast_shapes(p.shape, beta.shape[:-1] + (4,)))
    out[..., 0] = gamma * (p[..., 0] + bp)
    out[..., 1:] = p[..., 1:] + (coef * bp + gamma * p[..., 0])[..., None] * beta
    return out


def velocity(p: np.ndarray) -> np.ndarray:
    """Velocity ``p/E`` of four-momenta, shape ``(..., 3)``."""
    return p[..., 1:] / p[..., :1]


def two_body_momentum(m: np.ndarray, m1: np.ndarray | float, m2: np.ndarray | float) -> np.ndarray:
    """Momentum of either daughter in the rest frame of a parent of mass ``m`` decaying to ``m1`` and ``m2``."""
    s = np.square(m)
    lam = (s - np.square(m1 + m2)) * (s - np.square(m1 - m2))
    return np.sqrt(np.maximum(lam, 0.0)) / (2.0 * m)


def random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Isotropic unit vectors, shape ``(n, 3)``."""
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    ph = rng.uniform(-np.pi, np.pi, n)
    return np.stack([sin_t * np.cos(ph), sin_t * np.sin(ph), cos_t], axis=-1)


def unit_vectors_around(rng: np.random.Generator, axis: np.ndarray, cos_theta: np.ndarray) -> np.ndarray:
    """Unit vectors at polar angle ``arccos(cos_theta)`` to ``axis`` (unit, shape ``(n, 3)``), uniform in azimuth."""
    n = axis.shape[0]
    # a vector not parallel to the axis, then an orthonormal basis (axis, e1, e2)
    helper = np.where(np.abs(axis[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(axis, e1)
    ph = rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(np.clip(1.0 - cos_theta * cos_theta, 0.0, None))
    return (cos_theta[:, None] * axis + (sin_t * np.cos(ph))[:, None] * e1 + (sin_t * np.sin(ph))[:, None] * e2)


def decay(
    rng: np.random.Generator,
    parent: np.ndarray,
    m1: np.ndarray | float,
    m2: np.ndarray | float,
    cos_theta: np.ndarray | None = None,
    grandparent: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-body decay of ``parent`` (lab four-momenta) into daughters of masses ``m1`` and ``m2``.

    Without ``cos_theta`` the decay is isotropic in the parent's rest frame. With it, ``cos_theta`` is the cosine
    of the angle between daughter 1 and the helicity axis: the parent's flight direction in the rest frame of
    ``grandparent`` (computed as minus the grandparent's direction in the parent's rest frame). Returns both
    daughters in the lab frame.
    """
    n = parent.shape[0]
    m = mass(parent)
    q = two_body_momentum(m, m1, m2)
    beta = velocity(parent)
    if cos_theta is None:
        direction = random_unit_vectors(rng, n)
    else:
        g = boost(grandparent, -beta)[:, 1:]
        axis = -g / np.linalg.norm(g, axis=-1, keepdims=True)
        direction = unit_vectors_around(rng, axis, cos_theta)
    p3 = q[:, None] * direction
    e1 = np.sqrt(q * q + np.square(m1))
    e2 = np.sqrt(q * q + np.square(m2))
    d1 = np.concatenate([e1[:, None], p3], axis=-1)
    d2 = np.concatenate([e2[:, None], -p3], axis=-1)
    return boost(d1, beta), boost(d2, beta)


def breit_wigner(
    rng: np.random.Generator, m0: float, width: float, n: int, low: float, high: float
) -> np.ndarray:
    """Masses from a relativistic Breit-Wigner in m^2, truncated to [low, high], by inverse transform."""
    a = np.arctan((low * low - m0 * m0) / (m0 * width))
    b = np.arctan((high * high - m0 * m0) / (m0 * width))
    m2 = m0 * m0 + m0 * width * np.tan(rng.uniform(a, b, n))
    return np.sqrt(m2)


def sample_w_helicity_cos(rng: np.random.Generator, n: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """cos(theta*) of the charged lepton (or down-type fermion) in W decays for helicity fractions (F0, FL, FR).

    dN/dcos = F0 3/4 (1 - c^2) + FL 3/8 (1 - c)^2 + FR 3/8 (1 + c)^2. The longitudinal part is the median of
    three uniforms on [-1, 1]; the transverse parts follow by inverting their cubic CDFs.
    """
    f0, fl, _ = fractions
    u = rng.uniform(size=n)
    which = np.where(u < f0, 0, np.where(u < f0 + fl, 1, 2))
    longitudinal = np.median(rng.uniform(-1.0, 1.0, (n, 3)), axis=1)
    cube = np.cbrt(rng.uniform(size=n))
    return np.select([which == 0, which == 1], [longitudinal, 1.0 - 2.0 * cube], 2.0 * cube - 1.0)
