"""python -m benchmarks.generator_scaling_summary OUT_STEM RUN_JSON...

Collect runs of :mod:`benchmarks.generator_scaling` into one results file (``OUT_STEM.json``) and draw the
fidelity-against-training-size figure (``OUT_STEM.png``): high-power C2ST AUC at 10^5 events per class (with its
95 % interval) and per feature group, against the number of training events."""
from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.io import write_json  # noqa: E402

stem, paths = sys.argv[1], sys.argv[2:]
same = [p for p in paths if "same_analysis" in p]
runs = [json.load(open(p)) for p in paths if p not in same]
write_json(f"{stem}.json", {
    "description": "Default generator (made_mog, quickstart preprocessing, seed 1) trained on growing samples of "
                   "simulated ttbar background (the quickstart training partition of 4 files, extended by 12 truth "
                   "files that the test never uses), tested against the first 14 truth files (160k events): HGB "
                   "C2ST at 5e4 and 1e5 events per class on 28 features + 5 relative azimuths (50k/class test, 50 "
                   "bootstraps), group AUCs at 1e5, validity rates; 1 thread.",
    "script": "python -m benchmarks.generator_scaling STORE OUT.json --train N [...]", "runs": runs,
    "same_analysis": json.load(open(same[0])) if same else None})
base = [r for r in runs if not r["args"].get("derive_masses") and not r["args"].get("hidden")
        and not r["args"].get("epochs")]
base.sort(key=lambda r: r["train_events"])
fig, ax = plt.subplots(figsize=(6, 4.2))
n = [r["train_events"] for r in base]
auc = [r["auc_100k"] for r in base]
lo = [r["auc_100k"] - r["auc_interval95"][0] for r in base]
hi = [r["auc_interval95"][1] - r["auc_100k"] for r in base]
ax.errorbar(n, auc, yerr=[lo, hi], marker="o", color="k", label="all 33 columns")
for g, style in zip(base[0]["groups"], ["s--", "^--", "v--", "d--"]):
    ax.plot(n, [r["groups"][g] for r in base], style, label=g, alpha=0.8)
ax.axhline(0.5, color="grey", lw=0.8, ls=":")
ax.axhline(0.55, color="tab:red", lw=0.8, ls="--", label="goal 0.55")
ax.set_xscale("log")
ax.set_xlabel("training events (simulated ttbar, selected)")
ax.set_ylabel("C2ST AUC, generated vs truth (1e5 / class)")
ax.set_title("made_mog fidelity against training-set size (quickstart)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(f"{stem}.png", dpi=120)
print(f"{stem}.json", f"{stem}.png")
