"""python -m benchmarks.generator_validity VARIANT PARTITION_DIR TRUTH_JSON OUT_JSON

A/B: the default generator (MADE-MoG, quickstart settings) with and without ordered jet pT, trained on the
quickstart training partition; validity rates and high-power C2ST (HGB, 25k/50k/100k per class, 50k test)
against the truth sample (test half not needed: the flow never saw any truth event)."""
import dataclasses, json, sys, time
import numpy as np
from analysis.config import load_config
from analysis.ntuple import read_ntuples, OPTIONAL_COLUMNS
from analysis.fidelity import fidelity_matrix, c2st_learning_curve, validity_rates
from models.fit import fit_generator, generator_columns, sample_batches
from models.registry import hyperparameters
from models.training import TrainSettings

variant, part_dir, truth_json, out_json = sys.argv[1:5]  # plain | ordered | ordered_reject
cfg = load_config("quickstart")
base = part_dir
cols = {p: read_ntuples([f"{base}/background_{p}.root"], optional=OPTIONAL_COLUMNS) for p in ("train", "validation", "reference")}
columns, derived, wps = generator_columns(cols["train"], cfg.feature_units, cfg.btag_feature_thresholds)
data = {p: np.stack([np.asarray(c[f], np.float64) for f in columns], axis=1) for p, c in cols.items()}
name = cfg.flows.default
hyper = hyperparameters(name, cfg.flows.hyperparameters.get(name))
t = cfg.flows.training
options = {k: v for k, v in dataclasses.asdict(t).items() if k != "max_train_events"}
settings = TrainSettings(**options, seed=1, threads=1)
ordered = ["jet1_pt", "jet2_pt", "jet3_pt", "jet4_pt"] if variant.startswith("ordered") else []
t0 = time.time()
fit = fit_generator(name, hyper, data, columns, settings, derived, None, None, wps, ordered=ordered)
train_s = time.time() - t0
z = np.concatenate(list(sample_batches(fit.model, 300_000, 50_000, 12345)))
x = fit.preprocessor.inverse(z)
gen = {k: v.astype(np.float32) for k, v in zip(columns, x.T)}  # as the ntuple stores them (float32)
from analysis.features import min_separations
def min_drs(c):
    seps = min_separations(c)
    return seps["jet_lepton"], seps["jet_jet"]
acceptance = 1.0
if variant.endswith("reject"):
    tjl, tjj = min_drs(cols["train"])
    gjl, gjj = min_drs(gen)
    keep = (gjl >= tjl.min()) & (gjj >= tjj.min())
    acceptance = float(keep.mean())
    print("thresholds", tjl.min(), tjj.min(), "acceptance", acceptance)
    gen = {k: v[keep] for k, v in gen.items()}
truth = json.load(open(truth_json))
tcols = read_ntuples(truth["files"][:14])
a, _ = fidelity_matrix(tcols); b, _ = fidelity_matrix(gen)
rng = np.random.default_rng(0); a = a[rng.permutation(len(a))[:160_000]]
from scipy.stats import ks_2samp
from analysis.fidelity import fidelity_matrix as fm
_, names = fm(tcols)
ks = {n: float(ks_2samp(a[:50000, i], b[:50000, i]).statistic) for i, n in enumerate(names)}
print("KS", sorted(ks.items(), key=lambda kv: -kv[1])[:8], flush=True)
curve = c2st_learning_curve(a, b, [25_000, 50_000, 100_000], 50_000, seed=0, threads=1, n_boot=50)
out = {"variant": variant, "acceptance": acceptance, "train_seconds": train_s, "best_epoch": fit.metrics["best_epoch"],
       "test_nll": fit.metrics["nll"]["test"], "validity_gen": validity_rates(gen), "validity_truth": validity_rates(tcols),
       "ks": ks, "auc": curve["auc"], "auc_interval95": curve["auc_interval95"], "sizes": curve["sizes"]}
print(json.dumps(out, default=float, indent=1))
json.dump(out, open(out_json, "w"), default=float, indent=1)
