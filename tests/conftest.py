"""Shared fixtures: tiny configurations, generated batches and files, the real HIGGS sample."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from analysis.config import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
HIGGS_SAMPLE = REPO.parent / "shared" / "data" / "HIGGS_sample.csv.gz"

os.environ.setdefault("MPLBACKEND", "Agg")
# pytest-xdist runs one worker per core: torch (and the law processes the CLI tests start, which inherit this)
# then use one thread each instead of oversubscribing the cores (with two threads per worker a flow test took 4x
# as long while the other worker trained)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiny_config_dict(bkg_events: int = 6000, sig_events: int = 4000, **overrides) -> dict:
    d = {
        "name": "tiny",
        "description": "test configuration",
        "seed": 7,
        "luminosity_fb": 139.0,
        "samples": {
            "background": {"source": "generator", "process": "ttbar", "label": 0, "cross_section_pb": 244.2,
                           "n_files": 1, "events_per_file": bkg_events},
            "signal": {"source": "generator", "process": "heavy_higgs", "label": 1, "cross_section_pb": 1.0,
                       "n_files": 1, "events_per_file": sig_events},
        },
    }
    d.update(overrides)
    return d


@pytest.fixture(scope="session")
def quickstart():
    return load_config("quickstart")


@pytest.fixture(scope="session")
def tiny_cfg():
    return config_from_dict(tiny_config_dict(), "tiny")


@pytest.fixture(scope="session")
def ttbar_batch(quickstart):
    from analysis.generator.nanoaod import generate_batch

    return generate_batch(np.random.default_rng(101), "ttbar", 60_000, quickstart)


@pytest.fixture(scope="session")
def signal_batch(quickstart):
    from analysis.generator.nanoaod import generate_batch

    return generate_batch(np.random.default_rng(202), "heavy_higgs", 40_000, quickstart)


@pytest.fixture(scope="session")
def nanoaod_files(tmp_path_factory, quickstart):
    """One generated NanoAOD file per sample of the quickstart config (40k background, 30k signal)."""
    from analysis.generator.nanoaod import write_nanoaod_file

    d = tmp_path_factory.mktemp("nanoaod")
    files = {"background": d / "background_0.root", "signal": d / "signal_0.root"}
    write_nanoaod_file(files["background"], quickstart, "background", 0, n_events=40_000)
    write_nanoaod_file(files["signal"], quickstart, "signal", 0, n_events=30_000)
    return files


@pytest.fixture(scope="session")
def skimmed(nanoaod_files, quickstart):
    from analysis.skim import sample_normalisation, skim_nanoaod

    out = {}
    for name, path in nanoaod_files.items():
        norm = sample_normalisation(quickstart, name, [path])
        out[name] = skim_nanoaod(path, quickstart, quickstart.sample(name).label, norm)
    return out


@pytest.fixture(scope="session")
def higgs_sample() -> Path:
    if not HIGGS_SAMPLE.is_file():
        pytest.skip(f"real HIGGS sample not found at {HIGGS_SAMPLE}")
    return HIGGS_SAMPLE


def half_iqr(x) -> float:
    q75, q25 = np.percentile(x, [75, 25])
    return 0.5 * (q75 - q25)


def histogram_mode(x, lo, hi, bins=60) -> float:
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    i = int(np.argmax(counts))
    return 0.5 * (edges[i] + edges[i + 1])
