"""The law tasks driven through the real ``law`` command line, on a tiny configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uproot
import yaml

from tests.conftest import REPO, tiny_config_dict

pytestmark = pytest.mark.slow
LAW = str(Path(sys.executable).parent / "law")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("law")
    e = dict(os.environ, LAW_HOME=str(base / "home"), LAW_CONFIG_FILE=str(REPO / "law.cfg"),
             HEPFLOWS_STORE=str(base / "store"), MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    subprocess.run([LAW, "index", "-q"], env=e, cwd=REPO, check=True)
    cfg = base / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(bkg_events=5000, sig_events=3000)))
    e["TINY_CONFIG"] = str(cfg)
    return e


def law(env, *args, check=True, timeout=1800):
    proc = subprocess.run([LAW, "run", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"law run {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def store(env, task, config=None, *parts) -> Path:
    """``<store>/<task>/<config>-<digest>/<parts...>``: the one directory of that configuration name (the digest
    of its content is part of the path); a path that does not exist when there is none."""
    base = Path(env["HEPFLOWS_STORE"]) / task
    if config is None:
        return base
    levels = sorted(base.glob(f"{config}-" + "[0-9a-f]" * 8))
    assert len(levels) <= 1, f"several configurations named {config!r}: {levels}"
    return (levels[0] if levels else base / f"{config}-absent").joinpath(*parts)


def test_chain_runs_and_lands_in_the_versioned_store(env):
    law(env, "SkimSummary", "--version", "v1", "--config", env["TINY_CONFIG"])
    gen = store(env, "GenerateEvents", "tiny", "v1")
    assert sorted(p.name for p in gen.iterdir()) == ["background_0.root", "signal_0.root"]
    skim = store(env, "Skim", "tiny", "v1")
    assert {p.name for p in skim.iterdir()} == {"background_0.root", "signal_0.root", "cutflow_background_0.json",
                                               "cutflow_signal_0.json"}
    summary = json.loads(store(env, "SkimSummary", "tiny", "v1", "summary.json").read_text())
    for name in ("background", "signal"):
        s = summary["samples"][name]
        assert 500 < s["n_selected"] < s["cutflow"]["all"]["events"]
    with uproot.open(skim / "signal_0.root") as f:
        assert f["Events"].num_entries == summary["samples"]["signal"]["n_selected"]
    for name in ("cutflow.png", "cutflow.pdf", "features.png", "features.pdf"):
        assert store(env, "SkimSummary", "tiny", "v1", name).stat().st_size > 1000
    # no temporary files anywhere in the store
    assert not [p for p in Path(env["HEPFLOWS_STORE"]).rglob(".*")]


def test_print_status_and_deps(env):
    law(env, "SkimSummary", "--version", "v1", "--config", env["TINY_CONFIG"])  # no-op when complete
    out = law(env, "SkimSummary", "--version", "v1", "--config", env["TINY_CONFIG"], "--print-status", "-1").stdout
    assert "GenerateEvents" in out and "Skim" in out and "existent (2/2)" in out
    assert "absent" not in out
    deps = law(env, "SkimSummary", "--version", "v1", "--config", env["TINY_CONFIG"], "--print-deps", "-1").stdout
    assert deps.index("SkimSummary") < deps.index("Skim(") < deps.index("GenerateEvents(")
    fresh = law(env, "SkimSummary", "--version", "v2", "--config", env["TINY_CONFIG"], "--print-status", "0").stdout
    assert "absent" in fresh


def test_remove_output_and_rerun_one_stage(env):
    law(env, "SkimSummary", "--version", "v1", "--config", env["TINY_CONFIG"])  # no-op when complete
    gen_file = store(env, "GenerateEvents", "tiny", "v1", "background_0.root")
    skim_file = store(env, "Skim", "tiny", "v1", "background_0.root")
    gen_mtime = gen_file.stat().st_mtime
    # remove the summary and the skim (depth 1) without running, keep the generated ntuples
    law(env, "SkimSummary", "--version", "v1", "--config", env["TINY_CONFIG"], "--remove-output", "1,a")
    assert not skim_file.exists() and not store(env, "SkimSummary", "tiny", "v1", "summary.json").exists()
    assert gen_file.exists()
    # remove again and run at once (law's ",y"): only the removed stages run again
    out = law(env, "SkimSummary", "--version", "v1", "--config", env["TINY_CONFIG"], "--remove-output", "0,a,y")
    assert "signal 0:" in out.stdout + out.stderr and "wrote" not in out.stdout + out.stderr
    assert skim_file.exists() and store(env, "SkimSummary", "tiny", "v1", "summary.json").exists()
    assert gen_file.stat().st_mtime == gen_mtime


def test_bad_config_stops_with_one_clear_message(env, tmp_path):
    d = tiny_config_dict()
    d["detector"] = {"jet": {"stochastic": -1.0}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    proc = law(env, "SkimSummary", "--version", "v1", "--config", str(bad), check=False)
    assert proc.returncode != 0
    assert "detector.jet.stochastic: must be >= 0, got -1.0" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not list(store(env, "GenerateEvents").glob("tiny-*/v1/*.root")) or \
        store(env, "GenerateEvents", "tiny", "v1").exists()  # the bad config wrote nothing of its own


def test_missing_input_file_fails_clearly(env, tmp_path):
    d = tiny_config_dict()
    d["samples"] = {"data": {"source": "nanoaod", "label": 0, "files": [str(tmp_path / "absent.root")]}}
    cfg = tmp_path / "absent.yaml"
    cfg.write_text(yaml.safe_dump(d))
    proc = law(env, "Skim", "--version", "v1", "--config", str(cfg), check=False)
    assert proc.returncode != 0
    assert "absent.root: no such file" in proc.stdout + proc.stderr
    assert not list(store(env, "Skim").glob("tiny-*/**/data_0.root"))


def test_killed_task_leaves_no_complete_looking_output(env, tmp_path):
    d = tiny_config_dict(bkg_events=400_000)
    d["name"] = "big"
    cfg = tmp_path / "big.yaml"
    cfg.write_text(yaml.safe_dump(d))
    from analysis.config import load_config
    from workflow.base import config_digest
    level = f"big-{config_digest(load_config(str(cfg)))}"  # the directory does not exist yet
    out = store(env, "GenerateEvents") / level / "v1" / "background_0.root"
    proc = subprocess.Popen([LAW, "run", "GenerateEvents", "--version", "v1", "--config", str(cfg), "--branch", "0"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wait until the first batch is written, then kill the job hard
    deadline = time.time() + 900
    while time.time() < deadline and not list(out.parent.glob(".background_0.root.*")):
        time.sleep(0.2)
    assert list(out.parent.glob(".background_0.root.*")), "generation never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    assert not out.exists()
    status = law(env, "GenerateEvents", "--version", "v1", "--config", str(cfg), "--branch", "0",
                 "--print-status", "0").stdout
    assert "absent" in status


def test_real_higgs_data_through_the_chain(env, higgs_sample):
    law(env, "SkimSummary", "--version", "v1", "--config", "higgs_uci", "--input-path", str(higgs_sample))
    runs = list(store(env, "SkimSummary", "higgs_uci", "v1").glob("input-*/summary.json"))
    assert len(runs) == 1
    summary = json.loads(runs[0].read_text())
    n = {k: v["n_selected"] for k, v in summary["samples"].items()}
    assert n["signal"] + n["background"] == 7000 and n["signal"] > n["background"]
    assert summary["units"] == "normalised"
