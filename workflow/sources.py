"""Two event sources side by side: the whole analysis on this configuration beside ``--reference``'s."""

from __future__ import annotations

import hashlib
import html
import json
import os

import luigi

from analysis.config import load_config
from analysis.io import InputError, atomic_path
from analysis.ntuple import read_ntuples
from analysis.report import html_page, html_table
from analysis.features import FEATURES
from analysis.readers import read_higgs_csv
from analysis.sources import PEAK_FEATURES, comparison_rows, peak_widths, plot_peaks, source_summary
from workflow.base import AnalysisTask, _cached_config, _cached_digest
from workflow.classifiers import CompareClassifiers
from workflow.evaluation import FidelityTest
from workflow.flows import PartitionEvents
from workflow.limits import LimitScan
from workflow.report import RunAnalysis

PARTITIONS = ("train", "validation", "reference")


class CompareSources(AnalysisTask):
    """What changes between two event sources (e.g. ``--config pythia_quickstart`` against the embedded
    generator's ``--reference quickstart``): signal and background peak widths of the reconstructed resonances
    (beside the UCI HIGGS data set's), classifier AUCs, the generator's C2ST against its truth sample, expected
    limits and spurious signals; both analyses run in full first (``RunAnalysis``). Outputs
    ``comparison.{json,md,html}`` and ``peaks.{png,pdf}`` (:mod:`analysis.sources`)."""

    reference = luigi.Parameter(default="quickstart", description="configuration of the other source; default: "
                                "quickstart")
    higgs_csv = luigi.Parameter(default="", description="UCI HIGGS CSV whose peak widths join the table; default: "
                                "the higgs_uci configuration's file where it exists")

    def requires(self):
        reqs = {}
        for key, cfg in (("this", self.config), ("reference", self.reference)):
            reqs[key] = {"analysis": RunAnalysis.req(self, config=cfg),
                         "partition": PartitionEvents.req(self, config=cfg),
                         "comparison": CompareClassifiers.req(self, config=cfg),
                         "fidelity": FidelityTest.req(self, config=cfg),
                         "limits": LimitScan.req(self, config=cfg)}
        return reqs

    def _higgs_path(self) -> str | None:
        if self.higgs_csv:
            path = os.path.abspath(os.path.expanduser(self.higgs_csv))
            if not os.path.isfile(path):
                raise InputError(f"--higgs-csv: no such file: {path}")
            return path
        cfg = load_config("higgs_uci")
        path = str(cfg.resolve_path(cfg.samples["signal"].path))
        return path if os.path.isfile(path) else None

    def external_inputs(self) -> list[str]:
        path = self._higgs_path()
        return [path] if path else []

    def store_parts(self):
        ref = _cached_config(self.reference, "")
        if ref.name == self.config_name and _cached_digest(self.reference, "") == _cached_digest(self.config, ""):
            raise SystemExit(f"hepflows: CompareSources: --reference {self.reference!r} is the configuration itself; "
                             "name another one (e.g. --config pythia_quickstart --reference quickstart)")
        parts = super().store_parts() + (f"vs-{ref.name}-{_cached_digest(self.reference, '')}",)
        path = self._higgs_path()
        if path:
            parts += (f"higgs-{hashlib.sha1(path.encode()).hexdigest()[:8]}",)
        return parts

    def output(self):
        return {name: self.local_target(name) for name in ("comparison.json", "comparison.md", "comparison.html",
                                                           "peaks.png", "peaks.pdf")}

    def _source(self, cfg_name: str, inp: dict) -> tuple[dict, dict]:
        cfg = load_config(cfg_name)
        part = inp["partition"]
        by_label: dict[int, dict] = {}
        for label in (0, 1):
            paths = [part[f"{s}_{p}"].path for s, sc in cfg.samples.items() if sc.label == label for p in PARTITIONS]
            by_label[label] = read_ntuples(paths, columns=PEAK_FEATURES)
        n = {"background": len(by_label[0]["m_jj"]), "signal": len(by_label[1]["m_jj"])}
        summary = source_summary(inp["comparison"]["comparison.json"].load(formatter="json"),
                                 inp["fidelity"]["fidelity.json"].load(formatter="json"),
                                 inp["limits"]["limits"].load(formatter="json"),
                                 peak_widths(by_label[1]), peak_widths(by_label[0]), n)
        sources = sorted({s.source for s in cfg.samples.values()})
        summary["config"], summary["sources"] = cfg.name, sources
        return summary, by_label[1]

    def run(self):
        inp = self.input()
        names = {"this": self.config, "reference": self.reference}
        summaries, signal = {}, {}
        for key in ("this", "reference"):
            s, sig = self._source(names[key], inp[key])
            label = f"{s['config']} ({', '.join(s['sources'])})"
            summaries[label], signal[label] = s, sig
        higgs = None
        path = self._higgs_path()
        if path:  # read once (the full HIGGS.csv.gz has 11M rows), split by label
            labels, feats, _, _ = read_higgs_csv(path)
            cols = {label: {f: feats[labels == label, FEATURES.index(f)] for f in PEAK_FEATURES} for label in (0, 1)}
            higgs = {"signal": peak_widths(cols[1]), "background": peak_widths(cols[0]), "path": path,
                     "events": {"signal": int((labels == 1).sum()), "background": int((labels == 0).sum())}}
            signal["UCI HIGGS"] = cols[1]
        rows = comparison_rows(summaries, higgs)
        columns = ["quantity", *summaries] + (["UCI HIGGS"] if higgs else [])
        out = self.output()
        with atomic_path(out["comparison.json"].path) as tmp:
            with open(tmp, "w") as f:
                json.dump({"sources": summaries, "higgs": higgs, "rows": rows}, f, indent=1, default=float)
        intro = (f"The analysis of {self.config} beside that of {self.reference}. Peak widths: the core sigma of "
                 "each reconstructed mass of the HIGGS features (iterated truncated RMS within +-1.5 sigma) "
                 "relative to its centre (unit-free; bootstrap errors), in brackets the fraction of the selected "
                 "events within +-2 sigma of the centre. "
                 "Classifier AUCs on each configuration's reference partition; C2ST of the default generator "
                 "against the configuration's own truth sample at its largest size; limits and spurious signals "
                 "at the first background systematic, generated templates at the largest size. The samples "
                 "differ in size where the configurations do (first rows).")
        with atomic_path(out["comparison.md"].path) as tmp:
            md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            md += ["| " + " | ".join(str(r.get(c, "-")) for c in columns) + " |" for r in rows]
            with open(tmp, "w") as f:
                f.write(f"# Event sources compared\n\n{intro}\n\n" + "\n".join(md) + "\n")
        for fmt in ("png", "pdf"):
            with atomic_path(out[f"peaks.{fmt}"].path) as tmp:
                plot_peaks(signal, tmp)
        with atomic_path(out["comparison.html"].path) as tmp:
            with open(tmp, "w") as f:
                f.write(html_page("Event sources compared", f"<h1>Event sources compared</h1><p>{html.escape(intro)}"
                                  f"</p>{html_table(columns, [[r.get(c, '-') for c in columns] for r in rows])}"
                                  "<p><img src='peaks.png' alt='signal peaks by source'></p>"))
        for r in rows:
            self.publish_message(" | ".join(str(r.get(c, "-")) for c in columns))

