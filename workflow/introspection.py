"""Introspection stage (issue 17): what the networks use, from their Taylor coefficients
(:mod:`analysis.introspection`, :mod:`models.taylor`)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from analysis.classifier_plots import plot_taylor
from analysis.features import FEATURES
from analysis.introspection import coefficients, regression_coefficients, train_c2st
from analysis.io import InputError, write_json
from analysis.ntuple import feature_matrix, read_ntuples
from analysis.partition import split_rows
from models.classifiers import CLASSIFIER_FILES, load_classifier
from workflow.base import FeatureSetMixin
from workflow.classifiers import TrainClassifier, labelled_events
from workflow.flows import PartitionEvents, SampleFlow, TruthSample
from workflow.regression import APPLICATIONS, RegressionData, TrainRegression
from workflow.skim import Skim


class Introspect(FeatureSetMixin, RegressionData):
    """First- and second-order Taylor coefficients (in standardised inputs, of the logit) of

    - the ``nn`` classifier, on ``introspection.events`` events of the reference partition (signal and
      background): which features and feature pairs separate signal from background;
    - a differentiable C2ST, an MLP trained to tell generated events (default flow, first analysis seed) from the
      calibration part of the truth sample (``introspection.c2st_events`` per class), evaluated on the truth
      sample's test part and unseen generated events: what is wrong with the generated events;
    - with ``regression.applications``, each conditional flow (first regression seed): the posterior mean of its
      first target (neutrino: the momentum along the lepton in the transverse plane; b jets: the response) in its
      context entries (:func:`analysis.neutrino.taylor_inputs`, :func:`analysis.bjet.taylor_inputs`), on
      ``introspection.events`` events (jets) of the first sample's reference partition: what the posterior moves
      with.

    Outputs: ``taylor.json`` and ``nn_taylor.png``/``.pdf``, ``c2st_taylor.png``/``.pdf``, with applications
    ``<application>_taylor.png``/``.pdf`` (ranked bars and the second-order matrix).
    """

    def requires(self):
        cfg = self.analysis_config
        return {"classifiers": TrainClassifier.req(self), "partition": PartitionEvents.req(self),
                "truth": TruthSample.req(self),
                "generated": SampleFlow.req(self, branch=-1, flow_model=cfg.flows.default,
                                            flow_seed=cfg.flows.analysis_seeds[0],
                                            n_events=cfg.limits.generated_sizes.max),
                "regression": self.regression_flows()}

    def regression_flows(self) -> dict:
        """application -> the :class:`TrainRegression` branch of its flow of the first regression seed."""
        r = self.analysis_config.regression
        if not r.applications:
            return {}
        bmap = TrainRegression.req(self).create_branch_map()
        return {d["application"]: TrainRegression.req(self, branch=b) for b, d in bmap.items()
                if d["method"] == "flow" and d["seed"] == r.seeds[0]}

    def output(self):
        names = ["taylor.json", "nn_taylor.png", "nn_taylor.pdf", "c2st_taylor.png", "c2st_taylor.pdf"]
        names += [f"{a}_taylor.{ext}" for a in self.analysis_config.regression.applications for ext in ("png", "pdf")]
        return {name: self.local_target(name) for name in names}

    def run(self):
        cfg = self.analysis_config
        ic = cfg.introspection
        inp = self.input()
        bmap = self.requires()["classifiers"].get_branch_map()
        nn_branch = next((b for b, kind in bmap.items() if kind == "nn"), None)
        if nn_branch is None:
            raise InputError("introspection needs the nn classifier: add nn to classifiers.models or set "
                             "introspection.enabled: false")
        target = inp["classifiers"]["collection"].targets[nn_branch]
        clf = load_classifier(target[CLASSIFIER_FILES["nn"]].path)
        x_ref, y_ref, _ = labelled_events(self.requires()["partition"], "reference")
        self.publish_message(f"nn classifier: Taylor coefficients on {min(ic.events, len(x_ref)):,} events")
        nn = coefficients(clf, x_ref, order=2, max_events=ic.events, seed=cfg.seed)

        files, source = self.requires()["truth"].files()
        truth = feature_matrix(read_ntuples(files))
        cal, test = split_rows(len(truth), cfg.truth.calibration_fraction, cfg.seed)
        gen_files = [t.path for t in inp["generated"]["collection"].targets.values()]
        generated = []
        for path in gen_files:  # only as many chunks as needed
            generated.append(feature_matrix(read_ntuples([path])))
            if sum(len(g) for g in generated) >= ic.c2st_events + ic.events:
                break
        generated = np.concatenate(generated)
        n_train = min(ic.c2st_events, len(cal), len(generated) - min(ic.events, len(generated) // 5))
        n_test = min(ic.events, len(test), len(generated) - n_train)
        if n_train < 100 or n_test < 100:
            raise InputError(f"introspection: too few events for the C2ST ({n_train} to train, {n_test} to test "
                             "per class)")
        self.publish_message(f"C2ST (MLP): generated against {source}, {n_train:,} events per class")
        c2st = train_c2st(truth[cal[:n_train]], generated[:n_train], FEATURES, seed=cfg.seed)
        x_test = np.concatenate([truth[test[:n_test]], generated[n_train:n_train + n_test]])
        y_test = np.concatenate([np.zeros(n_test), np.ones(n_test)])
        auc = float(roc_auc_score(y_test, c2st.score(x_test)))
        c2st_tc = coefficients(c2st, x_test, order=2, max_events=2 * n_test, seed=cfg.seed)
        result = {
            "nn": {**nn.to_dict(), "ranking": nn.ranking(20), "reference_auc":
                   float(roc_auc_score(y_ref, clf.score(x_ref)))},
            "c2st": {**c2st_tc.to_dict(), "ranking": c2st_tc.ranking(20), "auc": auc, "train_per_class": n_train,
                     "test_per_class": n_test, "truth_source": source, "train_seconds": c2st.train_seconds,
                     "epochs": len(c2st.history)},
            "method": "torch.autograd, logit in standardised inputs (models.taylor)",
            "regression": self.regression_taylor()}
        out = self.output()
        plot_taylor(nn, out["nn_taylor.png"].path, title=f"{cfg.name}: nn classifier (signal against background)")
        plot_taylor(c2st_tc, out["c2st_taylor.png"].path, title=f"{cfg.name}: C2ST, generated ({cfg.flows.default}) "
                    f"against simulated, AUC {auc:.3f}")
        for name, entry in result["regression"].items():
            plot_taylor(entry.pop("coefficients"), out[f"{name}_taylor.png"].path,
                        title=f"{cfg.name}: {name} flow, posterior mean of {entry['target']}")
        write_json(out["taylor.json"].path, result)
        self.publish_message(f"C2ST AUC {auc:.3f}; its top coefficients: "
                             + ", ".join(k for k, _ in c2st_tc.ranking(3)))

    def regression_taylor(self) -> dict:
        """application -> the Taylor coefficients of its flow's posterior mean (and, under ``coefficients``, the
        :class:`~models.taylor.TaylorCoefficients` for the figure, removed before writing)."""
        from models.io import load_conditional
        cfg = self.analysis_config
        out = {}
        for name, target in self.input()["regression"].items():
            app = APPLICATIONS[name]
            data = self.reference_data(name, Skim.req(self, branch=-1))
            objects = data[next(iter(data))]
            _, context = app.regression_data(objects)
            fit, _ = load_conditional(target["model"].path)
            self.publish_message(f"{name} flow: Taylor coefficients of the posterior mean")
            tc = regression_coefficients(fit.model, context, app.taylor_inputs(), max_events=cfg.introspection.events,
                                         seed=cfg.seed)
            out[name] = {**tc.to_dict(), "ranking": tc.ranking(20), "target": app.TAYLOR_TARGET,
                         "seed": cfg.regression.seeds[0], "coefficients": tc}
        return out
