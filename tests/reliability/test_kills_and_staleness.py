"""Kills during every branched stage, and changed or corrupted upstream outputs, driven through the ``law`` CLI.

* Kills: one run of the chain up to ``ScoreEvents`` and ``EvaluateFlow`` is killed (SIGKILL, through the
  ``HEPFLOWS_KILL_BEFORE_RENAME`` switch of :mod:`analysis.io`: the worst moment, the output complete in its
  temporary file and not yet renamed) once in each branched stage, ``GenerateEvents``, ``Skim``, ``TrainFlow``,
  ``SampleFlow``, ``TrainClassifier``, ``ScoreEvents``, ``EvaluateFlow``; after each kill the output is absent
  and the run is simply started again. The final outputs equal those of an uninterrupted run (other version,
  same configuration) array by array.
* Staleness: a rewritten ``model.pt`` makes exactly its dependants (SampleFlow, ScoreEvents) rerun, nothing
  upstream; a truncated ``model.skops`` or training partition is found by the tasks that read it, with one
  clear message naming the file, non-zero exit, and no output left that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile

import numpy as np
import pytest
import torch
import yaml

from analysis.ntuple import read_ntuples
from tests.conftest import REPO, tiny_config_dict
from tests.workflow.test_law_cli import LAW, env, law, store  # noqa: F401  (fixture and helpers)

pytestmark = pytest.mark.slow
NAME = "tinykill"

# (stage, output file name pattern under that stage's store directory, task and arguments to run): in dependency
# order, each run doing that stage (and what it needs upstream, including the branch killed before it)
KILLS = [
    ("GenerateEvents", "background_0.root", ("GenerateEvents",)),
    ("Skim", "signal_0.root", ("Skim",)),
    ("TrainFlow", "model.pt", ("TrainFlow",)),
    ("TrainClassifier", "model.skops", ("TrainClassifier",)),
    ("SampleFlow", "generated_1.root", ("SampleFlow", "--flow-seed", "1", "--n-events", "6000")),
    ("ScoreEvents", "scores.npz", ("ScoreEvents",)),
    ("EvaluateFlow", "metrics.json", ("EvaluateFlow",)),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    d = tiny_config_dict(bkg_events=9000, sig_events=3000)
    d["name"] = NAME
    d["flows"] = {"models": ["realnvp"], "default": "realnvp", "seeds": [1], "analysis_seeds": [1],
                  "replicas": {"n": 0},  # the chain stays short: each stage is still a workflow
                  "hyperparameters": {"realnvp": {"transforms": 2, "hidden_features": [32, 32]}},
                  "training": {"epochs": 2, "patience": 2, "batch_size": 256},
                  "generation": {"events_per_chunk": 3000, "batch_size": 3000, "evaluation_events": 2000}}
    d["classifiers"] = {"bdt": {"max_iter": 20}, "nn": {"hidden_features": [16], "epochs": 2, "batch_size": 256}}
    d["limits"] = {"generated_sizes": {"min": 2000, "max": 6000, "points": 2}}
    d["truth"] = {"factor": 0}  # the reference partition plays the truth sample: no extra generation
    path = tmp_path_factory.mktemp("killcfg") / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def _run(env, task, version, config, kill=None, check=True):  # noqa: F811
    task = (task,) if isinstance(task, str) else tuple(task)
    if not kill:
        return law(env, *task, "--version", version, "--config", config, check=check, timeout=1800)
    # a killed law process leaves its multiprocessing manager (a child) running, which holds the output pipes
    # open: output to files, its own session, and the session's strays removed after the kill
    e = dict(env, HEPFLOWS_KILL_BEFORE_RENAME=kill)
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([LAW, "run", *task, "--version", version, "--config", config], env=e, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            proc.wait(timeout=1800)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), "")


@pytest.fixture(scope="module")
def reference(env, config):  # noqa: F811
    for task in ("ScoreEvents", "EvaluateFlow"):
        _run(env, task, "ref", config)
    return "ref"


@pytest.fixture(scope="module")
def killed(env, config, reference):  # noqa: F811
    """The same chain, killed once in each branched stage and restarted after each kill."""
    log = []
    for stage, name, task in KILLS:
        pattern = f"*/{stage}/{NAME}-*/killed/*{name}"
        proc = _run(env, task, "killed", config, kill=pattern, check=False)
        left = list(store(env, stage, NAME, "killed").rglob(name))
        log.append((stage, proc.returncode, left))
    for task in ("ScoreEvents", "EvaluateFlow"):
        _run(env, task, "killed", config)
    return log


def _files(env, stage, version, suffix):  # noqa: F811
    root = store(env, stage, NAME, version)
    return sorted(p.relative_to(root) for p in root.rglob(f"*{suffix}") if "htcondor" not in p.parts)


def test_every_kill_stops_the_run_and_leaves_no_output(killed):
    assert [s for s, _, _ in killed] == [s for s, _, _ in KILLS]
    for stage, rc, left in killed:
        assert rc == -9, f"{stage}: the kill did not stop the run (exit code {rc})"
        assert left == [], f"{stage}: a killed writer left {left}"


def test_rerun_after_kills_equals_an_uninterrupted_run(env, killed):  # noqa: F811
    for stage in ("GenerateEvents", "Skim", "SampleFlow"):
        files = _files(env, stage, "ref", ".root")
        assert files and files == _files(env, stage, "killed", ".root"), stage
        for rel in files:
            ref = store(env, stage, NAME, "ref", rel)
            new = store(env, stage, NAME, "killed", rel)
            if stage == "GenerateEvents":
                import awkward as ak
                import uproot
                with uproot.open(ref) as a, uproot.open(new) as b:
                    assert a["Events"].keys() == b["Events"].keys()
                    for br in ("nJet", "Jet_pt", "Jet_btagDeepFlavB", "Muon_pt", "Electron_eta", "MET_pt",
                               "genWeight"):
                        x, y = a["Events"][br].array(), b["Events"][br].array()
                        assert ak.array_equal(x, y), f"{rel} {br}"
            else:
                x, y = read_ntuples([ref]), read_ntuples([new])
                for k in x:
                    np.testing.assert_array_equal(x[k], y[k], err_msg=f"{stage} {rel} {k}")
    for rel in _files(env, "TrainFlow", "ref", "model.pt"):
        a = torch.load(store(env, "TrainFlow", NAME, "ref", rel), weights_only=True)
        b = torch.load(store(env, "TrainFlow", NAME, "killed", rel), weights_only=True)
        for k, v in a["state_dict"].items():
            assert torch.equal(v, b["state_dict"][k]), f"TrainFlow {rel} {k}"
    for kind in ("bdt", "nn"):
        with np.load(store(env, "ScoreEvents", NAME, "ref", kind, "scores.npz")) as a, \
                np.load(store(env, "ScoreEvents", NAME, "killed", kind, "scores.npz")) as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{kind} {k}")
    for rel in _files(env, "EvaluateFlow", "ref", "metrics.json"):
        a = json.loads(store(env, "EvaluateFlow", NAME, "ref", rel).read_text())
        b = json.loads(store(env, "EvaluateFlow", NAME, "killed", rel).read_text())
        assert _untimed(a) == _untimed(b)


def _untimed(obj):
    """``obj`` without the wall-clock measurements (seconds, rates), which differ between any two runs."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if "seconds" not in k and not k.endswith("_per_s")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _mtimes(env, stage, version="killed"):  # noqa: F811
    root = store(env, stage, NAME, version)
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "htcondor" not in p.parts}


def test_changed_model_reruns_exactly_its_dependants(env, config, killed):  # noqa: F811
    before = {s: _mtimes(env, s) for s in ("GenerateEvents", "Skim", "PartitionEvents", "TrainFlow", "SampleFlow",
                                           "TrainClassifier", "ScoreEvents")}
    model = next(store(env, "TrainFlow", NAME, "killed").rglob("realnvp_s1/model.pt"))
    data = model.read_bytes()
    model.write_bytes(data)  # rewritten (same content, new time): a newer model as far as anyone can tell
    _run(env, "ScoreEvents", "killed", config)
    after = {s: _mtimes(env, s) for s in before}
    for stage in ("GenerateEvents", "Skim", "PartitionEvents", "TrainClassifier"):
        assert after[stage] == before[stage], f"{stage} reran although nothing it depends on changed"
    assert {p: t for p, t in after["TrainFlow"].items() if p != model} == \
        {p: t for p, t in before["TrainFlow"].items() if p != model}
    rerun = [p for p in before["SampleFlow"] if after["SampleFlow"][p] != before["SampleFlow"][p]]
    # the samples ScoreEvents reads (6000 events) are redone; those of the evaluation (2000), not asked for, stay
    assert rerun and all("n6000" in str(p) for p in rerun)
    assert all(after["SampleFlow"][p] == before["SampleFlow"][p] for p in before["SampleFlow"] if "n2000" in str(p))
    assert all(after["ScoreEvents"][p] != before["ScoreEvents"][p] for p in before["ScoreEvents"]
               if p.name == "scores.npz")


@pytest.mark.parametrize("what", ["model.skops", "train partition"])
def test_corrupted_upstream_output_gives_one_clear_message(env, config, killed, what, tmp_path):  # noqa: F811
    if what == "model.skops":
        victim = store(env, "TrainClassifier", NAME, "killed", "bdt", "model.skops")
        task, produced = "ScoreEvents", store(env, "ScoreEvents", NAME, "killed", "bdt", "scores.npz")
    else:
        victim = store(env, "PartitionEvents", NAME, "killed", "background_train.root")
        task, produced = "TrainFlow", next(store(env, "TrainFlow", NAME, "killed").rglob("realnvp_s1/model.pt"))
    backup = tmp_path / "backup"
    shutil.copy2(victim, backup)
    try:
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
        proc = _run(env, task, "killed", config, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        lines = [line for line in out.splitlines() if line.startswith("hepflows: ")]
        assert lines and all(str(victim) in line for line in lines), out
        assert len(lines) == len(set(lines))  # each message once
        assert "Traceback" not in out
        assert not produced.exists()  # the stale output of the failed task is gone, nothing looks finished
    finally:
        shutil.copy2(backup, victim)
        os.utime(victim)
    _run(env, task, "killed", config)  # repaired: the chain completes again
    assert produced.exists()
