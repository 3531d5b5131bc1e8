"""law's real HTCondor submission path (``--workflow htcondor``), driven through the test stand-in for an
HTCondor pool in ``tests/htcondor`` (each job a separate local process with its own scratch directory and no
inherited environment): a chain of stages, retries, a killed submission that resumes, and resource requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.ntuple import read_ntuples
from tests.conftest import REPO, tiny_config_dict
from tests.workflow.test_law_cli import LAW, env, law, store  # noqa: F401  (fixture and helpers)

pytestmark = pytest.mark.slow
FAKE_BIN = REPO / "tests" / "htcondor" / "bin"
CONDOR = ("--workflow", "htcondor", "--poll-interval", "2s")


@pytest.fixture()
def condor_env(env, tmp_path):  # noqa: F811
    """The law test environment plus the stand-in pool on PATH, with its own state directory."""
    e = dict(env, PATH=f"{FAKE_BIN}:{env['PATH']}", FAKE_CONDOR_HOME=str(tmp_path / "pool"))
    return e


@pytest.fixture(scope="module")
def chain_config(tmp_path_factory):
    d = tiny_config_dict(bkg_events=8000, sig_events=2000)
    d["name"] = "tinycondor"
    d["flows"] = {"models": ["realnvp"], "default": "realnvp", "seeds": [2], "analysis_seeds": [2], "replicas": {"n": 0},
                  "hyperparameters": {"realnvp": {"transforms": 2, "hidden_features": [32]}},
                  "training": {"epochs": 2, "patience": 2, "batch_size": 256}}
    path = tmp_path_factory.mktemp("condorcfg") / "tinycondor.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def _jobs(e) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(e["FAKE_CONDOR_HOME"], "jobs").glob("*.json"))]


def test_chain_on_htcondor_matches_local_run(condor_env, chain_config):
    e = condor_env
    law(e, "TrainFlow", "--version", "local", "--config", chain_config)
    law(e, "TrainFlow", "--version", "condor", "--config", chain_config, *CONDOR, timeout=2400)
    jobs = _jobs(e)
    # GenerateEvents (2 files), Skim (2 files), TrainFlow (1 model x seed): three stages of jobs, all succeeded
    assert len(jobs) == 5 and all(j["status"] == 4 and j["exit_code"] == 0 for j in jobs)
    assert len({j["cluster"] for j in jobs}) == 3
    for j in jobs:
        a = j["attrs"]
        assert a["request_cpus"] == "1" and a["request_memory"] == "4000" and a["+MaxRuntime"] == "7200"
        assert "request_gpus" not in a
        assert "bootstrap" in a["transfer_input_files"]
    # identical outputs: ntuples bit for bit, the trained flow to float precision
    for name in ("background_0.root", "signal_0.root"):
        local = read_ntuples([store(e, "Skim", "tinycondor", "local", name)])
        remote = read_ntuples([store(e, "Skim", "tinycondor", "condor", name)])
        for k in local:
            np.testing.assert_array_equal(local[k], remote[k])
    m_local = json.loads(store(e, "TrainFlow", "tinycondor", "local", "realnvp_s2", "metrics.json").read_text())
    m_remote = json.loads(store(e, "TrainFlow", "tinycondor", "condor", "realnvp_s2", "metrics.json").read_text())
    assert m_remote["nll"]["test"] == pytest.approx(m_local["nll"]["test"], rel=1e-4)
    # submission records and job logs are in the store
    logs = store(e, "Skim", "tinycondor", "condor", "htcondor")
    assert list(logs.glob("htcondor_jobs_*.json")) and list(logs.glob("stdout*.txt"))
    assert "running" in next(logs.glob("stdout*.txt")).read_text()


def test_failed_job_is_retried(condor_env):
    e = dict(condor_env, FAKE_CONDOR_FAIL_FIRST="1")
    law(e, "GenerateEvents", "--version", "retry", "--config", e["TINY_CONFIG"], *CONDOR, "--retries", "1",
        timeout=1800)
    jobs = _jobs(e)
    assert len(jobs) == 3  # two branches, one of them submitted twice
    assert sum(j["exit_code"] == 1 for j in jobs) == 1 and sum(j["exit_code"] == 0 for j in jobs) == 2
    assert sorted(p.name for p in store(e, "GenerateEvents", "tiny", "retry").glob("*.root")) == \
        ["background_0.root", "signal_0.root"]


def test_killed_submission_resumes(condor_env):
    e = condor_env
    args = [LAW, "run", "Skim", "--version", "killed", "--config", e["TINY_CONFIG"], *CONDOR]
    proc = subprocess.Popen(args, env=e, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    records = store(e, "GenerateEvents", "tiny", "killed", "htcondor")
    deadline = time.time() + 900
    while not list(records.glob("htcondor_jobs_*.json")) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # the submitting process dies; its jobs keep running
    proc.wait()
    assert _jobs(e) and not list(store(e, "GenerateEvents", "tiny", "killed").glob("*.root"))
    law(e, "Skim", "--version", "killed", "--config", e["TINY_CONFIG"], *CONDOR, timeout=1800)
    jobs = _jobs(e)
    # the generation jobs of the killed run were picked up again, not submitted a second time
    assert len(jobs) == 4 and len({j["cluster"] for j in jobs}) == 2
    assert len(list(store(e, "Skim", "tiny", "killed").glob("*.root"))) == 2


def test_cuda_device_requests_a_gpu():
    from workflow.flows import TrainFlow

    for device, gpus in (("cpu", False), ("cuda", True)):
        task = TrainFlow(version="x", device=device, htcondor_cpus=4, htcondor_memory=8000)
        cfg = task.htcondor_job_config(types.SimpleNamespace(render_variables={}, custom_content=[]), 1, [0])
        content = dict(cfg.custom_content)
        assert content["request_cpus"] == 4 and content["request_memory"] == 8000
        assert ("request_gpus" in content) is gpus
        assert cfg.render_variables["hepflows_repo"] == str(REPO)


def test_unfolding_training_on_htcondor(condor_env, tmp_path):
    """The unfolding's branched stages go through the same submission path: its own samples (GenerateEvents and
    Skim --unfolding: the training sample and the top-mass-shifted pseudo-data) and one flow per seed, each a job."""
    e = condor_env
    d = tiny_config_dict(bkg_events=6000, sig_events=2000)
    d["name"] = "tinyunfcondor"
    d["unfolding"] = {"enabled": True, "train_factor": 1, "seeds": [1], "mass_shifts": [1.0],
                      "hyperparameters": {"components": 2, "hidden_features": [16]}, "embedding_features": 4,
                      "embedding_hidden": [8], "training": {"epochs": 2, "patience": 2, "batch_size": 256}}
    path = tmp_path / "tinyunfcondor.yaml"
    path.write_text(yaml.safe_dump(d))
    law(e, "TrainUnfolding", "--version", "condor", "--config", str(path), *CONDOR, timeout=1800)
    jobs = _jobs(e)
    # GenerateEvents --unfolding (training sample, +1 GeV pseudo-data), Skim --unfolding (the same two), one flow
    assert len(jobs) == 5 and all(j["status"] == 4 and j["exit_code"] == 0 for j in jobs)
    assert len({j["cluster"] for j in jobs}) == 3
    assert store(e, "TrainUnfolding", "tinyunfcondor", "condor", "seed_1", "model.pt").is_file()
    assert store(e, "Skim", "tinyunfcondor", "condor", "background_unfolding_mt_p1_0.root").is_file()
    assert list(store(e, "Skim", "tinyunfcondor", "condor", "htcondor", "unfolding").glob("htcondor_jobs_*.json"))
