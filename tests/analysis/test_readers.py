"""The UCI HIGGS CSV reader, on the real 7000-event sample."""

import gzip

import numpy as np
import pytest

from analysis.features import BTAG_FEATURES, FEATURES
from analysis.io import InputError
from analysis.readers import count_higgs_rows, read_higgs_csv
from analysis.skim import skim_higgs_csv


def test_real_sample(higgs_sample):
    labels, feats, rows, dropped = read_higgs_csv(higgs_sample)
    assert feats.shape == (7000, 28) and dropped == 0
    assert count_higgs_rows(higgs_sample) == 7000
    assert 0.50 < labels.mean() < 0.56  # about 53 % signal
    np.testing.assert_array_equal(rows, np.arange(7000))
    # each b-tag column takes three discrete values, the first of them 0
    for i, name in enumerate(FEATURES):
        if name in BTAG_FEATURES:
            levels = np.unique(feats[:, i])
            assert len(levels) == 3 and levels[0] == 0.0
    # normalised units: transverse momenta and masses are positive and of order one
    pt = feats[:, FEATURES.index("lepton_pT")]
    assert pt.min() > 0 and 0.5 < np.median(pt) < 1.5


def test_chunks_reassemble_the_file(higgs_sample):
    full = read_higgs_csv(higgs_sample)[1]
    parts = [read_higgs_csv(higgs_sample, a, a + 2500)[1] for a in (0, 2500, 5000)]
    np.testing.assert_array_equal(np.concatenate(parts), full)


def test_plain_text_file(tmp_path, higgs_sample):
    plain = tmp_path / "HIGGS.csv"
    with gzip.open(higgs_sample, "rt") as f:
        plain.write_text("".join(f.readline() for _ in range(100)))
    labels, feats, _, _ = read_higgs_csv(plain)
    np.testing.assert_array_equal(feats, read_higgs_csv(higgs_sample, 0, 100)[1])


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_higgs_csv(tmp_path / "missing.csv.gz")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(InputError, match="expected 29 columns"):
        read_higgs_csv(wrong)
    words = tmp_path / "words.csv"
    words.write_text(",".join(["x"] * 29) + "\n")
    with pytest.raises(InputError, match="not a HIGGS CSV file"):
        read_higgs_csv(words)
    label = tmp_path / "label.csv"
    label.write_text(",".join(["3"] + ["0.5"] * 28) + "\n")
    with pytest.raises(InputError, match="label 0 or 1"):
        read_higgs_csv(label)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"1," + b"0.5," * 27 + b"0.5\n" * 1)[:20])
    with pytest.raises(InputError):
        read_higgs_csv(broken)


def test_nan_rows_are_dropped_and_counted(tmp_path, higgs_sample):
    with gzip.open(higgs_sample, "rt") as f:
        lines = [f.readline() for _ in range(50)]
    lines[3] = lines[3].replace(lines[3].split(",")[5], "nan", 1)
    lines[7] = ",".join(lines[7].split(",")[:10] + [""] + lines[7].split(",")[11:])
    path = tmp_path / "nan.csv"
    path.write_text("".join(lines))
    labels, feats, rows, dropped = read_higgs_csv(path)
    assert dropped == 2 and len(feats) == 48 and 3 not in rows and 7 not in rows
    cols, cutflow = skim_higgs_csv(path, 1, 0, 50)
    assert cutflow["dropped_non_finite"]["events"] == 2
    assert cutflow["all"]["events"] == 50


def test_skim_higgs_csv_splits_by_label(higgs_sample):
    sig, cf_s = skim_higgs_csv(higgs_sample, 1, 0, 7000)
    bkg, cf_b = skim_higgs_csv(higgs_sample, 0, 0, 7000)
    assert len(sig["label"]) + len(bkg["label"]) == 7000
    assert np.all(sig["label"] == 1) and np.all(bkg["label"] == 0)
    assert set(FEATURES) <= set(sig) and np.all(sig["weight"] == 1.0)
    # the classic discriminant: m_bb is narrower in signal
    assert np.std(sig["m_bb"]) < np.std(bkg["m_bb"])
