"""Feature tables: what every modelled or derived quantity is, for preprocessing, plots and metrics.

A :class:`Feature` names a quantity, its unit and axis label, its *kind* (which fixes the invertible transform
of :class:`models.preprocessing.Preprocessor`), and, for a derived quantity, the function of other features
that computes it. A :class:`FeatureTable` collects the features of one application: the HIGGS features of the
background generator (:func:`analysis.features.feature_table`), the neutrino momentum of a regression, and so on.
Applications bring their own table; the models and the training loop need nothing else. No torch import.

Kinds:

- ``positive``: strictly positive (pT, masses): Gaussian-rank transform within the training range;
- ``real``: any real value (a momentum component, a discriminant filled with negative defaults): the same
  Gaussian-rank transform without the positivity requirement;
- ``standard``: any real value, only standardised (affine: log-densities shift by a constant);
- ``bounded``: inside a fixed interval (pseudorapidity in the acceptance): probit of the position in the
  training range;
- ``angle``: an azimuth, modelled relative to the table's reference angle;
- ``discrete``: a few levels (b-tag working points passed): dequantised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

KINDS = ("positive", "real", "standard", "bounded", "angle", "discrete")


@dataclass(frozen=True)
class Feature:
    """One quantity. ``inputs`` and ``derive`` make it derived: ``derive(*columns[inputs])`` computes it."""

    name: str
    kind: str
    unit: str = ""
    label: str = ""
    inputs: tuple[str, ...] = ()
    derive: Callable | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r}: unknown kind {self.kind!r}; kinds are {', '.join(KINDS)}")
        if (self.derive is None) != (not self.inputs):
            raise ValueError(f"feature {self.name!r}: a derived feature needs both inputs and a function")

    @property
    def axis_label(self) -> str:
        """``label [unit]`` (the name where no label is given)."""
        text = self.label or self.name
        return f"{text} [{self.unit}]" if self.unit else text


class FeatureTable:
    """An ordered set of :class:`Feature` by name, with the reference azimuth (if any) that ``angle`` features
    are taken relative to."""

    def __init__(self, features: Iterable[Feature], reference_angle: str | None = None):
        self._features = {f.name: f for f in features}
        if reference_angle is not None and self._features.get(reference_angle, Feature("", "real")).kind != "angle":
            raise ValueError(f"reference angle {reference_angle!r} is not an angle feature of the table")
        self.reference_angle = reference_angle

    def __getitem__(self, name: str) -> Feature:
        try:
            return self._features[name]
        except KeyError:
            raise KeyError(f"feature {name!r} is not in the table ({', '.join(self._features)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._features

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._features.values())

    @property
    def names(self) -> list[str]:
        return list(self._features)

    def kind(self, name: str) -> str:
        return self[name].kind

    def derivations(self) -> dict[str, tuple[tuple[str, ...], Callable]]:
        """Derived feature name -> ``(inputs, function)``."""
        return {f.name: (f.inputs, f.derive) for f in self if f.derive is not None}
