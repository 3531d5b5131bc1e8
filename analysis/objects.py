"""The reconstructed objects of an event as inputs of an object-level classifier (issue 17;
:mod:`models.objectnet`): the lepton, the MET and up to 10 jets from the skim's ``Objects`` tree, instead of the
28 engineered features.

Per object (:func:`analysis.neutrino.regression_context`, shared with nu-Flows): ln pT, eta, cos and sin of the
azimuth relative to the lepton, ln(1 + mass), b-tag score, soft-lepton flag, object type; the four-momentum
(E, px, py, pz; MET massless at eta 0) for the pair features; per event: the jet multiplicity and ln MET.
Arrays are numpy; momenta in GeV.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .neutrino import OBJECT_FEATURES, _p4, jet_p4, lepton_p4, regression_context

GROUPS = ("lepton", "MET", "jets 1-4", "jets 5+", "b tags")
"""The object groups of :func:`occlusions`."""


def object_p4(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(n, 12, 4)`` float32 four-momenta of the lepton, the MET and the 10 jet slots (padded slots zero)."""
    met = _p4(objects["obj_met_pt"], np.zeros_like(objects["obj_met_pt"]), objects["obj_met_phi"], 0.0)
    return np.concatenate([lepton_p4(objects)[:, None], met[:, None], jet_p4(objects)], axis=1).astype(np.float32)


def classifier_inputs(objects: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(features (n, 12, f), p4 (n, 12, 4), mask (n, 12), event (n, 2))`` of the events, the input of
    :class:`models.objectnet.ObjectTransformer`."""
    feats, mask, event = regression_context(objects)
    return feats, object_p4(objects), mask, event


def occlusions() -> dict[str, Callable[[tuple], tuple]]:
    """Group name -> a function that hides that group from :func:`classifier_inputs`'s arrays: the lepton, MET
    and jet groups masked out (as if never reconstructed), the b tags set to zero. The drop of ROC AUC when a
    group is hidden is the object classifier's importance of that group (permutation of single features would
    leave the four-momenta of the pair features unchanged)."""

    def masked(slots: slice) -> Callable[[tuple], tuple]:
        def hide(inputs: tuple) -> tuple:
            feats, p4, mask, event = inputs
            mask = mask.copy()
            mask[:, slots] = False
            if not mask.any(axis=1).all():  # every event keeps one object: attention needs a key
                mask[:, 0] = mask[:, 0] | ~mask.any(axis=1)
            return feats, p4, mask, event
        return hide

    def no_btag(inputs: tuple) -> tuple:
        feats = inputs[0].copy()
        feats[..., OBJECT_FEATURES.index("btag")] = 0.0
        return (feats, *inputs[1:])

    return {"lepton": masked(slice(0, 1)), "MET": masked(slice(1, 2)), "jets 1-4": masked(slice(2, 6)),
            "jets 5+": masked(slice(6, None)), "b tags": no_btag}
