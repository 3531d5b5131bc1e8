"""Classifier stages: training per classifier, their comparison, and scoring of simulated and generated events."""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import roc_auc_score

from analysis.classifier_plots import plot_classifier, plot_roc_comparison
from analysis.config import OBJECT_CLASSIFIERS
from analysis.features import FEATURES
from analysis.io import InputError, atomic_path, load_npz, write_json
from analysis.limits import simulated_limit
from analysis.statistics import StatisticsError
from analysis.templates import TemplateError
from analysis.ntuple import feature_matrix, read_ntuples, read_objects
from analysis.objects import classifier_inputs, occlusions
from analysis.partition import split_objects
from models.classifiers import CLASSIFIER_FILES, load_classifier, occlusion_importance, permutation_importance, \
    save_classifier, train_classifier
from workflow.base import AnalysisTask, AnalysisWorkflow, FeatureSetMixin
from workflow.flows import PartitionEvents, SampleFlow, TruthSample
from workflow.skim import Skim


def labelled_events(partition: PartitionEvents, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels (1 signal, 0 background) and weights of partition ``name``."""
    xs, ys, ws = [], [], []
    for label in (0, 1):
        files = partition.files(name, label)
        if not files:
            raise InputError(f"no {'signal' if label else 'background'} sample in the configuration; the "
                             "classifiers need both")
        cols = read_ntuples(files)
        xs.append(feature_matrix(cols))
        ys.append(np.full(len(cols["weight"]), label))
        ws.append(cols["weight"])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def labelled_objects(cfg, skim: Skim, names=("train", "validation", "reference")) -> dict[str, tuple]:
    """partition -> the object-level inputs (:func:`analysis.objects.classifier_inputs`) of its events, row for
    row with :func:`labelled_events` of the same partition (background samples, then signal, in configuration
    order; each sample's objects split as its flat ntuple is)."""
    by_sample = skim.outputs_by_sample()
    parts: dict[str, list] = {p: [] for p in names}
    for label in (0, 1):
        for sample, sc in cfg.samples.items():
            if sc.label != label:
                continue
            split = split_objects(read_objects([t["ntuple"].path for t in by_sample[sample]]), cfg.partition,
                                  cfg.seed, sample)
            for p in names:
                parts[p].append(classifier_inputs(split[p]))
    return {p: tuple(np.concatenate([x[i] for x in arrays]) for i in range(4)) for p, arrays in parts.items()}


class TrainClassifier(FeatureSetMixin, AnalysisWorkflow):
    """Train each configured classifier (``classifiers.models``: bdt, nn, transformer) to separate simulated
    signal from simulated background on the train partition (validation partition for early stopping); one branch
    each. The transformer reads the reconstructed objects of the same events (the skim's Objects tree, split as
    the partitions are); its importances are the AUC drops when an object group is hidden, not permutations.

    Outputs under ``<classifier>/``: the model (``model.skops`` or ``model.pt``), ``metrics.json`` (ROC AUC on
    the reference partition, importances, training history and time, scoring rate), ``reference_scores.npz`` and
    ``classifier.png``/``.pdf`` (score distributions, ROC, importances, training curve).
    """

    def create_branch_map(self):
        return dict(enumerate(self.analysis_config.classifiers.models))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["partition"] = PartitionEvents.req(self)
        return reqs

    def requires(self):
        reqs = {"partition": PartitionEvents.req(self)}
        if self.branch_data in OBJECT_CLASSIFIERS:
            reqs["skim"] = Skim.req(self, branch=-1)
        return reqs

    def output(self):
        kind = self.branch_data
        return {name: self.local_target(kind, name) for name in
                (CLASSIFIER_FILES[kind], "metrics.json", "reference_scores.npz", "classifier.png", "classifier.pdf")}

    def run(self):
        cfg = self.analysis_config
        kind = self.branch_data
        part = self.requires()["partition"]
        data = {p: labelled_events(part, p) for p in ("train", "validation", "reference")}
        (xt, yt, _), (xv, yv, _), (xr, yr, wr) = data["train"], data["validation"], data["reference"]
        if kind in OBJECT_CLASSIFIERS:
            self.publish_message(f"{kind}: reading the reconstructed objects")
            objects = labelled_objects(cfg, self.requires()["skim"])
            for p, (_, y, _) in data.items():
                if len(objects[p][0]) != len(y):
                    raise InputError(f"{kind}: {len(objects[p][0])} events of objects but {len(y)} of features in "
                                     f"the {p} partition; rerun Skim and PartitionEvents")
            xt, xv, xr = objects["train"], objects["validation"], objects["reference"]
        self.publish_message(f"{kind}: training on {len(yt):,} events ({int(yt.sum()):,} signal)")
        epochs = getattr(cfg.classifiers, kind).epochs if kind != "bdt" else 0

        def on_epoch(rec):
            msg = (f"{kind} epoch {rec['epoch']}/{epochs}: loss {rec['train_loss']:.4f}, "
                   f"validation {rec['val_loss']:.4f}, AUC {rec['val_auc']:.4f}")
            self.logger.info(msg)
            self.publish_message(msg)
            self.publish_progress(100.0 * rec["epoch"] / epochs)

        try:
            clf = train_classifier(kind, FEATURES, xt, yt, xv, yv, cfg.classifiers, seed=cfg.seed, on_epoch=on_epoch)
        except (ValueError, FloatingPointError) as e:
            raise InputError(f"classifier {kind}: {e}") from None
        t0 = time.perf_counter()
        score = clf.score(xr)
        rate = len(score) / max(time.perf_counter() - t0, 1e-9)
        auc = float(roc_auc_score(yr, score))
        if kind in OBJECT_CLASSIFIERS:
            importance = occlusion_importance(clf, xr, yr, occlusions(), seed=cfg.seed)
        else:
            importance = permutation_importance(clf, xr, yr, seed=cfg.seed)
        out = self.output()
        save_classifier(out[CLASSIFIER_FILES[kind]].path, clf)
        with atomic_path(out["reference_scores.npz"].path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, label=yr, score=score, weight=wr)
        write_json(out["metrics.json"].path, {
            "classifier": kind, "reference_auc": auc, "train_seconds": clf.train_seconds,
            "inputs": "objects" if kind in OBJECT_CLASSIFIERS else "features", "scoring_events_per_second": rate,
            "importance_kind": "occlusion" if kind in OBJECT_CLASSIFIERS else "permutation",
            "events": {p: {"signal": int(d[1].sum()), "background": int((d[1] == 0).sum())} for p, d in data.items()},
            "importance": dict(sorted(importance.items(), key=lambda kv: -kv[1])), "history": clf.history})
        plot_classifier(kind, yr, score, wr, auc, importance, clf.history, out["classifier.png"].path,
                        title=f"{cfg.name}: {kind}")
        self.publish_message(f"{kind}: reference ROC AUC {auc:.4f} ({clf.train_seconds:.0f} s)")


class CompareClassifiers(FeatureSetMixin, AnalysisTask):
    """ROC curves of all classifiers on the same reference events, their AUCs and the expected limit each gives
    with simulated templates of the reference partition (:func:`analysis.limits.simulated_limit`: the same
    binning rule, score cut and background systematic for all; ``comparison.json``)."""

    def requires(self):
        return TrainClassifier.req(self)

    def output(self):
        return {name: self.local_target(name) for name in ("roc.png", "roc.pdf", "comparison.json")}

    def run(self):
        curves, rows = {}, []
        for target in self.input()["collection"].targets.values():
            m = target["metrics.json"].load(formatter="json")
            z = load_npz(target["reference_scores.npz"].path, required=("label", "score"))
            curves[m["classifier"]] = (z["label"], z["score"], m["reference_auc"])
            try:
                limit = simulated_limit(z["score"], z["label"], z["weight"], self.analysis_config.limits)
            except (StatisticsError, TemplateError) as e:  # scores that make no template: said, not fatal
                limit = {"error": f"{type(e).__name__}: {e}"}
            rows.append({"classifier": m["classifier"], "inputs": m.get("inputs", "features"),
                         "reference_auc": m["reference_auc"], "train_seconds": m["train_seconds"],
                         "scoring_events_per_second": m.get("scoring_events_per_second"),
                         "top_features": list(m["importance"])[:5], "expected_limit": limit})
        out = self.output()
        plot_roc_comparison(curves, out["roc.png"].path, title=self.analysis_config.name)
        write_json(out["comparison.json"].path, {"classifiers": rows})


class ScoreEvents(FeatureSetMixin, AnalysisWorkflow):
    """Score, with each trained classifier (one branch each), the simulated signal and background of the
    reference partition, the truth sample (:class:`workflow.flows.TruthSample`), the generated background of
    every analysis seed of the default flow (``limits.generated_sizes.max`` events each) and of every bootstrap
    replica (``flows.replicas.n_events`` each). Output: ``<classifier>/scores.npz`` with ``signal_score``,
    ``signal_weight``, ``background_score``, ``background_weight``, ``truth_score``, ``truth_weight``,
    ``generated_<seed>`` and ``replica_<seed>``; ``truth_source`` says what the truth sample is."""

    def create_branch_map(self):
        # the classifiers of the features only: generated events have no objects (branch numbers as in training)
        return {b: kind for b, kind in TrainClassifier.req(self).create_branch_map().items()
                if kind not in OBJECT_CLASSIFIERS}

    def _samples(self):
        cfg = self.analysis_config
        out = {f"generated_{s}": SampleFlow.req(self, branch=-1, flow_model=cfg.flows.default, flow_seed=s,
                                                n_events=cfg.limits.generated_sizes.max)
               for s in cfg.flows.analysis_seeds}
        out.update({f"replica_{s}": SampleFlow.req(self, branch=-1, flow_model=cfg.flows.default, flow_seed=s,
                                                   n_events=cfg.flows.replicas.n_events)
                    for s in cfg.flows.replicas.seeds})
        return out

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["classifiers"] = TrainClassifier.req(self)
        reqs["truth"] = TruthSample.req(self)
        reqs["generated"] = self._samples()
        return reqs

    def requires(self):
        return {"classifier": TrainClassifier.req(self, branch=self.branch), "partition": PartitionEvents.req(self),
                "truth": TruthSample.req(self), "generated": self._samples()}

    def output(self):
        return self.local_target(self.branch_data, "scores.npz")

    def run(self):
        kind = self.branch_data
        inputs = self.input()
        clf = load_classifier(inputs["classifier"][CLASSIFIER_FILES[kind]].path)
        part = self.requires()["partition"]
        arrays = {}
        truth_files, truth_source = self.requires()["truth"].files()
        for name, files in (("signal", part.files("reference", 1)), ("background", part.files("reference", 0)),
                            ("truth", truth_files)):
            cols = read_ntuples(files)
            arrays[f"{name}_score"] = clf.score(feature_matrix(cols))
            arrays[f"{name}_weight"] = cols["weight"]
        arrays["truth_source"] = np.asarray(truth_source)
        for key, coll in inputs["generated"].items():
            chunks = []
            targets = list(coll["collection"].targets.values())
            for i, target in enumerate(targets):
                chunks.append(clf.score(feature_matrix(read_ntuples([target.path]))))
                self.publish_message(f"{kind}: {key}, chunk {i + 1}/{len(targets)}")
            arrays[key] = np.concatenate(chunks)
        with atomic_path(self.output().path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
