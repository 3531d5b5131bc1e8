"""python -m benchmarks.scaling [--sizes 1e5,3e5,1e6,3e6,1e7] [--train-max 1e6] [--out DIR]

Time and peak memory against the number of events for the four stages whose cost grows with the sample:
generation (generator + detector + NanoAOD writing, one file, one core), the coffea skim of that file, one
training epoch of the default generator (the configuration's model and batch size) on the skimmed events, and
sampling from it. Every point runs in a fresh process that reports its own wall time and peak resident memory
(``ru_maxrss``); a process that only imports the same modules gives the baseline memory. Log-log slopes are fitted
per stage (1: linear), and the paper configuration's cost is extrapolated from them (README *Performance*).

Results: ``benchmarks/results/<date>-scaling.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from analysis.io import write_json

_CHILD = r'''
import json, resource, sys, time
stage, config, n, path, out = sys.argv[1], sys.argv[2], int(float(sys.argv[3])), sys.argv[4], sys.argv[5]
from pathlib import Path
import numpy as np, torch
from analysis.config import load_config
from analysis.generator.nanoaod import write_nanoaod_file
from analysis.skim import skim_nanoaod
from models.fit import generator_columns
from models.preprocessing import Preprocessor
from models.registry import build, hyperparameters
from models.training import TrainSettings, sample_batches, train_model
cfg = load_config(config)
result = {}
t0 = time.perf_counter()
if stage == "generation":
    write_nanoaod_file(Path(path), cfg, "background", 0, n_events=n)
elif stage == "skim":
    cols = skim_nanoaod(Path(path), cfg, 0, 1.0)[0]
    names, derived, wps = generator_columns(cols, cfg.feature_units, cfg.btag_feature_thresholds)
    x = np.stack([np.asarray(cols[c], np.float64) for c in names], axis=1)
    result["selected"] = len(x)
    np.save(out, x)
    json.dump({"names": names, "derived": derived, "wps": wps}, open(out + ".json", "w"))
elif stage in ("training", "sampling"):
    meta = json.load(open(path + ".json"))
    # a copy of the rows needed (training: n; sampling: the preprocessing's 10^5), not the whole pool
    x = np.array(np.load(path, mmap_mode="r")[:n if stage == "training" else 100_000])
    rng = np.random.default_rng(1)
    prep = Preprocessor(meta["names"], derived=meta["derived"], btag_working_points=meta["wps"]).fit(x[:100_000], rng)
    default = cfg.flows.default
    torch.manual_seed(0)
    model = build(default, prep.flow_features, hyperparameters(default, cfg.flows.hyperparameters.get(default)))
    if stage == "training":
        z = prep.forward(x, rng)
        t0 = time.perf_counter()
        train_model(model, z, z[:10_000], TrainSettings(epochs=1, batch_size=cfg.flows.training.batch_size))
    else:
        t0 = time.perf_counter()
        for _ in sample_batches(model, n, 100_000, 1):
            pass
result.update(seconds=time.perf_counter() - t0, peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              threads=torch.get_num_threads())
print("RESULT " + json.dumps(result))
'''


def _run(stage: str, config: str, n: int, path: str, out: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, stage, config, str(n), path, out], capture_output=True,
                          text=True, env=dict(os.environ, MPLBACKEND="Agg"))
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} at {n}: {proc.stderr[-2000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _baseline() -> float:
    code = ("import resource, torch, analysis.skim, analysis.generator.nanoaod, models.training; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split()[-1])


def _slope(rows: list[dict], key: str) -> float | None:
    if len(rows) < 2:
        return None
    return float(np.polyfit(np.log([r["n_events"] for r in rows]), np.log([r[key] for r in rows]), 1)[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="quickstart")
    p.add_argument("--sizes", default="1e5,3e5,1e6,3e6,1e7", help="generated events per point")
    p.add_argument("--train-max", type=float, default=1e6, help="largest training size (selected events)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    stages: dict[str, list[dict]] = {"generation": [], "skim": [], "training": [], "sampling": []}
    with tempfile.TemporaryDirectory(prefix="hepflows-scaling-") as d:
        _run("generation", args.config, 1000, f"{d}/warm.root", "")  # compiles (caches) the numba kernels once
        for n in sizes:
            root, feats = f"{d}/gen_{n}.root", f"{d}/features_{n}.npy"
            g = _run("generation", args.config, n, root, "")
            stages["generation"].append({"n_events": n, **g})
            s = _run("skim", args.config, n, root, feats)
            stages["skim"].append({"n_events": n, **s})
            os.remove(root)
            print(f"{n:>10,} generated: generation {g['seconds']:.1f} s ({g['peak_rss_gib']:.2f} GiB), skim "
                  f"{s['seconds']:.1f} s ({s['peak_rss_gib']:.2f} GiB), {s['selected']:,} selected", flush=True)
        largest = max(stages["skim"], key=lambda r: r["selected"])
        pool = f"{d}/features_{largest['n_events']}.npy"
        for n in sizes:
            if n <= min(largest["selected"], args.train_max):
                t = _run("training", args.config, n, pool, "")
                stages["training"].append({"n_events": n, **t})
                print(f"{n:>10,} training events: one epoch {t['seconds']:.1f} s ({t['peak_rss_gib']:.2f} GiB)",
                      flush=True)
            smp = _run("sampling", args.config, n, pool, "")
            stages["sampling"].append({"n_events": n, **smp})
            print(f"{n:>10,} sampled: {smp['seconds']:.1f} s ({smp['peak_rss_gib']:.2f} GiB)", flush=True)
    summary = {k: {"time_slope": _slope(v, "seconds"), "memory_slope": _slope(v, "peak_rss_gib"),
                   "seconds_per_million": 1e6 * v[-1]["seconds"] / v[-1]["n_events"] if v else None}
               for k, v in stages.items()}
    payload = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "config": args.config,
               "cpus": os.cpu_count(), "baseline_rss_gib": _baseline(), "stages": stages, "summary": summary}
    out = Path(args.out) / f"{datetime.date.today().isoformat()}-scaling.json"
    write_json(out, payload)
    print(json.dumps(summary, indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
