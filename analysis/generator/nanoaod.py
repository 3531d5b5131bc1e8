"""Event production in CMS NanoAOD format: generator + detector simulation, written chunk by chunk with uproot.

One file holds a TTree ``Events`` with NanoAOD branch names and types (``nJet``, ``Jet_pt``, ...,
``Electron_*``, ``Muon_*``, ``MET_*``, ``GenMET_*``, ``GenPart_*``, ``genWeight``) and a TTree ``Runs`` with
``genEventCount``, ``genEventSumw`` and ``genEventSumw2``, from which the skim normalises each sample to
cross-section times luminosity, exactly as for centrally produced NanoAOD. ``Jet_genPartIdx`` (the GenPart
index of the jet's hardest parton, -1 if none) is the one branch not in central NanoAOD; it carries the
jet-parton matching for regression and unfolding studies.
"""

from __future__ import annotations

import dataclasses

import json
import os
import zlib
from typing import Callable

import awkward as ak
import numpy as np
import uproot

from ..config import AnalysisConfig, SampleConfig
from ..io import atomic_path
from . import kinematics as kin
from .detector import Collection, RecoEvents, simulate
from .processes import PROCESS_GENERATORS, PartonLevel

BATCH_SIZE = 50_000

# Pythia-like status codes and NanoAOD statusFlags bits (isPrompt | isHardProcess | fromHardProcess | isLastCopy)
_HARD_FLAGS = (1 << 0) | (1 << 7) | (1 << 8) | (1 << 13)


def file_seed(config_seed: int, sample: str, index: int) -> np.random.SeedSequence:
    """Independent, reproducible random stream per (config seed, sample, file index)."""
    return np.random.SeedSequence([config_seed, zlib.crc32(sample.encode()), index])


def _jagged(col: Collection, dtypes: dict[str, str]) -> ak.Array:
    return ak.zip({name: ak.unflatten(v.astype(dtypes.get(name, "float32")), col.counts)
                   for name, v in col.fields.items()})


_INT = "int32"
_JET_TYPES = {"hadronFlavour": _INT, "partonFlavour": _INT, "genPartIdx": _INT, "genJetIdx": _INT, "jetId": _INT,
              "nMuons": "uint8", "nElectrons": "uint8"}
_LEP_TYPES = {"charge": _INT, "pdgId": _INT, "genPartIdx": _INT, "cutBased": _INT, "tightId": "bool"}


def _genpart(truth: PartonLevel) -> ak.Array:
    """GenPart collection; ISR slots are the last columns and valid ones come first, so indices stay intact."""
    p4, valid = truth.p4, truth.valid
    pdg = np.abs(truth.pdg_id)
    status = np.select([np.isin(pdg, (6, 24, 25, 35, 37)), pdg <= 5, pdg == 21], [62, 23, 43], 1)
    flags = np.where(pdg == 21, 0, _HARD_FLAGS)
    fields = {
        "pt": kin.pt(p4), "eta": kin.eta(p4), "phi": kin.phi(p4), "mass": kin.mass(p4),
        "pdgId": truth.pdg_id, "status": status, "genPartIdxMother": truth.mother, "statusFlags": flags,
    }
    counts = valid.sum(axis=1)
    types = {"pdgId": _INT, "status": _INT, "genPartIdxMother": _INT, "statusFlags": _INT}
    return ak.zip({k: ak.unflatten(v[valid].astype(types.get(k, "float32")), counts) for k, v in fields.items()})


def generate_batch(rng: np.random.Generator, process: str, n: int, cfg: AnalysisConfig):
    """Generate ``n`` events of ``process``: the parton-level truth and the reconstructed event."""
    truth = PROCESS_GENERATORS[process](rng, n, cfg.physics)
    reco = simulate(rng, truth, cfg.detector)
    return truth, reco


def to_nanoaod(truth: PartonLevel, reco: RecoEvents, first_event: int, lumi_block: int) -> dict:
    """Branch dictionary for uproot's ``mktree``/``extend`` in NanoAOD naming."""
    n = truth.n_events
    return {
        "run": np.ones(n, dtype=np.uint32),
        "luminosityBlock": np.full(n, lumi_block, dtype=np.uint32),
        "event": np.arange(first_event, first_event + n, dtype=np.uint64),
        "genWeight": np.ones(n, dtype=np.float32),
        "Jet": _jagged(reco.jets, _JET_TYPES),
        "Electron": _jagged(reco.electrons, _LEP_TYPES),
        "Muon": _jagged(reco.muons, _LEP_TYPES),
        "MET_pt": reco.met_pt.astype(np.float32),
        "MET_phi": reco.met_phi.astype(np.float32),
        "GenMET_pt": reco.genmet_pt.astype(np.float32),
        "GenMET_phi": reco.genmet_phi.astype(np.float32),
        "GenPart": _genpart(truth),
    }


def write_nanoaod_file(
    path: str | os.PathLike,
    cfg: AnalysisConfig,
    sample_name: str,
    index: int,
    n_events: int | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Generate file ``index`` of generator sample ``sample_name`` and write it atomically to ``path``.

    Events are generated and appended in batches of ``batch_size``, so memory does not grow with the file size.
    ``progress(done, total)`` is called after each batch. Returns the file's metadata.
    """
    sample: SampleConfig = cfg.sample(sample_name)
    if not sample.simulated:
        raise ValueError(f"sample {sample_name!r} is not simulated here (source={sample.source!r})")
    total = sample.events_per_file if n_events is None else n_events
    meta = {
        "sample": sample_name, "source": sample.source, "process": sample.process, "label": sample.label,
        "file_index": index, "n_events": total, "seed": cfg.seed, "cross_section_pb": sample.cross_section_pb,
        "config": cfg.name,
    }
    if sample.source == "pythia8":
        from .pythia import PythiaSource, pythia_to_nanoaod  # the optional extra: imported only when asked for

        source = PythiaSource(cfg, sample, file_seed(cfg.seed, sample_name, index))
        batch_size = min(batch_size, cfg.pythia.batch_size)

        def make_batch(m: int, first: int, lumi: int) -> dict:
            return pythia_to_nanoaod(source.generate(m), first, lumi)
    else:
        if sample.top_mass_shift:  # pseudo-data of another top mass (the unfolding's prior test)
            top = dataclasses.replace(cfg.physics.top, mass=cfg.physics.top.mass + sample.top_mass_shift)
            cfg = dataclasses.replace(cfg, physics=dataclasses.replace(cfg.physics, top=top))
        rng = np.random.default_rng(file_seed(cfg.seed, sample_name, index))

        def make_batch(m: int, first: int, lumi: int) -> dict:
            truth, reco = generate_batch(rng, sample.process, m, cfg)
            return to_nanoaod(truth, reco, first, lumi)
    first_event = index * sample.events_per_file + 1
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp, compression=uproot.LZ4(1)) as f:
            tree = None
            done = 0
            while done < total:
                m = min(batch_size, total - done)
                branches = make_batch(m, first_event + done, index + 1)
                if tree is None:
                    tree = f.mktree("Events", {k: v.type if isinstance(v, ak.Array) else v.dtype
                                               for k, v in branches.items()})
                tree.extend(branches)
                done += m
                if progress is not None:
                    progress(done, total)
            f.mktree("Runs", {"run": np.uint32, "genEventCount": np.int64, "genEventSumw": np.float64,
                              "genEventSumw2": np.float64})
            f["Runs"].extend({"run": np.array([1], np.uint32), "genEventCount": np.array([total], np.int64),
                              "genEventSumw": np.array([float(total)]), "genEventSumw2": np.array([float(total)])})
            if sample.source == "pythia8":
                meta["pythia_cross_section_pb"] = source.cross_section_pb()
                meta["pythia_settings"] = {str(c): lines for c, lines in source.settings.items()}
            f["hepflows_metadata"] = json.dumps(meta)
    return meta
