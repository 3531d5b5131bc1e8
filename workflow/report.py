"""The end-to-end task: requires every stage and writes the HTML report answering the study's question."""

from __future__ import annotations

import html
import math
import os
import sys

import numpy as np
import yaml

from analysis.config import config_to_dict
from analysis.io import atomic_directory
from analysis.report import ReportBuilder, answer_rows, generator_rows, generator_table_html, git_revision, \
    html_table, verdict, versions
from workflow.base import AnalysisTask
from workflow.classifiers import CompareClassifiers, TrainClassifier
from workflow.evaluation import EvaluateFlow, FidelityTest
from workflow.flows import PartitionEvents, TrainFlow, TruthSample
from workflow.introspection import Introspect
from workflow.limits import LimitScan
from workflow.regression import EvaluateRegression
from workflow.unfolding import EvaluateUnfolding
from workflow.skim import SkimSummary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _num(v, spec: str = ".4g") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _slope_error(c: dict) -> float:
    """Error of a C2ST learning curve's last slope: with the training-draw spread where the stored result has it
    (results from before the draws hold the bootstrap error only)."""
    return c.get("slope_last_total_error", c["slope_last_error"])


def _pct(v: float) -> str:
    return f"{100 * v:+.1f} %"


class RunAnalysis(AnalysisTask):
    """The whole chain on one configuration: ntuples, skim, flows of the default model (every analysis seed),
    their evaluation, classifiers, scoring, templates and limit scans; ends with ``report/report.html`` (one
    file plus ``figures/``) and prints its path."""

    def _flow_branches(self) -> dict[int, int]:
        cfg = self.analysis_config
        bmap = TrainFlow.req(self).create_branch_map()
        return {s: TrainFlow.branch_of(bmap, cfg.flows.default, s) for s in cfg.flows.analysis_seeds}

    def requires(self):
        branches = self._flow_branches()
        cfg = self.analysis_config
        optional = {}  # stages that only some configurations run
        if cfg.regression.applications:
            optional["regression"] = EvaluateRegression.req(self)
        if cfg.regression.feed:  # the analysis again on the regressed features, compared side by side
            optional["regressed"] = {
                "partition": PartitionEvents.req(self, features="regressed"),
                "comparison": CompareClassifiers.req(self, features="regressed"),
                "limits": LimitScan.req(self, features="regressed"),
                "fidelity": FidelityTest.req(self, features="regressed")}
        if cfg.introspection.enabled and "nn" in cfg.classifiers.models:
            optional["introspection"] = Introspect.req(self)
        if cfg.unfolding.enabled:
            optional["unfolding"] = EvaluateUnfolding.req(self)
        return {**optional,
            "summary": SkimSummary.req(self),
            "flows": {s: TrainFlow.req(self, branch=b) for s, b in branches.items()},
            "evaluation": {s: EvaluateFlow.req(self, branch=b) for s, b in branches.items()},
            "classifiers": TrainClassifier.req(self),
            "comparison": CompareClassifiers.req(self),
            "limits": LimitScan.req(self),
            "fidelity": FidelityTest.req(self),
            "truth": TruthSample.req(self),
        }

    def output(self):
        return self.local_target("report", dir=True)

    def run(self):
        cfg = self.analysis_config
        inp = self.input()
        limits = inp["limits"]["limits"].load(formatter="json")
        evaluation = [inp["evaluation"][s]["metrics.json"].load(formatter="json") for s in inp["evaluation"]]
        fidelity = inp["fidelity"]["fidelity.json"].load(formatter="json")
        truth = inp["truth"].load(formatter="json")
        rep = ReportBuilder(f"hepflows report: {cfg.name}")
        self._answer(rep, limits, evaluation, fidelity, truth)
        self._independent_test(rep, limits, inp, fidelity)
        self._inputs(rep, inp)
        self._generators(rep, inp, evaluation)
        self._classifiers(rep, inp)
        self._limits(rep, limits, inp)
        if "regression" in inp:
            self._regression(rep, inp["regression"]["collection"].targets)
        if "regressed" in inp:
            self._feeding(rep, inp, limits, fidelity)
        if "introspection" in inp:
            self._introspection(rep, inp["introspection"])
        if "unfolding" in inp:
            unfolding_section(rep, cfg, inp["unfolding"]["metrics"].load(formatter="json"),
                              inp["unfolding"]["figures"].path)
        self._provenance(rep)
        with atomic_directory(self.output().path) as tmp:
            rep.write(tmp)
        path = os.path.join(self.output().path, "report.html")
        self.publish_message(f"report: {path}")
        print(f"\nhepflows report: {path}\n", file=sys.stdout, flush=True)

    # -- sections -------------------------------------------------------------------------------------------------
    def _answer(self, rep: ReportBuilder, limits: dict, evaluation: list[dict], fidelity: dict, truth: dict) -> None:
        cfg = self.analysis_config
        syst = next(iter(limits["simulated"]))
        rep.section("answer", "Can generated background replace simulated background in the fit?")
        t = limits.get("truth", {})
        weak = ("" if truth["source"] == "independent simulation" else
                " This configuration cannot make more events: the reference partition plays the truth sample, "
                "and its size limits every statement below.")
        lines = [f"<b>{html.escape(verdict(limits))}</b>",
                 f"Tested against the truth sample ({html.escape(truth['source'])}: {truth['selected']:,} selected "
                 f"events, {t.get('calibration_events', 0):,} to calibrate the generator uncertainty and "
                 f"{t.get('test_events', 0):,} to test" + ("; never used to train, tune, stop or bin anything"
                                                             if truth["source"] == "independent simulation" else "")
                 + "), with "
                 f"the {cfg.limits.classifier} score templates and a {float(syst):.0%} background systematic. "
                 "Spurious signal: every workspace fitted to the truth template as background-only pseudo-data; "
                 f"it passes when |μ̂| &le; {cfg.limits.spurious_max_sigma:g} σ (σ: the fit's interval "
                 "with the truth sample's own statistical spread added)." + weak]
        gu = limits.get("generator_uncertainty")
        if gu is not None:
            p = gu["pulls"]
            alt = {n: c for n, c in gu["constructions"].items() if n != gu["construction"]}
            what = {"replicas": "the spread of",
                    "replicas+nonclosure": "the non-closure measured on the calibration part (one coherent shape "
                                           "of its full size) added in quadrature to the spread of",
                    "replicas+correction": "the generated templates corrected by the non-closure measured on the "
                                           "calibration part (a quadratic in the score, largest "
                                           f"{100 * float(np.max(np.abs(gu.get('correction') or [0.0]))):.1f} %), "
                                           "the correction's statistical uncertainty (its fit's eigen-variations, "
                                           "coherent) added in quadrature to the spread of"}.get(
                gu["construction"], "the spread of")
            lines.append(
                f"Generator uncertainty ({html.escape(gu['construction'])}): {what} {len(gu['replica_seeds'])} "
                f"bootstrap replicas of the {html.escape(cfg.flows.default)} flow"
                + ("" if "pooled" not in gu["spread"] else
                   f" ({100 * gu['spread']['pooled']:.2f} % pooled over the bins, per-bin differences kept with "
                   f"weight {gu['spread']['resolved']:.2f}: as far as the replicas resolve them)")
                + ", one nuisance parameter per bin "
                f"(RMS over bins {100 * float(np.sqrt(np.mean(np.square(gu['relative'])))):.1f} %), scaled by "
                f"{gu['inflation']:.2f}, the factor measured on the calibration part that brings the pull RMS to 1 "
                f"(raw pull RMS there {p['calibration_raw']['rms']:.2f}). On the test part the pulls have RMS "
                f"{p['test_inflated']['rms']:.2f} ± {p['test_inflated']['rms_error']:.2f} with "
                f"{p['test_inflated']['coverage68']:.0%} within 1 and {p['test_inflated']['coverage95']:.0%} within "
                f"2 (nominal 68 % and 95 %)."
                + "".join(f" The construction {html.escape(n)} needs a factor {c['inflation']:.3g}"
                          + ("" if c["reaches_rms_1"] else " and still does not reach RMS 1")
                          + f" (test pull RMS {c['pulls']['test_inflated']['rms']:.2f})." for n, c in alt.items()))
        splits = limits.get("spurious", {}).get("splits")
        if splits:
            lines.append(
                f"The same independent test repeated over {len(splits['z'])} further random calibration/test splits "
                f"of the truth sample, the generator uncertainty ({html.escape(splits['construction'])}) measured "
                f"anew on each calibration part (largest generated template, "
                f"{splits['background_systematic']:.0%} background systematic): spurious signal "
                f"{splits['mean']:+.2f} σ on average, RMS {splits['rms']:.2f}, "
                f"{splits['within_max_sigma']:.0%} of the splits within {cfg.limits.spurious_max_sigma:g} σ "
                "(68 % expected for a calibrated model)"
                + (f", {splits['at_bound']} of them with the fit on the lower bound of μ (a deficit where the "
                   "signal is that the model cannot describe; their |z| is a lower bound)"
                   if splits.get("at_bound") else "") + " - "
                + ("unbiased and calibrated." if splits["calibrated"] else
                   "<b>biased or under-covering</b> (calibrated: mean within 0.5 σ, RMS at most 1.25, no fit on "
                   "the bound of μ)."))
        first = next(iter(fidelity["generated"].values()), None)
        if first is not None:
            c, mc = first["c2st"], fidelity["simulated_vs_simulated"]
            lines.append(
                f"Fidelity, high-power C2ST (tuned gradient boosting, {c['sizes'][-1]:,} events per class, "
                f"{c['test_size']:,} test events per class): AUC {c['auc'][-1]:.3f} (95 % interval of the test "
                f"set {c['auc_interval95'][-1][0]:.3f}-{c['auc_interval95'][-1][1]:.3f}"
                + (f"; ± {c['auc_total_error']:.3f} (68 %) with the spread over {len(c['draw_aucs'])} draws of "
                   f"the training events, {c['draw_spread']:.3f}" if c.get("draw_spread") is not None else "")
                + f") against {mc['auc'][-1]:.3f} for simulated against simulated"
                + ("" if c.get("converged", [True])[-1] else
                   f"; <b>the classifier stopped at its limit of {c['max_iter']} rounds: a lower bound</b>")
                + f"; slope over the two largest sizes {c['slope_last']:+.3f} ± {_slope_error(c):.3f} per decade"
                + (" (still rising: the true AUC is higher)" if c["slope_last"] > 2 * _slope_error(c) else "")
                + ". Physical validity failing against simulation: "
                + (", ".join(f"{k} ({v['generated']:.3f} vs {v['simulated']:.3f})" for k, v in
                             first["validity"].items() if not v["consistent"]) or "none") + ".")
        rep.add("<div class='answer'>" + "".join(f"<p>{line}</p>" for line in lines) + "</div>")

        def fmt(v, spec):
            return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)
        rows = [[r["template"], fmt(r["expected_limit"], ".4g"), f"{r['mu_hat']:+.3f} ± {r['sigma']:.3f}",
                 f"{r['z']:+.2f}", fmt(r["observed_limit"], ".4g"), "pass" if r["pass"] else "FAIL",
                 fmt(r["amplification"], ".3g")] for r in answer_rows(limits)]
        rep.add(html_table(["template", "expected limit", "spurious signal μ̂ ± σ", "μ̂ / σ", "observed limit "
                            "(truth data)", "spurious-signal test", "equiv. simulated / training events"], rows))
        rows = []
        for k, s in limits["summary"].items():
            rows.append([f"{float(k):.0%}", f"{s['simulated']:.4g}", f"{s['generated_largest_n']:.4g}",
                         f"{s.get('generated_unc_largest_n', float('nan')):.4g}", f"{s['infinite']:.4g}",
                         f"{s.get('spurious_z_simulated', float('nan')):+.2f}",
                         f"{s.get('spurious_z_generated', float('nan')):+.2f}",
                         f"{s.get('spurious_z_generated_unc', float('nan')):+.2f}"])
        rep.add(f"<p>Per systematic size, at the largest generated size ({limits['sizes'][-1]:,}, median over "
                "analysis seeds):</p>" + html_table(
                    ["background syst.", "limit, simulated", "limit, generated", "limit, generated + gen. unc.",
                     "limit, infinite stat.", "μ̂/σ simulated", "μ̂/σ generated", "μ̂/σ generated + gen. unc."], rows))

    def _independent_test(self, rep: ReportBuilder, limits: dict, inp: dict, fidelity: dict) -> None:
        lim, fid = inp["limits"], inp["fidelity"]
        rep.section("independent", "The independent test: generated against simulation it never saw",
                    "Templates against the truth test template (ratio panel: the generator uncertainty as a band, "
                    "each bootstrap replica dotted), the spurious signal against the number of generated events, "
                    "the pulls of all generated and replica templates, and the amplification.")
        rep.figure(lim["truth_templates"].path, "truth_templates", "templates against the truth sample", "60%")
        rep.figure(lim["spurious"].path, "spurious", "spurious signal against the truth sample")
        rep.figure(lim["pulls"].path, "pulls", "pulls against the truth sample (test part)", "48%")
        rep.figure(lim["amplification"].path, "amplification", "amplification", "48%")
        tf = limits.get("template_fidelity", {})
        rep.add("<h3>Template fidelity against the truth template</h3>" + html_table(
            ["template", "chi2 / ndf", "largest |pull|"],
            [[k, f"{v['chi2']:.1f} / {v['ndf']}", f"{max(abs(p) for p in v['pulls']):.2f}"] for k, v in tf.items()]))
        rep.add("<h3>Classifier two-sample test with stated power</h3>")
        rows = []
        for label, c in ([("simulated vs simulated", fidelity["simulated_vs_simulated"])]
                         + [(f"generated seed {s}", r["c2st"]) for s, r in fidelity["generated"].items()]
                         + [(f"generated seed {s} (MLP)", r["c2st_mlp"]) for s, r in fidelity["generated"].items()
                            if "c2st_mlp" in r]):
            conv = c.get("converged")
            rows.append([label, ", ".join(f"{n:,}: {a:.3f}" + ("" if conv is None or ok else " (limit)")
                                          for n, a, ok in zip(c["sizes"], c["auc"], conv or c["auc"])),
                         f"{c['auc_interval95'][-1][0]:.3f}-{c['auc_interval95'][-1][1]:.3f}",
                         "-" if c.get("draw_spread") is None else
                         f"{c['draw_spread']:.3f} ({len(c['draw_aucs'])} draws); total ± {c['auc_total_error']:.3f}",
                         f"{c['slope_last']:+.3f} ± {_slope_error(c):.3f}"])
        rep.add(html_table(["samples", "AUC at training events per class ((limit): stopped at the iteration "
                            "limit, a lower bound)", "95 % interval (largest; test set)",
                            "spread over (overlapping) draws of the training events, largest size; total: 68 %",
                            "slope per decade (two largest)"], rows))
        rep.figure(fid["learning_curve.png"].path, "learning_curve", "C2ST learning curves", "60%")
        first = next(iter(fidelity["generated"].values()), None)
        if first is not None and "groups" in first:
            rep.add("<h3>Where the classifier finds the defects</h3>" + html_table(
                ["feature group", "C2ST AUC"], [[g, f"{v['auc']:.3f} ± {v['auc_error']:.3f}"]
                                                for g, v in first["groups"].items()]))
        if first is not None:
            rep.add("<h3>Physical validity</h3>" + html_table(
                ["constraint", "simulated", "generated", "difference [σ]", "consistent"],
                [[k, f"{v['simulated']:.4f}", f"{v['generated']:.4f}", f"{v['significance']:+.1f}",
                  "yes" if v["consistent"] else "no"] for k, v in first["validity"].items()]))
            rep.figure(fid["validity.png"].path, "validity", "physical validity rates", "60%")

    def _inputs(self, rep: ReportBuilder, inp: dict) -> None:
        cfg = self.analysis_config
        summary = inp["summary"]["summary.json"].load(formatter="json")
        rep.section("inputs", "Inputs and cutflow", f"Luminosity {cfg.luminosity_fb:g} fb<sup>-1</sup>; "
                    f"configuration <code>{html.escape(cfg.name)}</code>: {html.escape(cfg.description)}")
        rows = []
        for name, s in summary["samples"].items():
            sc = cfg.sample(name)
            steps = list(s["cutflow"])
            rows.append([name, sc.source, "signal" if sc.label else "background", sc.cross_section_pb
                         if sc.source != "higgs_csv" else "-", f"{s['cutflow'][steps[0]]['events']:,}",
                         f"{s['n_selected']:,}", f"{s['expected_yield']:.4g}"])
        rep.add(html_table(["sample", "source", "role", "cross-section [pb]", "events", "selected",
                            "expected yield"], rows))
        warnings = summary.get("warnings", [])
        if warnings:  # implausible real inputs: said where a physicist looks first
            rep.add("<p><b>Warnings about the inputs</b> (the skim went on; check before trusting the result):</p>"
                    "<ul>" + "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings) + "</ul>")
        cut_rows = []
        for name, s in summary["samples"].items():
            total = s["cutflow"][next(iter(s["cutflow"]))]["sumw"]
            for step, v in s["cutflow"].items():
                cut_rows.append([name, step, f"{v['events']:,}", f"{v['sumw']:.4g}",
                                 f"{v['sumw'] / total:.3f}" if total else "-"])
        rep.add(html_table(["sample", "step", "events", "sum of weights", "efficiency"], cut_rows))
        rep.figure(inp["summary"]["cutflow.png"].path, "cutflow", "cutflow (weighted)", "60%")
        rep.figure(inp["summary"]["features.png"].path, "skim_features", "the 28 features, signal and background")

    def _generators(self, rep: ReportBuilder, inp: dict, evaluation: list[dict]) -> None:
        cfg = self.analysis_config
        rep.section("generators", f"Background generator: {cfg.flows.default}, training and evaluation",
                    "Trained on simulated background of the train partition, one flow per analysis seed; "
                    "evaluated against the held-out reference partition, each metric beside its value for two "
                    "halves of simulated events (MC ref.).")
        rep.add(generator_table_html(generator_rows(evaluation)))
        for s in inp["flows"]:
            rep.figure(inp["flows"][s]["loss.png"].path, f"flow_loss_s{s}", f"training curve, seed {s}", "48%")
        s0 = next(iter(inp["evaluation"]))
        ev = inp["evaluation"][s0]
        rep.figure(ev["features.png"].path, "eval_features", f"generated (seed {s0}) against simulated, all features")
        rep.figure(ev["correlations.png"].path, "eval_correlations", "correlation matrices and their difference")
        rep.figure(ev["c2st.png"].path, "eval_c2st", "classifier two-sample test")

    def _classifiers(self, rep: ReportBuilder, inp: dict) -> None:
        comparison = inp["comparison"]["comparison.json"].load(formatter="json")
        rep.section("classifiers", "Signal against background classifiers",
                    "Trained on simulated events of the train partition, evaluated on the reference partition; "
                    f"the limits use <code>{html.escape(self.analysis_config.limits.classifier)}</code>.")
        def limit(r):
            lim = r.get("expected_limit") or {}
            return _num(lim["0"]) if "0" in lim else html.escape(lim.get("error", "-"))

        rep.add(html_table(["classifier", "inputs", "ROC AUC (reference)", "expected limit (simulated templates)",
                            "training [s]", "most important"],
                           [[r["classifier"], r.get("inputs", "features"), f"{r['reference_auc']:.4f}", limit(r),
                             f"{r['train_seconds']:.0f}", ", ".join(r["top_features"])]
                            for r in comparison["classifiers"]]))
        rep.add("<p>Expected limits on μ from each classifier's templates of the simulated reference events (same "
                "score cut, binning rule and first background systematic for all). The object-level classifier "
                "(transformer on the lepton, MET and jets) cannot score generated background, which has the 28 "
                "features only, so the limit scans use a classifier of the features; its importances are AUC "
                "drops when an object group is hidden.</p>")
        rep.figure(inp["comparison"]["roc.png"].path, "roc", "ROC curves", "50%")
        for target in inp["classifiers"]["collection"].targets.values():
            kind = target["metrics.json"].load(formatter="json")["classifier"]
            rep.figure(target["classifier.png"].path, f"classifier_{kind}", f"{kind}: scores, ROC, importances, "
                       "training")

    def _regression(self, rep: ReportBuilder, outputs: dict) -> None:
        cfg = self.analysis_config
        r = cfg.regression
        train = f"{r.train_factor:g} x the configured samples, simulated apart" if r.train_factor else \
            "the train partitions of the analysis samples"
        rep.section("regression", "Conditional flows on the truth record: neutrino and b-jet regression",
                    f"Trained on {train}; evaluated on the reference partitions ({r.evaluation_events:,} events, "
                    f"{r.samples} posterior draws each), first seed of {list(r.seeds)}. Flow: {r.model} behind an "
                    "embedding of the event; baselines: the W-mass solution (neutrino), no correction (b jets), "
                    "and a feed-forward network with Huber and quantile losses.")
        for b, out in outputs.items():
            m = out["metrics"].load(formatter="json")
            first = m["per_seed"][str(r.seeds[0])]
            figures = out["figures"].path
            if m["application"] == "neutrino":
                mult = list(next(iter(first["assignment"].values()))["efficiency"])
                rows = []
                for name, res in first["resolution"].items():
                    eff = first["assignment"][name]["efficiency"]
                    rows.append([name, f"{res['pz']['resolution']:.1f}", f"{res['eta']['resolution']:.3f}",
                                 f"{first['masses'][name]['m_blv']['resolution']:.1f}"]
                                + [f"{eff[k]['correct_b_lep']:.3f}" if eff[k]["events"] else "-" for k in mult]
                                + [f"{first['gap_closed'][name]['mean_5_to_9']:.2f}" if name in first["gap_closed"]
                                   else "-"])
                rep.add("<h3>Neutrino (nu-Flows)</h3>" + html_table(
                    ["estimate", "pz resolution [GeV]", "eta resolution", "m_blv resolution [GeV]"]
                    + [f"b_lep right, {k} jets" for k in mult] + ["gap W-mass to truth closed (5-9 jets)"], rows))
                if len(m["per_seed"]) > 1:
                    rep.add("<p>Per seed (training seed of flow and network): " + "; ".join(
                        f"seed {s}: mode's gap closed {v['gap_closed']['flow_mode']['mean_5_to_9']:.2f}, leptonic b "
                        f"right at 4 jets {v['assignment']['flow_mode']['efficiency']['4']['correct_b_lep']:.3f}, pz "
                        f"KS {v['calibration']['flow']['pz']['ks']:.4f}" for s, v in m["per_seed"].items()) + "</p>")
                cal = first["calibration"]["flow"]
                rep.add("<p>Flow posterior calibration: " + "; ".join(
                    f"{c}: KS {v['ks']:.3f}, 68 % coverage {v['coverage68']:.3f}, 95 % {v['coverage95']:.3f}"
                    for c, v in cal.items()) + "</p>")
                for name in ("neutrino_resolution", "neutrino_assignment", "neutrino_calibration",
                             "neutrino_posteriors"):
                    rep.figure(os.path.join(figures, f"{name}.png"), name, name.replace("_", " "), "48%")
            else:
                rows = []
                for name, res in first["resolution"].items():
                    cov = first["coverage"].get(name)
                    masses = first["masses"][name]
                    rows.append([name, f"{res['all']['resolution']:.4f}", f"{res['all']['median']:.4f}"]
                                + [f"{100 * v['relative_resolution']:.2f} % ({100 * v.get('improvement_over_none', 0):+.1f} %)"
                                   for v in masses.values()]
                                + ([f"{cov['50']['all']:.3f}", f"{cov['68']['all']:.3f}"] if cov else ["-", "-"]))
                peaks = [f"{v['peak']} ({s}) relative resolution (vs none)"
                         for s, v in first["masses"]["none"].items()]
                spread = "" if len(m["per_seed"]) < 2 else "<p>Per seed: " + "; ".join(
                    f"seed {s}: flow resolution {v['resolution']['flow_median']['all']['resolution']:.4f}, network "
                    f"{v['resolution']['dnn']['all']['resolution']:.4f}, flow 68 % coverage "
                    f"{v['coverage']['flow_median']['68']['all']:.3f}"
                    + (f" (recalibrated on held-out jets: {v['coverage']['flow_recalibrated']['68']['all']:.3f})"
                       if "flow_recalibrated" in v["coverage"] else "") for s, v in m["per_seed"].items()) + "</p>"
                rep.add("<h3>b-jet energy regression</h3>" + spread + html_table(
                    ["correction", "effective resolution of pT_pred/pT_true", "median"] + peaks
                    + ["50 % coverage", "68 % coverage"], rows))
                for name in ("bjet_resolution", "bjet_masses", "bjet_coverage", "bjet_posteriors"):
                    rep.figure(os.path.join(figures, f"{name}.png"), name, name.replace("_", " "), "48%")

    def _introspection(self, rep: ReportBuilder, out: dict) -> None:
        t = out["taylor.json"].load(formatter="json")
        rep.section("introspection", "What the networks use: Taylor coefficients",
                    "Mean absolute Taylor coefficients of each network's logit in its standardised inputs "
                    "(Wunsch, Friese, Wolf, Quast, Comput. Softw. Big Sci. 2 (2018) 5): first order, a feature "
                    "alone; second order, a pair (the diagonal: a feature's curvature), which permutation "
                    "importance cannot show.")
        nn, c2 = t["nn"], t["c2st"]
        rows = [[i + 1, k1, f"{v1:.3g}", k2, f"{v2:.3g}"]
                for i, ((k1, v1), (k2, v2)) in enumerate(zip(nn["ranking"][:10], c2["ranking"][:10]))]
        rep.add(html_table(["rank", "nn classifier (signal vs background)", "<|t|>",
                            f"C2ST: generated vs simulated (AUC {c2['auc']:.3f})", "<|t|>"], rows))
        rep.add(f"<p>The C2ST is an MLP trained on {c2['train_per_class']:,} generated and as many simulated events "
                f"({html.escape(c2['truth_source'])}, calibration part), measured on {c2['test_per_class']:,} unseen "
                "events per class: its largest coefficients name the features and pairs where the generator is "
                "wrong.</p>")
        rep.figure(out["nn_taylor.png"].path, "nn_taylor", "nn classifier: Taylor coefficients")
        rep.figure(out["c2st_taylor.png"].path, "c2st_taylor", "C2ST of the generator: Taylor coefficients")
        for name, entry in t.get("regression", {}).items():
            top = ", ".join(f"{html.escape(k)} ({v:.3g})" for k, v in entry["ranking"][:5])
            rep.add(f"<p><b>{html.escape(name)} flow</b> (seed {entry['seed']}): the posterior mean of "
                    f"{html.escape(entry['target'])} (standardised flow space) over {entry['events']:,} reference "
                    f"events, in its context entries (each in units of its spread); largest: {top}.</p>")
            rep.figure(out[f"{name}_taylor.png"].path, f"{name}_taylor", f"{name} flow: Taylor coefficients")

    def _feeding(self, rep: ReportBuilder, inp: dict, limits: dict, fidelity: dict) -> None:
        r = self.analysis_config.regression
        reg = inp["regressed"]
        rep.section("feeding", "What the regressions buy: the analysis on regressed features",
                    "The whole analysis once more (generator, classifiers, templates, limits, independent test) with "
                    "the high-level masses m_lv, m_jjj, m_jlv, m_bb, m_wbb and m_wwbb recomputed with the "
                    f"regressed neutrino (mode of {r.feed_draws} nu-Flows draws, instead of the W-mass solution) "
                    "and the b candidates' regressed energies (posterior median of the b-jet flow), models of seed "
                    f"{r.seeds[0]}, on every sample including the truth sample. Same events, partitions and "
                    "settings; only these six features differ.")
        rep.figure(reg["partition"]["masses"].path, "regressed_masses", "standard (dashed) against regressed "
                   "(solid) masses, up to 100,000 events of each sample", "90%")
        comps = {k: {c["classifier"]: c for c in v["comparison.json"].load(formatter="json")["classifiers"]}
                 for k, v in (("standard", inp["comparison"]), ("regressed", reg["comparison"]))}
        rep.add("<h3>Classifiers</h3>" + html_table(
            ["classifier", "ROC AUC standard", "ROC AUC regressed", "most important (regressed)"],
            [[k, f"{c['reference_auc']:.4f}", f"{comps['regressed'][k]['reference_auc']:.4f}",
              ", ".join(comps["regressed"][k]["top_features"])] for k, c in comps["standard"].items()]))
        other = reg["limits"]["limits"].load(formatter="json")
        rows = []
        for name, lim in (("standard", limits), ("regressed", other)):
            for row in answer_rows(lim):
                rows.append([name, row["template"], _num(row["expected_limit"]),
                             f"{row['mu_hat']:+.3f} ± {row['sigma']:.3f}", f"{row['z']:+.2f}",
                             "pass" if row["pass"] else "FAIL"])
        rep.add("<h3>Expected limits and the spurious-signal test</h3>" + html_table(
            ["features", "template", "expected limit", "spurious signal μ̂ ± σ", "μ̂ / σ", "test"], rows))
        rep.add("".join(f"<p><b>{name}:</b> {html.escape(verdict(lim))}</p>"
                        for name, lim in (("Standard features", limits), ("Regressed features", other))))
        fid = reg["fidelity"]["fidelity.json"].load(formatter="json")
        lines = []
        for name, f in (("standard", fidelity), ("regressed", fid)):
            first = next(iter(f["generated"].values()), None)
            if first is not None:
                c = first["c2st"]
                lines.append(f"{name}: C2ST AUC {c['auc'][-1]:.3f} at {c['sizes'][-1]:,} events per class "
                             f"(simulated against simulated {f['simulated_vs_simulated']['auc'][-1]:.3f})")
        rep.add("<p>Generator fidelity against the truth sample: " + "; ".join(lines) + ".</p>")
        rep.figure(reg["limits"]["truth_templates"].path, "regressed_truth_templates", "regressed features: "
                   "templates against the truth sample", "60%")

    def _limits(self, rep: ReportBuilder, limits: dict, inp: dict) -> None:
        lim = inp["limits"]
        edges = ", ".join(f"{e:.3f}" for e in limits["edges"])
        rep.section("templates", "Templates and statistical model",
                    f"Score above {self.analysis_config.limits.score_cut}; bins merged from the high-score end "
                    f"until each holds at least {self.analysis_config.limits.min_count} events of the simulated "
                    f"and of the smallest generated sample ({limits['sizes'][0]:,}): edges {edges}. Background "
                    "with a per-bin statistical uncertainty of its own sample (staterror) and a normalisation "
                    "systematic; one pyhf workspace per point in <code>"
                    f"{html.escape(lim['workspaces'].path)}</code>.")
        rep.figure(lim["templates"].path, "templates", "score templates", "60%")
        t = limits["timing"]
        rep.section("limits", "Expected limits",
                    f"Expected 95 % CL CLs upper limits (asymptotic, q̃<sub>μ</sub>, background-only Asimov data): "
                    f"{t['limits']} limits in {t['seconds']:.1f} s ({t['ms_per_limit']:.0f} ms each).")
        rep.figure(lim["limit_scan"].path, "limit_scan", "limit against the number of generated events")
        rep.figure(lim["difference"].path, "difference", "generated minus simulated, within the simulated band")
        rep.figure(lim["luminosity"].path, "luminosity", "limit against integrated luminosity")
        c = limits["closure"]
        rows = [[f"{float(k):.0%}", f"{np.mean(v['relative']):+.4f}",
                 f"{np.std(v['relative'], ddof=1) / np.sqrt(len(v['relative'])):.4f}", f"{v['pull']:+.2f}"]
                for k, v in c.items() if k != "edges"]
        rep.add("<h3>Closure</h3><p>Simulated background in both roles (random halves, one through the generated "
                "path): the mean relative difference must be zero within its uncertainty.</p>"
                + html_table(["background syst.", "mean rel. difference", "uncertainty", "pull"], rows))
        rep.figure(lim["closure"].path, "closure", "closure test", "50%")

    def _provenance(self, rep: ReportBuilder) -> None:
        cfg = self.analysis_config
        rep.section("provenance", "Provenance")
        prov = {"git revision": git_revision(REPO), "version (--version)": self.version, "configuration": cfg.name,
                "seeds": f"analysis {cfg.seed}; flows {list(cfg.flows.analysis_seeds)}",
                "store": os.path.dirname(self.output().path), "command": " ".join(sys.argv)}
        rep.add(html_table(["", ""], [[k, v] for k, v in prov.items()]))
        rep.add(html_table(["package", "version"], [[k, v] for k, v in versions().items()]))
        rep.add("<h3>Configuration</h3><pre>" + html.escape(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
                + "</pre>")


def unfolding_section(rep: ReportBuilder, cfg, m: dict, figures: str) -> None:
    """The report's section on the unfolding flow (issue 16) from :class:`EvaluateUnfolding`'s metrics."""
    u = cfg.unfolding
    train = f"{u.train_factor:g} x the ttbar sample, simulated apart" if u.train_factor else \
        "the train partition of the ttbar sample"
    s = m["summary"]
    rep.section("unfolding", "Unfolding flow: parton-level ttbar from reconstructed events",
                f"p(parton level | reco level) as a conditional {u.model} behind a deep-sets embedding of the lepton, "
                f"MET and up to 10 jets (no jet-parton assignment), trained on {train}, seeds {list(u.seeds)}; "
                f"measured on {m['events']['reference']:,} held-out events (closure: {u.closure_draws} draws per event; "
                f"calibration: {u.samples} draws for each of {u.evaluation_events:,} events).")
    rows = [[goal, "yes" if ok else "no"] for goal, ok in s["goals"].items()]
    rep.add(html_table(["goal of the unfolding", "met"], rows))
    dev = s["closure_ratio_deviation_max"]
    rep.add(f"<p>Largest closure chi2/ndf {s['closure_chi2_ndf_max']:.2f}; largest |ratio - 1| in bins with at "
            f"least 1000 events {'-' if dev is None else f'{dev:.3f}'}; calibration: largest KS distance "
            f"{s['calibration_ks_max']:.3f}, largest coverage deviation 68 % {s['coverage68_deviation_max']:.3f}, "
            f"95 % {s['coverage95_deviation_max']:.3f}; C2ST AUC {s['c2st_auc']:.3f}.</p>")
    first = m["per_seed"][str(m["seeds"][0])]
    rep.add(html_table(["observable", "chi2/ndf", "max |ratio - 1| (>= 1000 events)"],
                       [[k, f"{c['chi2_ndf']:.2f}", "-" if c["max_ratio_deviation"] is None
                         else f"{c['max_ratio_deviation']:.3f} +- {c['max_ratio_deviation_error']:.3f}"]
                        for k, c in first["closure"].items()]))
    shift_rows = []
    for seed, tests in m["mass_shift"].items():
        for key, v in tests.items():
            shift_rows.append([f"seed {seed}", key, f"{v['true_shift']:+.3f}",
                               f"{v['unfolded_shift']:+.3f} +- {v['unfolded_shift_error']:.3f}",
                               "-" if v["bias"] is None else f"{100 * v['bias']:+.0f} %"])
    for key, v in m.get("mass_shift_reweighted", {}).items():
        shift_rows.append(["after one reweighting", key, f"{v['true_shift']:+.3f}",
                           f"{v['unfolded_shift']:+.3f} +- {v['unfolded_shift_error']:.3f}",
                           "-" if v["bias"] is None else f"{100 * v['bias']:+.0f} %"])
    rep.add("<h3>Prior dependence</h3>" + html_table(
        ["prior", "generator shift [GeV]", "true shift [GeV]", "unfolded shift [GeV]", "bias"], shift_rows))
    rep.add("<h3>Against iterative Bayesian unfolding</h3>" + html_table(
        ["observable", "IBU chi2/ndf", "flow chi2/ndf (own errors)", "flow chi2/ndf (IBU errors)",
         "flow bins within IBU error", "flow / IBU uncertainty (median)"],
        [[k, f"{v['ibu_chi2_ndf']:.2f}", f"{v['flow_chi2_ndf']:.2f}", f"{v['flow_chi2_ndf_ibu_errors']:.2f}",
          f"{v['flow_within_ibu_error']:.2f}", f"{v['error_ratio_median']:.2f}"] for k, v in m["ibu"].items()])
        + "<p>Both against the expected parton-level spectrum (the training events' truth scaled to the sample); "
        "chi2 with the method's error plus that prediction's.</p>")
    t = first["timing"]
    rep.add(f"<p>Sampling: {t['posterior_draws_per_second']:,.0f} posterior draws per second (batches of events), "
            f"{t['closure_draws_per_second']:,.0f} draws per second in the closure's batches.</p>")
    for name in ("unfolding_marginals", "unfolding_posteriors", "unfolding_ranks", "unfolding_coverage",
                 "unfolding_mass_shift", "unfolding_ibu"):
        rep.figure(os.path.join(figures, f"{name}.png"), name, name.replace("_", " "), "100%" if name in (
            "unfolding_marginals", "unfolding_ranks") else "48%")
