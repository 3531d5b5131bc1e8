"""Benchmarks of the pipeline's stages, each against a reference measured in the same run.

Every figure is the median over repeated runs of the project's real code path, with the spread (min, max).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import awkward as ak
import numpy as np
import uproot

from analysis.config import AnalysisConfig, load_config
from analysis.generator.nanoaod import generate_batch, to_nanoaod, write_nanoaod_file
from analysis.skim import skim_nanoaod


def timed(fn: Callable[[], object], repeats: int) -> dict:
    """Run ``fn`` ``repeats`` times (after one warm-up); median, min and max wall time in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def _rate(n: int, t: dict) -> dict:
    return {"median": n / t["median_s"], "min": n / t["max_s"], "max": n / t["min_s"]}


def bench_generator(cfg: AnalysisConfig, n_events: int, repeats: int, workdir: Path) -> dict:
    """Event generation + detector simulation + NanoAOD writing, in one process (one core), against uproot
    alone writing the same arrays."""
    path = workdir / "gen.root"
    full = timed(lambda: write_nanoaod_file(path, cfg, "background", 0, n_events=n_events), repeats)
    truth, reco = generate_batch(np.random.default_rng(1), "ttbar", n_events, cfg)
    branches = to_nanoaod(truth, reco, 1, 1)

    def write_only():
        with uproot.recreate(workdir / "ref.root", compression=uproot.LZ4(1)) as f:
            f.mktree("Events", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in branches.items()})
            f["Events"].extend(branches)

    ref = timed(write_only, repeats)
    return {
        "n_events": n_events,
        "events_per_s_per_core": _rate(n_events, full),
        "uproot_write_only_events_per_s": _rate(n_events, ref),
        "time_ratio_to_uproot_write": full["median_s"] / ref["median_s"],
        "timing": full,
        "aim_events_per_s_per_core": 200_000,
    }


def bench_pythia(cfg: AnalysisConfig, n_events: int, repeats: int, workdir: Path) -> dict:
    """Pythia 8 as the event source (needs the extra ``.[pythia]``), one process: the whole file (Pythia,
    FastJet jets, detector, NanoAOD writing) for ttbar and the signal, and its parts for ttbar: Pythia's
    ``nextBatch`` alone, jets and detector (:func:`analysis.generator.pythia.simulate_batch`), and Pythia's own
    anti-kt (``SlowJet``, event by event) against FastJet's multi-event interface. The HTCondor jobs a
    paper-scale sample (2 x 10^7 ttbar) needs at 4 hours per job follow from the full rate."""
    from analysis.config import config_from_dict, config_to_dict
    from analysis.generator import pythia as P
    from analysis.generator.nanoaod import file_seed

    try:
        P.require_pythia()
    except P.MissingExtraError as e:
        return {"skipped": str(e)}
    d = config_to_dict(cfg)
    for s in d["samples"].values():
        if s["source"] == "generator":
            s["source"] = "pythia8"
    pcfg = config_from_dict(d)
    out = {"n_events": n_events, "pythia": P.PYTHIA_REQUIREMENT, "fastjet": P.FASTJET_REQUIREMENT}
    for sample in ("background", "signal"):
        t = timed(lambda: write_nanoaod_file(workdir / "py.root", pcfg, sample, 0, n_events=n_events), repeats)
        out[f"{pcfg.samples[sample].process}_events_per_s_per_core"] = _rate(n_events, t)
        out[f"{pcfg.samples[sample].process}_timing"] = t
    # start-up of a file's Pythia instances (two), paid once per file
    start = timed(lambda: P.PythiaSource(pcfg, pcfg.samples["background"], file_seed(pcfg.seed, "background", 0)),
                  repeats)
    out["startup_s_per_file"] = start["median_s"]
    src = P.PythiaSource(pcfg, pcfg.samples["background"], file_seed(pcfg.seed, "background", 0))
    batches = []
    gen = timed(lambda: batches.append(src.instances[1].nextBatch(n_events).prt), repeats)
    prt = batches[-1]
    det = timed(lambda: P.simulate_batch(np.random.default_rng(1), prt, "ttbar", pcfg), repeats)
    out["pythia_next_batch_events_per_s"] = _rate(n_events, gen)
    out["jets_and_detector_events_per_s"] = _rate(n_events, det)
    # Pythia's own anti-kt (SlowJet) event by event: through its built-in FastJet core (fjcore, the default) and
    # its native O(N^3) implementation, on fewer events
    pythia8mc, _ = P.require_pythia()
    p = src.instances[1]
    args = (-1, pcfg.pythia.jet_radius, 0.3 * pcfg.detector.jet.min_pt, 5.0, 2, 2)

    def slowjet_seconds(slow, n: int) -> float:  # the clustering alone, after each Pythia.next()
        total = 0.0
        for _ in range(n):
            p.next()
            t0 = time.perf_counter()
            slow.analyze(p.event)
            total += time.perf_counter() - t0
        return total

    fjcore = pythia8mc.SlowJet(*args)
    native = pythia8mc.SlowJet(*args, None, False)
    n_native = max(n_events // 5, 20)
    out["slowjet_fjcore_ms_per_event"] = 1e3 * statistics.median(
        slowjet_seconds(fjcore, n_events) for _ in range(repeats)) / n_events
    out["slowjet_native_ms_per_event"] = 1e3 * statistics.median(
        slowjet_seconds(native, n_native) for _ in range(repeats)) / n_native
    # FastJet's multi-event anti-kt alone on the same kind of input (the visible stable particles)
    rec = P.FlatRecord.from_batch(prt)
    vis = (rec.status > 0) & ~np.isin(np.abs(rec.pid), (12, 14, 16))
    _, fastjet = P.require_pythia()
    counts = np.bincount(rec.event[vis], minlength=n_events)
    t_fj = timed(lambda: P._cluster(fastjet, rec.p4[vis], counts, pcfg.pythia.jet_radius,
                                    0.3 * pcfg.detector.jet.min_pt), repeats)
    out["fastjet_ms_per_event"] = 1e3 * t_fj["median_s"] / n_events
    out["fastjet_ms_per_event_two_clusterings_and_detector"] = 1e3 * det["median_s"] / n_events
    # without the start-up (a 4-hour job pays it once)
    for proc in ("ttbar", "heavy_higgs"):
        out[f"{proc}_steady_events_per_s_per_core"] = n_events / (out[f"{proc}_timing"]["median_s"]
                                                                  - out["startup_s_per_file"])
    rate = out["ttbar_steady_events_per_s_per_core"]
    out["paper_scale"] = {"ttbar_events": 20_000_000, "core_hours": 2e7 / rate / 3600,
                          "htcondor_jobs_at_4h": int(np.ceil(2e7 / (rate * 4 * 3600)))}
    return out


def branches_read(fn: Callable[[], object]) -> list[str]:
    """Names of the TTree branches whose arrays uproot reads while ``fn`` runs (coffea's NanoEvents read lazily,
    branch by branch, through ``TBranch.array``): the bare-read reference reads exactly these."""
    from uproot.behaviors.TBranch import TBranch

    names, original = set(), TBranch.array

    def recording(self, *args, **kwargs):
        names.add(self.name)
        return original(self, *args, **kwargs)

    TBranch.array = recording
    try:
        fn()
    finally:
        TBranch.array = original
    if not names:
        raise RuntimeError("no branch was read through TBranch.array: the skim reads another way (an RNTuple, a "
                           "newer coffea); the bare-read reference would be empty")
    return sorted(names)


def bench_skim(cfg: AnalysisConfig, n_events: int, repeats: int, workdir: Path) -> dict:
    """The coffea skim of one NanoAOD file against plain uproot reading of the branches it reads (recorded while it
    runs: the selection's, the object-level and the truth record's)."""
    path = workdir / "skim_input.root"
    write_nanoaod_file(path, cfg, "background", 0, n_events=n_events)
    skim = timed(lambda: skim_nanoaod(path, cfg, 0, 1.0), repeats)
    branches = branches_read(lambda: skim_nanoaod(path, cfg, 0, 1.0))

    def bare_read():
        with uproot.open(path) as f:
            f["Events"].arrays(branches)

    ref = timed(bare_read, repeats)
    return {
        "n_events": n_events,
        "branches": len(branches),
        "skim_events_per_s": _rate(n_events, skim),
        "uproot_read_events_per_s": _rate(n_events, ref),
        "time_ratio_to_bare_read": skim["median_s"] / ref["median_s"],
        "timing": skim,
        "aim_time_ratio": 2.0,
    }


def bench_skim_scaling(cfg: AnalysisConfig, sizes: list[int], repeats: int, workdir: Path) -> dict:
    """Skim time against the number of events; the slope of log(time) against log(events)."""
    rows = []
    for n in sizes:
        path = workdir / f"scale_{n}.root"
        write_nanoaod_file(path, cfg, "background", 0, n_events=n)
        t = timed(lambda: skim_nanoaod(path, cfg, 0, 1.0), repeats)
        rows.append({"n_events": n, "median_s": t["median_s"]})
    slope = float(np.polyfit(np.log([r["n_events"] for r in rows]), np.log([r["median_s"] for r in rows]), 1)[0])
    return {"points": rows, "loglog_slope": slope}


def bench_evaluation(cfg: AnalysisConfig, n_events: int, repeats: int, workdir: Path) -> dict:
    """The full metric set of :func:`analysis.metrics.evaluate` (per-feature distances and tests with bootstrap
    uncertainties and MC references, C2ST, correlations) on ``n_events`` against ``n_events``: skimmed simulated
    background from the real generator and skim, resampled to size."""
    from analysis.features import FEATURES
    from analysis.metrics import evaluate
    from analysis.ntuple import feature_matrix

    path = workdir / "evaluation_input.root"
    write_nanoaod_file(path, cfg, "background", 0, n_events=60_000)
    x = feature_matrix(skim_nanoaod(path, cfg, 0, 1.0)[0])
    rng = np.random.default_rng(3)
    a, b = x[rng.integers(0, len(x), n_events)], x[rng.integers(0, len(x), n_events)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(a, b, FEATURES, seed=1)
        times.append(time.perf_counter() - t0)
    return {"n_events": n_events, "seconds": {"median": statistics.median(times), "min": min(times),
                                              "max": max(times), "repeats": repeats}}


def bench_limits(n_bins: int, repeats: int) -> dict:
    """Seconds per expected limit with its +-1/2 sigma bands: the project's route
    (:func:`analysis.statistics.expected_limits`) against pyhf's ``upper_limits.upper_limit`` on the same
    workspace (staterror on every bin, a 10 % background normalisation systematic), and their relative
    difference per band."""
    from analysis.statistics import build_workspace, expected_limits, pyhf_expected_limits

    rng = np.random.default_rng(5)
    b = np.sort(rng.uniform(50, 5000, n_bins))[::-1]
    s = np.sort(rng.uniform(1, 60, n_bins))
    ws = build_workspace(s, b, rng.uniform(0.02, 0.15, n_bins) * b, 0.1, name=f"bench_{n_bins}bins")
    fast = timed(lambda: expected_limits(ws), repeats)
    t0 = time.perf_counter()
    ref = pyhf_expected_limits(ws)
    pyhf_s = time.perf_counter() - t0
    ours = expected_limits(ws)
    return {"n_bins": n_bins, "fast_seconds": fast, "pyhf_seconds": pyhf_s,
            "speedup": pyhf_s / fast["median_s"], "limits": ours, "pyhf_limits": ref,
            "max_relative_difference": max(abs(ours[k] / ref[k] - 1) for k in ref)}


def bench_end_to_end(config: str, workdir: Path, store: Path | None = None) -> dict:
    """Wall time and peak resident memory of ``law run RunAnalysis`` on ``config`` in an empty store (one law
    worker: every task runs in the law process, whose peak RSS is measured). With ``store`` the outputs are kept
    there (it must not hold a previous run), otherwise in ``workdir``."""
    import os
    import resource
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    law = str(Path(sys.executable).parent / "law")
    if store is not None and (store / "RunAnalysis").exists():
        raise RuntimeError(f"{store} holds a previous run; the end-to-end benchmark needs an empty store")
    env = dict(os.environ, HEPFLOWS_STORE=str(store or workdir / "store"), LAW_HOME=str(workdir / "law"),
               LAW_CONFIG_FILE=str(repo / "law.cfg"), MPLBACKEND="Agg")
    subprocess.run([law, "index", "-q"], env=env, cwd=repo, check=True)
    t0 = time.perf_counter()
    proc = subprocess.run([law, "run", "RunAnalysis", "--version", "bench", "--config", config], env=env,
                          cwd=repo, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"RunAnalysis failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"config": config, "wall_seconds": wall, "peak_rss_gib": peak_kb / 2**20,
            "store": str(store) if store else None,
            "independent_test": independent_test_costs(Path(env["HEPFLOWS_STORE"]), config, "bench"),
            "completeness_check": completeness_check(Path(env["HEPFLOWS_STORE"]), config, "bench")}


def completeness_check(store: Path, config: str, version: str = "bench", repeats: int = 3) -> dict:
    """Cost of deciding that a finished ``RunAnalysis`` is complete: the check walks the whole requirement tree
    and every branch of every workflow, comparing modification times (:meth:`workflow.base.AnalysisTask.complete`).
    Each repeat in a fresh process (nothing cached); the number of tasks visited and files compared."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    code = (
        "import json, time, law, workflow.base as b\n"
        "from workflow.report import RunAnalysis\n"
        "t0 = time.perf_counter(); task = RunAnalysis(version=%r, config=%r); done = task.complete()\n"
        "dt = time.perf_counter() - t0\n"
        "print(json.dumps({'seconds': dt, 'complete': done, 'tasks': len(b._COMPLETE)}))\n" % (version, config))
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True,
                              env=dict(os.environ, HEPFLOWS_STORE=str(store), PYTHONPATH=str(repo)))
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    secs = [r["seconds"] for r in runs]
    return {"seconds": {"median": float(np.median(secs)), "runs": secs}, "complete": runs[0]["complete"],
            "tasks_checked": runs[0]["tasks"]}


def independent_test_costs(store: Path, config: str, version: str) -> dict:
    """What the independent test costs inside one RunAnalysis, read from its outputs: the truth sample
    (generation and skim, from the modification times of its files: last skimmed file minus first generated file
    plus one median interval between generated files), the bootstrap replicas (their training seconds, from
    their metrics), the high-power fidelity test and the spurious-signal part of the limit scan (their own
    timers)."""
    import json

    from workflow.base import config_digest

    cfg = load_config(config)
    name = f"{cfg.name}-{config_digest(cfg)}"  # the configuration's level of the store
    gen = sorted((store / "GenerateEvents" / name / version).glob("*_truth_*.root"), key=lambda p: p.stat().st_mtime)
    skim = sorted((store / "Skim" / name / version).glob("*_truth_*.root"), key=lambda p: p.stat().st_mtime)
    truth_s = None
    if gen and skim:
        times = [p.stat().st_mtime for p in gen]
        gap = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        truth_s = skim[-1].stat().st_mtime - times[0] + gap
    replicas = [json.loads(p.read_text()) for p in (store / "TrainFlow" / name / version).glob("*_boot*/metrics.json")]
    fid = store / "FidelityTest" / name / version / "fidelity.json"
    lim = store / "LimitScan" / name / version / "limits.json"
    limits = json.loads(lim.read_text()) if lim.is_file() else {}
    return {"truth_generation_and_skim_seconds": truth_s, "truth_files": len(gen),
            "replicas": len(replicas), "replica_training_seconds": sum(m["train_seconds"] for m in replicas),
            "fidelity_test_seconds": json.loads(fid.read_text())["seconds"] if fid.is_file() else None,
            "limit_scan_independent_test_seconds": limits.get("independent_test_seconds"),
            "limit_scan_limits": limits.get("timing", {}).get("limits")}


def _flow_training_data(cfg: AnalysisConfig, workdir: Path, n_events: int):
    """Skimmed, partitioned, preprocessed background from the real generator and skim."""
    from analysis.partition import partition_indices
    from models.fit import generator_columns
    from models.preprocessing import Preprocessor

    path = workdir / "flow_input.root"
    write_nanoaod_file(path, cfg, "background", 0, n_events=n_events)
    cols = skim_nanoaod(path, cfg, 0, 1.0)[0]
    names, derived, wps = generator_columns(cols, cfg.feature_units, cfg.btag_feature_thresholds)  # as TrainFlow
    x = np.stack([np.asarray(cols[c], np.float64) for c in names], axis=1)
    parts = {p: x[i] for p, i in partition_indices(len(x), cfg.partition, cfg.seed, "background").items()}
    rng = np.random.default_rng(1)
    prep = Preprocessor(names, derived=derived, btag_working_points=wps).fit(parts["train"], rng)
    return prep, {p: prep.forward(v, rng) for p, v in parts.items()}


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Dense float32 matrix-multiply rate of this process (FLOP/s), median over repeats."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    t = timed(lambda: torch.mm(a, b), repeats)
    return 2.0 * n**3 / t["median_s"]


def bench_flows(cfg: AnalysisConfig, quick: bool, workdir: Path) -> dict:
    """Training throughput per zoo model (one epoch, after a warm-up epoch), sampling throughput per zoo model,
    and for the default generator: time for 10^6 events, scaling with the number of events, and its achieved
    FLOP rate as a fraction of a dense matrix multiply measured in the same process."""
    import torch

    from models.registry import MODELS, build
    from models.training import TrainSettings, sample_batches, train_model

    prep, z = _flow_training_data(cfg, workdir, 60_000 if quick else 240_000)
    n_train = len(z["train"])
    zoo = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = build(name, prep.flow_features)
        res = train_model(model, z["train"], z["validation"], TrainSettings(epochs=2, patience=5))
        autoregressive = name in ("maf", "nsf", "made_mog")
        n_s = (2_000 if quick else 10_000) if autoregressive else (20_000 if quick else 100_000)
        t = timed(lambda: [None for _ in sample_batches(model, n_s, 100_000, 1)], 1 if autoregressive else 3)
        zoo[name] = {"train_events_per_s": res.history[-1].events_per_s, "train_events": n_train,
                     "sampling_events_per_s": n_s / t["median_s"], "sampling_events": n_s,
                     "sampling_timing": t}

    return {"zoo": zoo, "default": bench_default_sampling(cfg, quick, prep, z)}


def bench_default_sampling(cfg: AnalysisConfig, quick: bool, prep=None, z=None, workdir: Path | None = None
                           ) -> dict:
    """The default generator (the configuration's model and hyperparameters, trained one epoch): seconds for
    10^6 events (batches of 10^5, as ``SampleFlow``), the scaling with the number of events and the achieved FLOP
    rate as a fraction of a dense matrix multiply measured in the same process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.registry import build, hyperparameters
    from models.training import TrainSettings, sample_batches, train_model

    if prep is None:
        prep, z = _flow_training_data(cfg, workdir, 60_000)
    default = cfg.flows.default
    hyper = hyperparameters(default, cfg.flows.hyperparameters.get(default))
    torch.manual_seed(0)
    model = build(default, prep.flow_features, hyper)
    train_model(model, z["train"], z["validation"], TrainSettings(epochs=1))
    sizes = [20_000, 40_000, 80_000] if quick else [100_000, 300_000, 1_000_000]
    scaling = []
    for n in sizes:
        t = timed(lambda: [None for _ in sample_batches(model, n, 100_000, 1)], 1 if n >= 10**6 else 3)
        scaling.append({"n_events": n, "median_s": t["median_s"]})
    slope = float(np.polyfit(np.log(sizes), np.log([s["median_s"] for s in scaling]), 1)[0])
    with FlopCounterMode(display=False) as counter:
        next(sample_batches(model, 10_000, 10_000, 1))
    flops_per_event = counter.get_total_flops() / 10_000
    rate = sizes[-1] / scaling[-1]["median_s"]
    peak = matmul_flops()
    return {"model": default, "hyperparameters": hyper, "threads": torch.get_num_threads(), "scaling": scaling,
            "loglog_slope": slope, "seconds_per_million": 1e6 / rate, "aim_seconds_per_million": 30.0,
            "flops_per_event": flops_per_event, "achieved_flops": flops_per_event * rate, "matmul_flops": peak,
            "fraction_of_matmul": flops_per_event * rate / peak}


def bench_regression(cfg: AnalysisConfig, quick: bool, repeats: int, workdir: Path) -> dict:
    """The conditional applications (issue 15): training throughput (events or jets per second, the second of two
    epochs) of the flow and the feed-forward network of each application, and posterior sampling throughput
    (draws per second, 64 per event, median over repeats), against the classical baseline's rate on the same
    events (the W-mass solution; for b jets, building the context)."""
    import torch

    from analysis import bjet, neutrino
    from analysis.ntuple import read_objects, write_ntuple
    from models.fit import fit_conditional, sample_posterior
    from models.registry import hyperparameters
    from models.regression import fit_regressor, predict
    from models.training import TrainSettings

    n_events = 60_000 if quick else 240_000
    path = workdir / "regression_input.root"
    write_nanoaod_file(path, cfg, "background", 0, n_events=n_events)
    cols, _ = skim_nanoaod(path, cfg, 0, 1.0)
    write_ntuple(workdir / "regression_skim.root", cols, {"sample": "background"})
    objects = read_objects([workdir / "regression_skim.root"])
    n = len(objects["obj_n_jets"])
    half = {"train": slice(0, int(0.8 * n)), "validation": slice(int(0.8 * n), n)}
    out = {"events": n}
    for name, app in (("neutrino", neutrino), ("bjet", bjet)):
        parts = {p: {k: v[r] for k, v in objects.items()} for p, r in half.items()}
        data = {p: app.regression_data(o) for p, o in parts.items()}
        targets = {p: d[0] for p, d in data.items()}
        contexts = {p: d[1] for p, d in data.items()}
        emb = app.embedding_spec(32, [64, 64])
        settings = TrainSettings(epochs=2, patience=5, batch_size=512, seed=1)
        torch.manual_seed(0)
        table = app.target_table()
        flow = fit_conditional("made_mog", hyperparameters("made_mog", {"hidden_features": [128, 128]}), targets,
                               contexts, table.names, table, settings, emb)
        dnn = fit_regressor(targets, contexts, emb, settings, [128, 128])
        ctx = contexts["validation"]
        n_ctx = len(targets["validation"])
        t_flow = timed(lambda: sample_posterior(flow, ctx, 64, seed=1), repeats)
        t_dnn = timed(lambda: predict(dnn.model, ctx), repeats)
        base = (lambda: neutrino.w_mass_neutrino(parts["validation"])) if name == "neutrino" else \
            (lambda: bjet.regression_data(parts["validation"]))
        t_base = timed(base, repeats)
        out[name] = {"train_rows": len(targets["train"]),
                     "flow_train_per_s": flow.result.history[-1].events_per_s,
                     "dnn_train_per_s": dnn.result.history[-1].events_per_s,
                     "flow_draws_per_s": _rate(64 * n_ctx, t_flow), "dnn_predictions_per_s": _rate(n_ctx, t_dnn),
                     "baseline_per_s": _rate(n_ctx, t_base), "rows": n_ctx}
    return out


STAGES = ("generator", "pythia", "skim", "skim_scaling", "flows", "sampling", "evaluation", "limits", "regression",
          "end_to_end", "completeness")


def run_all(cfg: AnalysisConfig, quick: bool, only: tuple[str, ...] = STAGES, e2e_store: Path | None = None) -> dict:
    """Every benchmark in ``only`` (all by default); ``end_to_end`` is skipped with ``quick``."""
    repeats = 3 if quick else 5
    benches = {
        "generator": lambda w: bench_generator(cfg, 50_000 if quick else 300_000, repeats, w),
        "pythia": lambda w: bench_pythia(cfg, 500 if quick else 1_000, repeats, w),
        "skim": lambda w: bench_skim(cfg, 100_000 if quick else 500_000, repeats, w),
        "skim_scaling": lambda w: bench_skim_scaling(cfg, [25_000, 50_000, 100_000] if quick
                                                     else [100_000, 300_000, 1_000_000], 3, w),
        "flows": lambda w: bench_flows(cfg, quick, w),
        "sampling": lambda w: bench_default_sampling(cfg, quick, workdir=w),
        "evaluation": lambda w: bench_evaluation(cfg, 50_000 if quick else 1_000_000, 1 if quick else 3, w),
        "limits": lambda w: bench_limits(5 if quick else 20, 5),
        "regression": lambda w: bench_regression(cfg, quick, 3, w),
        "end_to_end": lambda w: bench_end_to_end(cfg.name, w / "e2e", e2e_store),
        # on a finished run (version "bench") in --e2e-store, e.g. the one end_to_end just wrote
        "completeness": lambda w: completeness_check(e2e_store, cfg.name) if e2e_store else None,
    }
    out = {}
    with tempfile.TemporaryDirectory(prefix="hepflows-bench-") as d:
        for name in only:
            if name == "end_to_end" and quick:  # the whole chain takes minutes; the quick suite stays short
                continue
            print(f"benchmark: {name}", flush=True)
            out[name] = benches[name](Path(d))
    return out
