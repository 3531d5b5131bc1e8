"""python -m benchmarks.unfolding OUT_JSON --store STORE [--config unfolding] [--version v1] [--seed 1]
[--repeats 5] [--threads 2]

Sampling speed of a stored unfolding flow (issue 16: 2x10^4 parton-level samples of one reconstructed event in
under a second on 2 cores): the wall time of ``--draws`` (default 20000) posterior draws for one event, for each
of ``--repeats`` reference events (median quoted), and the rate in a batch (200 draws for each of 1000 events),
with torch's thread count and the machine's CPU count recorded.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import numpy as np
import torch

from analysis import unfolding as unf
from analysis.config import load_config
from analysis.io import write_json
from analysis.ntuple import read_objects
from analysis.partition import split_objects
from models.fit import sample_posterior
from models.io import load_conditional


def stored(store: Path, task: str, name: str, *parts: str) -> Path:
    """``<store>/<task>/<name>-<digest>/<parts...>`` of the one stored configuration named ``name``."""
    levels = sorted((store / task).glob(f"{name}-*"))
    if len(levels) != 1:
        raise SystemExit(f"{store}: expected one {task}/{name}-* directory, found {[p.name for p in levels]}")
    return levels[0].joinpath(*parts)


def stored_run_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark on a finished run's store: ``OUT_JSON --store STORE [--config] [--version]``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--config", default="unfolding")
    ap.add_argument("--version", default="v1")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = stored_run_parser(__doc__)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--draws", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    fit, meta = load_conditional(stored(args.store, "TrainUnfolding", cfg.name, args.version, f"seed_{args.seed}",
                                      "model.pt"), "TrainUnfolding")
    skim = stored(args.store, "Skim", cfg.name, args.version)
    files = sorted(str(p) for p in skim.glob("background_[0-9]*.root"))
    objects = unf.with_truth(split_objects(read_objects(files), cfg.partition, cfg.seed, "background")["reference"])
    _, context = unf.regression_data(objects)
    one_event = []
    for i in range(args.repeats):
        c = tuple(x[i:i + 1] for x in context)
        t0 = time.perf_counter()
        draws, _ = sample_posterior(fit, c, args.draws, seed=i, batch_size=args.draws)
        unf.observables(draws[:, 0], np.full(args.draws, objects["obj_lepton_phi"][i]), cfg.physics.b_mass)
        one_event.append(time.perf_counter() - t0)
    n_events, per_event = 1000, 200
    c = tuple(x[:n_events] for x in context)
    t0 = time.perf_counter()
    sample_posterior(fit, c, per_event, seed=0)
    batch = time.perf_counter() - t0
    out = {"date": datetime.date.today().isoformat(), "config": cfg.name, "model": fit.name,
           "hyperparameters": fit.hyper, "seed": args.seed, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "device": "cpu",
           "one_event": {"draws": args.draws, "seconds": one_event, "median_seconds": float(np.median(one_event)),
                         "draws_per_second": float(args.draws / np.median(one_event))},
           "batch": {"events": n_events, "draws_per_event": per_event, "seconds": batch,
                     "draws_per_second": n_events * per_event / batch}}
    write_json(args.out, out)
    print(f"{args.draws} draws of one event: median {out['one_event']['median_seconds']:.3f} s; batch "
          f"{out['batch']['draws_per_second']:.0f} draws/s")


if __name__ == "__main__":
    main()
