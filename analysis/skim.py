"""The skim: object and event selection on NanoAOD with coffea, then the 28 HIGGS features.

Object selection (where a branch is absent, as in minimal private NanoAOD, that criterion is skipped):

- electrons: pT > ``electron_min_pt``, |eta| < ``electron_max_eta``, ``Electron_cutBased`` >=
  ``electron_min_cut_based``, ``Electron_pfRelIso03_all`` < ``electron_max_rel_iso``;
- muons: pT > ``muon_min_pt``, |eta| < ``muon_max_eta``, ``Muon_tightId``, ``Muon_pfRelIso04_all`` <
  ``muon_max_rel_iso``;
- jets: pT > ``jet_min_pt``, |eta| < ``jet_max_eta``, ``Jet_jetId`` >= ``jet_min_id``, and
  Delta R > ``lepton_jet_min_dr`` to every selected lepton (lepton-jet cleaning); b-tagged if the discriminant
  exceeds the chosen working point.

Event selection, each step a row of the cutflow (events and sum of weights): all events; exactly one selected
lepton; at least ``min_jets`` jets; at least ``min_btags`` b-tagged jets; finite features (rows with NaN or
infinite values are counted and dropped, never passed on).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import awkward as ak
import numpy as np
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from .config import AnalysisConfig
from .features import FEATURES, compute_features
from .io import InputError
from .readers import check_nanoaod, read_higgs_csv, sum_gen_weights

NanoAODSchema.warn_missing_crossrefs = False

CUTFLOW_STEPS = ["all", "one_lepton", "min_jets", "min_btags", "finite_features"]


def _has(collection, field: str) -> bool:
    return field in collection.fields


class SkimProcessor(processor.ProcessorABC):
    """coffea processor: selection, features and cutflow for one sample.

    ``norm`` multiplies ``genWeight`` into the event weight (cross-section x luminosity / sum of weights).
    """

    def __init__(self, cfg: AnalysisConfig, label: int, norm: float):
        self.cfg = cfg
        self.label = label
        self.norm = norm
        wps = cfg.detector.btag.working_points
        self.btag_wp = wps[cfg.skim.btag_working_point]
        self.feature_wps = cfg.btag_feature_thresholds

    def process(self, events):
        s = self.cfg.skim
        n_all = len(events)
        gen_w = events.genWeight if "genWeight" in events.fields else ak.ones_like(events.event, dtype=np.float64)
        weight = np.asarray(gen_w, dtype=np.float64) * self.norm

        ele = events.Electron
        ele_ok = (ele.pt > s.electron_min_pt) & (abs(ele.eta) < s.electron_max_eta)
        if _has(ele, "cutBased"):
            ele_ok = ele_ok & (ele.cutBased >= s.electron_min_cut_based)
        if _has(ele, "pfRelIso03_all"):
            ele_ok = ele_ok & (ele.pfRelIso03_all < s.electron_max_rel_iso)
        mu = events.Muon
        mu_ok = (mu.pt > s.muon_min_pt) & (abs(mu.eta) < s.muon_max_eta)
        if _has(mu, "tightId"):
            mu_ok = mu_ok & mu.tightId
        if _has(mu, "pfRelIso04_all"):
            mu_ok = mu_ok & (mu.pfRelIso04_all < s.muon_max_rel_iso)
        fields = ["pt", "eta", "phi", "mass"]
        leptons = ak.concatenate([ak.zip({f: ele[ele_ok][f] for f in fields}, with_name="PtEtaPhiMLorentzVector",
                                         behavior=events.behavior),
                                  ak.zip({f: mu[mu_ok][f] for f in fields}, with_name="PtEtaPhiMLorentzVector",
                                         behavior=events.behavior)], axis=1)

        jets = events.Jet
        jet_ok = (jets.pt > s.jet_min_pt) & (abs(jets.eta) < s.jet_max_eta)
        if _has(jets, "jetId"):
            jet_ok = jet_ok & (jets.jetId >= s.jet_min_id)
        jets = jets[jet_ok]
        if s.lepton_jet_min_dr > 0:
            dr = jets.metric_table(leptons)  # (event, jet, lepton)
            jets = jets[ak.all(dr > s.lepton_jet_min_dr, axis=-1)]
        btag = jets[s.btag_discriminant]

        one_lep = ak.num(leptons) == s.n_leptons
        enough_jets = one_lep & (ak.num(jets) >= s.min_jets)
        enough_b = enough_jets & (ak.sum(btag > self.btag_wp, axis=1) >= s.min_btags)
        sel = np.asarray(enough_b)

        lep = leptons[sel][:, 0]
        met = events[s.met_collection][sel]
        j = jets[sel][:, :4]
        jb = btag[sel][:, :4]
        feats = compute_features(
            {"pt": np.asarray(lep.pt), "eta": np.asarray(lep.eta), "phi": np.asarray(lep.phi),
             "mass": np.asarray(lep.mass)},
            {"pt": np.asarray(met.pt), "phi": np.asarray(met.phi)},
            {k: ak.to_numpy(j[k]).reshape(-1, 4) for k in ("pt", "eta", "phi", "mass")}
            | {"btag": ak.to_numpy(jb).reshape(-1, 4)},
            self.feature_wps,
        )
        finite = np.all([np.isfinite(feats[k]) for k in FEATURES], axis=0) if len(j) else np.zeros(0, bool)

        w_sel = weight[sel]
        cutflow = {}
        for step, mask_w in zip(CUTFLOW_STEPS, [
            weight, weight[np.asarray(one_lep)], weight[np.asarray(enough_jets)], w_sel, w_sel[finite],
        ]):
            cutflow[step] = {"events": int(len(mask_w)), "sumw": float(np.sum(mask_w))}
        cutflow["all"]["events"] = n_all

        columns = {k: v[finite] for k, v in feats.items()}
        columns["label"] = np.full(int(finite.sum()), self.label, dtype=np.int32)
        columns["generated"] = np.zeros(int(finite.sum()), dtype=np.int32)
        columns["weight"] = w_sel[finite]
        columns["event"] = np.asarray(events.event[sel], dtype=np.int64)[finite]
        return {"cutflow": cutflow, "columns": {k: processor.column_accumulator(v) for k, v in columns.items()}}

    def postprocess(self, accumulator):
        return accumulator


def skim_nanoaod(
    path: str | os.PathLike,
    cfg: AnalysisConfig,
    label: int,
    norm: float,
    chunksize: int = 200_000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Skim one NanoAOD file with coffea, chunk by chunk. Returns ``(columns, cutflow)``.

    Raises :class:`~analysis.io.InputError` for a missing, non-ROOT or truncated file or a missing branch.
    """
    s = cfg.skim
    n = check_nanoaod(path, s.btag_discriminant, s.met_collection)
    proc = SkimProcessor(cfg, label, norm)
    if n == 0:
        raise InputError(f"{path}: the Events tree holds no events")
    runner = processor.Runner(executor=processor.IterativeExecutor(status=False, retries=0),
                              pre_executor=processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                              chunksize=chunksize, savemetrics=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            out = runner({"sample": {"files": {str(Path(path).resolve()): "Events"}}}, proc, treename="Events")
        except Exception as e:  # coffea wraps the cause; report it with the file name
            cause = e.__cause__ or e
            raise InputError(f"{path}: skim failed ({type(cause).__name__}: {cause})") from e
    cutflow = out["cutflow"]
    columns = {k: np.asarray(v.value) for k, v in out["columns"].items()}
    if progress is not None:
        progress(n, n)
    return columns, cutflow


def sample_normalisation(cfg: AnalysisConfig, sample_name: str, files: list[str | os.PathLike]) -> float:
    """cross-section x luminosity / (sum of generator weights over all files of the sample)."""
    sumw = sum_gen_weights(files)
    if sumw <= 0:
        raise InputError(f"sample {sample_name!r}: sum of generator weights is {sumw}, cannot normalise")
    return cfg.sample(sample_name).cross_section_pb * cfg.luminosity_pb / sumw


def skim_higgs_csv(path: str | os.PathLike, label: int, start: int, stop: int) -> tuple[dict[str, np.ndarray], dict]:
    """Rows ``[start, stop)`` of a UCI HIGGS CSV, keeping events of ``label``, in the skim output format.

    The CSV is already selected and its features are computed, so the cutflow records only the rows read, the
    rows of this label and the rows with finite values (non-finite rows are dropped and counted). Weights are 1:
    the data set carries no cross-section.
    """
    labels, feats, rows, dropped = read_higgs_csv(path, start, stop)
    keep = labels == label
    n_read = len(labels) + dropped
    columns = {name: feats[keep, i] for i, name in enumerate(FEATURES)}
    columns["label"] = labels[keep]
    columns["generated"] = np.zeros(int(keep.sum()), dtype=np.int32)
    columns["weight"] = np.ones(int(keep.sum()))
    columns["event"] = rows[keep].astype(np.int64)
    cutflow = {
        "all": {"events": n_read, "sumw": float(n_read)},
        "label": {"events": int((labels == label).sum()), "sumw": float((labels == label).sum())},
        "finite_features": {"events": int(keep.sum()), "sumw": float(keep.sum())},
        "dropped_non_finite": {"events": dropped, "sumw": float(dropped)},
    }
    return columns, cutflow


def merge_cutflows(cutflows: list[dict]) -> dict:
    """Sum cutflows of several files of one sample (same steps in the same order)."""
    if not cutflows:
        return {}
    return {k: {"events": sum(c[k]["events"] for c in cutflows), "sumw": sum(c[k]["sumw"] for c in cutflows)}
            for k in cutflows[0]}
