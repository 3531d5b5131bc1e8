"""Analysis configurations: YAML files validated into typed, frozen dataclasses.

A configuration is data. :func:`load_config` reads one of the YAML files shipped in ``analysis/configs`` (by name)
or any YAML file (by path) with :class:`ConfigLoader` (:func:`yaml.safe_load`, refusing a key defined twice), and
checks it completely before any work starts: an unknown key, a value of the wrong type or an impossible value
raises :class:`ConfigError` with one message that names the offending key, e.g. ``config 'quickstart':
detector.jet.constant: must be >= 0, got -0.1``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import yaml

from models.registry import MODELS as FLOW_MODELS  # the zoo, listed once (models/registry.py imports no torch)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """An analysis configuration is invalid; the message names the key."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _positive(name: str, value: float, strict: bool = True) -> None:
    if strict:
        _check(value > 0, f"{name}: must be > 0, got {value}")
    else:
        _check(value >= 0, f"{name}: must be >= 0, got {value}")


def _at_least(name: str, value: int, minimum: int) -> None:
    _check(value >= minimum, f"{name}: must be >= {minimum}, got {value}")


def _fraction(name: str, value: float) -> None:
    _check(0.0 <= value <= 1.0, f"{name}: must lie in [0, 1], got {value}")


# --------------------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resonance:
    """Pole mass and total width of a resonance, in GeV."""

    mass: float
    width: float

    def validate(self, path: str) -> None:
        _positive(f"{path}.mass", self.mass)
        _positive(f"{path}.width", self.width)


@dataclass(frozen=True)
class PhysicsConfig:
    """Masses and widths (PDG 2024 for SM particles; the HIGGS-benchmark values for the heavy Higgs bosons)."""

    top: Resonance = Resonance(172.5, 1.4)
    w: Resonance = Resonance(80.38, 2.09)
    heavy_higgs: Resonance = Resonance(425.0, 5.0)
    charged_higgs: Resonance = Resonance(325.0, 2.0)
    higgs: Resonance = Resonance(125.0, 0.004)
    b_mass: float = 4.8
    c_mass: float = 1.5
    # longitudinal, left- and right-handed W helicity fractions in top decays (NNLO QCD: 0.687, 0.311, 0.0017)
    w_helicity: tuple[float, float, float] = (0.687, 0.311, 0.002)
    # ttbar invariant-mass spectrum: m_tt = m_t1 + m_t2 + X, X ~ Gamma(shape, scale)
    mtt_gamma_shape: float = 1.8
    mtt_gamma_scale: float = 85.0
    # rapidity spread of the hard system and initial-state radiation
    rapidity_sigma: float = 0.9
    isr_mean_partons: float = 1.5
    isr_max_partons: int = 3
    isr_pt_min: float = 15.0
    isr_pt_power: float = 3.5

    def validate(self, path: str) -> None:
        for name in ("top", "w", "heavy_higgs", "charged_higgs", "higgs"):
            getattr(self, name).validate(f"{path}.{name}")
        _positive(f"{path}.b_mass", self.b_mass)
        _positive(f"{path}.c_mass", self.c_mass)
        _check(len(self.w_helicity) == 3, f"{path}.w_helicity: needs three fractions (F0, FL, FR)")
        for v in self.w_helicity:
            _fraction(f"{path}.w_helicity", v)
        _check(abs(sum(self.w_helicity) - 1.0) < 1e-3, f"{path}.w_helicity: fractions must sum to 1, got "
               f"{sum(self.w_helicity)}")
        _check(self.top.mass > self.w.mass + self.b_mass + 10 * self.w.width,
               f"{path}.top.mass: must exceed m_W + m_b with room for the W width")
        _check(self.heavy_higgs.mass > self.charged_higgs.mass + self.w.mass,
               f"{path}.heavy_higgs.mass: must exceed m_H+ + m_W for H0 -> W H+ to be open")
        _check(self.charged_higgs.mass > self.higgs.mass + self.w.mass,
               f"{path}.charged_higgs.mass: must exceed m_h + m_W for H+ -> W h to be open")
        _positive(f"{path}.mtt_gamma_shape", self.mtt_gamma_shape)
        _positive(f"{path}.mtt_gamma_scale", self.mtt_gamma_scale)
        _positive(f"{path}.rapidity_sigma", self.rapidity_sigma)
        _positive(f"{path}.isr_mean_partons", self.isr_mean_partons, strict=False)
        _check(0 <= self.isr_max_partons <= 6, f"{path}.isr_max_partons: must lie in [0, 6], got "
               f"{self.isr_max_partons}")
        _positive(f"{path}.isr_pt_min", self.isr_pt_min)
        _check(self.isr_pt_power > 1.0, f"{path}.isr_pt_power: must be > 1, got {self.isr_pt_power}")


@dataclass(frozen=True)
class JetResponse:
    """Jet reconstruction: sigma(pT)/pT = sqrt((noise/pT)^2 + stochastic^2/pT + constant^2)."""

    noise: float = 3.0
    stochastic: float = 1.0
    constant: float = 0.05
    angular: float = 0.01
    merge_dr: float = 0.4
    min_pt: float = 15.0
    max_eta: float = 4.7
    # jet mass from showering: m_jet^2 = m_parton^2 + (shower_mass_fraction * pT)^2
    shower_mass_fraction: float = 0.12

    def validate(self, path: str) -> None:
        for name in ("noise", "stochastic", "constant", "angular", "shower_mass_fraction"):
            _positive(f"{path}.{name}", getattr(self, name), strict=False)
        _positive(f"{path}.merge_dr", self.merge_dr)
        _positive(f"{path}.min_pt", self.min_pt)
        _positive(f"{path}.max_eta", self.max_eta)


@dataclass(frozen=True)
class BTagConfig:
    """DeepJet-like b-tag score; efficiencies are those at the ``medium`` working point, per hadron flavour."""

    working_points: Mapping[str, float] = field(
        default_factory=lambda: {"loose": 0.0490, "medium": 0.2783, "tight": 0.7100})
    efficiency_b: float = 0.75
    efficiency_c: float = 0.17
    efficiency_light: float = 0.012

    def validate(self, path: str) -> None:
        _check("medium" in self.working_points, f"{path}.working_points: needs a 'medium' entry")
        for name, wp in self.working_points.items():
            _check(0.0 < wp < 1.0, f"{path}.working_points.{name}: must lie in (0, 1), got {wp}")
        for name in ("efficiency_b", "efficiency_c", "efficiency_light"):
            _check(0.0 < getattr(self, name) < 1.0, f"{path}.{name}: must lie in (0, 1), got {getattr(self, name)}")
        _check(self.efficiency_b > self.efficiency_c > self.efficiency_light,
               f"{path}: efficiencies must be ordered b > c > light")


@dataclass(frozen=True)
class LeptonResponse:
    """Reconstruction of one lepton flavour."""

    efficiency: float = 0.9
    resolution: float = 0.02
    min_pt: float = 5.0
    max_eta: float = 2.5

    def validate(self, path: str) -> None:
        _fraction(f"{path}.efficiency", self.efficiency)
        _positive(f"{path}.resolution", self.resolution, strict=False)
        _positive(f"{path}.min_pt", self.min_pt)
        _positive(f"{path}.max_eta", self.max_eta)


@dataclass(frozen=True)
class DetectorConfig:
    jet: JetResponse = JetResponse()
    btag: BTagConfig = BTagConfig()
    electron: LeptonResponse = LeptonResponse(efficiency=0.85, resolution=0.02, max_eta=2.5)
    muon: LeptonResponse = LeptonResponse(efficiency=0.95, resolution=0.015, max_eta=2.4)
    # semileptonic b decays: b -> l nu X; the neutrino leaves the jet, the lepton stays inside it (non-isolated)
    b_semileptonic_fraction: float = 0.21
    # soft (unclustered) activity: response and resolution per component, sigma = a + b * sqrt(sum soft pT)
    unclustered_response: float = 0.7
    unclustered_resolution_const: float = 5.0
    unclustered_resolution_sqrt: float = 0.3

    def validate(self, path: str) -> None:
        self.jet.validate(f"{path}.jet")
        self.btag.validate(f"{path}.btag")
        self.electron.validate(f"{path}.electron")
        self.muon.validate(f"{path}.muon")
        _fraction(f"{path}.b_semileptonic_fraction", self.b_semileptonic_fraction)
        _fraction(f"{path}.unclustered_response", self.unclustered_response)
        _positive(f"{path}.unclustered_resolution_const", self.unclustered_resolution_const, strict=False)
        _positive(f"{path}.unclustered_resolution_sqrt", self.unclustered_resolution_sqrt, strict=False)


SOURCES = ("generator", "pythia8", "nanoaod", "higgs_csv")
# the sources that simulate events (and write their truth record): the embedded generator and Pythia 8
SIMULATED_SOURCES = ("generator", "pythia8")
PROCESSES = ("ttbar", "heavy_higgs")


@dataclass(frozen=True)
class PythiaConfig:
    """Pythia 8 as the event source (samples with ``source: pythia8``; the optional extra ``.[pythia]``).

    The hard process, masses and widths come from ``physics``; the detector model (jet response, b tagging,
    lepton efficiencies, MET) from ``detector``. Here: which stages of the event simulation run, pile-up, the
    jet algorithm and any further Pythia settings (``settings``: lines for ``Pythia.readString``, applied last).
    """

    isr: bool = True
    fsr: bool = True
    mpi: bool = True
    hadronisation: bool = True
    # mean number of overlaid minimum-bias (SoftQCD:nonDiffractive) events per event, Poisson; 0 = off
    pileup: float = 0.0
    jet_radius: float = 0.4
    # Pythia's random-number seeds are taken from the file's seed; batch size of Pythia.nextBatch
    batch_size: int = 500
    settings: tuple[str, ...] = ()

    def validate(self, path: str) -> None:
        _positive(f"{path}.pileup", self.pileup, strict=False)
        _check(self.pileup <= 200, f"{path}.pileup: at most 200, got {self.pileup}")
        _check(0.1 <= self.jet_radius <= 1.5, f"{path}.jet_radius: must lie in [0.1, 1.5], got {self.jet_radius}")
        _at_least(f"{path}.batch_size", self.batch_size, 1)
        for i, line in enumerate(self.settings):
            _check(":" in line and "=" in line and "\n" not in line,
                   f"{path}.settings[{i}]: expected a Pythia setting 'Group:key = value', got {line!r}")
            _check(not line.split("=")[0].strip().lower().startswith("random:"),
                   f"{path}.settings[{i}]: the random seed comes from the file's seed, not from settings")


@dataclass(frozen=True)
class SampleConfig:
    """One sample. ``source`` says where its events come from:

    - ``generator``: the embedded generator (``process``, ``n_files`` x ``events_per_file`` events);
    - ``pythia8``: Pythia 8 with FastJet jets and the parametrised detector (same fields as ``generator``;
      :mod:`analysis.generator.pythia`, the optional extra ``.[pythia]``);
    - ``nanoaod``: existing NanoAOD ROOT files (``files``, paths or glob patterns);
    - ``higgs_csv``: the UCI HIGGS CSV at ``path``, keeping the rows whose label equals ``label``.
    """

    source: Literal["generator", "pythia8", "nanoaod", "higgs_csv"]
    label: int
    cross_section_pb: float = 1.0
    process: str = ""
    n_files: int = 1
    events_per_file: int = 10000
    files: tuple[str, ...] = ()
    path: str = ""
    n_events: int = 0
    # GeV added to physics.top.mass for this sample alone (the unfolding's pseudo-data; generator only)
    top_mass_shift: float = 0.0

    def validate(self, path: str) -> None:
        _check(self.source in SOURCES, f"{path}.source: must be one of {SOURCES}, got {self.source!r}")
        _check(self.label in (0, 1), f"{path}.label: must be 0 (background) or 1 (signal), got {self.label}")
        _positive(f"{path}.cross_section_pb", self.cross_section_pb)
        _at_least(f"{path}.n_files", self.n_files, 1)
        _at_least(f"{path}.events_per_file", self.events_per_file, 1)
        _at_least(f"{path}.n_events", self.n_events, 0)
        if self.simulated:
            _check(self.process in PROCESSES, f"{path}.process: must be one of {PROCESSES} for source "
                   f"{self.source!r}, got {self.process!r}")
        elif self.source == "nanoaod":
            _check(len(self.files) > 0, f"{path}.files: a nanoaod sample needs at least one file")
        elif self.source == "higgs_csv":
            _check(bool(self.path), f"{path}.path: a higgs_csv sample needs the path of the CSV file")
        _check(self.top_mass_shift == 0 or (self.simulated and abs(self.top_mass_shift) <= 10),
               f"{path}.top_mass_shift: only for simulated samples, at most 10 GeV, got {self.top_mass_shift}")

    @property
    def simulated(self) -> bool:
        """Whether the events are simulated here (embedded generator or Pythia 8), with their truth record."""
        return self.source in SIMULATED_SOURCES


@dataclass(frozen=True)
class SkimConfig:
    """Object and event selection."""

    jet_min_pt: float = 25.0
    jet_max_eta: float = 2.4
    electron_min_pt: float = 25.0
    electron_max_eta: float = 2.5
    electron_min_cut_based: int = 4
    electron_max_rel_iso: float = 0.15
    muon_min_pt: float = 25.0
    muon_max_eta: float = 2.4
    muon_max_rel_iso: float = 0.15
    lepton_jet_min_dr: float = 0.4
    n_leptons: int = 1
    min_jets: int = 4
    min_btags: int = 1
    btag_working_point: str = "medium"
    # b-tag feature of the HIGGS data set: number of these working points a jet passes (0, 1, 2)
    btag_feature_working_points: tuple[str, ...] = ("medium", "tight")
    btag_discriminant: str = "btagDeepFlavB"
    jet_min_id: int = 2
    met_collection: str = "MET"

    def validate(self, path: str, detector: DetectorConfig) -> None:
        for name in ("jet_min_pt", "jet_max_eta", "electron_min_pt", "electron_max_eta", "muon_min_pt",
                     "muon_max_eta", "electron_max_rel_iso", "muon_max_rel_iso"):
            _positive(f"{path}.{name}", getattr(self, name))
        _positive(f"{path}.lepton_jet_min_dr", self.lepton_jet_min_dr, strict=False)
        _check(0 <= self.electron_min_cut_based <= 4, f"{path}.electron_min_cut_based: must lie in [0, 4], got "
               f"{self.electron_min_cut_based}")
        _check(self.n_leptons == 1, f"{path}.n_leptons: the analysis is single-lepton, must be 1")
        _check(self.min_jets >= 4, f"{path}.min_jets: the 28 features need at least 4 jets, got {self.min_jets}")
        _check(0 <= self.min_btags <= self.min_jets, f"{path}.min_btags: must lie in [0, min_jets], got "
               f"{self.min_btags}")
        for wp in self.btag_feature_working_points:
            _check(wp in detector.btag.working_points, f"{path}.btag_feature_working_points: unknown working "
                   f"point {wp!r}; known: {sorted(detector.btag.working_points)}")
        _at_least(f"{path}.jet_min_id", self.jet_min_id, 0)
        _check(self.btag_discriminant.isidentifier(), f"{path}.btag_discriminant: not a branch name")
        _check(self.met_collection.isidentifier(), f"{path}.met_collection: not a collection name")
        _check(self.btag_working_point in detector.btag.working_points,
               f"{path}.btag_working_point: must be one of {sorted(detector.btag.working_points)}, got "
               f"{self.btag_working_point!r}")


PARTITIONS = ("train", "validation", "reference")


@dataclass(frozen=True)
class PartitionConfig:
    """Fractions of every sample's selected events in each disjoint partition: ``train`` (generator and
    classifier training), ``validation`` (early stopping), ``reference`` (evaluation and analysis templates)."""

    train: float = 0.5
    validation: float = 0.1
    reference: float = 0.4

    def validate(self, path: str) -> None:
        for name in PARTITIONS:
            _check(0.0 < getattr(self, name) < 1.0, f"{path}.{name}: must lie in (0, 1), got {getattr(self, name)}")
        total = self.train + self.validation + self.reference
        _check(abs(total - 1.0) < 1e-6, f"{path}: fractions must sum to 1, got {total}")


@dataclass(frozen=True)
class FlowTrainingConfig:
    epochs: int = 40
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 6
    grad_clip: float = 5.0
    # cap on training events (0: all of the train partition)
    max_train_events: int = 0

    def validate(self, path: str) -> None:
        _at_least(f"{path}.epochs", self.epochs, 1)
        _at_least(f"{path}.batch_size", self.batch_size, 2)
        _positive(f"{path}.learning_rate", self.learning_rate)
        _positive(f"{path}.weight_decay", self.weight_decay, strict=False)
        _at_least(f"{path}.patience", self.patience, 1)
        _positive(f"{path}.grad_clip", self.grad_clip)
        _at_least(f"{path}.max_train_events", self.max_train_events, 0)


@dataclass(frozen=True)
class FlowGenerationConfig:
    n_events: int = 100_000
    events_per_chunk: int = 1_000_000
    # events sampled per step: bounds the resident memory (about 1 GB for the default flow at 20k, measured;
    # the high-water mark of the allocator grows with the batch size, not with the number of events)
    batch_size: int = 20_000
    # generated events per model for the evaluation (it compares with half the reference partition at most)
    evaluation_events: int = 20_000
    # reject generated events outside the physical support of the training sample (a jet closer to the lepton or
    # to another jet than any training event has it): the density becomes the flow's restricted to the support
    # and renormalised; the acceptance is recorded with the events. Off by default (see ordered_jets)
    reject_outside_support: bool = False

    def validate(self, path: str) -> None:
        for name in ("n_events", "events_per_chunk", "batch_size", "evaluation_events"):
            _at_least(f"{path}.{name}", getattr(self, name), 1)
        _check(self.n_events <= 10**9, f"{path}.n_events: at most 10^9, got {self.n_events}")


@dataclass(frozen=True)
class FlowReplicaConfig:
    """Bootstrap replicas of the default generator (each trained on a resample, with replacement, of the train
    partition, with its own seed ``first_seed + r``): their spread is the generator uncertainty of the fit."""

    n: int = 5
    first_seed: int = 101
    # generated events per replica (their own statistical noise is subtracted from the spread)
    n_events: int = 1_000_000

    def validate(self, path: str) -> None:
        _check(self.n == 0 or self.n >= 2, f"{path}.n: 0 (no generator uncertainty) or at least 2, got {self.n}")
        _at_least(f"{path}.first_seed", self.first_seed, 0)
        _at_least(f"{path}.n_events", self.n_events, 1000)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.first_seed, self.first_seed + self.n))


@dataclass(frozen=True)
class FlowConfig:
    """Which zoo models to train (each with each of ``seeds``), the generator used downstream (trained also with
    each of ``analysis_seeds``, whose spread the limit scans show), and their settings."""

    models: tuple[str, ...] = ("made_mog",)
    default: str = "made_mog"
    seeds: tuple[int, ...] = (1,)
    analysis_seeds: tuple[int, ...] = (1, 2, 3)
    hyperparameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # model the jets' pT as the leading pT and ratios, so every generated event has its jets in pT order (where
    # the training data are ordered: features in GeV); false: the four pTs as independent features. Off by
    # default: measured on the quickstart together with reject_outside_support, it fixed the validity but made
    # the analysis template worse against truth (README, Flows)
    ordered_jets: bool = False
    # model the four jets' masses (where the ntuples hold them: NanoAOD sources) and derive m_jj, m_jjj, m_jlv,
    # m_bb, m_wbb and m_wwbb from the generated objects, so that they are exactly consistent with them
    derive_masses: bool = False
    training: FlowTrainingConfig = FlowTrainingConfig()
    # per model, settings of ``training`` that differ for it (e.g. ``cfm: {epochs: 600}``: flow matching regresses
    # a velocity field on one random time per event and needs many more steps than maximum likelihood)
    model_training: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    generation: FlowGenerationConfig = FlowGenerationConfig()
    replicas: FlowReplicaConfig = FlowReplicaConfig()

    def training_for(self, model: str) -> FlowTrainingConfig:
        """The training settings of zoo model ``model``: ``training`` with its ``model_training`` entries."""
        return dataclasses.replace(self.training, **dict(self.model_training.get(model) or {}))

    def validate(self, path: str) -> None:
        known = ", ".join(FLOW_MODELS)
        _check(len(self.models) > 0, f"{path}.models: at least one model is needed")
        for m in self.models:
            _check(m in FLOW_MODELS, f"{path}.models: unknown flow model {m!r}; the zoo has: {known}")
        _check(len(set(self.models)) == len(self.models), f"{path}.models: a model is listed twice")
        _check(self.default in self.models, f"{path}.default: {self.default!r} must be one of models "
               f"{list(self.models)}")
        for key in ("seeds", "analysis_seeds"):
            seeds = getattr(self, key)
            _check(len(seeds) > 0 and len(set(seeds)) == len(seeds), f"{path}.{key}: at least one seed, no duplicates")
            for s in seeds:
                _check(s >= 0, f"{path}.{key}: seeds must be >= 0, got {s}")
        for m, hyper in self.hyperparameters.items():
            _check(m in FLOW_MODELS, f"{path}.hyperparameters.{m}: unknown flow model; the zoo has: {known}")
            for k, v in hyper.items():
                _check(k in FLOW_MODELS[m], f"{path}.hyperparameters.{m}.{k}: unknown hyperparameter; known: "
                       f"{', '.join(FLOW_MODELS[m])}")
                if k == "hidden_features":
                    _check(isinstance(v, (list, tuple)) and len(v) > 0 and all(
                        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v),
                        f"{path}.hyperparameters.{m}.{k}: expected a list of positive integers, got {v!r}")
                elif isinstance(FLOW_MODELS[m][k], float):  # e.g. the ODE tolerances of cfm
                    _check(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
                           f"{path}.hyperparameters.{m}.{k}: expected a number between 0 and 1, got {v!r}")
                else:
                    _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                           f"{path}.hyperparameters.{m}.{k}: expected a positive integer, got {v!r}")
        self.training.validate(f"{path}.training")
        settings = {f.name: f.type for f in dataclasses.fields(FlowTrainingConfig)}
        for m, over in self.model_training.items():
            _check(m in FLOW_MODELS, f"{path}.model_training.{m}: unknown flow model; the zoo has: {known}")
            _check(isinstance(over, Mapping), f"{path}.model_training.{m}: expected a mapping of training settings")
            for k, v in over.items():
                _check(k in settings and k != "max_train_events", f"{path}.model_training.{m}.{k}: unknown training "
                       f"setting; known: {', '.join(n for n in settings if n != 'max_train_events')}")
                numeric = (int,) if settings[k] == "int" else (int, float)  # annotations are strings here
                _check(isinstance(v, numeric) and not isinstance(v, bool),
                       f"{path}.model_training.{m}.{k}: expected a number, got {v!r}")
            self.training_for(m).validate(f"{path}.model_training.{m}")
        self.generation.validate(f"{path}.generation")
        self.replicas.validate(f"{path}.replicas")
        clash = set(self.replicas.seeds) & (set(self.seeds) | set(self.analysis_seeds))
        _check(not clash, f"{path}.replicas.first_seed: replica seeds {sorted(clash)} clash with flows.seeds or "
               "flows.analysis_seeds")


@dataclass(frozen=True)
class TruthConfig:
    """The independent high-statistics simulated background ("truth"): for every background sample of the
    embedded generator, ``factor`` times as many events as its training partition holds, with their own seeds
    (sample ``<name>_truth``, files of the sample's ``events_per_file``), never used to train, tune, early-stop
    or bin anything. ``calibration_fraction`` of its events calibrate the generator uncertainty; the rest test
    it (spurious signal, template and C2ST fidelity). Without generator samples (or with ``factor: 0``) the
    reference partition plays this role."""

    factor: float = 10.0
    calibration_fraction: float = 0.5

    def validate(self, path: str) -> None:
        _positive(f"{path}.factor", self.factor, strict=False)
        _check(0.0 < self.calibration_fraction < 1.0, f"{path}.calibration_fraction: must lie in (0, 1), got "
               f"{self.calibration_fraction}")


@dataclass(frozen=True)
class FidelityConfig:
    """The high-power classifier two-sample test of generated against truth events: a learning curve at
    ``train_sizes`` events per class (ascending, at least two) on a fixed test set of ``test_size`` per class,
    with ``draws`` further classifiers at the largest size on other draws of the training events (their spread
    enters the AUC's error); feature-group AUCs at ``group_size``; an MLP as a second opinion at the largest size
    (``mlp``)."""

    train_sizes: tuple[int, ...] = (12_500, 25_000, 50_000, 100_000)
    test_size: int = 50_000
    group_size: int = 25_000
    mlp: bool = True
    draws: int = 2

    def validate(self, path: str) -> None:
        _check(len(self.train_sizes) >= 2 and list(self.train_sizes) == sorted(set(self.train_sizes)),
               f"{path}.train_sizes: at least two sizes, ascending, no duplicates, got {list(self.train_sizes)}")
        for v in self.train_sizes:
            _at_least(f"{path}.train_sizes", v, 50)
        _at_least(f"{path}.test_size", self.test_size, 50)
        _at_least(f"{path}.group_size", self.group_size, 50)
        _at_least(f"{path}.draws", self.draws, 0)


REGRESSIONS = ("neutrino", "bjet")


def _validate_conditional(c, path: str) -> None:
    """The settings every conditional application shares (:class:`RegressionConfig`, :class:`UnfoldingConfig`):
    seeds, the flow model of the zoo and its hyperparameters, the embedding, the training sample's size factor,
    the posterior draws and evaluation events, the training settings."""
    _check(len(c.seeds) > 0 and len(set(c.seeds)) == len(c.seeds) and min(c.seeds) >= 0,
           f"{path}.seeds: at least one seed >= 0, no duplicates")
    _check(c.model in FLOW_MODELS, f"{path}.model: unknown flow model {c.model!r}; the zoo has: "
           f"{', '.join(FLOW_MODELS)}")
    for k in c.hyperparameters:
        _check(k in FLOW_MODELS[c.model], f"{path}.hyperparameters.{k}: unknown hyperparameter of {c.model}; "
               f"known: {', '.join(FLOW_MODELS[c.model])}")
    _check(len(c.embedding_hidden) > 0 and all(isinstance(h, int) and h > 0 for h in c.embedding_hidden),
           f"{path}.embedding_hidden: expected a list of positive integers, got {list(c.embedding_hidden)!r}")
    _positive(f"{path}.train_factor", c.train_factor, strict=False)
    _at_least(f"{path}.embedding_features", c.embedding_features, 1)
    _at_least(f"{path}.samples", c.samples, 8)
    _at_least(f"{path}.evaluation_events", c.evaluation_events, 100)
    c.training.validate(f"{path}.training")


@dataclass(frozen=True)
class RegressionConfig:
    """The conditional applications on the truth record (issue 15): ``applications`` (``neutrino``: nu-Flows,
    p(neutrino | event) for single-lepton ttbar; ``bjet``: the b-jet energy response) each trained as a
    conditional flow (``model`` of the zoo, with ``hyperparameters``) behind an embedding of the event, and as a
    feed-forward regression with Huber and quantile losses (the classical learned baseline), once per seed. They
    train on dedicated simulated samples ``<name>_regression`` of ``train_factor`` times each configured
    generator sample's events (own seeds; 90 % train, 10 % validation), or, with ``train_factor: 0``, on the train
    and validation partitions of the analysis samples (the neutrino on the background, the b jets on background
    and signal). They are evaluated on ``evaluation_events`` events of the analysis samples' reference
    partitions with ``samples`` posterior draws per event. Empty ``applications``: off.

    ``feed``: the analysis runs a second time on features recomputed with the regressed neutrino and b jets
    (:mod:`analysis.feed`, models of the first seed, ``feed_draws`` posterior draws per event and jet) on every
    sample, the truth sample included (``--features regressed`` of the stages from ``PartitionEvents`` on), and
    the report compares the two side by side."""

    applications: tuple[str, ...] = ()
    train_factor: float = 0.0
    seeds: tuple[int, ...] = (1,)
    model: str = "made_mog"
    hyperparameters: Mapping[str, Any] = field(default_factory=lambda: {"hidden_features": [128, 128]})
    embedding_features: int = 32
    embedding_hidden: tuple[int, ...] = (64, 64)
    dnn_hidden: tuple[int, ...] = (128, 128)
    training: FlowTrainingConfig = FlowTrainingConfig(epochs=30, patience=6)
    samples: int = 256
    evaluation_events: int = 20_000
    feed: bool = False
    feed_draws: int = 64

    def validate(self, path: str) -> None:
        _check(isinstance(self.feed, bool), f"{path}.feed: expected true or false, got {self.feed!r}")
        _check(not self.feed or self.applications, f"{path}.feed: needs at least one of applications")
        _at_least(f"{path}.feed_draws", self.feed_draws, 1)
        for a in self.applications:
            _check(a in REGRESSIONS, f"{path}.applications: unknown application {a!r}; known: "
                   f"{', '.join(REGRESSIONS)}")
        _check(len(set(self.applications)) == len(self.applications), f"{path}.applications: listed twice")
        _check(len(self.dnn_hidden) > 0 and all(isinstance(h, int) and h > 0 for h in self.dnn_hidden),
               f"{path}.dnn_hidden: expected a list of positive integers, got {list(self.dnn_hidden)!r}")
        _validate_conditional(self, path)


@dataclass(frozen=True)
class UnfoldingConfig:
    """The unfolding flow (issue 16, :mod:`analysis.unfolding`): p(parton-level ttbar | reconstructed event), a
    conditional flow (``model`` of the zoo with ``hyperparameters``) behind a deep-sets embedding of the lepton,
    MET and jets, trained once per seed on dedicated simulated samples ``<name>_unfolding`` of ``train_factor``
    times each ttbar background sample's files (90 % train, 10 % validation; ``train_factor: 0``: the analysis
    sample's train and validation partitions). Measured on the background's reference partition: marginal
    closure of every observable in ``bins`` bins (``closure_draws`` posterior draws per event, each of weight
    1 / closure_draws, all events), per-event
    calibration (``samples`` posterior draws for each of ``evaluation_events`` events), a C2ST of unfolded
    against true parton-level events, the iterative Bayesian unfolding baseline (``ibu_iterations``) of m_tt
    and the hadronic top pT; and the prior dependence: pseudo-data ``<name>_unfolding_mt_<shift>`` simulated
    with the top mass shifted by each of ``mass_shifts`` GeV (``shift_files`` files), unfolded with
    ``shift_draws`` draws per event, before and (``reweight``) after one iteration that retrains on the
    training events reweighted to the unfolded top-mass distribution. ``enabled: false``: off."""

    enabled: bool = False
    train_factor: float = 0.0
    seeds: tuple[int, ...] = (1,)
    model: str = "made_mog"
    hyperparameters: Mapping[str, Any] = field(default_factory=lambda: {"hidden_features": [128, 128]})
    embedding_features: int = 32
    embedding_hidden: tuple[int, ...] = (64, 64)
    training: FlowTrainingConfig = FlowTrainingConfig(epochs=30, patience=6)
    samples: int = 200
    evaluation_events: int = 10_000
    closure_draws: int = 8
    bins: int = 40
    ibu_iterations: int = 4
    mass_shifts: tuple[float, ...] = (-1.0, 1.0)
    shift_files: int = 1
    shift_draws: int = 16
    reweight: bool = True

    def validate(self, path: str) -> None:
        for key in ("enabled", "reweight"):
            _check(isinstance(getattr(self, key), bool), f"{path}.{key}: expected true or false, got "
                   f"{getattr(self, key)!r}")
        _validate_conditional(self, path)
        _at_least(f"{path}.bins", self.bins, 2)
        _at_least(f"{path}.closure_draws", self.closure_draws, 1)
        _at_least(f"{path}.ibu_iterations", self.ibu_iterations, 1)
        _at_least(f"{path}.shift_files", self.shift_files, 1)
        _at_least(f"{path}.shift_draws", self.shift_draws, 1)
        _check(all(isinstance(s, (int, float)) and s != 0 and abs(s) <= 10 and round(s, 2) == s
                   for s in self.mass_shifts)
               and len(set(self.mass_shifts)) == len(self.mass_shifts),
               f"{path}.mass_shifts: non-zero shifts of at most 10 GeV in steps of 0.01, no duplicates, got "
               f"{list(self.mass_shifts)}")


def shift_tag(shift: float) -> str:
    """``+1.5`` -> ``p1p5``: a top-mass shift in a sample name."""
    return ("p" if shift > 0 else "m") + f"{abs(shift):g}".replace(".", "p")


@dataclass(frozen=True)
class IntrospectionConfig:
    """Taylor-coefficient introspection (issue 17; :mod:`analysis.introspection`): first- and second-order
    coefficients of the ``nn`` classifier on ``events`` reference events, and of a differentiable classifier
    two-sample test (an MLP) trained on ``c2st_events`` generated (default flow, first analysis seed) and as many
    truth events per class, on ``events`` held-out events per class. ``enabled: false``: off."""

    enabled: bool = True
    events: int = 20_000
    c2st_events: int = 50_000

    def validate(self, path: str) -> None:
        _check(isinstance(self.enabled, bool), f"{path}.enabled: expected true or false, got {self.enabled!r}")
        _at_least(f"{path}.events", self.events, 100)
        _at_least(f"{path}.c2st_events", self.c2st_events, 100)


CLASSIFIERS = ("bdt", "nn", "transformer")
OBJECT_CLASSIFIERS = ("transformer",)
"""Classifiers of the reconstructed objects (the skim's Objects tree), not of the 28 features."""


@dataclass(frozen=True)
class BDTConfig:
    """scikit-learn histogram gradient boosting; early stopping on the validation partition."""

    max_iter: int = 300
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 40
    l2_regularization: float = 0.0
    patience: int = 20

    def validate(self, path: str) -> None:
        for name in ("max_iter", "max_leaf_nodes", "min_samples_leaf", "patience"):
            _at_least(f"{path}.{name}", getattr(self, name), 2 if name == "max_leaf_nodes" else 1)
        _positive(f"{path}.learning_rate", self.learning_rate)
        _positive(f"{path}.l2_regularization", self.l2_regularization, strict=False)


@dataclass(frozen=True)
class NNConfig:
    """torch MLP (SiLU), AdamW, early stopping on the validation loss with the best epoch restored."""

    hidden_features: tuple[int, ...] = (128, 128, 64)
    epochs: int = 40
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5

    def validate(self, path: str) -> None:
        _check(len(self.hidden_features) > 0 and all(h > 0 for h in self.hidden_features),
               f"{path}.hidden_features: a non-empty list of positive integers, got {list(self.hidden_features)}")
        for name in ("epochs", "batch_size", "patience"):
            _at_least(f"{path}.{name}", getattr(self, name), 1)
        _positive(f"{path}.learning_rate", self.learning_rate)
        _positive(f"{path}.weight_decay", self.weight_decay, strict=False)


@dataclass(frozen=True)
class TransformerConfig:
    """The object-level classifier (:class:`models.objectnet.ObjectTransformer`): a transformer on the lepton,
    MET and up to 10 jets with Lorentz-invariant pair features as attention bias; AdamW, early stopping."""

    dim: int = 64
    heads: int = 4
    layers: int = 2
    pair_features: bool = True
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5

    def validate(self, path: str) -> None:
        for name in ("dim", "heads", "layers", "epochs", "batch_size", "patience"):
            _at_least(f"{path}.{name}", getattr(self, name), 1)
        _check(self.dim % self.heads == 0, f"{path}.dim: must be a multiple of heads ({self.heads}), got {self.dim}")
        _check(isinstance(self.pair_features, bool), f"{path}.pair_features: expected true or false")
        _positive(f"{path}.learning_rate", self.learning_rate)
        _positive(f"{path}.weight_decay", self.weight_decay, strict=False)


@dataclass(frozen=True)
class ClassifierConfig:
    """Signal-against-background classifiers, trained on simulated events of the train partition (``bdt`` and
    ``nn`` on the 28 features, ``transformer`` on the reconstructed objects; not a default: it needs object-level
    inputs and time)."""

    models: tuple[str, ...] = ("bdt", "nn")
    bdt: BDTConfig = BDTConfig()
    nn: NNConfig = NNConfig()
    transformer: TransformerConfig = TransformerConfig()

    def validate(self, path: str) -> None:
        _check(len(self.models) > 0 and len(set(self.models)) == len(self.models),
               f"{path}.models: at least one classifier, no duplicates")
        for m in self.models:
            _check(m in CLASSIFIERS, f"{path}.models: unknown classifier {m!r}; known: {', '.join(CLASSIFIERS)}")
        self.bdt.validate(f"{path}.bdt")
        self.nn.validate(f"{path}.nn")
        self.transformer.validate(f"{path}.transformer")


@dataclass(frozen=True)
class ScanSizes:
    """Log-spaced numbers of generated background events for the limit scan."""

    min: int = 10_000
    max: int = 1_000_000
    points: int = 30

    def validate(self, path: str) -> None:
        _at_least(f"{path}.min", self.min, 10)
        _check(self.max > self.min, f"{path}.max: must exceed min ({self.min}), got {self.max}")
        _at_least(f"{path}.points", self.points, 2)

    def values(self) -> list[int]:
        """The sizes, ascending (rounded to integers, duplicates dropped)."""
        return sorted({int(round(v)) for v in np.geomspace(self.min, self.max, self.points)})


@dataclass(frozen=True)
class LimitConfig:
    """Templates of the classifier score and the expected-limit scans (pyhf)."""

    classifier: str = "bdt"
    score_cut: float = 0.5
    n_bins: int = 20
    # minimum raw events per background bin, for the simulated and the smallest generated sample alike
    min_count: int = 20
    background_systematics: tuple[float, ...] = (0.05, 0.10, 0.20)
    lumi_uncertainty: float = 0.0
    generated_sizes: ScanSizes = ScanSizes()
    luminosities_fb: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    # random splits of the simulated background into halves for the closure test
    closure_splits: int = 10
    # spurious-signal test against the truth sample: a template passes when |mu_hat| <= this many sigma
    # (sigma: the fit's interval and the truth sample's own statistical spread, from Poisson bootstraps)
    spurious_max_sigma: float = 1.0
    # the truth sample's spread of mu_hat is their standard deviation: with n bootstraps it is known to about
    # 1 / sqrt(2 (n - 1)) (10: 24 %; an independent check found the quickstart's sigma 7 % low, z 7 % high, with 10,
    # and sets of 50 scatter by 6 %: 0.135-0.165 against 0.159 from 400); 100 (7 %) cost about a minute of LimitScan
    spurious_bootstraps: int = 100
    # the spurious signal of the largest generated template repeated over this many further random
    # calibration/test splits of the truth sample (the generator uncertainty recalibrated on each): its mean and
    # RMS show whether the procedure is unbiased and calibrated, beyond one split's fluctuation; 0: off
    spurious_splits: int = 10

    def validate(self, path: str, classifiers: ClassifierConfig) -> None:
        _check(self.classifier in classifiers.models, f"{path}.classifier: must be one of classifiers.models "
               f"{list(classifiers.models)}, got {self.classifier!r}")
        _check(self.classifier not in OBJECT_CLASSIFIERS, f"{path}.classifier: {self.classifier!r} reads the "
               "reconstructed objects, which the generator of background events (28 features) does not make; "
               "the templates need a classifier of the features (bdt or nn)")
        _check(0.0 <= self.score_cut < 1.0, f"{path}.score_cut: must lie in [0, 1), got {self.score_cut}")
        _at_least(f"{path}.n_bins", self.n_bins, 1)
        _at_least(f"{path}.min_count", self.min_count, 1)
        _check(len(self.background_systematics) > 0, f"{path}.background_systematics: at least one size (0 for none)")
        for v in self.background_systematics:
            _check(0.0 <= v < 1.0, f"{path}.background_systematics: sizes must lie in [0, 1), got {v}")
        _check(0.0 <= self.lumi_uncertainty < 1.0, f"{path}.lumi_uncertainty: must lie in [0, 1), got "
               f"{self.lumi_uncertainty}")
        self.generated_sizes.validate(f"{path}.generated_sizes")
        _check(len(self.luminosities_fb) > 0 and all(v > 0 for v in self.luminosities_fb),
               f"{path}.luminosities_fb: a non-empty list of positive luminosities")
        _at_least(f"{path}.closure_splits", self.closure_splits, 2)
        _positive(f"{path}.spurious_max_sigma", self.spurious_max_sigma)
        _at_least(f"{path}.spurious_bootstraps", self.spurious_bootstraps, 2)
        _check(self.spurious_splits == 0 or self.spurious_splits >= 2, f"{path}.spurious_splits: 0 (off) or at "
               f"least 2, got {self.spurious_splits}")


@dataclass(frozen=True)
class AnalysisConfig:
    name: str
    description: str
    seed: int
    luminosity_fb: float
    samples: Mapping[str, SampleConfig]
    physics: PhysicsConfig = PhysicsConfig()
    detector: DetectorConfig = DetectorConfig()
    skim: SkimConfig = SkimConfig()
    partition: PartitionConfig = PartitionConfig()
    flows: FlowConfig = FlowConfig()
    classifiers: ClassifierConfig = ClassifierConfig()
    limits: LimitConfig = LimitConfig()
    truth: TruthConfig = TruthConfig()
    fidelity: FidelityConfig = FidelityConfig()
    regression: RegressionConfig = RegressionConfig()
    unfolding: UnfoldingConfig = UnfoldingConfig()
    introspection: IntrospectionConfig = IntrospectionConfig()
    pythia: PythiaConfig = PythiaConfig()
    # units of the feature columns: "GeV" for generated and NanoAOD inputs, "normalised" for the UCI HIGGS CSV
    feature_units: Literal["GeV", "normalised"] = "GeV"

    def validate(self, path: str = "") -> None:
        p = f"{path}." if path else ""
        _at_least(f"{p}seed", self.seed, 0)
        _positive(f"{p}luminosity_fb", self.luminosity_fb)
        _check(len(self.samples) > 0, f"{p}samples: at least one sample is needed")
        for name, sample in self.samples.items():
            _check(name.isidentifier(), f"{p}samples.{name}: sample names must be identifiers")
            _check(not name.endswith(("_truth", "_regression")) and "_unfolding" not in name,
                   f"{p}samples.{name}: names ending in '_truth' or '_regression' or holding '_unfolding' are "
                   "reserved for the truth, regression and unfolding samples")
            sample.validate(f"{p}samples.{name}")
        self.physics.validate(f"{p}physics")
        self.detector.validate(f"{p}detector")
        self.skim.validate(f"{p}skim", self.detector)
        self.partition.validate(f"{p}partition")
        self.flows.validate(f"{p}flows")
        self.classifiers.validate(f"{p}classifiers")
        self.limits.validate(f"{p}limits", self.classifiers)
        self.truth.validate(f"{p}truth")
        self.fidelity.validate(f"{p}fidelity")
        self.regression.validate(f"{p}regression")
        self.unfolding.validate(f"{p}unfolding")
        _check(not self.unfolding.enabled or any(s.simulated and s.process == "ttbar" and s.label == 0
                                                 for s in self.samples.values()),
               f"{p}unfolding.enabled: the unfolding needs a simulated ttbar background sample (source "
               "'generator' or 'pythia8')")
        self.introspection.validate(f"{p}introspection")
        self.pythia.validate(f"{p}pythia")
        _check(not self.regression.applications or (self.feature_units == "GeV" and all(
            s.simulated for s in self.samples.values())), f"{p}regression.applications: the "
            "conditional applications need the truth record of simulated samples (all samples with source "
            "'generator' or 'pythia8')")
        _check(not set(self.classifiers.models) & set(OBJECT_CLASSIFIERS) or all(
            s.source != "higgs_csv" for s in self.samples.values()), f"{p}classifiers.models: the object-level "
            "classifier needs the reconstructed objects, which the HIGGS CSV does not have (samples with source "
            "'generator', 'pythia8' or 'nanoaod' only)")
        _check(not (self.regression.feed and self.flows.derive_masses), f"{p}regression.feed: the regressed "
               "masses cannot be derived from the generated jets; set flows.derive_masses to false")
        _check(self.feature_units in ("GeV", "normalised"),
               f"{p}feature_units: must be 'GeV' or 'normalised', got {self.feature_units!r}")

    @property
    def btag_feature_thresholds(self) -> list[float]:
        """Discriminant values of ``skim.btag_feature_working_points``: a jet's b-tag level is the number of
        them its score exceeds."""
        return [self.detector.btag.working_points[w] for w in self.skim.btag_feature_working_points]

    @property
    def luminosity_pb(self) -> float:
        return self.luminosity_fb * 1000.0

    @property
    def truth_samples(self) -> Mapping[str, SampleConfig]:
        """The truth counterparts ``<name>_truth`` of the simulated background samples (embedded generator or
        Pythia 8; see
        :class:`TruthConfig`); empty without them."""
        if self.truth.factor == 0:
            return types.MappingProxyType({})
        return types.MappingProxyType({
            f"{n}_truth": dataclasses.replace(s, n_files=max(1, math.ceil(self.truth.factor * self.partition.train
                                                                          * s.n_files)))
            for n, s in self.samples.items() if s.label == 0 and s.simulated})

    @property
    def regression_samples(self) -> Mapping[str, SampleConfig]:
        """The training samples ``<name>_regression`` of the conditional applications (see
        :class:`RegressionConfig`): ``train_factor`` times the files of every simulated sample, own seeds;
        empty when the applications are off or train on the analysis samples."""
        r = self.regression
        if not r.applications or r.train_factor == 0:
            return types.MappingProxyType({})
        return types.MappingProxyType({
            f"{n}_regression": dataclasses.replace(s, n_files=max(1, math.ceil(r.train_factor * s.n_files)))
            for n, s in self.samples.items() if s.simulated})

    @property
    def unfolding_samples(self) -> Mapping[str, SampleConfig]:
        """The samples of the unfolding (see :class:`UnfoldingConfig`), for every simulated ttbar background
        sample: its training sample ``<name>_unfolding`` (with ``train_factor``) and its pseudo-data
        with the top mass shifted, ``<name>_unfolding_mt_<shift>`` (:func:`shift_tag`); empty when off."""
        u = self.unfolding
        if not u.enabled:
            return types.MappingProxyType({})
        out = {}
        for n, s in self.samples.items():
            if s.simulated and s.process == "ttbar" and s.label == 0:
                if u.train_factor:
                    out[f"{n}_unfolding"] = dataclasses.replace(s, n_files=max(1, math.ceil(u.train_factor
                                                                                           * s.n_files)))
                for shift in u.mass_shifts:
                    out[f"{n}_unfolding_mt_{shift_tag(shift)}"] = dataclasses.replace(
                        s, n_files=u.shift_files, top_mass_shift=float(shift))
        return types.MappingProxyType(out)

    @property
    def all_samples(self) -> Mapping[str, SampleConfig]:
        """The configured samples and their truth, regression and unfolding counterparts: everything that is
        generated and skimmed."""
        return types.MappingProxyType({**self.samples, **self.truth_samples, **self.regression_samples,
                                       **self.unfolding_samples})

    def sample(self, name: str) -> SampleConfig:
        try:
            return self.all_samples[name]
        except KeyError:
            raise ConfigError(f"config {self.name!r}: no sample {name!r}; known: {sorted(self.all_samples)}") \
                from None

    def with_input_path(self, path: str) -> "AnalysisConfig":
        """A copy whose ``higgs_csv`` samples read ``path`` instead of the configured file."""
        samples = {n: dataclasses.replace(s, path=path) if s.source == "higgs_csv" else s
                   for n, s in self.samples.items()}
        return dataclasses.replace(self, samples=types.MappingProxyType(samples))

    def resolve_path(self, path: str) -> Path:
        """Resolve a path of the config: absolute, ``~``-expanded, or relative to the repository root."""
        p = Path(os.path.expandvars(os.path.expanduser(path)))
        return p if p.is_absolute() else (REPO_ROOT / p).resolve()


# --------------------------------------------------------------------------------------------------------------
# generic conversion of nested dicts into the dataclasses above
# --------------------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, base: Any = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        _check(isinstance(value, Mapping), f"{path}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, path, base)
    if origin is Literal:
        _check(value in args, f"{path}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (collections.abc.Mapping, dict) or tp is dict:
        _check(isinstance(value, Mapping), f"{path}: expected a mapping, got {type(value).__name__}")
        ktp, vtp = args if args else (str, Any)
        out = {}
        for k, v in value.items():
            _check(isinstance(k, str), f"{path}: keys must be strings, got {k!r}")
            out[k] = _convert(v, vtp, f"{path}.{k}")
        return types.MappingProxyType(out) if ktp is str and vtp is not Any else out
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), f"{path}: expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        return tuple(_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        _check(isinstance(value, bool), f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool),
               f"{path}: expected a number, got {value!r}")
        _check(math.isfinite(value), f"{path}: must be finite, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} at {path}")  # programming error


def _build(cls: type, data: Mapping[str, Any], path: str, base: Any = None) -> Any:
    """Build dataclass ``cls`` from ``data``; keys not given keep their value in ``base`` (a default instance of
    ``cls``, so that e.g. ``physics: {top: {mass: 173}}`` keeps the default top width) or the class default."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (allowed here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if base is not None:
            default = getattr(base, name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        if name in data:
            sub_base = default if dataclasses.is_dataclass(default) else None
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", sub_base)
        elif default is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
        elif base is not None:
            kwargs[name] = default
    return cls(**kwargs)


def available_configs() -> list[str]:
    """Names of the configurations shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_from_dict(data: Mapping[str, Any], label: str = "<dict>") -> AnalysisConfig:
    """Validate a plain mapping into an :class:`AnalysisConfig`."""
    try:
        _check(isinstance(data, Mapping), f"top level must be a mapping, got {type(data).__name__}")
        cfg = _build(AnalysisConfig, data, "")
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"config {label!r}: {e}") from None
    return cfg


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping defines the same key twice (PyYAML would silently keep the last value)."""


class ConfigLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` (plain data only, no arbitrary tags) that refuses a key defined twice in one
    mapping, at any depth, naming the key (dotted from the top level) and both lines. Merge keys (``<<``) keep
    YAML's meaning: keys given explicitly override merged ones."""

    def __init__(self, stream):
        super().__init__(stream)
        self._key_paths: dict[int, str] = {}  # id(mapping node) -> its dotted key path

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            prefix = self._key_paths.get(id(node), "")
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                name = f"{prefix}{key}"
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise DuplicateKeyError(f"duplicate key {name!r} (lines {first} and {line})")
                seen[key] = line
                if isinstance(value_node, yaml.MappingNode):
                    self._key_paths[id(value_node)] = f"{name}."
        return super().construct_mapping(node, deep=deep)


def load_config(name_or_path: str | os.PathLike) -> AnalysisConfig:
    """Load and validate a configuration by shipped name (``quickstart``, ``paper``, ``higgs_uci``) or path.
    The file must be UTF-8 and define no key twice (:class:`ConfigLoader`)."""
    s = str(name_or_path)
    path = Path(s)
    if not (s.endswith((".yaml", ".yml")) or os.sep in s):
        path = CONFIG_DIR / f"{s}.yaml"
        if not path.is_file():
            raise ConfigError(f"config {s!r}: no such configuration; shipped: {', '.join(available_configs())}")
    if not path.is_file():
        raise ConfigError(f"config {s!r}: file not found: {path}")
    where = f"config {s!r}" if str(path) == s else f"config {s!r} ({path})"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{where}: not UTF-8 text: byte 0x{raw[e.start]:02x} at byte position {e.start} "
                          f"(line {line}, column {column})") from None
    loader = ConfigLoader(text)
    loader.name = str(path)  # for the position in PyYAML's messages
    try:
        data = loader.get_single_data()
    except DuplicateKeyError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {s!r}: not valid YAML: {e}") from None
    finally:
        loader.dispose()
    return config_from_dict(data, label=path.stem if path.parent == CONFIG_DIR else s)


def config_to_dict(obj: Any) -> Any:
    """Plain (YAML-serialisable) form of a configuration or any part of it."""
    if dataclasses.is_dataclass(obj):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    return obj
