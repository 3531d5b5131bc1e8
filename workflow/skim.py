"""The skim stage: one workflow branch per input file or CSV chunk, and a summary with cutflow and plots."""

from __future__ import annotations

import glob
import math

import law
import luigi
import numpy as np

from analysis.io import InputError, write_json
from analysis.ntuple import read_ntuples, write_ntuple
from analysis.plotting import plot_cutflow, plot_features
from analysis.readers import count_higgs_rows
from analysis.skim import merge_cutflows, sample_normalisation, skim_higgs_csv, skim_nanoaod
from workflow.base import AnalysisTask, AnalysisWorkflow
from workflow.ntuples import GenerateEvents


def _nanoaod_files(cfg, sample) -> list[str]:
    files: list[str] = []
    for pattern in sample.files:
        resolved = str(cfg.resolve_path(pattern))
        matches = sorted(glob.glob(resolved))
        files.extend(matches if matches else [resolved])  # a missing file fails with a clear error in run()
    return files


class Skim(AnalysisWorkflow):
    """Object and event selection and the 28 HIGGS features (see :mod:`analysis.skim`).

    Branches: one per generated file, per real NanoAOD file, or per chunk of ``events_per_file`` rows of a
    HIGGS CSV; with ``--truth``, one per file of the truth samples instead. Outputs per branch: the flat ntuple ``<sample>_<index>.root`` and ``cutflow_<sample>_<index>.json``.
    """

    truth = luigi.BoolParameter(default=False, description="skim the truth samples (independent simulated "
                                "background) instead of the configured ones; default: false")

    def create_branch_map(self):
        cfg = self.analysis_config
        branches = []
        for name, s in (cfg.truth_samples if self.truth else cfg.samples).items():
            if s.source == "generator":
                branches += [{"sample": name, "index": i, "source": s.source} for i in range(s.n_files)]
            elif s.source == "nanoaod":
                branches += [{"sample": name, "index": i, "source": s.source, "file": f}
                             for i, f in enumerate(_nanoaod_files(cfg, s))]
            else:
                path = str(cfg.resolve_path(s.path))
                n_rows = s.n_events or count_higgs_rows(path)
                chunks = math.ceil(n_rows / s.events_per_file)
                branches += [{"sample": name, "index": i, "source": s.source, "file": path,
                              "start": i * s.events_per_file, "stop": min((i + 1) * s.events_per_file, n_rows)}
                             for i in range(chunks)]
        return dict(enumerate(branches))

    def htcondor_output_directory(self):
        # the truth samples keep their submission records apart (same store directory, other branches)
        return law.LocalDirectoryTarget(self.local_path(*(("htcondor", "truth") if self.truth else ("htcondor",))))

    def outputs_by_sample(self) -> dict[str, list[dict]]:
        """The workflow's branch outputs (``{"ntuple": ..., "cutflow": ...}``) grouped by sample."""
        branch_map = self.get_branch_map()
        grouped: dict[str, list[dict]] = {}
        for b, targets in self.output()["collection"].targets.items():
            grouped.setdefault(branch_map[b]["sample"], []).append(targets)
        return grouped

    def _generator_branches(self, sample: str) -> list[int]:
        gen = GenerateEvents.req(self, truth=self.truth)
        return GenerateEvents.branches_of_sample(gen.get_branch_map(), sample)

    def workflow_requires(self):
        reqs = super().workflow_requires()
        cfg = self.analysis_config
        if any(s.source == "generator" for s in (cfg.truth_samples if self.truth else cfg.samples).values()):
            reqs["events"] = GenerateEvents.req(self, truth=self.truth)
        return reqs

    def requires(self):
        data = self.branch_data
        if data["source"] != "generator":
            return {}
        # all files of the sample: the normalisation needs the sum of generator weights over all of them
        return {b: GenerateEvents.req(self, branch=b, truth=self.truth) for b in self._generator_branches(data["sample"])}

    def output(self):
        d = self.branch_data
        return {"ntuple": self.local_target(f"{d['sample']}_{d['index']}.root"),
                "cutflow": self.local_target(f"cutflow_{d['sample']}_{d['index']}.json")}

    def run(self):
        cfg = self.analysis_config
        d = self.branch_data
        sample = cfg.sample(d["sample"])
        if d["source"] == "higgs_csv":
            columns, cutflow = skim_higgs_csv(d["file"], sample.label, d["start"], d["stop"])
        else:
            if d["source"] == "generator":
                inputs = self.input()
                files = [t.path for t in inputs.values()]
                path = inputs[self._generator_branches(d["sample"])[d["index"]]].path
            else:
                files = [b["file"] for b in self.branch_map.values() if b["sample"] == d["sample"]]
                path = d["file"]
            norm = sample_normalisation(cfg, d["sample"], files)
            columns, cutflow = skim_nanoaod(path, cfg, sample.label, norm,
                                            progress=self.progress_callback(f"{d['sample']} {d['index']}: "))
        n = len(columns["label"])
        if n == 0:
            self.logger.warning(f"{d['sample']} {d['index']}: no event passes the selection")
        meta = {"sample": d["sample"], "source": d["source"], "label": sample.label, "config": cfg.name,
                "units": cfg.feature_units, "input": d.get("file", ""), "cutflow": cutflow}
        out = self.output()
        write_ntuple(out["ntuple"].path, columns, meta)
        write_json(out["cutflow"].path, {"sample": d["sample"], "index": d["index"], "cutflow": cutflow})
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
        summary, cutflows, plot_samples = {}, {}, {}
        for s, outputs in self.requires().outputs_by_sample().items():
            files = [t["ntuple"].path for t in outputs]
            cutflow = merge_cutflows([t["cutflow"].load(formatter="json")["cutflow"] for t in outputs])
            cols = read_ntuples(files)
            n = len(cols["label"])
            if n == 0:
                raise InputError(f"sample {s!r}: no event passes the selection; cutflow: "
                                 + ", ".join(f"{k}={v['events']}" for k, v in cutflow.items()))
            cutflows[s] = cutflow
            summary[s] = {"label": cfg.sample(s).label, "files": files, "n_selected": n,
                          "expected_yield": float(np.sum(cols["weight"])), "cutflow": cutflow}
            keep = slice(0, self.plot_max_events)
            plot_samples[f"{s} ({n} events)"] = ({k: v[keep] for k, v in cols.items()}, cols["weight"][keep])
        out = self.output()
        write_json(out["cutflow.json"].path, cutflows)
        plot_cutflow(cutflows, out["cutflow.png"].path, title=f"{cfg.name}: cutflow")
        plot_features(plot_samples, out["features.png"].path, units=cfg.feature_units,
                      title=f"{cfg.name}: skimmed features")
        write_json(out["summary.json"].path, {"config": cfg.name, "luminosity_fb": cfg.luminosity_fb,
                                              "units": cfg.feature_units, "samples": summary})
        for s, v in summary.items():
            self.publish_message(f"{s}: {v['n_selected']} events selected, expected yield {v['expected_yield']:.1f}")


