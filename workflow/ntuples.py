"""Ntuple production: the embedded generator or Pythia 8 writes NanoAOD files, one workflow branch per file."""

from __future__ import annotations

import luigi

from analysis.generator.nanoaod import write_nanoaod_file
from workflow.base import AnalysisWorkflow, SampleSetMixin


class GenerateEvents(SampleSetMixin, AnalysisWorkflow):
    """Simulate the ``generator`` and ``pythia8`` samples of the configuration as NanoAOD ROOT files.

    Branches: one per (sample, file index); with ``--truth`` those of the truth samples instead
    (:attr:`analysis.config.AnalysisConfig.truth_samples`), with ``--regression`` those of the regressions'
    training samples (:attr:`~analysis.config.AnalysisConfig.regression_samples`); independent seeds: the sample
    name enters each file's seed. Output: ``<sample>_<index>.root`` with TTrees ``Events`` and
    ``Runs``. Configurations without generator samples (e.g. ``higgs_uci``) have no branches.
    """

    truth = luigi.BoolParameter(default=False, description="generate the truth samples (independent simulated "
                                "background) instead of the configured ones; default: false")
    regression = luigi.BoolParameter(default=False, description="generate the training samples of the "
                                     "conditional regressions instead of the configured ones; default: false")

    def create_branch_map(self):
        samples = self.sample_set()
        branches = [{"sample": name, "index": i}
                    for name, s in samples.items() if s.simulated for i in range(s.n_files)]
        if any(s.source == "pythia8" for s in samples.values()):
            from analysis.generator.pythia import require_pythia

            require_pythia()  # at scheduling time: one message before any branch runs
        return dict(enumerate(branches))

    def output(self):
        return self.local_target(f"{self.branch_data['sample']}_{self.branch_data['index']}.root")

    def run(self):
        data = self.branch_data
        meta = write_nanoaod_file(self.output().path, self.analysis_config, data["sample"], data["index"],
                                  progress=self.progress_callback(f"{data['sample']} file {data['index']}: "))
        self.publish_message(f"wrote {meta['n_events']} {meta['process']} events to {self.output().path}")

    @classmethod
    def branches_of_sample(cls, branch_map: dict, sample: str) -> list[int]:
        return [b for b, d in branch_map.items() if d["sample"] == sample]

