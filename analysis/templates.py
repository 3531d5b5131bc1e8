"""Classifier-score templates for the fit: binning with a minimum count per background bin, and weighted
histograms normalised to cross-section times luminosity.

A background bin with few (or no) events of the sample the template comes from has an unreliable expected
yield; an empty one would make the fitted background vanish there and give a falsely strong limit. So the binning
is fixed once, from every background sample that will fill a template (the simulated one and the smallest
generated one of the scan): starting from ``n_bins`` equal bins above the score cut, adjacent bins are merged
from the high-score end until each holds at least ``min_count`` raw events of every one of these samples.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


class TemplateError(ValueError):
    """No valid binning or template can be made."""


def merged_edges(samples: Sequence[np.ndarray], cut: float, n_bins: int, min_count: int,
                 upper: float = 1.0) -> np.ndarray:
    """Bin edges on [``cut``, ``upper``]: ``n_bins`` equal bins, merged from the high-score end until every bin
    holds at least ``min_count`` events of each of ``samples`` (arrays of scores, unweighted counts).

    The walk goes from the highest bin down; a group closes as soon as all samples reach ``min_count``. A group
    left incomplete at the low end joins the group above it. :class:`TemplateError` if even one bin over the
    whole range does not reach ``min_count`` for some sample.
    """
    if not 0 < n_bins or min_count < 1 or not cut < upper:
        raise TemplateError(f"need n_bins > 0, min_count >= 1 and cut < upper (got {n_bins}, {min_count}, "
                            f"{cut}, {upper})")
    fine = np.linspace(cut, upper, n_bins + 1)
    counts = np.stack([np.histogram(np.clip(np.asarray(x), None, upper), bins=fine)[0] for x in samples])
    totals = counts.sum(axis=1)
    if np.any(totals < min_count):
        worst = int(np.argmin(totals))
        raise TemplateError(f"background sample {worst} has only {int(totals[worst])} events above the score cut "
                            f"{cut}; at least {min_count} are needed for one bin (lower the cut or min_count, or "
                            "generate more events)")
    edges = [upper]
    acc = np.zeros(len(samples), dtype=np.int64)
    for i in range(n_bins - 1, -1, -1):
        acc += counts[:, i]
        if np.all(acc >= min_count):
            edges.append(fine[i])
            acc[:] = 0
    if edges[-1] != cut:  # incomplete group at the low end: joins the one above
        edges[-1] = cut
    return np.asarray(edges[::-1])


@dataclasses.dataclass(frozen=True)
class Template:
    """Weighted histogram of scores: yields per bin and the statistical uncertainty sqrt(sum w^2)."""

    edges: np.ndarray
    yields: np.ndarray
    stat: np.ndarray
    counts: np.ndarray  # raw events per bin

    @property
    def total(self) -> float:
        return float(self.yields.sum())

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "yields": self.yields.tolist(), "stat": self.stat.tolist(),
                "counts": self.counts.tolist()}


def make_template(scores: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> Template:
    """Histogram ``scores`` with ``weights`` (already normalised to cross-section times luminosity) in
    ``edges``; scores at the upper edge count in the last bin, scores below the first edge are dropped."""
    scores = np.asarray(scores, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if scores.shape != weights.shape:
        raise TemplateError(f"{len(scores)} scores but {len(weights)} weights")
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(weights))):
        raise TemplateError("non-finite scores or weights")
    x = np.clip(scores, None, edges[-1])
    yields = np.histogram(x, bins=edges, weights=weights)[0]
    sumw2 = np.histogram(x, bins=edges, weights=weights * weights)[0]
    counts = np.histogram(x, bins=edges)[0]
    return Template(np.asarray(edges, dtype=float), yields, np.sqrt(sumw2), counts)


def scaled_weights(n_events: int, expected_yield: float) -> np.ndarray:
    """Equal weights of ``n_events`` generated events that together carry ``expected_yield``: a generated sample
    of any size represents the full selected background (the flow learns the shape, the simulation the norm)."""
    if n_events <= 0:
        raise TemplateError("a generated sample needs at least one event")
    return np.full(n_events, expected_yield / n_events)
