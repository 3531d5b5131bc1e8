"""python -m benchmarks.taylor OUT_JSON [--seeds 20] [--per-class 20000] [--cost-events 100000]

Taylor-coefficient introspection (issue 17), measured on events of the embedded generator (quickstart physics,
simulated and skimmed here, seeded):

- planted defects: for each defect of :data:`DEFECTS` and each seed, a differentiable C2ST (the analysis's MLP)
  between two disjoint halves of simulated ttbar, the defect planted in one (:func:`analysis.introspection.
  defect_trial`): how often the top coefficient names the defect, and how often permutation importance does;
- stability: the signal-against-background MLP trained with two seeds on the same events; Spearman correlation of
  the first-order and of the second-order coefficient rankings;
- cost: all first- and second-order coefficients of 28 inputs on ``--cost-events`` events (median of 3), with this
  project's autograd implementation, ``torch.func`` (vmap of the Hessian) and, where installed, the
  ``tayloranalysis`` package (one run each).
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from analysis.config import load_config
from analysis.features import FEATURES, LOW_LEVEL
from analysis.generator.nanoaod import write_nanoaod_file
from analysis.introspection import Defect, coefficients, defect_trial
from analysis.io import write_json
from analysis.ntuple import feature_matrix
from analysis.skim import sample_normalisation, skim_nanoaod
from models.classifiers import train_classifier
from models.taylor import mlp_standardised, taylor_coefficients

DEFECTS = (Defect("scale", ("m_bb",), 0.02), Defect("shuffle", ("jet2_eta",)), Defect("pair", ("m_jj", "m_bb"), 0.3),
           Defect("pair", ("lepton_pT", "missing_energy_magnitude"), 0.2))
LOW_LEVEL_PAIR = 3
"""The last pair defect is tested with a C2ST on the 21 low-level features (no feature a function of another)."""


def simulated(sample: str, n_files: int, workdir: Path) -> np.ndarray:
    cfg = load_config("quickstart")
    parts = []
    for i in range(n_files):
        path = workdir / f"{sample}_{i}.root"
        write_nanoaod_file(path, cfg, sample, 100 + i)
        cols, _ = skim_nanoaod(path, cfg, cfg.sample(sample).label, sample_normalisation(cfg, sample, [path]))
        parts.append(feature_matrix(cols))
    return np.concatenate(parts)


def cost(x: np.ndarray, repeats: int) -> dict:
    torch.manual_seed(0)
    from models.classifiers import MLPClassifier
    model = MLPClassifier(x.shape[1], (128, 128, 64))
    model.fit_transform(x)
    fn, transform = mlp_standardised(model)
    z = transform(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = taylor_coefficients(fn, z, FEATURES, order=2)
        times.append(time.perf_counter() - t0)
    out = {"events": len(z), "inputs": z.shape[1], "network": [128, 128, 64], "threads": torch.get_num_threads(),
           "autograd_seconds": {"median": float(np.median(times)), "runs": times}}

    from torch.func import hessian, jacrev, vmap

    def single(v):
        return fn(v[None]).reshape(())
    zt = torch.as_tensor(z)
    t0 = time.perf_counter()
    sec = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64)
    for lo in range(0, len(zt), 4096):
        jacs = vmap(jacrev(single))(zt[lo:lo + 4096])
        sec += vmap(hessian(single))(zt[lo:lo + 4096]).detach().double().abs().sum(0)
        del jacs
    out["torch_func_seconds"] = time.perf_counter() - t0
    w = np.ones((z.shape[1],) * 2)
    np.fill_diagonal(w, 0.5)
    out["torch_func_max_difference"] = float(np.max(np.abs(np.triu(sec.numpy() / len(z) * w) - ours.second)))
    try:
        import tayloranalysis as ta
    except ImportError:
        out["tayloranalysis_seconds"] = None
        return out

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return fn(x)[:, None]

    wrapped = ta.extend_model(Wrapped())
    d = z.shape[1]
    idx = [(i,) for i in range(d)] + list(combinations_with_replacement(range(d), 2))
    t0 = time.perf_counter()
    res = {}
    for lo in range(0, len(zt), 8192):
        xb = zt[lo:lo + 8192].clone().requires_grad_(True)
        part = wrapped.get_tc("x", {"x": xb}, idx, reduce_func=lambda t: float(t.abs().sum()))
        for k, v in part.items():
            res[k] = res.get(k, 0.0) + v
    out["tayloranalysis_seconds"] = time.perf_counter() - t0
    out["tayloranalysis_version"] = getattr(ta, "__version__", "0.2.14")
    out["tayloranalysis_max_difference"] = float(max(abs(res[(i, j)] / len(z) - ours.second[i, j])
                                                     for i, j in combinations_with_replacement(range(d), 2)))
    return out


def stability(bkg: np.ndarray, sig: np.ndarray, n: int) -> dict:
    cfg = load_config("quickstart").classifiers
    x = np.concatenate([bkg[:n], sig[:n]]).astype(np.float32)
    y = np.concatenate([np.zeros(n), np.ones(n)])
    perm = np.random.default_rng(5).permutation(len(x))
    x, y = x[perm], y[perm]
    n_val = len(x) // 5
    test = np.concatenate([bkg[n:n + 10_000], sig[n:n + 10_000]])
    out = {"events_per_class": n}
    tcs = []
    for seed in (1, 2):
        clf = train_classifier("nn", FEATURES, x[n_val:], y[n_val:], x[:n_val], y[:n_val], cfg, seed=seed)
        tcs.append(coefficients(clf, test, order=2))
    d = len(FEATURES)
    iu = np.triu_indices(d)
    out["spearman_first"] = float(spearmanr(tcs[0].first, tcs[1].first).statistic)
    out["spearman_second"] = float(spearmanr(tcs[0].second[iu], tcs[1].second[iu]).statistic)
    out["top10"] = {str(s): [k for k, _ in tc.ranking(10)] for s, tc in zip((1, 2), tcs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=20_000)
    ap.add_argument("--cost-events", type=int, default=100_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["defects", "stability", "cost"])
    ap.add_argument("--defects", nargs="*", type=int, default=None, help="indices into DEFECTS (default: all)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        bkg = simulated("background", 6, work)
        sig = simulated("signal", 2, work) if "stability" not in args.skip else None
        result = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(),
                  "simulated": {"background": len(bkg), "signal": 0 if sig is None else len(sig),
                                "seconds": time.perf_counter() - t0}}
    if "cost" not in args.skip:
        result["cost"] = cost(bkg[: args.cost_events], repeats=3)
        print("cost", result["cost"], flush=True)
    if "stability" not in args.skip:
        result["stability"] = stability(bkg, sig, 20_000)
        print("stability", result["stability"], flush=True)
    if "defects" not in args.skip:
        result["defects"] = {}
        for k, d in enumerate(DEFECTS):
            if args.defects is not None and k not in args.defects:
                continue
            trials = []
            inputs = LOW_LEVEL if d is DEFECTS[LOW_LEVEL_PAIR] else None
            for seed in range(1, args.seeds + 1):
                trials.append(defect_trial(bkg, FEATURES, d, seed, args.per_class, inputs=inputs))
                print(d.label, seed, trials[-1]["found"], trials[-1]["permutation_found"],
                      f"AUC {trials[-1]['auc']:.4f}", flush=True)
            result["defects"][d.label] = {
                "inputs": "low-level (21)" if inputs else "all 28", "kind": d.kind, "features": list(d.features), "size": d.size, "per_class": args.per_class,
                "found": int(sum(t["found"] for t in trials)), "permutation_found":
                int(sum(t["permutation_found"] for t in trials)), "seeds": len(trials),
                "auc_median": float(np.median([t["auc"] for t in trials])), "trials": trials}
    write_json(args.out, result)


if __name__ == "__main__":
    main()
