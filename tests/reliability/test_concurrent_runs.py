"""Two ``law run`` commands on the same configuration and version at once (two users of a shared store, or a
command started twice): both finish, and the outputs are complete and identical to a single run's."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import yaml

from analysis.ntuple import read_ntuples
from tests.conftest import REPO, tiny_config_dict
from tests.workflow.test_law_cli import LAW, env, law, store  # noqa: F401  (fixture and helpers)

pytestmark = pytest.mark.slow


def test_two_concurrent_runs_both_succeed(env, tmp_path):  # noqa: F811
    d = tiny_config_dict(bkg_events=20_000, sig_events=8000, name="tinyconc")
    cfg = tmp_path / "tinyconc.yaml"
    cfg.write_text(yaml.safe_dump(d))
    args = [LAW, "run", "SkimSummary", "--version", "both", "--config", str(cfg)]
    procs = [subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    law(env, "SkimSummary", "--version", "single", "--config", str(cfg))
    for name in ("background_0.root", "signal_0.root"):
        a = read_ntuples([store(env, "Skim", "tinyconc", "both", name)])
        b = read_ntuples([store(env, "Skim", "tinyconc", "single", name)])
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")
    both = store(env, "SkimSummary", "tinyconc", "both")
    assert (both / "summary.json").is_file() and (both / "features.png").stat().st_size > 1000
    root = store(env, "Skim", "tinyconc").parent
    assert not [p for p in root.parent.rglob(".*") if "tinyconc" in str(p)]  # no temporaries left
