"""The unfolding flow (issue 16): p(parton-level ttbar | reconstructed event), trained, applied and measured.

:class:`TrainUnfolding` trains one conditional flow per seed (``unfolding.seeds``) on the dedicated training
sample (or the analysis partitions); :class:`UnfoldSample` applies each to the background's reference partition
(closure draws, per-event posteriors for the calibration) and to the top-mass-shifted pseudo-data;
:class:`ReweightUnfolding` does one iteration of the prior reweighting per shift; :class:`EvaluateUnfolding`
measures everything against the truth record and against iterative Bayesian unfolding and draws the figures.
The physics lives in :mod:`analysis.unfolding`, the model in :mod:`models.fit`.
"""

from __future__ import annotations

import numpy as np

from analysis import unfolding as unf
from analysis.config import shift_tag
from analysis.io import InputError, atomic_directory, atomic_path, load_npz, write_json
from analysis.ntuple import read_objects
from analysis.partition import split_objects, split_rows
from analysis.plotting import plot_training_history
from analysis.unfolding_eval import unfold_masses, unfold_reference
from models.fit import fit_conditional
from models.io import load_conditional, save_conditional
from models.registry import hyperparameters
from workflow.base import AnalysisTask, AnalysisWorkflow
from workflow.flows import FlowTask
from workflow.skim import Skim

RERUN = "TrainUnfolding"


class UnfoldingData(AnalysisTask):
    """Shared by the unfolding tasks: the object-level columns (events with the ttbar hard process found) of the
    training sample, the reference partition and the shifted pseudo-data."""

    def _check_enabled(self):
        if not self.analysis_config.unfolding.enabled:
            raise SystemExit(f"hepflows: {self.task_family}: configuration {self.config_name!r} has no unfolding "
                             "(unfolding.enabled: false)")

    def backgrounds(self) -> list[str]:
        return [n for n, s in self.analysis_config.samples.items()
                if s.simulated and s.process == "ttbar" and s.label == 0]

    def training_skim(self) -> Skim:
        return Skim.req(self, branch=-1, unfolding=bool(self.analysis_config.unfolding.train_factor))

    def _objects(self, skim: Skim, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
        by_sample = skim.outputs_by_sample()
        return {n: read_objects([t["ntuple"].path for t in by_sample[n]]) for n in names}

    def training_data(self, skim: Skim) -> dict[str, dict[str, np.ndarray]]:
        """partition (``train``, ``validation``) -> object columns of the ttbar events."""
        cfg = self.analysis_config
        parts: dict[str, list] = {"train": [], "validation": []}
        if cfg.unfolding.train_factor:
            for name, objects in self._objects(skim, [f"{n}_unfolding" for n in self.backgrounds()]).items():
                val, train = split_rows(len(objects["obj_n_jets"]), 0.1, cfg.seed)
                parts["train"].append({k: v[train] for k, v in objects.items()})
                parts["validation"].append({k: v[val] for k, v in objects.items()})
        else:
            for name, objects in self._objects(skim, self.backgrounds()).items():
                split = split_objects(objects, cfg.partition, cfg.seed, name)
                for p in parts:
                    parts[p].append(split[p])
        return {p: unf.with_truth(_concat(v)) for p, v in parts.items()}

    def reference_data(self, skim: Skim) -> dict[str, np.ndarray]:
        cfg = self.analysis_config
        pieces = [split_objects(o, cfg.partition, cfg.seed, n)["reference"]
                  for n, o in self._objects(skim, self.backgrounds()).items()]
        return unf.with_truth(_concat(pieces))

    def shifted_data(self, skim: Skim, shift: float) -> dict[str, np.ndarray]:
        names = [f"{n}_unfolding_mt_{shift_tag(shift)}" for n in self.backgrounds()]
        return unf.with_truth(_concat(list(self._objects(skim, names).values())))


def _concat(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not pieces:
        raise InputError("unfolding: no simulated ttbar background sample (source generator or pythia8)")
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


def _train(task, data: dict, seed: int, weights: np.ndarray | None, label: str):
    """Fit the unfolding flow on ``data`` (training and validation object columns); with ``weights`` the training
    events are first resampled with those weights (seeded): the reweighted prior of the iteration."""
    cfg = task.analysis_config
    u = cfg.unfolding
    targets, contexts = {}, {}
    for p in ("train", "validation"):
        targets[p], contexts[p] = unf.regression_data(data[p])
    n = len(targets["train"])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0F0D]))
    rows = None
    if weights is not None:
        rows = np.sort(rng.choice(n, size=min(n, u.training.max_train_events or n), p=weights / weights.sum()))
    elif u.training.max_train_events and n > u.training.max_train_events:
        rows = np.sort(rng.choice(n, u.training.max_train_events, replace=False))
    if rows is not None:
        targets["train"] = targets["train"][rows]
        contexts["train"] = tuple(c[rows] for c in contexts["train"])
    settings = task.train_settings(u.training, seed)
    epochs = u.training.epochs

    def on_epoch(rec):
        task.publish_message(f"{label}: epoch {rec.epoch}/{epochs} train {rec.train_nll:.4f} validation "
                             f"{rec.val_median_nll:.4f} ({rec.events_per_s:.0f} ev/s)")

    fit = fit_conditional(u.model, hyperparameters(u.model, u.hyperparameters), targets, contexts,
                          list(unf.TARGETS), unf.target_table(), settings,
                          unf.embedding_spec(u.embedding_features, list(u.embedding_hidden)), on_epoch)
    meta = {"seed": seed, "events": {p: int(len(v)) for p, v in targets.items()}, "best_epoch": fit.result.best_epoch,
            "train_seconds": fit.result.train_seconds, "reweighted": weights is not None}
    return fit, meta


def _save(task, fit, meta: dict, label: str) -> None:
    out = task.output()
    save_conditional(out["model"].path, fit, meta)
    history = [vars(h) for h in fit.result.history]
    write_json(out["history"].path, {**meta, "history": history})
    plot_training_history(history, out["plot"].path, title=label)


class TrainUnfolding(UnfoldingData, FlowTask, AnalysisWorkflow):
    """One branch per seed of ``unfolding.seeds``. Outputs under ``seed_<seed>/``: ``model.pt`` (weights only),
    ``history.json`` and ``training.png``/``.pdf``."""

    def create_branch_map(self):
        self._check_enabled()
        return dict(enumerate(self.analysis_config.unfolding.seeds))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["skim"] = self.training_skim()
        return reqs

    def requires(self):
        return self.training_skim()

    def output(self):
        base = f"seed_{self.branch_data}"
        return {"model": self.local_target(base, "model.pt"), "history": self.local_target(base, "history.json"),
                "plot": self.local_target(base, "training.png")}

    def run(self):
        seed = self.branch_data
        label = f"unfolding flow seed {seed}"
        fit, meta = _train(self, self.training_data(self.requires()), seed, None, label)
        _save(self, fit, meta, label)


class UnfoldSample(UnfoldingData, FlowTask, AnalysisWorkflow):
    """One branch per (seed, sample): ``reference`` (the background's reference partition: ``closure_draws``
    posterior draws per event for the closure, ``unfolding.samples`` draws for the first ``evaluation_events`` events for the
    calibration, stored as the truth's rank and interval coverage per quantity, and a few whole posteriors as
    examples) or a top-mass shift (``shift_draws`` draws per event of the top masses). Output:
    ``<sample>/seed_<seed>/unfolded.npz``."""

    def create_branch_map(self):
        self._check_enabled()
        u = self.analysis_config.unfolding
        samples = ["reference"] + [float(s) for s in u.mass_shifts]
        return dict(enumerate({"seed": s, "sample": x} for s in u.seeds for x in samples))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["models"] = TrainUnfolding.req(self)
        reqs["skim"] = Skim.req(self)
        reqs["shifted"] = Skim.req(self, unfolding=True)
        return reqs

    def requires(self):
        train = TrainUnfolding.req(self)
        branch = {s: b for b, s in train.create_branch_map().items()}[self.branch_data["seed"]]
        return {"model": TrainUnfolding.req(self, branch=branch),
                "skim": Skim.req(self, branch=-1, unfolding=self.branch_data["sample"] != "reference")}

    def output(self):
        d = self.branch_data
        sample = "reference" if d["sample"] == "reference" else f"mt_{shift_tag(d['sample'])}"
        return self.local_target(sample, f"seed_{d['seed']}", "unfolded.npz")

    def run(self):
        cfg, d = self.analysis_config, self.branch_data
        u = cfg.unfolding
        fit, _ = load_conditional(self.input()["model"]["model"].path, RERUN)
        skim = self.requires()["skim"]
        if d["sample"] == "reference":
            objects = self.reference_data(skim)
            result = unfold_reference(fit, objects, u.samples, u.evaluation_events, d["seed"], cfg.physics.b_mass,
                                      self.device, self.publish_message, u.closure_draws)
        else:
            objects = self.shifted_data(skim, d["sample"])
            result = unfold_masses(fit, objects, u.shift_draws, d["seed"], cfg.physics.b_mass, self.device)
        with atomic_path(self.output().path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **result)


class ReweightUnfolding(UnfoldingData, FlowTask, AnalysisWorkflow):
    """One branch per top-mass shift (``unfolding.reweight``): one iteration of the prior reweighting (Backes
    et al.): the first seed's training events reweighted by the ratio of the unfolded top-mass distribution of
    the shifted pseudo-data to the training one (:func:`analysis.unfolding.prior_weights`), the flow retrained
    on them, and the pseudo-data unfolded again. Outputs under ``mt_<shift>/``: ``model.pt``, ``history.json``,
    ``training.png``, ``unfolded.npz``."""

    def create_branch_map(self):
        self._check_enabled()
        u = self.analysis_config.unfolding
        return dict(enumerate(float(s) for s in u.mass_shifts)) if u.reweight else {}

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["unfolded"] = UnfoldSample.req(self)
        reqs["skim"] = self.training_skim()
        reqs["shifted"] = Skim.req(self, unfolding=True)
        return reqs

    def _nominal(self) -> UnfoldSample:
        seed = self.analysis_config.unfolding.seeds[0]
        bmap = UnfoldSample.req(self).create_branch_map()
        b = next(b for b, d in bmap.items() if d["seed"] == seed and d["sample"] == self.branch_data)
        return UnfoldSample.req(self, branch=b)

    def requires(self):
        return {"unfolded": self._nominal(), "training": self.training_skim(),
                "shifted": Skim.req(self, branch=-1, unfolding=True)}

    def output(self):
        base = f"mt_{shift_tag(self.branch_data)}"
        return {k: self.local_target(base, name) for k, name in
                (("model", "model.pt"), ("history", "history.json"), ("plot", "training.png"),
                 ("unfolded", "unfolded.npz"))}

    def run(self):
        cfg, shift = self.analysis_config, self.branch_data
        u = cfg.unfolding
        seed = u.seeds[0]
        shifted = load_npz(self.input()["unfolded"].path, ("m_t_had", "m_t_lep"))  # nominal model
        data = self.training_data(self.requires()["training"])
        truth = unf.observables(unf.regression_data(data["train"])[0], data["train"]["obj_lepton_phi"],
                                cfg.physics.b_mass)
        weights = unf.prior_weights((truth["m_t_had"], truth["m_t_lep"]),
                                    (np.ravel(shifted["m_t_had"]), np.ravel(shifted["m_t_lep"])),
                                    unf.top_mass_edges(cfg.physics.top.mass, cfg.physics.top.width))
        label = f"unfolding flow reweighted to mt {shift:+g} (seed {seed})"
        fit, meta = _train(self, data, seed, weights, label)
        meta["weights"] = {"mean": float(weights.mean()), "min": float(weights.min()), "max": float(weights.max())}
        _save(self, fit, meta, label)
        result = unfold_masses(fit, self.shifted_data(self.requires()["shifted"], shift), u.shift_draws, seed,
                               cfg.physics.b_mass, self.device)
        with atomic_path(self.output()["unfolded"].path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **result)


class EvaluateUnfolding(UnfoldingData, FlowTask):
    """Every measure of :mod:`analysis.unfolding` on the stored unfoldings: closure, calibration, C2ST, the IBU
    baseline, the top-mass shifts before and after reweighting, timing. Outputs: ``metrics.json`` and
    ``figures/``."""

    def requires(self):
        self._check_enabled()
        reqs = {"unfolded": UnfoldSample.req(self), "skim": Skim.req(self), "training": self.training_skim()}
        if self.analysis_config.unfolding.reweight:
            reqs["reweighted"] = ReweightUnfolding.req(self)
        return reqs

    def output(self):
        return {"metrics": self.local_target("metrics.json"), "figures": self.local_target("figures", dir=True)}

    def run(self):
        from analysis.unfolding_plots import plot_unfolding
        from analysis.unfolding_eval import evaluate

        cfg = self.analysis_config
        u = cfg.unfolding
        unfolded = UnfoldSample.req(self)
        bmap = unfolded.create_branch_map()
        targets = unfolded.output()["collection"].targets
        stored = {(d["seed"], d["sample"]): load_npz(targets[b].path) for b, d in bmap.items()}
        reweighted = {}
        if u.reweight:
            rw = ReweightUnfolding.req(self)
            rw_targets = rw.output()["collection"].targets
            reweighted = {s: load_npz(rw_targets[b]["unfolded"].path) for b, s in rw.create_branch_map().items()}
        self.publish_message("IBU baseline: reconstructing m_tt and the hadronic top on the training events")
        train = self.training_data(self.requires()["training"])["train"]
        reference = self.reference_data(self.requires()["skim"])
        metrics, figures = evaluate(cfg, stored, reweighted, train, reference, message=self.publish_message)
        out = self.output()
        with atomic_directory(out["figures"].path) as tmp:
            plot_unfolding(metrics, figures, tmp, title=f"{cfg.name}: unfolding flow")
        write_json(out["metrics"].path, metrics)
        s = metrics["summary"]
        self.publish_message(f"closure chi2/ndf max {s['closure_chi2_ndf_max']:.2f}, calibration KS max "
                             f"{s['calibration_ks_max']:.3f}, C2ST {s['c2st_auc']:.3f}")
