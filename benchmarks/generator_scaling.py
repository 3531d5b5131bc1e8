"""python -m benchmarks.generator_scaling STORE_VERSION_DIR OUT_JSON [--train N] [--hidden 256,256] ...

How the default generator's fidelity scales with the number of training events and the model size (issue 13).
Training pool: the quickstart's background training partition, extended by the second half of the independent
truth sample's files (12 of 26); test: the first 14 truth files, which no variant ever trains on. For each
variant: high-power C2ST (HGB, 50k and 100k per class, 50k/class test, 50 bootstraps) on the 28 features plus relative
azimuths, group AUCs, validity rates, test NLL on truth events, training time."""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import time

import numpy as np

from analysis.config import load_config
from analysis.fidelity import c2st_learning_curve, fidelity_matrix, group_aucs, validity_rates
from analysis.ntuple import OPTIONAL_COLUMNS, read_ntuples
from models.fit import fit_generator, generator_columns, ordered_columns, sample_batches
from models.registry import hyperparameters
from models.training import TrainSettings, nll

p = argparse.ArgumentParser()
p.add_argument("store")  # .../store
p.add_argument("out")
p.add_argument("--train", type=int, default=0, help="training events (0: the partition only)")
p.add_argument("--model", default="made_mog")
p.add_argument("--hidden", default="")
p.add_argument("--components", type=int, default=0)
p.add_argument("--transforms", type=int, default=0)
p.add_argument("--epochs", type=int, default=0)
p.add_argument("--batch", type=int, default=0)
p.add_argument("--lr", type=float, default=0)
p.add_argument("--patience", type=int, default=0)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--ordered", action="store_true")
p.add_argument("--derive-masses", action="store_true")
p.add_argument("--tag", default="")
p.add_argument("--nll-events", type=int, default=None, help="test NLL on this many events (0: all 20k; "
               "default: the registry's choice for the model)")
p.add_argument("--save-model", default="", help="also write the trained generator file here")
p.add_argument("--save-generated", default="", help="also write 500k generated events as a flat ntuple here")
a = p.parse_args()

cfg = load_config("quickstart")
part = glob.glob(f"{a.store}/PartitionEvents/*/v1")[0]
skim = glob.glob(f"{a.store}/Skim/*/v1")[0]
opt = list(OPTIONAL_COLUMNS)
cols = {q: read_ntuples([f"{part}/background_{q}.root"], optional=opt) for q in ("train", "validation")}
truth_files = [f"{skim}/background_truth_{i}.root" for i in range(26)]
test_cols = read_ntuples(truth_files[:14], optional=opt)
columns, derived, wps = generator_columns(cols["train"], cfg.feature_units, cfg.btag_feature_thresholds,
                                         derive_masses=a.derive_masses)
assert not a.derive_masses or "m_jj" in derived, "the ntuples hold no jet masses"
stack = lambda c: np.stack([np.asarray(c[f], np.float64) for f in columns], axis=1)
train = stack(cols["train"])
if a.train > len(train):
    extra = stack(read_ntuples(truth_files[14:], optional=opt))
    train = np.concatenate([train, extra[: a.train - len(train)]])
elif a.train:
    train = train[: a.train]
data = {"train": train, "validation": stack(cols["validation"]), "reference": stack(test_cols)[:20000]}
name = a.model
over = {}
if a.hidden:
    over["hidden_features"] = [int(h) for h in a.hidden.split(",")]
if a.components:
    over["components"] = a.components
if a.transforms:
    over["transforms"] = a.transforms
hyper = hyperparameters(name, {**(cfg.flows.hyperparameters.get(name) or {}), **over})
t = cfg.flows.training
options = {k: v for k, v in dataclasses.asdict(t).items() if k != "max_train_events"}
if a.epochs:
    options["epochs"] = a.epochs
if a.batch:
    options["batch_size"] = a.batch
if a.lr:
    options["learning_rate"] = a.lr
if a.patience:
    options["patience"] = a.patience
settings = TrainSettings(**options, seed=a.seed, threads=a.threads)
ordered = ordered_columns(cols["train"], ["jet1_pt", "jet2_pt", "jet3_pt", "jet4_pt"]) if a.ordered else []
t0 = time.time()
fit = fit_generator(name, hyper, data, columns, settings, derived, lambda r: print(
    f"epoch {r.epoch} train {r.train_nll:.3f} val {r.val_median_nll:.3f} {r.events_per_s:.0f} ev/s", flush=True),
    None, wps, ordered=ordered, nll_events=a.nll_events)
train_s = time.time() - t0
if a.save_model:
    from models.io import save_generator
    save_generator(a.save_model, name, hyper, fit.model.state_dict(), fit.preprocessor, {"variant": vars(a)})
z = np.concatenate(list(sample_batches(fit.model, 500_000 if a.save_generated else 300_000, 50_000, 12345)))
x = fit.preprocessor.inverse(z)
gen = {k: v.astype(np.float32) for k, v in zip(columns, x.T)}
if a.save_generated:
    from analysis.ntuple import write_ntuple
    n = len(x)
    write_ntuple(a.save_generated, dict(gen, label=np.zeros(n), generated=np.ones(n), weight=np.ones(n),
                                        event=np.arange(n)), {"sample": "background", "variant": vars(a)})
    gen = {k: v[:300_000] for k, v in gen.items()}
A, names = fidelity_matrix(test_cols)
B, _ = fidelity_matrix(gen)
rng = np.random.default_rng(0)
A = A[rng.permutation(len(A))[:160_000]]
curve = c2st_learning_curve(A, B, [50_000, 100_000], 50_000, seed=0, threads=a.threads, n_boot=50)
groups = group_aucs(test_cols, gen, 100_000, 50_000, seed=0, threads=a.threads)
out = {"args": vars(a), "train_events": len(train), "hyper": hyper, "parameters": fit.metrics["parameters"],
       "train_seconds": train_s, "best_epoch": fit.metrics["best_epoch"], "epochs_run": len(fit.metrics["history"]),
       "test_nll_truth": fit.metrics["nll"]["test"], "test_nll_truth_median": fit.metrics["nll"]["test_median"],
       "sampling_events_per_s": fit.metrics["sampling_events_per_s"],
       "auc_50k": curve["auc"][0], "auc_100k": curve["auc"][1], "auc_interval95": curve["auc_interval95"][1],
       "groups": {g: v["auc"] for g, v in groups.items()}, "validity": validity_rates(gen)}
print(json.dumps(out, default=float, indent=1))
os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
json.dump(out, open(a.out, "w"), default=float, indent=1)
