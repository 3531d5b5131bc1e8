"""Stored BDTs: only the exact types a genuine file holds are loaded; code gadgets and damaged files are refused
with one clear message, and the payload never runs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from analysis.config import BDTConfig, ClassifierConfig
from analysis.io import InputError
from models.classifiers import _SKOPS_TRUSTED_TYPES, load_classifier, save_classifier, train_classifier

FEATURES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def bdt_file(tmp_path_factory):
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1500, 3)).astype(np.float32)
    y = (rng.random(1500) < 0.3).astype(float)
    x[y == 1] += 1.0
    with threadpool_limits(1):  # a tiny model: threads only cost time
        clf = train_classifier("bdt", FEATURES, x[:1000], y[:1000], x[1000:], y[1000:],
                               ClassifierConfig(bdt=BDTConfig(max_iter=5, patience=3)), seed=0)
    path = tmp_path_factory.mktemp("bdt") / "model.skops"
    save_classifier(path, clf)
    return path, clf, x[2000:]


def _json_str(value: str, node_id: int) -> dict:
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(value),
            "is_json": True, "__id__": node_id}


def _gadget(module: str, name: str, args: list[dict]) -> dict:
    """A skops reduce node that calls ``module.name(*args)`` when it is constructed."""
    return {"__class__": name, "__module__": module, "__loader__": "LossNode",
            "__reduce__": {"args": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                                    "content": args, "__id__": 900001}},
            "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {},
                        "key_types": {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                                      "content": [], "__id__": 900002}, "__id__": 900003},
            "__id__": 900004}


def _with_gadget(genuine: Path, out: Path, gadget: dict) -> Path:
    """Copy of ``genuine`` whose loss object (a reduce node) is replaced by ``gadget`` in schema.json."""
    with zipfile.ZipFile(genuine) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "schema.json":
                schema = json.loads(data)
                schema["content"]["estimator"]["content"]["content"]["_loss"]["content"]["content"]["closs"] = gadget
                data = json.dumps(schema).encode()
            dst.writestr(item, data)
    return out


def _payloads(marker: Path) -> dict[str, tuple[str, str, list[dict]]]:
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    empty_dict = {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {},
                  "key_types": {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                                "content": [], "__id__": 900011}, "__id__": 900012}
    return {
        "exec": ("builtins", "exec", [_json_str(code, 900010)]),
        "eval": ("builtins", "eval", [_json_str(code, 900010)]),
        "os.system": ("os", "system", [_json_str(f"touch '{marker}'", 900010)]),
        # passed the old prefix check ("numpy."): runstring(code, namespace) is exec
        "numpy runstring": ("numpy.testing._private.utils", "runstring", [_json_str(code, 900010), empty_dict]),
    }


@pytest.mark.parametrize("gadget", ["exec", "eval", "os.system", "numpy runstring"])
def test_code_gadget_is_refused_and_does_not_run(gadget, bdt_file, tmp_path):
    import skops.io as sio

    genuine, _, _ = bdt_file
    marker = tmp_path / "marker"
    module, name, args = _payloads(marker)[gadget]
    evil = _with_gadget(genuine, tmp_path / "model.skops", _gadget(module, name, args))
    assert f"{module}.{name}" in sio.get_untrusted_types(file=evil)

    with pytest.raises(InputError) as err:
        load_classifier(evil)
    msg = str(err.value)
    assert str(evil) in msg and "refusing to load" in msg and f"{module}.{name}" in msg
    assert not marker.exists()

    # the gadget is live: skops runs it once the type is trusted (what the old prefix check allowed)
    sio.load(evil, trusted=sio.get_untrusted_types(file=evil))
    assert marker.exists()


def test_truncated_file_gives_one_clear_message(bdt_file, tmp_path):
    genuine, _, _ = bdt_file
    data = genuine.read_bytes()
    for n, size in enumerate((len(data) // 2, 10, 0)):
        bad = tmp_path / f"cut{n}" / "model.skops"
        bad.parent.mkdir()
        bad.write_bytes(data[:size])
        with pytest.raises(InputError, match="not a valid model file.*rerun TrainClassifier") as err:
            load_classifier(bad)
        assert str(bad) in str(err.value)


def test_damaged_member_gives_one_clear_message(bdt_file, tmp_path):
    genuine, _, _ = bdt_file
    bad = tmp_path / "model.skops"
    with zipfile.ZipFile(genuine) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            if item.filename.endswith(".npy"):
                continue  # arrays missing from the archive
            dst.writestr(item, src.read(item))
    with pytest.raises(InputError, match="not a valid model file.*rerun TrainClassifier"):
        load_classifier(bad)


def test_genuine_file_loads_and_scores_identically(bdt_file):
    import skops.io as sio

    path, clf, x = bdt_file
    assert set(sio.get_untrusted_types(file=path)) <= _SKOPS_TRUSTED_TYPES
    assert not any(t.startswith("builtins.") for t in _SKOPS_TRUSTED_TYPES)
    again = load_classifier(path)
    assert again.kind == "bdt" and again.features == FEATURES
    np.testing.assert_array_equal(again.score(x), clf.score(x))
