"""The skim stage: one workflow branch per input file or CSV chunk, and a summary with cutflow and plots."""

from __future__ import annotations

import math

import luigi
import numpy as np

from analysis.config import SIMULATED_SOURCES
from analysis.io import InputError, write_json
from analysis.ntuple import read_ntuples, write_ntuple
from analysis.plotting import plot_cutflow, plot_features
from analysis.readers import check_higgs_head, count_higgs_rows, nanoaod_input_files
from analysis.skim import merge_cutflows, sample_normalisation, skim_higgs_csv, skim_nanoaod, yield_warning
from workflow.base import AnalysisTask, AnalysisWorkflow, SampleSetMixin
from workflow.ntuples import GenerateEvents

class Skim(SampleSetMixin, AnalysisWorkflow):
    """Object and event selection and the 28 HIGGS features (see :mod:`analysis.skim`).

    Branches: one per generated file, per real NanoAOD file, or per chunk of ``events_per_file`` rows of a
    HIGGS CSV; with ``--truth`` (``--regression``), one per file of the truth samples (the regressions' training
    samples) instead. Outputs per branch: the flat ntuple ``<sample>_<index>.root`` and ``cutflow_<sample>_<index>.json``.
    """

    truth = luigi.BoolParameter(default=False, description="skim the truth samples (independent simulated "
                                "background) instead of the configured ones; default: false")
    regression = luigi.BoolParameter(default=False, description="skim the training samples of the conditional "
                                     "regressions instead of the configured ones; default: false")

    def create_branch_map(self):
        """The branches; the input files are checked here, at scheduling time, so a bad input stops the run
        before any branch runs (:class:`InputError`): NanoAOD files by :func:`~analysis.readers.nanoaod_input_files`, a HIGGS CSV
        read through once by :func:`~analysis.readers.count_higgs_rows` (cached per file and modification
        time; only its first lines when ``n_events`` is set): empty, truncated, not comma-separated, or a row
        without 29 fields."""
        cfg = self.analysis_config
        branches = []
        seen: dict[str, tuple[str, str, str]] = {}  # NanoAOD files by real path: each may be listed once
        for name, s in self.sample_set().items():
            if s.simulated:
                branches += [{"sample": name, "index": i, "source": s.source} for i in range(s.n_files)]
            elif s.source == "nanoaod":
                branches += [{"sample": name, "index": i, "source": s.source, "file": f}
                             for i, f in enumerate(nanoaod_input_files(cfg, name, s, seen))]
            else:
                path = str(cfg.resolve_path(s.path))
                if s.n_events:  # the first lines only: counting the full HIGGS.csv.gz takes a minute
                    check_higgs_head(path)
                    n_rows = s.n_events  # a file with fewer rows fails in the branch that reads past its end
                else:
                    n_rows = count_higgs_rows(path)
                chunks = math.ceil(n_rows / s.events_per_file)
                branches += [{"sample": name, "index": i, "source": s.source, "file": path,
                              "start": i * s.events_per_file, "stop": min((i + 1) * s.events_per_file, n_rows)}
                             for i in range(chunks)]
        return dict(enumerate(branches))

    def external_inputs(self) -> list[str]:
        return [self.branch_data["file"]] if self.is_branch() and "file" in self.branch_data else []

    def outputs_by_sample(self) -> dict[str, list[dict]]:
        """The workflow's branch outputs (``{"ntuple": ..., "cutflow": ...}``) grouped by sample."""
        branch_map = self.get_branch_map()
        grouped: dict[str, list[dict]] = {}
        for b, targets in self.output()["collection"].targets.items():
            grouped.setdefault(branch_map[b]["sample"], []).append(targets)
        return grouped

    def _generator_branches(self, sample: str) -> list[int]:
        gen = GenerateEvents.req(self, truth=self.truth, regression=self.regression,
                                    unfolding=self.unfolding)
        return GenerateEvents.branches_of_sample(gen.get_branch_map(), sample)

    def workflow_requires(self):
        reqs = super().workflow_requires()
        cfg = self.analysis_config
        if any(s.simulated for s in self.sample_set().values()):
            reqs["events"] = GenerateEvents.req(self, truth=self.truth, regression=self.regression,
                                    unfolding=self.unfolding)
        return reqs

    def requires(self):
        data = self.branch_data
        if data["source"] not in SIMULATED_SOURCES:
            return {}
        # all files of the sample: the normalisation needs the sum of generator weights over all of them
        return {b: GenerateEvents.req(self, branch=b, truth=self.truth, regression=self.regression,
                                    unfolding=self.unfolding) for b in self._generator_branches(data["sample"])}

    def output(self):
        d = self.branch_data
        return {"ntuple": self.local_target(f"{d['sample']}_{d['index']}.root"),
                "cutflow": self.local_target(f"cutflow_{d['sample']}_{d['index']}.json")}

    def run(self):
        cfg = self.analysis_config
        d = self.branch_data
        sample = cfg.sample(d["sample"])
        issues: list[str] = []  # warnings on the input (logged by the skim), kept with the cutflow
        if d["source"] == "higgs_csv":
            columns, cutflow = skim_higgs_csv(d["file"], sample.label, d["start"], d["stop"])
        else:
            if d["source"] in SIMULATED_SOURCES:
                inputs = self.input()
                files = [t.path for t in inputs.values()]
                path = inputs[self._generator_branches(d["sample"])[d["index"]]].path
            else:
                files = [b["file"] for b in self.branch_map.values() if b["sample"] == d["sample"]]
                path = d["file"]
            norm = sample_normalisation(cfg, d["sample"], files)
            columns, cutflow = skim_nanoaod(path, cfg, sample.label, norm, issues=issues,
                                            progress=self.progress_callback(f"{d['sample']} {d['index']}: "))
        n = len(columns["label"])
        if n == 0:
            self.logger.warning(f"{d['sample']} {d['index']}: no event passes the selection")
        meta = {"sample": d["sample"], "source": d["source"], "label": sample.label, "config": cfg.name,
                "units": cfg.feature_units, "input": d.get("file", ""), "cutflow": cutflow,
                "warnings": issues}
        out = self.output()
        write_ntuple(out["ntuple"].path, columns, meta)
        write_json(out["cutflow"].path, {"sample": d["sample"], "index": d["index"], "cutflow": cutflow,
                                         "warnings": issues})
        self.publish_message(f"{d['sample']} {d['index']}: {n} events selected")


class SkimSummary(AnalysisTask):
    """Merged cutflow per sample (JSON and plot), signal-against-background feature plots, and an index of the
    skimmed ntuples with selected event counts and expected yields."""

    plot_max_events = 200_000

    def requires(self):
        return Skim.req(self)

    def output(self):
        return {name: self.local_target(name) for name in
                ("summary.json", "cutflow.json", "cutflow.png", "cutflow.pdf", "features.png", "features.pdf")}

    def run(self):
        cfg = self.analysis_config
        summary, cutflows, plot_samples, unweighted = {}, {}, {}, []
        for s, outputs in self.requires().outputs_by_sample().items():
            files = [t["ntuple"].path for t in outputs]
            records = [t["cutflow"].load(formatter="json") for t in outputs]
            cutflow = merge_cutflows([r["cutflow"] for r in records])
            issues = [w for r in records for w in r.get("warnings", [])]  # logged by the skim, once per file
            cols = read_ntuples(files, expect={"sample": s, "label": cfg.sample(s).label})
            n = len(cols["label"])
            if n == 0:
                raise InputError(f"sample {s!r}: no event passes the selection; cutflow: "
                                 + ", ".join(f"{k}={v['events']}" for k, v in cutflow.items()))
            expected = float(np.sum(cols["weight"]))
            warning = yield_warning(s, cols["weight"])
            if warning:
                issues.append(warning)
            cutflows[s] = cutflow
            summary[s] = {"label": cfg.sample(s).label, "files": files, "n_selected": n,
                          "expected_yield": expected, "cutflow": cutflow, "warnings": issues}
            keep = slice(0, self.plot_max_events)
            weights, label = cols["weight"][keep], f"{s} ({n} events)"
            if not np.sum(weights) > 0:  # plot_features draws unit areas: a non-positive total would vanish
                weights, label = np.ones(len(weights)), f"{s} ({n} events, unweighted: total weight {expected:.4g})"
                unweighted.append(s)
            plot_samples[label] = ({k: v[keep] for k, v in cols.items()}, weights)
        out = self.output()
        write_json(out["cutflow.json"].path, cutflows)
        plot_cutflow(cutflows, out["cutflow.png"].path, title=f"{cfg.name}: cutflow")
        title = f"{cfg.name}: skimmed features"
        if unweighted:
            title += f" ({', '.join(unweighted)} unweighted: total weight not positive)"
        plot_features(plot_samples, out["features.png"].path, units=cfg.feature_units, title=title)
        write_json(out["summary.json"].path, {"config": cfg.name, "luminosity_fb": cfg.luminosity_fb,
                                              "units": cfg.feature_units, "samples": summary,
                                              "warnings": [w for v in summary.values() for w in v["warnings"]]})
        for s, v in summary.items():
            warned = f" ({len(v['warnings'])} warnings: see summary.json)" if v["warnings"] else ""
            self.publish_message(f"{s}: {v['n_selected']} events selected, expected yield "
                                 f"{v['expected_yield']:.1f}{warned}")
