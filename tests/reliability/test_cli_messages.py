"""Through the ``law`` command line: one message per error even with several worker processes, a truncated
store file named in one line, a missing --version explained in one line, and input files edited in place make
the tasks that read them run again."""

from __future__ import annotations

import gzip
import pytest
import yaml

from tests.conftest import tiny_config_dict
from tests.workflow.test_law_cli import env, law, store  # noqa: F401  (fixture and helpers)

pytestmark = pytest.mark.slow


def _messages(proc) -> list[str]:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    return [line for line in out.splitlines() if line.startswith("hepflows: ")]


def _csv_config(tmp_path, name, path, n_events=None):
    d = tiny_config_dict(name=name)
    sample = {"source": "higgs_csv", "path": str(path), "label": 0, "events_per_file": 1000}
    if n_events:
        sample["n_events"] = n_events
    d["samples"] = {"background": sample, "signal": dict(sample, label=1)}
    d["feature_units"] = "normalised"
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(d))
    return str(cfg)


def test_one_message_with_two_workers(env, tmp_path, higgs_sample):  # noqa: F811
    data = gzip.decompress(higgs_sample.read_bytes())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(data)[: len(gzip.compress(data)) // 3])  # the first lines are intact
    cfg = _csv_config(tmp_path, "cutgz", cut, n_events=6000)
    proc = law(env, "Skim", "--version", "v1", "--config", cfg, "--workers", "2", check=False)
    assert proc.returncode != 0
    lines = _messages(proc)
    assert lines and len(lines) == len(set(lines)), lines  # several branches fail the same way: said once
    assert all("cut.csv.gz: truncated or corrupt gzip file" in line for line in lines), lines


def test_missing_version_is_one_line(env):  # noqa: F811
    proc = law(env, "SkimSummary", check=False)
    assert proc.returncode != 0
    assert len(_messages(proc)) == 1 and "version" in _messages(proc)[0]


def test_truncated_store_file_is_named(env, tmp_path, higgs_sample):  # noqa: F811
    cfg = _csv_config(tmp_path, "trunc", higgs_sample, n_events=3000)
    law(env, "SkimSummary", "--version", "v1", "--config", cfg)
    victim = store(env, "Skim", "trunc", "v1", "background_0.root")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # the skim's output changed after the summary: the summary is out of date and reads it
    proc = law(env, "SkimSummary", "--version", "v1", "--config", cfg, check=False)
    assert proc.returncode != 0
    lines = _messages(proc)
    assert len(lines) == 1 and lines[0].startswith(f"hepflows: {victim}: "), lines
    assert not store(env, "SkimSummary", "trunc", "v1", "summary.json").exists()  # nothing looks finished


def test_input_file_edited_in_place_reruns_its_readers(env, tmp_path, higgs_sample):  # noqa: F811
    csv = tmp_path / "data.csv"
    csv.write_bytes(gzip.decompress(higgs_sample.read_bytes()))
    cfg = _csv_config(tmp_path, "edited", csv, n_events=2000)
    law(env, "SkimSummary", "--version", "v1", "--config", cfg)
    skim = store(env, "Skim", "edited", "v1", "background_0.root")
    before = skim.stat().st_mtime_ns
    assert law(env, "SkimSummary", "--version", "v1", "--config", cfg).returncode == 0
    assert skim.stat().st_mtime_ns == before  # nothing changed: nothing reruns
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[1000:] + lines[:1000]))  # same name, other events
    law(env, "SkimSummary", "--version", "v1", "--config", cfg)
    assert skim.stat().st_mtime_ns > before
    summary = store(env, "SkimSummary", "edited", "v1", "summary.json")
    assert summary.stat().st_mtime_ns > before
