"""Statistics stage: templates, pyhf workspaces and expected-limit scans of generated against simulated
background."""

from __future__ import annotations

import json

from analysis.io import InputError, atomic_directory, load_npz, write_json
from analysis.limit_plots import plot_amplification, plot_closure, plot_difference, plot_limit_scan, \
    plot_luminosity, plot_pulls, plot_spurious, plot_templates, plot_truth_templates
from analysis.limits import ScoredSamples, run_scan
from analysis.statistics import StatisticsError
from analysis.templates import TemplateError
from workflow.base import AnalysisTask, FeatureSetMixin
from workflow.classifiers import ScoreEvents
from workflow.flows import PartitionEvents

PLOTS = {"templates": plot_templates, "limit_scan": plot_limit_scan, "difference": plot_difference,
         "luminosity": plot_luminosity, "closure": plot_closure, "truth_templates": plot_truth_templates,
         "spurious": plot_spurious, "pulls": plot_pulls, "amplification": plot_amplification}


class LimitScan(FeatureSetMixin, AnalysisTask):
    """Expected 95 % CL CLs limits on the signal strength (asymptotic, pyhf workspaces) from the score templates of
    the classifier ``limits.classifier``: against the number of generated background events (every analysis seed
    of the default flow), for the simulated background at its own size, at infinite statistics, against
    luminosity, and the closure test; for every background systematic size (see :mod:`analysis.limits`).

    Outputs: ``limits.json`` (edges, every limit with its bands, summary, closure, timing), ``workspaces/``
    (one pyhf JSON workspace per point) and the figures ``templates``, ``limit_scan``, ``difference``,
    ``luminosity``, ``closure`` (PNG and PDF).
    """

    def requires(self):
        cfg = self.analysis_config
        scores = ScoreEvents.req(self)
        branch = next(b for b, kind in scores.create_branch_map().items() if kind == cfg.limits.classifier)
        return {"scores": ScoreEvents.req(self, branch=branch), "partition": PartitionEvents.req(self)}

    def output(self):
        out = {"limits": self.local_target("limits.json"), "workspaces": self.local_target("workspaces", dir=True)}
        for name in PLOTS:
            out[name] = self.local_target(f"{name}.png")
            out[f"{name}_pdf"] = self.local_target(f"{name}.pdf")
        return out

    def run(self):
        cfg = self.analysis_config
        inputs = self.input()
        expected = self.requires()["partition"].expected_background()
        z = load_npz(inputs["scores"].path, required=("signal_score", "signal_weight", "background_score",
                                                      "background_weight", "truth_source"))
        missing = [f"generated_{s}" for s in cfg.flows.analysis_seeds if f"generated_{s}" not in z]
        if missing:
            raise InputError(f"{inputs['scores'].path}: no scores for {missing}; rerun ScoreEvents")
        missing = [f"replica_{s}" for s in cfg.flows.replicas.seeds if f"replica_{s}" not in z]
        missing += [k for k in ("truth_score", "truth_weight") if k not in z]
        if missing:
            raise InputError(f"{inputs['scores'].path}: no scores for {missing}; rerun ScoreEvents")
        samples = ScoredSamples(
            z["signal_score"], z["signal_weight"], z["background_score"], z["background_weight"],
            {s: z[f"generated_{s}"] for s in cfg.flows.analysis_seeds}, expected, cfg.luminosity_fb,
            truth_scores=z["truth_score"], truth_weights=z["truth_weight"], truth_source=str(z["truth_source"]),
            replicas={s: z[f"replica_{s}"] for s in cfg.flows.replicas.seeds},
            n_train=self.requires()["partition"].background_size("train"),
            calibration_fraction=cfg.truth.calibration_fraction)
        try:
            results, workspaces = run_scan(samples, cfg.limits, cfg.seed, progress=self.publish_message)
        except (StatisticsError, TemplateError) as e:
            raise StatisticsError(f"limit scan ({cfg.name}, classifier {cfg.limits.classifier}): {e}") from None
        results["classifier"] = cfg.limits.classifier
        out = self.output()
        with atomic_directory(out["workspaces"].path) as tmp:
            for name, ws in workspaces.items():
                with open(tmp / f"{name}.json", "w") as f:
                    json.dump(ws, f)
        write_json(out["limits"].path, results)
        title = f"{cfg.name}: {cfg.limits.classifier} score"
        for name, fn in PLOTS.items():
            fn(results, out[name].path, title=title)
        t = results["timing"]
        self.publish_message(f"{t['limits']} limits in {t['seconds']:.1f} s ({t['ms_per_limit']:.0f} ms each)")
