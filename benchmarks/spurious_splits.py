"""python -m benchmarks.spurious_splits OUT_JSON --store STORE --config NAME [--version V] [--features SET]
[--splits 12]

Which construction of the generator uncertainty is unbiased? From the stored outputs of a finished
``RunAnalysis`` (the ``ScoreEvents`` scores, the ``PartitionEvents`` yields and the ``LimitScan`` binning), the
spurious signal of the largest generated template against the truth sample over ``--splits`` random
calibration/test splits, each construction (:func:`analysis.limits.split_spurious`) calibrated anew on every
calibration part: the z = mu_hat / sigma per split, their mean and RMS. One split's z is one draw; a biased
construction shows as a mean away from zero. ``--features regressed`` reads the regressed feature set.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path

import numpy as np

from analysis.config import load_config
from analysis.io import write_json
from analysis.limits import ScoredSamples, split_spurious

CONSTRUCTIONS = ("replicas+nonclosure", "replicas+correction")


def stored_samples(store: Path, config: str, version: str, features: str) -> tuple[ScoredSamples, dict, Path]:
    """The scored samples, the limit scan's results and the scan's directory of one stored run."""
    cfg = load_config(config)
    digests = sorted(p.name for p in (store / "ScoreEvents").glob(f"{cfg.name}-*"))
    if len(digests) != 1:
        raise SystemExit(f"{store}: expected one ScoreEvents/{cfg.name}-* directory, found {digests}")
    sub = (features,) if features != "standard" else ()
    scores = store.joinpath("ScoreEvents", digests[0], version, *sub, cfg.limits.classifier, "scores.npz")
    scan = store.joinpath("LimitScan", digests[0], version, *sub)
    part = json.loads(store.joinpath("PartitionEvents", digests[0], version, "partition.json").read_text())
    z = np.load(scores, allow_pickle=False)
    samples = ScoredSamples(
        z["signal_score"], z["signal_weight"], z["background_score"], z["background_weight"],
        {s: z[f"generated_{s}"] for s in cfg.flows.analysis_seeds},
        sum(s["expected_yield"] for s in part["samples"].values() if s["label"] == 0), cfg.luminosity_fb,
        truth_scores=z["truth_score"], truth_weights=z["truth_weight"], truth_source=str(z["truth_source"]),
        replicas={s: z[f"replica_{s}"] for s in cfg.flows.replicas.seeds},
        n_train=sum(s["sizes"]["train"] for s in part["samples"].values() if s["label"] == 0),
        calibration_fraction=cfg.truth.calibration_fraction)
    return samples, json.loads((scan / "limits.json").read_text()), scan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--version", default="v1")
    ap.add_argument("--features", default="standard")
    ap.add_argument("--splits", type=int, default=12)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    samples, scan, scan_dir = stored_samples(args.store, args.config, args.version, args.features)
    limits_cfg = dataclasses.replace(cfg.limits, spurious_splits=args.splits)
    edges, size = np.asarray(scan["edges"]), scan["sizes"][-1]
    # seeds apart from the analysis's own (which the stored scan used): the analysis seed + 1
    out = {"date": datetime.date.today().isoformat(), "config": args.config, "features": args.features,
           "scan": str(scan_dir), "generated_events": size, "splits": args.splits, "constructions": {}}
    for name in CONSTRUCTIONS:
        t0 = time.perf_counter()
        r = split_spurious(samples, limits_cfg, cfg.seed + 1, name, edges, size)
        r["seconds"] = time.perf_counter() - t0
        out["constructions"][name] = r
        print(f"{name}: mean {r['mean']:+.2f}, RMS {r['rms']:.2f}, within 1 sigma {r['within_max_sigma']:.0%} "
              f"({r['seconds']:.0f} s)", flush=True)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
