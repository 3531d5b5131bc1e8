"""Conditional applications on the truth record (issue 15): nu-Flows and the b-jet energy regression.

:class:`TrainRegression` trains, per application of ``regression.applications``, method (``flow``: a conditional
flow of the zoo behind an embedding of the event; ``dnn``: a feed-forward Huber and quantile regression, the
classical learned baseline) and seed, on the train partitions of the simulated samples' object-level columns
(validation partition for early stopping). :class:`EvaluateRegression` measures every method on the reference
partitions against the classical baseline (the W-mass solution; no correction) and the truth, and draws the
figures. The physics lives in :mod:`analysis.neutrino` and :mod:`analysis.bjet`, the models in
:mod:`models.fit` and :mod:`models.regression`.
"""

from __future__ import annotations

import time

import numpy as np

from analysis import bjet, neutrino
from analysis.io import InputError, atomic_directory, write_json
from analysis.ntuple import read_objects
from analysis.partition import split_objects, split_rows
from analysis.plotting import plot_training_history
from analysis.regression_plots import plot_bjet_regression, plot_neutrino_regression
from models.fit import fit_conditional, sample_posterior
from models.io import load_conditional, save_conditional
from models.registry import hyperparameters
from models.regression import fit_regressor, predict
from workflow.base import AnalysisTask, AnalysisWorkflow
from workflow.flows import FlowTask
from workflow.skim import Skim

APPLICATIONS = {"neutrino": neutrino, "bjet": bjet}
"""Application name -> its physics module (``regression_data``, ``embedding_spec``, ``target_table``,
``evaluate``)."""
LABELS = {"neutrino": (0,), "bjet": (0, 1)}
"""The samples (labels) each application trains and is measured on: the neutrino of single-lepton ttbar; b jets
of ttbar and of the heavy-Higgs signal (h -> bb)."""
METHODS = ("flow", "dnn")


class RegressionData(AnalysisTask):
    """Shared by the regression tasks: the object-level columns of the application's samples, for training (the
    regression samples, or the analysis samples' train and validation partitions) and for evaluation (the
    analysis samples' reference partitions, partitioned as :class:`~workflow.flows.PartitionEvents` partitions
    the flat ntuples)."""

    def training_skim(self) -> Skim:
        return Skim.req(self, branch=-1, regression=bool(self.analysis_config.regression_samples))

    def _objects(self, application: str, skim: Skim) -> dict[str, dict[str, np.ndarray]]:
        cfg = self.analysis_config
        out = {sample: read_objects([t["ntuple"].path for t in targets])
               for sample, targets in skim.outputs_by_sample().items()
               if cfg.sample(sample).label in LABELS[application]}
        if not out:
            raise InputError(f"regression {application!r}: no sample with label {LABELS[application]}")
        return out

    def training_data(self, application: str, skim: Skim) -> dict[str, list[dict[str, np.ndarray]]]:
        """partition (``train``, ``validation``) -> the object columns of each sample."""
        cfg = self.analysis_config
        out: dict[str, list] = {"train": [], "validation": []}
        for sample, objects in self._objects(application, skim).items():
            if cfg.regression_samples:
                n = len(objects["obj_n_jets"])
                val, train = split_rows(n, 0.1, cfg.seed)
                parts = {"train": train, "validation": val}
                for p, rows in parts.items():
                    out[p].append({k: v[rows] for k, v in objects.items()})
            else:
                parts = split_objects(objects, cfg.partition, cfg.seed, sample)
                for p in out:
                    out[p].append(parts[p])
        return out

    def reference_data(self, application: str, skim: Skim) -> dict[str, dict[str, np.ndarray]]:
        """sample -> the object columns of its reference partition."""
        cfg = self.analysis_config
        return {sample: split_objects(objects, cfg.partition, cfg.seed, sample)["reference"]
                for sample, objects in self._objects(application, skim).items()}


class TrainRegression(RegressionData, FlowTask, AnalysisWorkflow):
    """One branch per (application, method, seed). Outputs under ``<application>/<method>_<seed>/``:
    ``model.pt`` (weights only), ``history.json`` and ``training.png``/``.pdf``."""

    def create_branch_map(self):
        r = self.analysis_config.regression
        return dict(enumerate({"application": a, "method": m, "seed": s}
                              for a in r.applications for m in METHODS for s in r.seeds))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["skim"] = self.training_skim()
        return reqs

    def requires(self):
        return self.training_skim()

    def output(self):
        d = self.branch_data
        base = (d["application"], f"{d['method']}_{d['seed']}")
        return {"model": self.local_target(*base, "model.pt"), "history": self.local_target(*base, "history.json"),
                "plot": self.local_target(*base, "training.png")}

    def run(self):
        cfg, d = self.analysis_config, self.branch_data
        r, app = cfg.regression, APPLICATIONS[d["application"]]
        data = self.training_data(d["application"], self.requires())
        targets, contexts = {}, {}
        for p in ("train", "validation"):
            pieces = [app.regression_data(objects) for objects in data[p]]
            targets[p] = np.concatenate([t for t, _ in pieces])
            c = [c for _, c in pieces]
            contexts[p] = tuple(np.concatenate(x) for x in zip(*c)) if isinstance(c[0], tuple) else np.concatenate(c)
        t = r.training
        if t.max_train_events and len(targets["train"]) > t.max_train_events:  # a seeded subset of all samples
            rows = np.sort(np.random.default_rng(d["seed"]).choice(len(targets["train"]), t.max_train_events,
                                                                     replace=False))
            targets["train"] = targets["train"][rows]
            c = contexts["train"]
            contexts["train"] = tuple(x[rows] for x in c) if isinstance(c, tuple) else c[rows]
        settings = self.train_settings(t, d["seed"])
        embedding = app.embedding_spec(r.embedding_features, list(r.embedding_hidden))
        label = f"{d['application']} {d['method']} seed {d['seed']}"

        def on_epoch(rec):
            self.publish_message(f"{label}: epoch {rec.epoch}/{t.epochs} train {rec.train_nll:.4f} "
                                 f"validation {rec.val_median_nll:.4f} ({rec.events_per_s:.0f} ev/s)")

        if d["method"] == "flow":
            table = app.target_table()
            fit = fit_conditional(r.model, hyperparameters(r.model, r.hyperparameters), targets, contexts,
                                  table.names, table, settings, embedding, on_epoch)
        else:
            fit = fit_regressor(targets, contexts, embedding, settings, list(r.dnn_hidden), on_epoch=on_epoch)
        out = self.output()
        meta = {"application": d["application"], "method": d["method"], "seed": d["seed"],
                "events": {p: int(len(v)) for p, v in targets.items()}, "best_epoch": fit.result.best_epoch,
                "train_seconds": fit.result.train_seconds}
        save_conditional(out["model"].path, fit, meta)
        history = [vars(h) for h in fit.result.history]
        write_json(out["history"].path, {**meta, "history": history})
        plot_training_history(history, out["plot"].path, title=label)


class EvaluateRegression(RegressionData, FlowTask, AnalysisWorkflow):
    """One branch per application: every trained method and seed on ``regression.evaluation_events`` events of
    the reference partitions, against the classical baseline and the truth. Outputs under ``<application>/``:
    ``metrics.json`` and the figures ``<application>_*.png``/``.pdf`` (:mod:`analysis.regression_plots`)."""

    def create_branch_map(self):
        return dict(enumerate(self.analysis_config.regression.applications))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["models"] = TrainRegression.req(self)
        reqs["skim"] = Skim.req(self)
        reqs["training"] = self.training_skim()
        return reqs

    def requires(self):
        train = TrainRegression.req(self)
        bmap = train.create_branch_map()
        return {"skim": Skim.req(self, branch=-1), "training": self.training_skim(),
                "models": {f"{d['method']}_{d['seed']}": TrainRegression.req(self, branch=b)
                           for b, d in bmap.items() if d["application"] == self.branch_data}}

    def output(self):
        return {"metrics": self.local_target(self.branch_data, "metrics.json"),
                "figures": self.local_target(self.branch_data, "figures", dir=True)}

    def run(self):
        cfg, name = self.analysis_config, self.branch_data
        r, app = cfg.regression, APPLICATIONS[name]
        data = self.reference_data(name, self.requires()["skim"])
        inputs = self.input()["models"]
        first = next(iter(data))
        per_sample = max(1, r.evaluation_events // len(data))
        reference = {s: {k: v[:per_sample] for k, v in objects.items()} for s, objects in data.items()}
        loaded = {key: load_conditional(t["model"].path) for key, t in inputs.items()}  # (fit, metadata)
        fits = {key: fit for key, (fit, _) in loaded.items()}
        result: dict = {"application": name, "samples": r.samples, "seeds": list(r.seeds), "per_seed": {}}
        examples = {}
        for seed in r.seeds:
            flow, dnn = fits[f"flow_{seed}"], fits[f"dnn_{seed}"]
            self.publish_message(f"{name}: seed {seed}: {r.samples} posterior draws per event")
            t0 = time.perf_counter()
            if name == "neutrino":
                objects = reference[first]
                _, context = app.regression_data(objects)
                draws, logp = sample_posterior(flow, context, r.samples, seed=seed, device=self.device)
                draws = neutrino.from_lepton_frame(draws, objects)
                central, quantiles = predict(dnn.model, context)
                estimates = {"w_mass": neutrino.w_mass_neutrino(objects),
                             "dnn": neutrino.from_lepton_frame(central, objects),
                             "flow_sample": draws[0], "flow_mode": neutrino.mode_of_samples(draws, logp)}
                metrics = app.evaluate(objects, estimates, {"flow": draws})
                metrics["calibration"]["dnn"] = {"pz": neutrino.quantile_coverage(
                    quantiles[:, 2], neutrino.true_neutrino(objects)[:, 2])}
                n_rows = len(context[0])
                examples[seed] = {"objects": objects, "draws": draws, "estimates": estimates}
            else:
                predictions: dict = {"dnn": {}, "flow_median": {}, "flow_recalibrated": {}}
                recal = self._recalibration(flow, seed)
                n_rows = 0
                for s, objects in reference.items():
                    _, context = app.regression_data(objects)
                    n_rows += len(context)
                    draws, _ = sample_posterior(flow, context, r.samples, seed=seed, device=self.device)
                    q = np.quantile(draws[..., 0], [0.5, 0.16, 0.25, 0.75, 0.84], axis=0)
                    predictions["flow_median"][s] = dict(zip(("response", "q16", "q25", "q75", "q84"), q))
                    qc = recal.quantiles(draws[..., 0], bjet.b_jet_pt(objects), (0.5, 0.16, 0.25, 0.75, 0.84))
                    predictions["flow_recalibrated"][s] = dict(zip(("response", "q16", "q25", "q75", "q84"),
                                                                   qc.values()))
                    central, quantiles = predict(dnn.model, context)
                    predictions["dnn"][s] = {"response": central[:, 0],
                                             **dict(zip(("q16", "q25", "q75", "q84"), quantiles[:, 0].T))}
                    if s == first:
                        examples[seed] = {"draws": draws[..., 0], "truth": bjet.response(objects,
                                                                                         *bjet.b_jets(objects))}
                samples = {s: (objects, cfg.sample(s).label) for s, objects in reference.items()}
                metrics = app.evaluate(samples, predictions)
                examples[seed]["reference"] = reference
                examples[seed]["predictions"] = predictions
            metrics["timing"] = {"evaluation_seconds": time.perf_counter() - t0, "posterior_draws": r.samples * n_rows,
                                 "train_seconds": {k: meta["train_seconds"] for k, (_, meta) in loaded.items()
                                                   if k.endswith(f"_{seed}")}}
            result["per_seed"][str(seed)] = metrics
        out = self.output()
        seed = r.seeds[0]
        plot = plot_neutrino_regression if name == "neutrino" else plot_bjet_regression
        with atomic_directory(out["figures"].path) as tmp:
            plot(result["per_seed"][str(seed)], examples[seed], tmp, title=f"{cfg.name}, seed {seed}")
        write_json(out["metrics"].path, result)

    def _recalibration(self, flow, seed: int) -> bjet.Recalibration:
        """The b-jet flow's quantile recalibration (:class:`analysis.bjet.Recalibration`) from its posterior on
        up to ``regression.evaluation_events`` held-out jets of the training samples' validation partition (the
        early-stopping jets: never trained on, and apart from the reference jets the metrics use)."""
        r = self.analysis_config.regression
        pit, reco = [], []
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA1]))
        for objects in self.training_data("bjet", self.requires()["training"])["validation"]:
            truth, context = bjet.regression_data(objects)
            keep = slice(0, r.evaluation_events)
            draws, _ = sample_posterior(flow, context[keep], r.samples, seed=seed + 1, device=self.device)
            pit.append(bjet.pit_values(draws[..., 0], truth[keep, 0], rng))
            reco.append(bjet.b_jet_pt(objects)[keep])
        return bjet.Recalibration(np.concatenate(pit), np.concatenate(reco))

