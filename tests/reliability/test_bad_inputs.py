"""Bad inputs give one clear error that names the file or key, as :class:`analysis.io.InputError` (files) or
:class:`analysis.config.ConfigError` (configuration): never a raw ``EOFError``, ``UnicodeDecodeError``,
``BadZipFile``, numpy's or torch's advice to unpickle, or pandas' "could not convert string", and never an output
that looks successful. Corrupted copies of real files are written to ``tmp_path``; the shared data stay untouched.

Cases:

1. an empty HIGGS CSV (0 bytes, blank lines only, an empty gzip stream): "<path>: no events (empty file)" from
   ``count_higgs_rows`` and ``read_higgs_csv``, so Skim's branch map fails before any work;
2. a CSV row with too few or too many fields: the file, the line number and the field count (29 expected); a
   genuinely non-finite value ("nan") is still dropped and counted;
3. a tab-, semicolon- or space-separated file: "expected comma-separated values ..., found tab-separated";
4. a truncated gzip CSV, garbage after the gzip magic bytes, a binary file, a zip archive: the file and what is
   wrong with it;
5. a configuration that is not UTF-8 (file and byte position), or defines a key twice (key and both lines);
6. a truncated, garbage or empty ``model.skops`` (also a zip that is no skops file) and ``model.pt`` (classifier
   and flow), loaded with ``weights_only=True``;
7. a garbage, truncated or empty ``.npz``, a ``.npy`` in its place, an object array: ``load_npz``;
8. a skimmed ntuple of the wrong sample or label: ``read_ntuples(..., expect=...)``;
9. inputs checked when Skim's branch map is built: a file listed twice (a path and a glob matching it, a symbolic
   link to it, in two samples), an entry that matches nothing, a bad HIGGS CSV;
10. on the command line (slow): ``law run Skim`` on an empty CSV and on a NanoAOD file listed twice stops with a
    non-zero exit and the message, and writes nothing to the store.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.config import ConfigError, load_config
from analysis.io import InputError, load_npz
from analysis.readers import count_higgs_rows, read_higgs_csv
from tests.conftest import REPO, tiny_config_dict

LAW = str(Path(sys.executable).parent / "law")


@pytest.fixture(scope="module")
def higgs_lines(higgs_sample) -> list[str]:
    """The first 200 lines of the real HIGGS sample."""
    with gzip.open(higgs_sample, "rt") as f:
        return [f.readline() for _ in range(200)]


def _raises(fn, path, *needles) -> str:
    """Call ``fn(path)``; it must raise InputError whose message names ``path`` and contains every needle."""
    with pytest.raises(InputError) as err:
        fn(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# -- 1. empty CSV ---------------------------------------------------------------------------------------------------

# mtime=0: a gzip header holds its writing time, and pytest-xdist workers must collect identical parameters
@pytest.mark.parametrize("name, content", [("empty.csv", b""), ("blank.csv", b"\n\n   \n"),
                                           ("empty.csv.gz", gzip.compress(b"", mtime=0))],
                         ids=["empty.csv", "blank.csv", "empty.csv.gz"])
def test_empty_csv(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    for fn in (count_higgs_rows, read_higgs_csv):
        assert _raises(fn, path) == f"{path}: no events (empty file)"


# -- 2. wrong number of fields ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [20, 30])
def test_row_with_wrong_field_count(tmp_path, higgs_lines, fields):
    lines = list(higgs_lines)
    values = lines[41].rstrip("\n").split(",")
    lines[41] = ",".join((values + ["1.0"])[:fields]) + "\n"  # line 42 of the file
    path = tmp_path / "fields.csv"
    path.write_text("".join(lines))
    for fn in (count_higgs_rows, read_higgs_csv):
        _raises(fn, path, f"line 42 has {fields} fields, expected 29 columns")
    # a genuinely non-finite value keeps the drop-and-count behaviour
    lines = list(higgs_lines)
    lines[41] = lines[41].replace(lines[41].split(",")[5], "nan", 1)
    path.write_text("".join(lines))
    labels, feats, rows, dropped = read_higgs_csv(path)
    assert dropped == 1 and len(feats) == 199 and 41 not in rows and count_higgs_rows(path) == 200


# -- 3. other separators -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sep, name", [("\t", "tab"), (";", "semicolon"), (" ", "space")])
def test_other_separator(tmp_path, higgs_lines, sep, name):
    path = tmp_path / "higgs.tsv"
    path.write_text("".join(line.replace(",", sep) for line in higgs_lines))
    for fn in (count_higgs_rows, read_higgs_csv):
        _raises(fn, path, f"expected comma-separated values (label + 28 features), found {name}-separated")


# -- 4. truncated or corrupt files ------------------------------------------------------------------------------------

def _corrupt_variants(higgs_sample: Path, lines: list[str]) -> dict[str, tuple[bytes, str]]:
    data = higgs_sample.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("HIGGS.csv", "".join(lines))
    rng = np.random.default_rng(4)
    return {
        "half.csv.gz": (data[:len(data) // 2], "truncated or corrupt gzip file (EOFError"),
        "garbage.csv.gz": (b"\x1f\x8b" + rng.bytes(4000), "truncated or corrupt gzip file"),
        "binary.csv": (rng.bytes(4000), "not a text file"),
        "zeros.csv": (bytes(4000), "binary data (NUL bytes), not a text file"),
        "zipped.csv": (buf.getvalue(), "a zip archive, not a CSV file"),
        "header.csv": (("label," + ",".join(f"f{i}" for i in range(28)) + "\n" + "".join(lines)).encode(),
                       "line 1: the label is 'label', not a number"),
    }


def test_truncated_or_corrupt_csv(tmp_path, higgs_sample, higgs_lines):
    for name, (content, needle) in _corrupt_variants(higgs_sample, higgs_lines).items():
        path = tmp_path / name
        path.write_bytes(content)
        for fn in (count_higgs_rows, read_higgs_csv):
            msg = _raises(fn, path, needle)
            assert "Traceback" not in msg


# -- 5. configuration files --------------------------------------------------------------------------------------------

def _yaml(tmp_path: Path, text: str | bytes, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_config_not_utf8(tmp_path):
    good = yaml.safe_dump(tiny_config_dict(), sort_keys=False)
    data = good.replace("test configuration", "caf\u00e9 configuration").encode("latin-1")
    path = _yaml(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    position = data.index(b"\xe9")
    assert str(path) in msg and "not UTF-8" in msg and f"byte 0xe9 at byte position {position}" in msg, msg


@pytest.mark.parametrize("edit, key", [
    (lambda t: t + "seed: 8\n", "'seed'"),
    (lambda t: t.replace("samples:\n", "samples:\n  signal: {source: generator, process: ttbar, label: 1}\n"),
     "'samples.signal'"),
    (lambda t: t + "detector:\n  jet:\n    constant: 0.1\n    constant: 0.2\n", "'detector.jet.constant'"),
], ids=["seed", "sample", "nested"])
def test_config_duplicate_keys(tmp_path, edit, key):
    text = edit(yaml.safe_dump(tiny_config_dict(), sort_keys=False))
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    name = key.strip("'").split(".")[-1]
    numbers = [i + 1 for i, line in enumerate(text.splitlines()) if line.strip().startswith(f"{name}:")]
    assert str(path) in msg and f"duplicate key {key}" in msg, msg
    assert f"(lines {numbers[0]} and {numbers[-1]})" in msg, (msg, numbers)


def test_config_loader_stays_safe(tmp_path):
    good = yaml.safe_dump(tiny_config_dict(), sort_keys=False)
    with pytest.raises(ConfigError, match="not valid YAML.*python/object"):
        load_config(_yaml(tmp_path, good + "x: !!python/object/apply:os.system ['true']\n"))
    # merge keys keep YAML's meaning (explicit keys override merged ones); a BOM is fine
    d = tiny_config_dict()
    text = yaml.safe_dump(d, sort_keys=False).replace(
        "samples:\n", "samples:\n  background: &bkg\n    source: generator\n    process: ttbar\n    label: 0\n"
                      "    cross_section_pb: 244.2\n    n_files: 1\n    events_per_file: 6000\n"
                      "  other:\n    <<: *bkg\n    n_files: 2\n", 1)
    text = text.replace("  background:\n    source: generator", "  old:\n    source: generator", 1)
    cfg = load_config(_yaml(tmp_path, b"\xef\xbb\xbf" + text.encode(), "merge.yaml"))
    assert cfg.sample("other").n_files == 2 and cfg.sample("other").process == "ttbar"


# -- 6. model files ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_files(tmp_path_factory, higgs_sample):
    """Genuine model files of every kind: a BDT (skops), an NN classifier and a flow (torch)."""
    import torch
    from threadpoolctl import threadpool_limits

    from analysis.config import BDTConfig, ClassifierConfig
    from analysis.features import FEATURES
    from models.classifiers import Classifier, MLPClassifier, save_classifier, train_classifier
    from models.registry import build
    from models.io import save_generator
    from models.preprocessing import Preprocessor

    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = (rng.random(600) < 0.4).astype(float)
    x[y == 1] += 1.0
    with threadpool_limits(1):
        bdt = train_classifier("bdt", ["a", "b", "c"], x[:400], y[:400], x[400:], y[400:],
                               ClassifierConfig(bdt=BDTConfig(max_iter=3, patience=2)), seed=0)
    save_classifier(d / "model.skops", bdt)
    (d / "nn").mkdir()
    save_classifier(d / "nn" / "model.pt", Classifier("nn", ["a", "b", "c"], MLPClassifier(3, (8,))))
    _, feats, _, _ = read_higgs_csv(higgs_sample, 0, 2000)
    prep = Preprocessor(FEATURES).fit(feats.astype(np.float64), np.random.default_rng(1))
    hyper = {"components": 2, "hidden_features": [8]}
    torch.manual_seed(0)
    flow = build("made_mog", prep.flow_features, hyper)
    (d / "flow").mkdir()
    save_generator(d / "flow" / "model.pt", "made_mog", hyper, flow.state_dict(), prep)
    return {"bdt": d / "model.skops", "nn": d / "nn" / "model.pt", "flow": d / "flow" / "model.pt"}


def _load(kind: str, path: Path):
    from models.classifiers import load_classifier
    from models.io import load_generator

    return load_generator(path) if kind == "flow" else load_classifier(path)


@pytest.mark.parametrize("kind", ["bdt", "nn", "flow"])
def test_truncated_or_garbage_model_file(tmp_path, model_files, kind):
    genuine = model_files[kind]
    _load(kind, genuine)  # the genuine file loads
    data = genuine.read_bytes()
    variants = {"half": data[:len(data) // 2], "garbage": np.random.default_rng(5).bytes(3000), "empty": b""}
    if kind == "bdt":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:  # a valid zip archive, but not a skops file
            z.writestr("hello.txt", "not a model")
        variants["zip"] = buf.getvalue()
    for name, content in variants.items():
        path = tmp_path / name / genuine.name
        path.parent.mkdir()
        path.write_bytes(content)
        msg = _raises(lambda p: _load(kind, p), path)
        assert "weights_only" not in msg and "allow_pickle" not in msg, msg
        assert "not a" in msg or "empty" in msg, msg


# -- 7. .npz files -----------------------------------------------------------------------------------------------------

def test_bad_npz(tmp_path):
    good = tmp_path / "scores.npz"
    np.savez(good, label=np.arange(5), score=np.linspace(0, 1, 5), source=np.asarray("truth"))
    loaded = load_npz(good, required=("label", "score"))
    assert set(loaded) == {"label", "score", "source"} and str(loaded["source"]) == "truth"
    data = good.read_bytes()
    np.savez(tmp_path / "objects.npz", label=np.arange(3), meta=np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "single.npy", np.arange(3))
    cases = {"half.npz": (data[:len(data) // 2], "not a readable .npz file"),
             "garbage.npz": (np.random.default_rng(6).bytes(2000), "not a readable .npz file"),
             "empty.npz": (b"", "not a readable .npz file (the file is empty)")}
    for name, (content, needle) in cases.items():
        (tmp_path / name).write_bytes(content)
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as z:  # a zip archive, but no numpy arrays in it
        z.writestr("label.txt", "0 1 0")
    cases["text.npz"] = (None, "member 'label.txt' is not a numpy array")
    cases["objects.npz"] = (None, "array 'meta' holds Python objects, which are refused")
    cases["single.npy"] = (None, "not a readable .npz file (a single .npy array)")
    for name, (_, needle) in cases.items():
        msg = _raises(load_npz, tmp_path / name, needle)
        assert "allow_pickle" not in msg, msg
    _raises(lambda p: load_npz(p, required=("label", "weight")), good, "arrays missing: weight")


# -- 8. ntuple of the wrong sample ------------------------------------------------------------------------------------

def test_ntuple_of_wrong_sample_or_label(tmp_path):
    from analysis.ntuple import COLUMNS, read_ntuples, write_ntuple

    def columns(label: int) -> dict:
        cols = {c: np.zeros(20) for c in COLUMNS}
        cols["label"] = np.full(20, label)
        return cols

    background = tmp_path / "background_0.root"
    write_ntuple(background, columns(0), {"sample": "background", "label": 0})
    signal = tmp_path / "signal_0.root"
    write_ntuple(signal, columns(1), {"sample": "signal", "label": 1})
    mixed = tmp_path / "mixed.root"
    cols = columns(0)
    cols["label"][7:9] = 1
    write_ntuple(mixed, cols, {"sample": "background", "label": 0})
    expect = {"sample": "background", "label": 0}
    assert len(read_ntuples([background], expect=expect)["label"]) == 20
    copied = tmp_path / "copied" / "background_1.root"  # a signal ntuple copied over a background skim file
    copied.parent.mkdir()
    copied.write_bytes(signal.read_bytes())
    msg = _raises(lambda p: read_ntuples([background, p], expect=expect), copied)
    assert msg == f"{copied}: ntuple of sample 'signal' (label 1), expected sample 'background' (label 0)"
    _raises(lambda p: read_ntuples([p], columns=["weight"], expect=expect), mixed,
            "2 of 20 events have label 1 (the first at entry 7), expected label 0 for sample 'background'")


# -- 9. inputs checked when the Skim branch map is built ---------------------------------------------------------------

@pytest.fixture(scope="module")
def nanoaod_file(tmp_path_factory, tiny_cfg) -> Path:
    from analysis.generator.nanoaod import write_nanoaod_file

    path = tmp_path_factory.mktemp("nano") / "a.root"
    write_nanoaod_file(path, tiny_cfg, "background", 0, n_events=300)
    return path


def _skim_branch_map(tmp_path: Path, samples: dict, name: str = "bad"):
    from workflow.skim import Skim

    d = tiny_config_dict(name=name)
    d["samples"] = samples
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(d))
    return Skim(version="v1", config=str(cfg)).create_branch_map()


def _nano(*files: str, label: int = 0) -> dict:
    return {"source": "nanoaod", "label": label, "files": list(files)}


def test_skim_branch_map_checks_inputs(tmp_path, monkeypatch, nanoaod_file, higgs_sample):
    monkeypatch.setenv("HEPFLOWS_STORE", str(tmp_path / "store"))
    a = str(nanoaod_file)
    link = tmp_path / "link.root"
    link.symlink_to(nanoaod_file)
    ok = _skim_branch_map(tmp_path, {"data": _nano(a)}, "ok")
    assert [b["file"] for b in ok.values()] == [a]
    duplicates = {"glob": {"data": _nano(a, str(nanoaod_file.parent / "*.root"))},
                  "link": {"data": _nano(a), "other": _nano(str(link), label=1)},
                  "samples": {"data": _nano(a), "other": _nano(a, label=1)}}
    for name, samples in duplicates.items():
        with pytest.raises(InputError) as err:
            _skim_branch_map(tmp_path, samples, name)
        msg = str(err.value)
        assert msg.startswith(f"{os.path.realpath(a)}: input file listed twice, in sample 'data'"), msg
        entries = [e for s in samples.values() for e in s["files"]]
        assert all(repr(e) in msg for e in entries), msg
    missing = str(tmp_path / "none" / "*.root")
    with pytest.raises(InputError, match=r"no file matches \(sample 'data', files entry '.*/none/\*\.root'\)"):
        _skim_branch_map(tmp_path, {"data": _nano(a, missing)}, "nomatch")
    with pytest.raises(InputError, match=r"absent\.root: no such file \(sample 'data'"):
        _skim_branch_map(tmp_path, {"data": _nano(str(tmp_path / "absent.root"))}, "absent")
    not_root = tmp_path / "text.root"
    not_root.write_text("hello")
    with pytest.raises(InputError, match="text.root: not a ROOT file"):
        _skim_branch_map(tmp_path, {"data": _nano(str(not_root))}, "notroot")
    # a HIGGS CSV: checked even when n_events is given (cases 1, 3 and 4 before any work)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    csv = {"source": "higgs_csv", "path": str(empty), "label": 0, "events_per_file": 1000, "n_events": 3000}
    with pytest.raises(InputError, match=f"^{empty}: no events \\(empty file\\)$"):
        _skim_branch_map(tmp_path, {"background": csv}, "emptycsv")
    csv["path"] = str(higgs_sample)
    # more events asked for than the file holds: found by the branch that reads past the end (counting the
    # full 11M-row HIGGS.csv.gz at every scheduling would cost a minute)
    from analysis.skim import skim_higgs_csv
    with pytest.raises(InputError, match="has only 7000 events, rows up to 8000 were asked for"):
        skim_higgs_csv(higgs_sample, 0, 6000, 8000)
    branches = _skim_branch_map(tmp_path, {"background": csv}, "goodcsv")
    assert [(b["start"], b["stop"]) for b in branches.values()] == [(0, 1000), (1000, 2000), (2000, 3000)]


# -- 10. the command line ----------------------------------------------------------------------------------------------

@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, LAW_HOME=str(tmp_path / "home"), LAW_CONFIG_FILE=str(REPO / "law.cfg"),
             HEPFLOWS_STORE=str(tmp_path / "store"), MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    subprocess.run([LAW, "index", "-q"], env=e, cwd=REPO, check=True, timeout=600)
    return e


@pytest.mark.slow
def test_command_line_stops_before_any_work(env, tmp_path, nanoaod_file):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    configs = {
        "emptycsv": ({"background": {"source": "higgs_csv", "path": str(empty), "label": 0, "events_per_file": 1000,
                                     "n_events": 3000}}, f"{empty}: no events (empty file)"),
        "twice": ({"data": _nano(str(nanoaod_file), str(nanoaod_file.parent / "*.root"))},
                  f"{os.path.realpath(nanoaod_file)}: input file listed twice"),
    }
    for name, (samples, message) in configs.items():
        d = tiny_config_dict(name=name)
        d["samples"] = samples
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(d))
        proc = subprocess.run([LAW, "run", "Skim", "--version", "v1", "--config", str(cfg)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert message in out, out
        # one message, printed once, no traceback
        assert out.count(message) == 1 and "Traceback" not in out, out
        skim = Path(env["HEPFLOWS_STORE"]) / "Skim"
        assert not [p for p in skim.rglob("*") if p.is_file()], out
