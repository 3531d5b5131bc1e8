"""Run the benchmark suite and write ``benchmarks/results/<date>.json`` and ``<date>.md``.

    python -m benchmarks            # full suite
    python -m benchmarks --quick    # small sizes, a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

from analysis.config import load_config
from analysis.io import atomic_path, write_json

from .stages import STAGES, run_all


def machine() -> dict:
    import numpy
    import uproot
    import coffea

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": sys.version.split()[0], "numpy": numpy.__version__, "uproot": uproot.__version__,
            "coffea": coffea.__version__}


def _rows(results: dict) -> list[str]:
    rows = []
    if "generator" in results:
        g = results["generator"]
        r = g["events_per_s_per_core"]
        rows.append(f"| generator + detector + NanoAOD writing ({g['n_events']:,} ttbar events, 1 core) | "
                    f"{r['median']:,.0f} ev/s [{r['min']:,.0f}, {r['max']:,.0f}] | uproot writing the same arrays: "
                    f"{g['uproot_write_only_events_per_s']['median']:,.0f} ev/s | "
                    f"time x{g['time_ratio_to_uproot_write']:.1f} |")
    if "pythia" in results and "skipped" not in results["pythia"]:
        p = results["pythia"]
        for proc in ("ttbar", "heavy_higgs"):
            r = p[f"{proc}_events_per_s_per_core"]
            rows.append(f"| Pythia 8 {proc} + FastJet + detector + NanoAOD writing ({p['n_events']:,} events, 1 core) "
                        f"| {r['median']:,.0f} ev/s [{r['min']:,.0f}, {r['max']:,.0f}] | Pythia's nextBatch alone: "
                        f"{p['pythia_next_batch_events_per_s']['median']:,.0f} ev/s (ttbar) | 2e7 ttbar: "
                        f"{p['paper_scale']['htcondor_jobs_at_4h']:,} jobs of 4 h |" if proc == "ttbar" else
                        f"| Pythia 8 {proc} + FastJet + detector + NanoAOD writing ({p['n_events']:,} events, 1 core) "
                        f"| {r['median']:,.0f} ev/s [{r['min']:,.0f}, {r['max']:,.0f}] | | |")
        rows.append(f"| anti-kt per event: FastJet's multi-event interface | {p['fastjet_ms_per_event']:.2f} ms "
                    f"(two clusterings + detector: {p['fastjet_ms_per_event_two_clusterings_and_detector']:.2f} ms) "
                    f"| Pythia's SlowJet: with fjcore {p['slowjet_fjcore_ms_per_event']:.2f} ms, native "
                    f"{p['slowjet_native_ms_per_event']:.1f} ms | start-up {p['startup_s_per_file']:.2f} s per file; "
                    f"steady ttbar {p['ttbar_steady_events_per_s_per_core']:,.0f} ev/s |")
    if "skim" in results:
        s = results["skim"]
        r = s["skim_events_per_s"]
        rows.append(f"| coffea skim ({s['n_events']:,} events) | {r['median']:,.0f} ev/s [{r['min']:,.0f}, "
                    f"{r['max']:,.0f}] | plain uproot read of the same branches: "
                    f"{s['uproot_read_events_per_s']['median']:,.0f} ev/s | time x{s['time_ratio_to_bare_read']:.2f} |")
    if "skim_scaling" in results:
        sc = results["skim_scaling"]
        sizes = ", ".join(f"{p['n_events']:,}" for p in sc["points"])
        rows.append(f"| skim scaling ({sizes} events) | log-log slope {sc['loglog_slope']:.2f} | linear = 1.00 | |")
    if "flows" in results:
        fl = results["flows"]
        for name, r in fl["zoo"].items():
            rows.append(f"| flow {name}: training ({r['train_events']:,} events/epoch) and sampling | "
                        f"train {r['train_events_per_s']:,.0f} ev/s, sample {r['sampling_events_per_s']:,.0f} ev/s "
                        "| | |")
    for d in ([results["flows"]["default"]] if "flows" in results else []) + (
            [results["sampling"]] if "sampling" in results else []):
        rows.append(f"| default flow ({d['model']}): 10^6 events | {d['seconds_per_million']:.1f} s (aim < 30 s), "
                    f"log-log slope {d['loglog_slope']:.2f} | dense matmul {d['matmul_flops'] / 1e9:.0f} GFLOP/s | "
                    f"{100 * d['fraction_of_matmul']:.1f} % of matmul ({d['achieved_flops'] / 1e9:.1f} GFLOP/s) |")
    if "evaluation" in results:
        ev = results["evaluation"]
        rows.append(f"| evaluation, full metric set ({ev['n_events']:,} vs {ev['n_events']:,} events) | "
                    f"{ev['seconds']['median']:.0f} s [{ev['seconds']['min']:.0f}, {ev['seconds']['max']:.0f}] "
                    f"({ev['seconds']['repeats']} runs) | | |")
    if "limits" in results:
        li = results["limits"]
        f = li["fast_seconds"]
        rows.append(f"| expected limit with bands ({li['n_bins']} bins, staterror + 10 % syst.) | "
                    f"{1e3 * f['median_s']:.0f} ms [{1e3 * f['min_s']:.0f}, {1e3 * f['max_s']:.0f}] | "
                    f"pyhf upper_limit: {li['pyhf_seconds']:.1f} s | x{li['speedup']:.0f} faster, max. relative "
                    f"difference {100 * li['max_relative_difference']:.2f} % |")
    if "regression" in results:
        rg = results["regression"]
        for name in ("neutrino", "bjet"):
            r = rg[name]
            unit = "events" if name == "neutrino" else "jets"
            rows.append(f"| {name} regression: training ({r['train_rows']:,} {unit}), flow / network | "
                        f"{r['flow_train_per_s']:,.0f} / {r['dnn_train_per_s']:,.0f} {unit}/s; posterior "
                        f"{r['flow_draws_per_s']['median']:,.0f} draws/s, network "
                        f"{r['dnn_predictions_per_s']['median']:,.0f} {unit}/s | classical baseline "
                        f"{r['baseline_per_s']['median']:,.0f} {unit}/s | |")
    if "end_to_end" in results:
        e = results["end_to_end"]
        rows.append(f"| RunAnalysis end to end ({e['config']}, empty store, 1 worker) | {e['wall_seconds'] / 60:.1f} "
                    f"min, peak RSS {e['peak_rss_gib']:.2f} GiB | aim < 20 min, < 4 GiB | |")
        c = e.get("independent_test")
        if c:
            def sec(v):
                return "-" if v is None else f"{v:.0f} s"
            rows.append(f"| of which the independent test | truth sample ({c['truth_files']} files) "
                        f"{sec(c['truth_generation_and_skim_seconds'])}, {c['replicas']} replicas "
                        f"{sec(c['replica_training_seconds'])} training, fidelity test "
                        f"{sec(c['fidelity_test_seconds'])}, spurious signal and calibration "
                        f"{sec(c['limit_scan_independent_test_seconds'])} | | |")
    return rows


def markdown(results: dict) -> str:
    head = ["| stage | figure (median, [min, max]) | reference in the same run | ratio |", "|---|---|---|---|"]
    return "\n".join(head + _rows(results)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--config", default="quickstart", help="analysis configuration (default: quickstart)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="output directory")
    parser.add_argument("--only", default=",".join(STAGES), help="comma-separated benchmarks (default: all of "
                        f"{', '.join(STAGES)})")
    parser.add_argument("--e2e-store", default=None, help="keep the outputs of the end-to-end run in this (empty) "
                        "store, e.g. to read its report; default: a temporary directory")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = sorted(set(only) - set(STAGES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(STAGES)}")
    cfg = load_config(args.config)
    results = run_all(cfg, quick=args.quick, only=only,
                      e2e_store=Path(args.e2e_store).resolve() if args.e2e_store else None)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    name = f"{stamp}-quick" if args.quick else stamp
    if set(only) != set(STAGES):
        name += "-" + "-".join(only)
    out = Path(args.out)
    payload = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
               "config": cfg.name, "machine": machine(), "results": results}
    write_json(out / f"{name}.json", payload)
    table = markdown(results)
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text(f"# hepflows benchmarks {payload['date']}\n\n{table}")
    print(table)
    print(f"written: {out / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
