"""python -m benchmarks.neutrino_regression STORE OUT_JSON [--epochs N] [--samples S] [--model made_mog]

A first measurement of nu-Flows on the embedded generator (issue 15): a conditional flow p(neutrino | event)
behind a deep-sets embedding (models.fit.fit_conditional), trained on the quickstart's background training
partition (the skim's Objects tree, partitioned as PartitionEvents does), evaluated on the reference partition
against the W-mass solution and the true neutrino: pz and eta resolution and bias, the chi2 jet assignment's
leptonic-b efficiency per multiplicity, and the calibration of the pz posterior (rank KS, coverage)."""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import time

import numpy as np

from analysis.config import load_config
from analysis.io import write_json
from analysis.neutrino import (
    EVENT_FEATURES,
    OBJECT_FEATURES,
    TARGETS,
    assignment_efficiency,
    assignment_sigmas,
    chi2_assignment,
    from_lepton_frame,
    mode_of_samples,
    rank_calibration,
    regression_context,
    regression_metrics,
    target_table,
    to_lepton_frame,
    true_neutrino,
    w_mass_neutrino,
)
from analysis.ntuple import read_objects
from analysis.partition import partition_indices
from models.fit import fit_conditional, sample_posterior
from models.registry import hyperparameters
from models.training import TrainSettings

p = argparse.ArgumentParser()
p.add_argument("store")
p.add_argument("out")
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--samples", type=int, default=64)
p.add_argument("--model", default="made_mog")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--train-files", default="", help="glob of further skimmed files (e.g. the truth samples of another "
               "store) whose events join the training partition")
p.add_argument("--save-draws", default="", help="also write the reference rows, posterior draws (lab frame) and "
               "their log-densities as .npz, for an independent recomputation")
a = p.parse_args()

cfg = load_config("quickstart")
skim = sorted(glob.glob(f"{a.store}/Skim/*/*/"))[0]
files = [f"{skim}background_{i}.root" for i in range(cfg.samples["background"].n_files)]
obj = read_objects(files)
rows = partition_indices(len(obj["obj_lepton_pt"]), cfg.partition, cfg.seed, "background")
part = {q: {k: v[r] for k, v in obj.items()} for q, r in rows.items()}
if a.train_files:
    extra = read_objects(sorted(glob.glob(a.train_files)))
    part["train"] = {k: np.concatenate([part["train"][k], extra[k]]) for k in part["train"]}
targets = {q: to_lepton_frame(true_neutrino(part[q]), part[q]) for q in part}
contexts = {q: regression_context(part[q]) for q in part}
hyper = hyperparameters(a.model, {"hidden_features": [128, 128]})
settings = TrainSettings(epochs=a.epochs, patience=6, batch_size=512, learning_rate=1e-3, seed=1, threads=a.threads)
t0 = time.time()
embedding = {"kind": "deep_sets", "object_features": len(OBJECT_FEATURES), "event_features": len(EVENT_FEATURES),
             "out_features": 32, "hidden_features": [64, 64]}
fit = fit_conditional(a.model, hyper, targets, contexts, TARGETS, target_table(), settings, embedding, on_epoch=lambda r: print(
                          f"epoch {r.epoch} train {r.train_nll:.3f} val {r.val_median_nll:.3f} {r.events_per_s:.0f} ev/s",
                          flush=True))
train_s = time.time() - t0
ref = part["reference"]
t0 = time.time()
draws, logp = sample_posterior(fit, contexts["reference"], a.samples, seed=7)
sample_s = time.time() - t0
draws = from_lepton_frame(draws, ref)
truth = true_neutrino(ref)
estimates = {"w_mass": w_mass_neutrino(ref), "flow_sample": draws[0], "flow_mode": mode_of_samples(draws, logp),
             "truth": truth}
out = {"description": __doc__, "args": vars(a), "events": {q: int(len(v["obj_lepton_pt"])) for q, v in part.items()},
       "train_seconds": train_s, "best_epoch": fit.result.best_epoch, "sampling_seconds": sample_s,
       "metrics": {}, "assignment": {}, "calibration": {}}
for name, nu in estimates.items():
    out["metrics"][name] = regression_metrics(nu, truth)
    # sigmas of the chi2 terms from the true-assignment RMS of each method, on the evaluated events themselves
    sig = assignment_sigmas(ref, nu)
    out["assignment"][name] = {"sigmas": sig.tolist(),
                               "efficiency": assignment_efficiency(ref, chi2_assignment(ref, nu, sig))}
    print(name, json.dumps(out["metrics"][name]), {k: round(v["correct_b_lep"], 3)
                                                   for k, v in out["assignment"][name]["efficiency"].items()
                                                   if v["events"]}, flush=True)
for i, name in enumerate(["px", "py", "pz"]):
    out["calibration"][name] = rank_calibration(draws[..., i].T, truth[:, i])
print(json.dumps(out["calibration"]), flush=True)
write_json(a.out, out)
if a.save_draws:
    np.savez_compressed(a.save_draws, reference_rows=rows["reference"], draws=draws.astype(np.float32),
                        log_prob=logp.astype(np.float32))
