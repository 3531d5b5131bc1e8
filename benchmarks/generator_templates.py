"""python -m benchmarks.generator_templates OUT_JSON --store STORE --sample TAG=NTUPLE [--sample ...]
[--config quickstart] [--version v1] [--events N]

Any generated background sample judged by the stored analysis (issue 13's signal-region measure): each sample
(a flat ntuple, e.g. written by ``benchmarks.generator_scaling --save-generated``) is scored with the finished
run's classifier, and its template (the first ``--events`` events, weights normalised to the expected background)
is measured against the truth test template as every template is (``benchmarks.stored_templates``): chi2 for the
analysis binning, the five most signal-like bins' ratio, the spurious signal without generator uncertainty and
the expected limit; and a figure of generated / truth per bin (OUT_JSON with .png and .pdf). The stored default
flow's sample (the first analysis seed) is judged beside them with the same
number of events, so that the rows differ only in the generator.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from analysis.config import load_config
from analysis.io import write_json
from analysis.ntuple import read_ntuples
from benchmarks.stored_templates import StoredAnalysis, plot_ratios, summary_line
from benchmarks.unfolding import stored_run_parser


def main(argv: list[str] | None = None) -> None:
    ap = stored_run_parser(__doc__)
    ap.set_defaults(config="quickstart")
    ap.add_argument("--sample", action="append", default=[], help="TAG=NTUPLE of generated events")
    ap.add_argument("--events", type=int, default=500_000)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    analysis = StoredAnalysis(args.store, cfg, args.version)
    samples = {}
    for item in args.sample:
        tag, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--sample {item!r}: expected TAG=NTUPLE")
        samples[tag] = analysis.score(read_ntuples([path]))
    n = min([args.events] + [len(s) for s in samples.values()])
    flow_seed = cfg.flows.analysis_seeds[0]
    rows = {f"{cfg.flows.default} s{flow_seed} (stored)": analysis.scores[f"generated_{flow_seed}"][:n]}
    rows.update({tag: s[:n] for tag, s in samples.items()})
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "config": cfg.name,
           "store": str(args.store), "events": n, "samples": dict(s.split("=", 1) for s in args.sample),
           "rows": {}}
    for tag, scores in rows.items():
        row = analysis.judge(scores, np.ones(len(scores)), analysis.background_yield)
        out["rows"][tag] = row
        print(summary_line(tag, row), flush=True)
    write_json(args.out, out)
    figure = Path(args.out).with_suffix(".png")
    plot_ratios(out["rows"], analysis.edges, analysis.truth.stat / analysis.truth.yields, figure,
                title=f"{cfg.name}: generated templates against the truth test template ({n:,} events each)")


if __name__ == "__main__":
    main()
