"""python -m benchmarks.generator_same_analysis OUT_JSON  (stores as in the 2026-11-23 runs; paths below)

Same analysis (the 39k run's BDT and binning), truth = the first 14 truth files only (never trained on by any
flow compared here, including the 273k scan flow, which trained on truth files 15-26)."""
import glob, json, sys
import numpy as np
from analysis.limits import _chi2
from analysis.templates import make_template, scaled_weights
from analysis.ntuple import read_ntuples, feature_matrix
from models.classifiers import load_classifier

A = "/tmp/ciE/data/store"; B = "/tmp/e2e4"
L = json.load(open(glob.glob(f"{A}/LimitScan/*/v1/limits.json")[0]))
P = json.load(open(glob.glob(f"{A}/PartitionEvents/*/v1/partition.json")[0]))
Y = P["samples"]["background"]["expected_yield"]
edges = np.asarray(L["edges"])
clf = load_classifier(glob.glob(f"{A}/TrainClassifier/*/v1/{L.get('classifier', 'bdt')}/model.skops")[0])
skim = glob.glob(f"{A}/Skim/*/v1")[0]
truth = read_ntuples([f"{skim}/background_truth_{i}.root" for i in range(14)])
ts = clf.score(feature_matrix(truth))
t14 = make_template(ts, scaled_weights(len(ts), Y), edges)
out = {"description": __doc__, "classifier": L.get("classifier", "bdt"), "edges": edges.tolist(),
       "truth_events": int(len(ts)), "truth_template": t14.to_dict(), "generators": {}}
ref = read_ntuples(glob.glob(f"{A}/PartitionEvents/*/v1/background_reference.root"))
rs = clf.score(feature_matrix(ref))
r = _chi2(make_template(rs, scaled_weights(len(rs), Y), edges), t14)
out["simulated_reference"] = {"events": int(len(rs)), "chi2": r["chi2"], "ndf": r["ndf"], "ratio": r["ratio"]}
print("simulated reference", len(rs), round(r["chi2"], 1), [round(x, 3) for x in r["ratio"][-6:]], flush=True)
def add(tag, files):
    cols = read_ntuples(files)
    s = clf.score(feature_matrix(cols))[:500_000]
    r = _chi2(make_template(s, scaled_weights(len(s), Y), edges), t14)
    out["generators"][tag] = {"events": int(len(s)), "chi2": r["chi2"], "ndf": r["ndf"], "ratio": [round(x, 4) for x in r["ratio"]]}
    print(tag, len(s), round(r["chi2"], 1), [round(x, 3) for x in r["ratio"][-6:]], flush=True)
for store, tag in ((A, "39k"), (B, "98k")):
    for flow in ["made_mog_s1"] + [f"made_mog_boot10{i}" for i in range(1, 6)]:
        files = [f for f in sorted(glob.glob(f"{store}/SampleFlow/*/*/{flow}/n*/generated_*.root")) if "/n20000/" not in f]
        add(f"{tag}/{flow}", files)
add("273k/made_mog_s1 (scan)", ["/tmp/scan/gen_273k.root"])
json.dump(out, open(sys.argv[1], "w"), indent=1)
