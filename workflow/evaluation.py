"""Evaluation of generated events against held-out simulation, one branch per trained generator, and the
comparison table of all generators."""

from __future__ import annotations

import html

from analysis.features import FEATURES
from analysis.io import atomic_path, write_json
from analysis.metrics import evaluate, summarise
from analysis.ntuple import feature_matrix, read_ntuples
from analysis.plotting import plot_c2st, plot_correlations, plot_overlays_with_ratio
from analysis.report import generator_rows, generator_table_html, generator_table_markdown, html_page
from workflow.base import AnalysisTask, AnalysisWorkflow
from workflow.flows import PartitionEvents, SampleFlow, TrainFlow


class EvaluateFlow(AnalysisWorkflow):
    """Per-feature distances and tests, a classifier two-sample test and correlation differences of generated
    against reference (held-out simulated) background, each beside its MC-against-MC value (see
    :mod:`analysis.metrics`). One branch per (model, seed) of the configuration;
    ``flows.generation.evaluation_events`` generated events are compared with the reference partition.
    """

    def create_branch_map(self):
        return TrainFlow.req(self).create_branch_map()

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
        d = f"{self.branch_data['model']}_s{self.branch_data['seed']}"
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


class CompareGenerators(AnalysisTask):
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
