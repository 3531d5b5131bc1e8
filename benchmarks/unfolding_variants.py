"""python -m benchmarks.unfolding_variants OUT_JSON --store STORE --variant NAME [--epochs 20] [--events 150000]

Which unfolding flow models the lepton's side best? Trains one variant on the stored skim of an ``unfolding`` run
(its dedicated training sample; ``--events`` of them for ``--epochs``) and measures it on the reference
partition: the closure of the lepton's helicity angle cos(theta*) (8 draws per event, 40 bins), the per-dimension
KS distance and 68 % coverage of 200 posterior draws on 5000 events, the best validation NLL and the training time.

Variants: ``baseline`` (the configuration's model), ``lepton_context`` (the reconstructed lepton and MET also as
event-level inputs of the embedding), ``lepton_direction`` (the lepton's lab direction relative to the
reconstructed one instead of its decay angles; energy from the W mass), ``wide`` (256 hidden units),
``components20`` (20 mixture components), ``wide_components20`` (both), ``lepton_first`` (the lepton's decay
angles first in the autoregressive order, the other 16 parameters conditioned on them).
"""

from __future__ import annotations

import time

import numpy as np

from analysis import neutrino, unfolding as unf
from analysis.config import load_config
from analysis.io import write_json
from analysis.ntuple import read_objects
from analysis.partition import split_objects, split_rows
from benchmarks.unfolding import stored, stored_run_parser
from models.features import Feature, FeatureTable
from models.fit import fit_conditional, sample_posterior
from models.registry import hyperparameters
from models.training import TrainSettings

VARIANTS = ("baseline", "lepton_context", "lepton_direction", "wide", "components20", "wide_components20",
            "lepton_first")


def _eta(p: np.ndarray) -> np.ndarray:
    return np.arcsinh(p[..., 3] / np.maximum(unf.pt(p), 1e-9))


def main(argv: list[str] | None = None) -> None:
    ap = stored_run_parser(__doc__)
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--events", type=int, default=150_000)
    args = ap.parse_args(argv)
    variant = args.variant
    cfg = load_config(args.config)
    u = cfg.unfolding
    base = stored(args.store, "Skim", cfg.name, args.version)
    train_obj = unf.with_truth(read_objects(sorted(map(str, base.glob("background_unfolding_[0-9]*.root")))))
    ref = unf.with_truth(split_objects(read_objects(sorted(map(str, base.glob("background_[0-9]*.root")))),
                                       cfg.partition, cfg.seed, "background")["reference"])

    # the autoregressive order of the 18 parameters (the flow's columns) and its inverse
    order = np.array([16, 17] + list(range(16)) if variant == "lepton_first" else list(range(18)))
    inverse = np.argsort(order)

    def params(o):
        p = unf.regression_data(o)[0]
        if variant == "lepton_direction":
            lep = unf.truth_partons(o)["lepton"]
            p[:, 16] = _eta(lep) - o["obj_lepton_eta"]
            p[:, 17] = unf.wrap(unf.phi(lep) - o["obj_lepton_phi"])
        return p[:, order]

    def context(o):
        objs, mask, ev = neutrino.regression_context(o)
        if variant == "lepton_context":
            dphi = np.asarray(o["obj_met_phi"], np.float64) - np.asarray(o["obj_lepton_phi"], np.float64)
            extra = np.stack([np.log(np.asarray(o["obj_lepton_pt"], np.float64)),
                              np.asarray(o["obj_lepton_eta"], np.float64), np.cos(dphi), np.sin(dphi)], axis=1)
            ev = np.concatenate([ev, extra.astype(np.float32)], axis=1)
        return objs, mask, ev

    def cos_theta(p, lphi, leta):
        p = p[..., inverse]
        parts = unf.partons_from(p, lphi)
        if variant != "lepton_direction":
            return np.clip(p[..., 16], -1.0, 1.0)
        wl = parts["w_lep"]
        e, ph = leta + p[..., 16], lphi + p[..., 17]
        n = np.stack([np.cos(ph) / np.cosh(e), np.sin(ph) / np.cosh(e), np.tanh(e)], axis=-1)
        energy = unf.mass(wl) ** 2 / (2 * (wl[..., 0] - (wl[..., 1:] * n).sum(-1)))
        lep = np.concatenate([energy[..., None], energy[..., None] * n], axis=-1)
        return unf.decay_angles(wl, lep, parts["top_lep"])[0]

    names, table = list(unf.TARGETS), unf.target_table()
    if variant == "lepton_direction":
        names[16], names[17] = "lep_deta", "lep_dphi"
        table = FeatureTable([f for f in table if f.name not in ("lep_cos", "lep_phi")]
                             + [Feature("lep_deta", "real"), Feature("lep_dphi", "real")])
    names = [names[i] for i in order]
    hyper = hyperparameters(u.model, u.hyperparameters)
    if variant in ("wide", "wide_components20"):
        hyper["hidden_features"] = [256, 256]
    if variant in ("components20", "wide_components20"):
        hyper["components"] = 20
    val, tr = split_rows(len(train_obj["obj_n_jets"]), 0.1, cfg.seed)
    data = {"train": {k: v[tr][:args.events] for k, v in train_obj.items()},
            "validation": {k: v[val] for k, v in train_obj.items()}}
    targets = {p: params(d) for p, d in data.items()}
    contexts = {p: context(d) for p, d in data.items()}
    spec = unf.embedding_spec(u.embedding_features, list(u.embedding_hidden))
    spec["event_features"] = contexts["train"][2].shape[1]
    t0 = time.perf_counter()
    fit = fit_conditional(u.model, hyper, targets, contexts, names, table,
                          TrainSettings(epochs=args.epochs, patience=args.epochs, seed=1, batch_size=512), spec)
    train_seconds = time.perf_counter() - t0
    truth, ctx = params(ref), context(ref)
    lphi, leta = ref["obj_lepton_phi"].astype(float), ref["obj_lepton_eta"].astype(float)
    n = 5000
    draws, _ = sample_posterior(fit, tuple(c[:n] for c in ctx), 200, seed=2)
    cal = unf.calibration(draws, truth[:n], names)
    true_parts = unf.truth_partons(ref)
    ct_truth = unf.decay_angles(true_parts["w_lep"], true_parts["lepton"], true_parts["top_lep"])[0]
    cal_ct = unf.calibration(cos_theta(draws, lphi[:n], leta[:n])[..., None], ct_truth[:n, None],
                             ["cos_theta_lep"])["cos_theta_lep"]
    k8, _ = sample_posterior(fit, ctx, 8, seed=3)
    ct8 = cos_theta(k8, lphi, leta)
    closure = unf.closure(ct8.ravel(), ct_truth, unf.edges_of(ct_truth, 40, "cos_theta_lep"),
                          np.full(ct8.size, 1 / 8))
    out = {"variant": variant, "epochs": args.epochs, "train_events": len(targets["train"]),
           "hyperparameters": hyper, "train_seconds": train_seconds,
           "best_validation_nll": min(h.val_median_nll for h in fit.result.history),
           "cos_theta_lep": {"closure_chi2_ndf": closure["chi2_ndf"], "ks": cal_ct["ks"],
                             "coverage68": cal_ct["coverage68"], "coverage95": cal_ct["coverage95"]},
           "ks": {k: v["ks"] for k, v in cal.items()}, "coverage68": {k: v["coverage68"] for k, v in cal.items()}}
    write_json(args.out, out)
    print(f"{variant}: cos(theta*) closure chi2/ndf {closure['chi2_ndf']:.2f}, KS max {max(out['ks'].values()):.3f}")


if __name__ == "__main__":
    main()
