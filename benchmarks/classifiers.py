"""python -m benchmarks.classifiers OUT_JSON [--fractions 1 0.5 0.25 0.1 0.05] [--models bdt nn transformer]

The classifiers of the zoo against training size (issue 17): events of the quickstart's samples (its physics and
sizes, simulated and skimmed here with seeds of their own, partitioned as the analysis does), each classifier
trained on a seeded fraction of the train partition (validation partition for early stopping, as in the
analysis) and measured on the whole reference partition: ROC AUC with its Hanley-McNeil error, the expected limit
with simulated templates (:func:`analysis.limits.simulated_limit`), training time and rate, and the scoring
rate. Does the object-level transformer win when data are scarce, as A. Butter's review says physics-aware
networks do? ``--no-pair`` adds the transformer without its pair features. The figure (AUC and limit against
training events) goes beside the JSON (``.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from analysis.config import load_config
from analysis.features import FEATURES
from analysis.generator.nanoaod import write_nanoaod_file
from analysis.io import write_json
from analysis.limits import simulated_limit
from analysis.metrics import hanley_mcneil_error
from analysis.ntuple import feature_matrix
from analysis.objects import classifier_inputs
from analysis.partition import partition_indices
from analysis.skim import sample_normalisation, skim_nanoaod
from models.classifiers import train_classifier


def quickstart_partitions(workdir: Path) -> tuple[dict, dict]:
    """partition -> (features, objects tuple, labels, weights) of the quickstart's samples, and the sizes."""
    cfg = load_config("quickstart")
    parts: dict = {p: [] for p in ("train", "validation", "reference")}
    for label in (0, 1):
        for name, sc in cfg.samples.items():
            if sc.label != label:
                continue
            paths = []
            for i in range(sc.n_files):
                path = workdir / f"{name}_{i}.root"
                write_nanoaod_file(path, cfg, name, 1000 * (label + 1) + i)
                paths.append(path)
            norm = sample_normalisation(cfg, name, paths)
            cols = [skim_nanoaod(p, cfg, label, norm)[0] for p in paths]
            cols = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
            idx = partition_indices(len(cols["weight"]), cfg.partition, cfg.seed, name)
            objects = {k: v for k, v in cols.items() if k.startswith("obj_")}
            for p in parts:
                rows = idx[p]
                parts[p].append((feature_matrix({k: v[rows] for k, v in cols.items()}),
                                 classifier_inputs({k: v[rows] for k, v in objects.items()}),
                                 np.full(len(rows), label), cols["weight"][rows]))
    out = {}
    for p, items in parts.items():
        out[p] = (np.concatenate([i[0] for i in items]), tuple(np.concatenate([i[1][k] for i in items])
                                                                for k in range(4)),
                  np.concatenate([i[2] for i in items]), np.concatenate([i[3] for i in items]))
    return out, {p: {"signal": int(v[2].sum()), "background": int((v[2] == 0).sum())} for p, v in out.items()}


def plot(rows: list[dict], path: str) -> None:
    """ROC AUC (with errors) and expected limit against training events, one line per classifier."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    plt.style.use(hep.style.ROOT)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(20, 8))
    for name in dict.fromkeys(r["classifier"] for r in rows):
        rs = sorted((r for r in rows if r["classifier"] == name), key=lambda r: r["train_events"])
        n = [r["train_events"] for r in rs]
        ax1.errorbar(n, [r["auc"] for r in rs], yerr=[r["auc_error"] for r in rs], marker="o", capsize=3,
                     label=name.replace("_nopair", " (no pair features)"))
        ax2.plot(n, [r["expected_limit"]["0"] for r in rs], marker="o", label=name)
    ax1.set(xscale="log", xlabel="training events (signal + background)", ylabel="ROC AUC (reference partition)")
    ax2.set(xscale="log", yscale="log", xlabel="training events (signal + background)",
            ylabel="expected limit on mu (simulated templates)")
    from matplotlib.ticker import NullFormatter
    for ax in (ax1, ax2):
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax2.set_yticks([0.5, 0.7, 1, 2, 3, 5, 7, 10])
    ax2.set_yticklabels(["0.5", "0.7", "1", "2", "3", "5", "7", "10"])
    fig.subplots_adjust(wspace=0.3)
    ax1.legend(fontsize=16)
    fig.suptitle("classifiers against training size (quickstart samples)", fontsize=18)
    fig.savefig(path, bbox_inches="tight", dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--fractions", nargs="*", type=float, default=[1.0, 0.5, 0.25, 0.1, 0.05])
    ap.add_argument("--models", nargs="*", default=["bdt", "nn", "transformer"])
    ap.add_argument("--no-pair", action="store_true", help="also the transformer without pair features")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the configuration's)")
    ap.add_argument("--plot-only", action="store_true", help="only draw OUT_JSON's figure (OUT_JSON .png)")
    args = ap.parse_args()
    if args.plot_only:
        import json
        plot(json.load(open(args.out))["rows"], str(Path(args.out).with_suffix(".png")))
        return
    cfg = load_config("quickstart")
    seed = cfg.seed if args.seed is None else args.seed
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data, sizes = quickstart_partitions(Path(tmp))
    print(f"events: {sizes} ({time.perf_counter() - t0:.0f} s)", flush=True)
    (_, _, yv, _), (xr, orf, yr, wr) = data["validation"], data["reference"]
    models = list(args.models) + (["transformer_nopair"] if args.no_pair else [])
    rows = []
    for frac in args.fractions:
        xt, ot, yt, _ = data["train"]
        sub = np.sort(np.random.default_rng(np.random.SeedSequence([cfg.seed, int(frac * 1e6)])).choice(
            len(yt), int(round(frac * len(yt))), replace=False))
        for kind in models:
            ccfg = cfg.classifiers
            name = kind
            if kind == "transformer_nopair":
                ccfg = dataclasses.replace(ccfg, transformer=dataclasses.replace(ccfg.transformer,
                                                                                  pair_features=False))
                kind = "transformer"
            objects = kind == "transformer"
            train = tuple(a[sub] for a in ot) if objects else xt[sub]
            val, ref = (data["validation"][1], orf) if objects else (data["validation"][0], xr)
            clf = train_classifier(kind, FEATURES, train, yt[sub], val, yv, ccfg, seed=seed)
            t1 = time.perf_counter()
            score = clf.score(ref)
            score_seconds = time.perf_counter() - t1
            auc = float(roc_auc_score(yr, score))
            row = {"classifier": name, "fraction": frac, "train_events": int(len(sub)),
                   "auc": auc, "auc_error": hanley_mcneil_error(auc, int(yr.sum()), int((yr == 0).sum())),
                   "expected_limit": simulated_limit(score, yr, wr, cfg.limits),
                   "train_seconds": clf.train_seconds, "epochs": len(clf.history),
                   "train_events_per_second": len(sub) * max(len(clf.history), 1) / clf.train_seconds,
                   "score_events_per_second": len(score) / score_seconds}
            rows.append(row)
            print(f"{name} fraction {frac:g} ({len(sub):,} events): AUC {auc:.4f} +- {row['auc_error']:.4f}, "
                  f"limit {row['expected_limit']['0']:.3f}, {clf.train_seconds:.0f} s", flush=True)
            write_json(args.out, {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                  "configuration": "quickstart", "training_seed": seed, "partition_sizes": sizes,
                                  "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                                  "limit": "simulated templates of the reference partition, first background "
                                           "systematic (analysis.limits.simulated_limit)",
                                  "rows": rows})
    plot(rows, str(Path(args.out).with_suffix(".png")))


if __name__ == "__main__":
    main()
