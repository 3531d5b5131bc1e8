"""The output store: --version and the configuration's name cannot leave the store or drop a level; the HTCondor
bootstrap receives the store and repository paths literally, whatever characters they contain."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_config_dict
from workflow.base import AnalysisTask, bootstrap_render_variables, check_store_name

BAD_NAMES = {"/tmp/x": "absolute path", "../x": "path separator", "a/b": "path separator", "": "empty",
             ".": "is '.'", "..": "is '..'", "v1 final": "characters other than", "v1;rm": "characters other than",
             "~x": "characters other than", "$HOME": "characters other than"}


class StoreProbe(AnalysisTask):
    """A bare task with the store of every hepflows task (no requirements, no run)."""

    def output(self):
        return self.local_target("out.json")

    def run(self):  # pragma: no cover - never run
        raise NotImplementedError


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("HEPFLOWS_STORE", str(tmp_path / "store"))
    return tmp_path / "store"


def _config(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"cfg{abs(hash(name))}.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(name=name)))
    return str(path)


@pytest.mark.parametrize("name", ["v1", "v1.2", "2024-06-01_rc+1", "quickstart"])
def test_normal_names_pass(name, store, tmp_path):
    assert check_store_name("--version", name) == name
    task = StoreProbe(version=name, config=_config(tmp_path, name))
    assert task.output().path == str(store / "StoreProbe" / task.config_level / name / "out.json")
    assert re.fullmatch(re.escape(name) + "-[0-9a-f]{8}", task.config_level)


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_bad_version_is_refused_at_construction(name):
    with pytest.raises(SystemExit) as err:
        StoreProbe(version=name, config="quickstart")
    msg = str(err.value)
    assert msg.startswith("hepflows: --version ") and repr(name) in msg and BAD_NAMES[name] in msg


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_bad_config_name_is_refused_at_construction(name, tmp_path):
    cfg = _config(tmp_path, name)
    with pytest.raises(SystemExit) as err:
        StoreProbe(version="v1", config=cfg)
    msg = str(err.value)
    assert msg.startswith("hepflows: ") and "name" in msg and repr(name) in msg, msg
    if name:  # an empty name may already be refused by the config's own validation
        assert BAD_NAMES[name] in msg and cfg in msg


def test_output_levels_outside_the_store_are_refused(store):
    task = StoreProbe(version="v1", config="quickstart")
    for level in ("../../../escape.json", "/etc/passwd", "a//b", "./x"):
        with pytest.raises(SystemExit, match="hepflows: StoreProbe: output path level"):
            task.local_path(level)
    assert task.local_path("sub", "ok.json") == str(store / "StoreProbe" / task.config_level / "v1" / "sub" / "ok.json")


def test_resolved_path_must_stay_in_the_store(store, tmp_path):
    task = StoreProbe(version="v1", config="quickstart")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (store / "StoreProbe" / task.config_level).mkdir(parents=True)
    (store / "StoreProbe" / task.config_level / "v1").symlink_to(outside)
    with pytest.raises(SystemExit, match="hepflows: StoreProbe: output path .* outside the output store"):
        task.local_path("out.json")


# store_base() expands set environment variables ($HOME) on purpose; an unset one stays literal
NASTY = '/tmp/my store/"quoted" $HEPFLOWS_UNSET_VAR $(id) `id` \'single\'; echo pwned'


def _render(text: str, variables: dict[str, str]) -> str:
    for key, value in variables.items():  # what law does: BaseJobFileFactory.render_string
        text = text.replace("{{" + key + "}}", str(value))
    return text


def test_bootstrap_receives_paths_literally(tmp_path, monkeypatch):
    monkeypatch.delenv("HEPFLOWS_UNSET_VAR", raising=False)
    monkeypatch.setenv("HEPFLOWS_STORE", NASTY)
    monkeypatch.setenv("LAW_HOME", NASTY + "/law")
    variables = bootstrap_render_variables()
    rendered = _render((REPO / "workflow" / "htcondor_bootstrap.sh").read_text(), variables)
    assert not re.search(r"\{\{\w+\}\}", rendered)
    script = tmp_path / "bootstrap.sh"
    script.write_text(rendered)
    subprocess.run(["bash", "-n", str(script)], check=True)

    # the assignments alone (not setup.sh): each variable holds exactly the path
    lines = [ln.strip() for ln in rendered.splitlines() if re.match(r"\s*(export \w+|hepflows_repo)=", ln)]
    assert len(lines) == 4
    probe = "\n".join(lines + ['printf "%s\\0%s\\0%s" "$HEPFLOWS_STORE" "$LAW_HOME" "$hepflows_repo"'])
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"})
    assert out.stdout.split("\0") == [NASTY, NASTY + "/law", str(REPO)]
    assert "pwned" not in out.stderr


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_outputs_get_the_umask_permissions(tmp_path, umask_002):
    """A group-shared store (umask 002): outputs are group-writable, as a plain open()/mkdir() makes them."""
    from analysis.io import atomic_directory, atomic_path, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "inner.txt").write_text("x")
    with atomic_directory(tmp_path / "d") as tmp:  # replacing an existing directory
        (tmp / "inner.txt").write_text("y")
    mode = lambda p: (tmp_path / p).stat().st_mode & 0o777  # noqa: E731
    assert mode("a.json") == mode("b.bin") == 0o664
    assert mode("d") == 0o775 and mode("d/inner.txt") == 0o664
    os.umask(0o077)
    write_json(tmp_path / "private.json", {})
    assert mode("private.json") == 0o600


def test_config_content_changes_the_store_path(tmp_path):
    """An edited configuration under the same name and --version never reuses the old outputs; the free-text
    description does not matter, the resolved input path does."""
    def level(name, **overrides):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_config_dict(**overrides)))
        return StoreProbe(version="v1", config=str(path)).config_level

    base = level("a.yaml")
    assert base == level("b.yaml")  # same content elsewhere: same outputs
    assert base == level("c.yaml", description="other words")
    assert base != level("d.yaml", seed=8)
    assert base != level("e.yaml", detector={"jet": {"stochastic": 0.9}})
    shipped = StoreProbe(version="v1", config="quickstart")
    assert shipped.config_level.startswith("quickstart-")
    csv = StoreProbe(version="v1", config="higgs_uci")
    other = StoreProbe(version="v1", config="higgs_uci", input_path=str(tmp_path / "other.csv"))
    assert csv.config_level != other.config_level


def test_pythia_without_its_extra_stops_at_scheduling(monkeypatch):
    """A configuration with ``source: pythia8`` and no ``.[pythia]`` extra: one configuration-type message
    naming the installation, before any branch runs; the digest of configurations without Pythia samples does
    not hold the ``pythia`` settings (their stores stay where they were)."""
    import sys

    from analysis.config import ConfigError, config_from_dict, load_config
    from workflow.base import config_digest
    from workflow.ntuples import GenerateEvents

    monkeypatch.setitem(sys.modules, "pythia8mc", None)
    task = GenerateEvents(config="pythia_quickstart", version="v1")
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[pythia\]'"):
        task.create_branch_map()
    quick = load_config("quickstart")
    from analysis.config import config_to_dict
    d = config_to_dict(quick)
    d["pythia"]["mpi"] = False
    assert config_digest(config_from_dict(d)) == config_digest(quick)
    d["samples"]["background"]["source"] = "pythia8"
    other = config_from_dict(d)
    d["pythia"]["mpi"] = True
    assert config_digest(config_from_dict(d)) != config_digest(other)


def test_compare_sources_needs_two_configurations():
    from workflow.sources import CompareSources

    with pytest.raises(SystemExit, match="is the configuration itself"):
        CompareSources(config="quickstart", version="v1", reference="quickstart").store_parts()
    parts = CompareSources(config="pythia_quickstart", version="v1", reference="quickstart").store_parts()
    assert parts[0] == "CompareSources" and parts[3].startswith("vs-quickstart-")
