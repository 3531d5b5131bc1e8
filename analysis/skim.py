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

Input checks while skimming: a non-finite value in a kinematic branch the skim reads (jet and lepton pT, eta,
phi, mass; the MET; ``genWeight``) refuses the file with an :class:`~analysis.io.InputError` (real NanoAOD never
holds one: it means corruption, and the objects would silently drop out of the selection). Implausible but
readable content gives a warning, logged on the ``hepflows`` logger and returned to the caller: b-tag discriminant
outside [0, 1] for more than 1 % of the jets in the kinematic acceptance, or an identification branch
(``Muon_tightId``, ``Electron_cutBased``, ``Jet_jetId``) that no object in the acceptance passes.

``Events`` may be a TTree or an RNTuple with the flat NanoAOD fields: coffea reads both, through the same code.
"""

from __future__ import annotations

import logging
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
from . import jagged
from .io import InputError
from .readers import check_nanoaod, read_higgs_csv, sum_gen_weights
from .unfolding import truth_columns, ttbar_indices

NanoAODSchema.warn_missing_crossrefs = False

CUTFLOW_STEPS = ["all", "one_lepton", "min_jets", "min_btags", "finite_features"]

log = logging.getLogger("hepflows")

BTAG_OUTSIDE_WARN_FRACTION = 0.01  # warn when more jets than this have a discriminant outside [0, 1]
ID_WARN_MIN_OBJECTS = 10  # warn that no object passes an identification only with at least this many candidates

_KINEMATICS = {"Jet": ("pt", "eta", "phi", "mass"), "Electron": ("pt", "eta", "phi", "mass"),
               "Muon": ("pt", "eta", "phi", "mass")}
_OBJECT_WORD = {"Jet": "jets", "Electron": "electrons", "Muon": "muons"}

MAX_OBJECT_JETS = 10
"""Jets kept per event in the object-level columns (the leading ones after the selection; zero-padded)."""
_SOFT_LEPTON = ("nMuons", "nElectrons", "muEF", "chEmEF")  # NanoAOD's soft-lepton content of a jet
_NEUTRINOS = (12, 14, 16)


def object_columns(events, slots: np.ndarray, n_jets: np.ndarray, jet: dict[str, np.ndarray],
                   lep: dict[str, np.ndarray], sel: np.ndarray, met) -> dict[str, np.ndarray]:
    """Object-level inputs and truth targets of the selected events, beside the 28 features (issue 15: the
    conditional flows' inputs): the lepton (pt, eta, phi, mass, pdgId), the MET, the number of selected jets and
    the leading :data:`MAX_OBJECT_JETS` of them (pt, eta, phi, mass, b-tag score and, where NanoAOD has them,
    the soft-lepton content ``nMuons``, ``nElectrons``, ``muEF``, ``chEmEF``), zero-padded ``(n, 10)`` arrays
    named ``obj_*``. Where the truth record exists (simulation: ``GenPart``): per jet its hadron flavour and the
    matched parton (``Jet_genPartIdx``: pdgId and pt, eta, phi, mass; for a b jet the b quark's full momentum,
    neutrinos of its decay included: the b-jet regression's target), and the neutrino of the leptonic W
    (``truth_nu_*``; zero where there is none).

    ``slots``: the positions of each selected event's leading selected jets in ``events.Jet``'s flat branches
    (:func:`analysis.jagged.slot_index`, ``(n, MAX_OBJECT_JETS)``) and ``n_jets`` their numbers; ``jet``: the
    flat pt, eta, phi, mass and b-tag score already read; ``lep``: the selected events' lepton, field -> array.
    Jets and truth records are padded by index (:mod:`analysis.jagged`), without copying the collections."""
    rows = np.flatnonzero(sel)
    out = {f"obj_lepton_{k}": np.asarray(lep[k], np.float32) for k in ("pt", "eta", "phi", "mass")}
    out["obj_lepton_pdgId"] = np.asarray(lep["pdgId"], np.int32)
    out["obj_met_pt"], out["obj_met_phi"] = (np.asarray(met[k], np.float32) for k in ("pt", "phi"))
    jets = events.Jet
    out["obj_n_jets"] = n_jets.astype(np.int32)
    for k in ("pt", "eta", "phi", "mass", "btag"):
        out[f"obj_jet_{k}"] = jagged.gather(jet[k], slots)
    for k in _SOFT_LEPTON:
        if _has(jets, k):
            out[f"obj_jet_{k}"] = jagged.gather(jagged.flat(jets[k]), slots,
                                                dtype=np.int32 if k.startswith("n") else np.float32)
    if "GenPart" in events.fields and _has(jets, "genPartIdx"):
        # the truth record of the selected events as padded (n, G) positions into GenPart's flat branches
        gen = events.GenPart
        n_gen_all = jagged.counts(gen.pdgId)
        n_gen = n_gen_all[rows]
        width = max(int(np.max(n_gen, initial=0)), 1)
        record, _ = jagged.slot_index(n_gen_all, rows, width)
        pdg = jagged.gather(jagged.flat(gen.pdgId), record, dtype=np.int64, fill=0)
        mother = jagged.gather(jagged.flat(gen.genPartIdxMother), record, dtype=np.int64, fill=-1)
        kinematics = {k: jagged.flat(gen[k]) for k in ("pt", "eta", "phi", "mass")}
        r = np.arange(len(rows))[:, None]
        idx = jagged.gather(jagged.flat(jets.genPartIdx), slots, dtype=np.int64, fill=-1)
        for name, index in (("Jet_genPartIdx", idx), ("GenPart_genPartIdxMother", mother)):
            if np.any(index >= n_gen[:, None]):
                raise ValueError(f"{name} points beyond the event's GenPart collection in "
                                 f"{int(np.any(index >= n_gen[:, None], axis=1).sum()):,} selected events")
        matched = jagged.gather(record.ravel(), np.where(idx >= 0, r * width + idx, -1), dtype=np.int64, fill=-1)
        for k in ("pt", "eta", "phi", "mass"):
            out[f"truth_jet_parton_{k}"] = jagged.gather(kinematics[k], matched)
        out["truth_jet_parton_pdgId"] = jagged.gather(jagged.flat(gen.pdgId), matched, dtype=np.int32)
        if _has(jets, "hadronFlavour"):
            out["truth_jet_hadronFlavour"] = jagged.gather(jagged.flat(jets.hadronFlavour), slots, dtype=np.int32)
        mother_id = np.where(mother >= 0, pdg[r, np.where(mother >= 0, mother, 0)], 0)
        is_nu = np.isin(np.abs(pdg), _NEUTRINOS) & (np.abs(mother_id) == 24)
        first, has_nu = np.argmax(is_nu, axis=1), is_nu.any(axis=1)
        nu = np.where(has_nu, record[r[:, 0], first], -1)
        for k in ("pt", "eta", "phi"):
            out[f"truth_nu_{k}"] = jagged.gather(kinematics[k], nu)
        # the hard process of single-lepton ttbar (the unfolding's parton level; zero where there is none)
        roles, ok = ttbar_indices(pdg, mother)
        at = {role: record[r[:, 0], i] for role, i in roles.items()}
        out.update(truth_columns({role: [jagged.gather(kinematics[k], i, dtype=np.float64)
                                         for k in ("pt", "eta", "phi", "mass")] for role, i in at.items()}, ok))
    return out


def _has(collection, field: str) -> bool:
    return field in collection.fields


def _count_nonfinite(values) -> dict[str, int]:
    """Non-finite entries of a flat or jagged array: ``objects`` (entries), ``events`` (rows with one), ``total``
    (entries in all)."""
    if values.ndim > 1:
        counts = ak.to_numpy(ak.num(values, axis=1))
        bad = ~np.isfinite(ak.to_numpy(ak.flatten(values, axis=1)))
        rows = np.repeat(np.arange(len(counts)), counts)[bad]
        return {"objects": int(bad.sum()), "events": int(np.unique(rows).size), "total": int(counts.sum())}
    bad = ~np.isfinite(values)
    n = int(np.sum(np.asarray(bad)))
    return {"objects": n, "events": n, "total": len(bad)}


def _count_passing(candidates: np.ndarray, passing: np.ndarray) -> dict[str, int]:
    """Objects in the acceptance (``candidates``) and how many of them pass (``passing``, same shape)."""
    return {"candidates": int(np.sum(candidates)), "passing": int(np.sum(candidates & passing))}


_LEPTON_FIELDS = ("pt", "eta", "phi", "mass", "pdgId")


def _lepton_table(ele, mu, ele_slots: np.ndarray, mu_slots: np.ndarray) -> dict[str, np.ndarray]:
    """The selected leptons of events holding exactly as many as the selection asks, electrons before muons (the
    order of the former ``ak.concatenate([electrons, muons])``): field -> ``(events, n_leptons)``, from the
    positions of each event's selected electrons and muons (:func:`analysis.jagged.slot_index`). The PDG id is
    the branch's where the file has one, else 11 or 13 (unsigned)."""
    n_e = (ele_slots >= 0).sum(axis=1, keepdims=True)
    k = np.arange(ele_slots.shape[1])[None, :]
    is_ele = k < n_e
    mu_pos = np.take_along_axis(mu_slots, np.clip(k - n_e, 0, None), axis=1)
    out = {}
    for f in _LEPTON_FIELDS:
        parts = []
        for coll, pdg in ((ele, 11), (mu, 13)):
            if f == "pdgId" and not _has(coll, f):
                parts.append(np.full(len(jagged.flat(coll.pt)), pdg, np.int32))
            else:
                parts.append(jagged.flat(coll[f]))
        dtype = np.result_type(*parts)
        out[f] = np.where(is_ele, jagged.gather(parts[0], np.where(is_ele, ele_slots, -1), dtype=dtype),
                          jagged.gather(parts[1], np.where(is_ele, -1, mu_pos), dtype=dtype))
    return out


def _clean_of_leptons(jet: dict[str, np.ndarray], n_jet: np.ndarray, lep_rows: np.ndarray,
                      leptons: dict[str, np.ndarray], min_dr: float, behavior) -> np.ndarray:
    """Per jet of the collection (``jet``: its flat pt, eta, phi, mass): Delta R > ``min_dr`` to every selected lepton of its event, for the
    events ``lep_rows`` whose leptons ``leptons`` holds (:func:`_lepton_table`); true for the jets of other
    events, which the selection drops anyway. Delta R is coffea's (the vector library's), jet against lepton,
    on the flat arrays: the same arithmetic as ``jets.metric_table(leptons)`` on the jagged ones."""
    slot = np.full(len(n_jet), -1, np.int64)
    slot[lep_rows] = np.arange(len(lep_rows))
    owner = np.repeat(slot, n_jet)
    cand = owner >= 0
    fields = ("pt", "eta", "phi", "mass")
    j = ak.zip({f: jet[f][cand] for f in fields}, with_name="PtEtaPhiMLorentzVector",
               behavior=behavior)
    clean = np.ones(len(owner), bool)
    ok = np.ones(int(cand.sum()), bool)
    for k in range(next(iter(leptons.values())).shape[1]):
        lep = ak.zip({f: leptons[f][owner[cand], k] for f in fields}, with_name="PtEtaPhiMLorentzVector",
                     behavior=behavior)
        ok &= ak.to_numpy(j.delta_r(lep)) > min_dr
    clean[cand] = ok
    return clean


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

        # input checks, summed over chunks and judged by skim_nanoaod once the file is done
        nonfinite = {f"{c}_{f}": _count_nonfinite(events[c][f]) for c, fs in _KINEMATICS.items() for f in fs}
        met_coll = events[s.met_collection]
        nonfinite |= {f"{s.met_collection}_{f}": _count_nonfinite(met_coll[f]) for f in ("pt", "phi")}
        if "genWeight" in events.fields:
            nonfinite["genWeight"] = _count_nonfinite(events.genWeight)
        ids = {}

        # object selection on the collections' flat branches (one entry per object), counted per event
        ele, mu, all_jets = events.Electron, events.Muon, events.Jet
        n_ele, n_mu, n_jet = jagged.counts(ele.pt), jagged.counts(mu.pt), jagged.counts(all_jets.pt)
        ele_ok = (jagged.flat(ele.pt) > s.electron_min_pt) & (np.abs(jagged.flat(ele.eta)) < s.electron_max_eta)
        if _has(ele, "cutBased"):
            ele_id = jagged.flat(ele.cutBased) >= s.electron_min_cut_based
            ids["Electron_cutBased"] = _count_passing(ele_ok, ele_id)
            ele_ok &= ele_id
        if _has(ele, "pfRelIso03_all"):
            ele_ok &= jagged.flat(ele.pfRelIso03_all) < s.electron_max_rel_iso
        mu_ok = (jagged.flat(mu.pt) > s.muon_min_pt) & (np.abs(jagged.flat(mu.eta)) < s.muon_max_eta)
        if _has(mu, "tightId"):
            mu_id = jagged.flat(mu.tightId) != 0  # UChar in central NanoAOD, bool in private files
            ids["Muon_tightId"] = _count_passing(mu_ok, mu_id)
            mu_ok &= mu_id
        if _has(mu, "pfRelIso04_all"):
            mu_ok &= jagged.flat(mu.pfRelIso04_all) < s.muon_max_rel_iso
        n_lep = jagged.per_event(n_ele, ele_ok) + jagged.per_event(n_mu, mu_ok)
        one_lep = n_lep == s.n_leptons
        # the selected leptons of those events, electrons before muons: (rows, n_leptons) positions of each kind
        lep_rows = np.flatnonzero(one_lep)
        ele_slots, _ = jagged.slot_index(n_ele, lep_rows, s.n_leptons, ele_ok)
        mu_slots, _ = jagged.slot_index(n_mu, lep_rows, s.n_leptons, mu_ok)
        leptons = _lepton_table(ele, mu, ele_slots, mu_slots)

        jet = {k: jagged.flat(all_jets[k]) for k in ("pt", "eta", "phi", "mass")}
        jet["btag"] = jagged.flat(all_jets[s.btag_discriminant])
        jet_ok = (jet["pt"] > s.jet_min_pt) & (np.abs(jet["eta"]) < s.jet_max_eta)
        b_acc = jet["btag"][jet_ok]
        btag_range = {"jets": int(len(b_acc)), "below_0": int(np.sum(b_acc < 0)), "above_1": int(np.sum(b_acc > 1)),
                      "not_finite": int(np.sum(~np.isfinite(b_acc)))}
        if _has(all_jets, "jetId"):
            jet_id = jagged.flat(all_jets.jetId) >= s.jet_min_id
            ids["Jet_jetId"] = _count_passing(jet_ok, jet_id)
            jet_ok &= jet_id
        keep = jet_ok  # per jet of the collection: passes the object selection
        if s.lepton_jet_min_dr > 0:
            keep = keep & _clean_of_leptons(jet, n_jet, lep_rows, leptons, s.lepton_jet_min_dr, events.behavior)
        n_jets = jagged.per_event(n_jet, keep)
        n_b = jagged.per_event(n_jet, keep & (jet["btag"] > self.btag_wp))

        enough_jets = one_lep & (n_jets >= s.min_jets)
        sel = enough_jets & (n_b >= s.min_btags)

        rows = np.flatnonzero(sel)
        first = np.searchsorted(lep_rows, rows)  # sel implies one_lep: every selected event is in lep_rows
        lep = {k: v[first, 0] for k, v in leptons.items()}  # the first selected lepton
        met = events[s.met_collection][sel]
        slots, n_kept = jagged.slot_index(n_jet, rows, MAX_OBJECT_JETS, keep)  # the leading selected jets
        leading = slots[:, :4]
        if np.any(leading < 0):  # the configuration requires min_jets >= 4; never read a padding slot
            raise ValueError("a selected event has fewer than four selected jets (skim.min_jets < 4?)")
        feats = compute_features(
            {k: lep[k] for k in ("pt", "eta", "phi", "mass")},
            {"pt": np.asarray(met.pt), "phi": np.asarray(met.phi)},
            {k: v[leading] for k, v in jet.items()},
            self.feature_wps,
        )
        finite = np.all([np.isfinite(feats[k]) for k in FEATURES], axis=0) if len(leading) else np.zeros(0, bool)

        w_sel = weight[sel]
        cutflow = {}
        for step, mask_w in zip(CUTFLOW_STEPS, [
            weight, weight[one_lep], weight[enough_jets], w_sel, w_sel[finite],
        ]):
            cutflow[step] = {"events": int(len(mask_w)), "sumw": float(np.sum(mask_w))}
        cutflow["all"]["events"] = n_all

        columns = {k: v[finite] for k, v in feats.items()}
        columns["label"] = np.full(int(finite.sum()), self.label, dtype=np.int32)
        columns["generated"] = np.zeros(int(finite.sum()), dtype=np.int32)
        columns["weight"] = w_sel[finite]
        columns["event"] = np.asarray(events.event[sel], dtype=np.int64)[finite]
        for k, v in object_columns(events, slots, n_kept, jet, lep, sel, met).items():
            columns[k] = v[finite]
        checks = {"nonfinite": nonfinite, "btag_range": btag_range, "ids": ids}
        return {"cutflow": cutflow, "checks": checks,
                "columns": {k: processor.column_accumulator(v) for k, v in columns.items()}}

    def postprocess(self, accumulator):
        return accumulator


def skim_nanoaod(
    path: str | os.PathLike,
    cfg: AnalysisConfig,
    label: int,
    norm: float,
    chunksize: int = 200_000,
    progress: Callable[[int, int], None] | None = None,
    issues: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Skim one NanoAOD file (TTree or RNTuple ``Events``) with coffea, chunk by chunk. Returns
    ``(columns, cutflow)``.

    Raises :class:`~analysis.io.InputError` for a missing, non-ROOT or truncated file, a missing branch, or
    non-finite kinematics. Warnings on implausible content (see the module docstring) are logged on the
    ``hepflows`` logger, one line each naming the file, and appended to ``issues`` when it is given.
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
            raise InputError(f"{path}: skim failed ({type(cause).__name__}: {' '.join(str(cause).split())})") from e
    _refuse_nonfinite(path, out["checks"]["nonfinite"], n)
    found = _plausibility_warnings(path, cfg, out["checks"])
    for line in found:
        log.warning(line)
    if issues is not None:
        issues.extend(found)
    cutflow = out["cutflow"]
    columns = {k: np.asarray(v.value) for k, v in out["columns"].items()}
    if progress is not None:
        progress(n, n)
    return columns, cutflow


def _refuse_nonfinite(path, counts: dict[str, dict[str, int]], n_events: int) -> None:
    """Raise :class:`InputError` naming every kinematic branch with NaN or infinite values."""
    bad = {k: v for k, v in counts.items() if v["objects"]}
    if not bad:
        return
    parts = []
    for name, v in bad.items():
        word = _OBJECT_WORD.get(name.split("_")[0])
        if word:
            parts.append(f"{name} in {v['objects']:,} of {v['total']:,} {word}, {v['events']:,} events")
        else:
            parts.append(f"{name} in {v['events']:,} events")
    raise InputError(f"{path}: non-finite (NaN or infinite) values: {'; '.join(parts)} (of {n_events:,} events); "
                     "real NanoAOD has finite kinematics and weights, the file is corrupt")


def _plausibility_warnings(path, cfg: AnalysisConfig, checks: dict) -> list[str]:
    """One line per implausible feature of the file's content (see the module docstring)."""
    s = cfg.skim
    found = []
    b = checks["btag_range"]
    outside = b["below_0"] + b["above_1"] + b["not_finite"]
    if b["jets"] and outside > BTAG_OUTSIDE_WARN_FRACTION * b["jets"]:
        found.append(f"{path}: Jet_{s.btag_discriminant} lies outside [0, 1] for {outside:,} of the {b['jets']:,} "
                     f"jets with pT > {s.jet_min_pt:g} GeV and |eta| < {s.jet_max_eta:g} ({outside / b['jets']:.1%}: "
                     f"{b['below_0']:,} below 0, {b['above_1']:,} above 1, {b['not_finite']:,} not finite); "
                     "the b tagging of this file is not trustworthy")
    cuts = {"Muon_tightId": "is false", "Electron_cutBased": f"is below {s.electron_min_cut_based}",
            "Jet_jetId": f"is below {s.jet_min_id}"}
    accept = {"Muon": (s.muon_min_pt, s.muon_max_eta), "Electron": (s.electron_min_pt, s.electron_max_eta),
              "Jet": (s.jet_min_pt, s.jet_max_eta)}
    for name, v in checks["ids"].items():
        if v["candidates"] >= ID_WARN_MIN_OBJECTS and v["passing"] == 0:
            coll = name.split("_")[0]
            pt, eta = accept[coll]
            found.append(f"{path}: {name} {cuts[name]} for all {v['candidates']:,} {_OBJECT_WORD[coll]} with "
                         f"pT > {pt:g} GeV and |eta| < {eta:g}: no {coll.lower()} passes the identification")
    return found


def yield_warning(sample: str, weights: np.ndarray) -> str | None:
    """A warning (logged on the ``hepflows`` logger, and returned) when the selected events of ``sample`` weigh
    zero or less in total: a negative expected yield is not a physics result, and the feature plot shows such a
    sample unweighted. None for a positive total."""
    weights = np.asarray(weights, dtype=np.float64)
    total = float(np.sum(weights))
    if total > 0:
        return None
    msg = (f"sample {sample!r}: the {len(weights):,} selected events have a total weight of {total:.6g} "
           f"({int(np.sum(weights < 0)):,} with negative weight): the expected yield is not positive; the "
           "feature plot shows this sample unweighted")
    log.warning(msg)
    return msg


def sample_normalisation(cfg: AnalysisConfig, sample_name: str, files: list[str | os.PathLike]) -> float:
    """cross-section x luminosity / (sum of generator weights over all files of the sample). A bad file stops
    every file of the sample: its error names it and says why the others need it."""
    try:
        sumw = sum_gen_weights(files)
    except InputError as e:
        if len(files) < 2:
            raise
        raise InputError(f"{e} (sample {sample_name!r} is normalised with the generator weights of all its "
                         f"{len(files)} files)") from None
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
    if n_read < stop - start:
        raise InputError(f"{path}: has only {start + n_read} events, rows up to {stop} were asked for (the "
                         "configuration's n_events is larger than the file)")
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
