"""Evaluation of generated events against held-out simulation, one branch per trained generator, and the
comparison table of all generators."""

from __future__ import annotations

import html
import time

import luigi

from analysis.features import FEATURES
from analysis.fidelity import c2st_learning_curve, fidelity_matrix, group_aucs, plot_learning_curves, plot_validity, \
    validity_comparison
from analysis.io import InputError, atomic_path, write_json
from analysis.metrics import evaluate, summarise
from analysis.ntuple import OPTIONAL_COLUMNS, feature_matrix, read_ntuples
from analysis.partition import split_rows
from analysis.plotting import plot_c2st, plot_correlations, plot_overlays_with_ratio
from analysis.report import generator_rows, generator_table_html, generator_table_markdown, html_page
from workflow.base import AnalysisTask, AnalysisWorkflow, FeatureSetMixin
from workflow.flows import PartitionEvents, SampleFlow, TrainFlow, TruthSample, flow_tag


class EvaluateFlow(FeatureSetMixin, AnalysisWorkflow):
    """Per-feature distances and tests, a classifier two-sample test and correlation differences of generated
    against reference (held-out simulated) background, each beside its MC-against-MC value (see
    :mod:`analysis.metrics`). One branch per (model, seed) of the configuration;
    ``flows.generation.evaluation_events`` generated events are compared with the reference partition.
    """

    def create_branch_map(self):
        # the trained generators less the bootstrap replicas (they come last, so branch numbers match TrainFlow's)
        return {b: d for b, d in TrainFlow.req(self).create_branch_map().items() if not d["bootstrap"]}

    def _sample(self):
        d = self.branch_data
        n = self.analysis_config.flows.generation.evaluation_events
        return SampleFlow.req(self, branch=-1, flow_model=d["model"], flow_seed=d["seed"], n_events=n)

    def requires(self):
        d = self.branch_data
        train = TrainFlow.req(self)
        return {"sample": self._sample(), "partition": PartitionEvents.req(self),
                "train": TrainFlow.req(self, branch=TrainFlow.branch_of(train.create_branch_map(), d["model"],
                                                                         d["seed"]))}

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["partition"] = PartitionEvents.req(self)
        return reqs

    def output(self):
        d = flow_tag(self.branch_data)
        return {name: self.local_target(d, name) for name in
                ("metrics.json", "features.png", "features.pdf", "correlations.png", "correlations.pdf",
                 "c2st.png", "c2st.pdf")}

    def run(self):
        cfg = self.analysis_config
        d = self.branch_data
        inputs = self.input()
        simulated = feature_matrix(read_ntuples(self.requires()["partition"].background_files("reference")))
        gen_files = [t.path for t in inputs["sample"]["collection"].targets.values()]
        generated = feature_matrix(read_ntuples(gen_files))
        self.publish_message(f"{d['model']} s{d['seed']}: comparing {len(generated):,} generated with "
                             f"{len(simulated):,} simulated events")
        result = evaluate(simulated, generated, FEATURES, seed=cfg.seed)
        arrays = result.pop("_arrays")
        training = inputs["train"]["metrics.json"].load(formatter="json")
        result["summary"] = summarise(result)
        result["model"], result["seed"] = d["model"], d["seed"]
        result["training"] = {"train_seconds": training["train_seconds"],
                              "sampling_events_per_s": training["sampling_events_per_s"],
                              "test_nll": training["nll"]["test_median"],
                              "gaussian_test_nll": training["nll"]["gaussian_test_median"],
                              "partition_sizes": training["partition_sizes"]}
        out = self.output()
        write_json(out["metrics.json"].path, result)
        title = f"{cfg.name}: {d['model']}, seed {d['seed']}"
        plot_overlays_with_ratio(arrays["simulated"], arrays["generated"], FEATURES, out["features.png"].path,
                                 units=cfg.feature_units, title=title)
        plot_correlations(arrays["corr_simulated"], arrays["corr_generated"], FEATURES,
                          out["correlations.png"].path, title=title)
        plot_c2st(arrays["c2st"], arrays["c2st_mc"], out["c2st.png"].path, title=title)
        s = result["summary"]
        self.publish_message(f"{d['model']} s{d['seed']}: C2ST AUC {s['c2st_auc']:.3f} +- {s['c2st_auc_error']:.3f} "
                             f"(MC reference {s['c2st_auc_mc']:.3f})")


class CompareGenerators(FeatureSetMixin, AnalysisTask):
    """All generators side by side (Markdown, HTML, JSON): every summary metric beside its MC-against-MC value,
    training time and sampling rate; the best model (lowest C2ST AUC) is marked."""

    def requires(self):
        return EvaluateFlow.req(self)

    def output(self):
        return {name: self.local_target(name) for name in ("comparison.md", "comparison.html", "comparison.json")}

    def run(self):
        metrics = [target["metrics.json"].load(formatter="json")
                   for target in self.input()["collection"].targets.values()]
        rows = generator_rows(metrics)
        best = rows[0]
        out = self.output()
        write_json(out["comparison.json"].path, {"best": {"model": best["model"], "seed": best["seed"]},
                                                 "rows": rows})
        cfg = self.analysis_config
        intro = ("Each metric of generated against held-out simulated background, beside the same metric for two "
                 "disjoint halves of simulated events (MC ref.). Best (first, highlighted): lowest C2ST AUC.")
        with atomic_path(out["comparison.md"].path) as tmp:
            tmp.write_text(f"# Generators compared: {cfg.name}\n\n{intro}\n\n{generator_table_markdown(rows)}\n")
        with atomic_path(out["comparison.html"].path) as tmp:
            tmp.write_text(html_page(f"hepflows: {cfg.name}", f"<h1>Generators compared: {html.escape(cfg.name)}"
                                     f"</h1><p>{intro}</p>{generator_table_html(rows)}"))
        self.publish_message(f"best generator: {best['model']} (seed {best['seed']}), C2ST AUC "
                             f"{best['c2st_auc']:.3f}")


def _train_sizes(requested: tuple[int, ...], available: int) -> list[int]:
    """The configured training sizes that the samples hold; where fewer than two remain (a small truth sample,
    e.g. the reference partition of the HIGGS CSV), four sizes up to what is available (1/8, 1/4, 1/2, all)."""
    sizes = [n for n in requested if n <= available]
    if len(sizes) >= 2:
        return sizes
    if available < 16:
        raise InputError(f"the truth sample leaves {available} training events per class; the two-sample test "
                         "needs more")
    return sorted({max(available // 8, 2), available // 4, available // 2, available})


class FidelityTest(FeatureSetMixin, AnalysisTask):
    """The generator against simulation it never saw, with tests that have the power to fail: for every analysis
    seed of the default flow, a learning curve of the classifier two-sample test (tuned gradient boosting, AUC
    with bootstrap intervals at ``fidelity.train_sizes`` events per class on a fixed test set, an MLP as a second
    opinion at the largest size for the first seed), the AUC per feature group, and the physical-validity rates,
    all against the test part of the truth sample (:class:`workflow.flows.TruthSample`); and the same learning
    curve for simulated against simulated (the calibration part against the test part of the truth sample),
    which a perfect generator would match. See :mod:`analysis.fidelity`.

    Outputs: ``fidelity.json``, ``learning_curve.png``/``.pdf``, ``validity.png``/``.pdf``.
    """

    threads = luigi.IntParameter(default=0, significant=False, description="threads of the classifier fits "
                                 "(0: all cores)")

    def _samples(self):
        cfg = self.analysis_config
        return {s: SampleFlow.req(self, branch=-1, flow_model=cfg.flows.default, flow_seed=s,
                                  n_events=cfg.limits.generated_sizes.max) for s in cfg.flows.analysis_seeds}

    def requires(self):
        return {"truth": TruthSample.req(self), "generated": self._samples()}

    def output(self):
        return {name: self.local_target(name) for name in
                ("fidelity.json", "learning_curve.png", "learning_curve.pdf", "validity.png", "validity.pdf")}

    def run(self):
        cfg = self.analysis_config
        fc = cfg.fidelity
        threads = self.threads or None
        t0 = time.perf_counter()
        files, source = self.requires()["truth"].files()
        truth = read_ntuples(files, optional=OPTIONAL_COLUMNS)
        cal_rows, test_rows = split_rows(len(truth["weight"]), cfg.truth.calibration_fraction, cfg.seed)
        need = fc.train_sizes[-1] + fc.test_size
        t_test = {k: v[test_rows] for k, v in truth.items()}
        t_cal = {k: v[cal_rows] for k, v in truth.items()}
        x_test, _ = fidelity_matrix(t_test)
        x_cal, _ = fidelity_matrix(t_cal)
        test_size = min(fc.test_size, len(x_test) // 3, len(x_cal) // 3)
        sizes = _train_sizes(fc.train_sizes, min(len(x_test), len(x_cal)) - test_size)
        result = {"truth_source": source, "truth_test_events": int(len(x_test)), "requested_events": need,
                  "generated": {}, "simulated_vs_simulated": None}
        curves = {}
        self.publish_message(f"C2ST learning curve: simulated vs simulated ({source})")
        mc = c2st_learning_curve(x_cal, x_test, sizes, test_size, seed=cfg.seed, threads=threads, draws=fc.draws)
        mc.pop("_scores")
        result["simulated_vs_simulated"] = mc
        curves["simulated vs simulated"] = mc
        wps = cfg.btag_feature_thresholds
        for i, (s, coll) in enumerate(self.input()["generated"].items()):
            paths = [t.path for t in coll["collection"].targets.values()]
            gen = read_ntuples(paths, optional=OPTIONAL_COLUMNS)
            n_use = min(len(gen["weight"]), 2 * need)
            gen = {k: v[:n_use] for k, v in gen.items()}
            x_gen, _ = fidelity_matrix(gen)
            self.publish_message(f"C2ST learning curve: generated (seed {s}) vs simulated")
            curve = c2st_learning_curve(x_test, x_gen, sizes, test_size, seed=cfg.seed, threads=threads,
                                        draws=fc.draws)
            curve.pop("_scores")
            row = {"c2st": curve, "validity": validity_comparison(t_test, gen, btag_working_points=wps)}
            if i == 0:
                size = min(fc.group_size, len(x_test) - test_size, len(x_gen) - test_size)
                row["groups"] = group_aucs(t_test, gen, size, test_size, seed=cfg.seed, threads=threads)
                if fc.mlp:
                    self.publish_message(f"C2ST second opinion (MLP): generated (seed {s}) vs simulated")
                    mlp = c2st_learning_curve(x_test, x_gen, sizes[-2:], test_size, seed=cfg.seed,
                                              classifier="mlp", threads=threads)
                    mlp.pop("_scores")
                    row["c2st_mlp"] = mlp
                    curves[f"generated, seed {s} (MLP)"] = mlp
            result["generated"][str(s)] = row
            curves[f"generated, seed {s}"] = curve
            self.publish_message(f"seed {s}: C2ST AUC {curve['auc'][-1]:.3f} +- {curve['auc_total_error']:.3f} at "
                                 f"{curve['sizes'][-1]:,} per class "
                                 f"(simulated vs simulated {mc['auc'][-1]:.3f})")
        result["seconds"] = time.perf_counter() - t0
        out = self.output()
        write_json(out["fidelity.json"].path, result)
        title = f"{cfg.name}: {cfg.flows.default} against {source}"
        plot_learning_curves(curves, out["learning_curve.png"].path, title=title)
        first = next(iter(result["generated"].values()))
        plot_validity(first["validity"], out["validity.png"].path, title=title)
