"""Atomic outputs under interruption and concurrency: no half-written file ever looks finished, two writers of
one output both succeed, and the temporaries of killed writers are cleaned up by the next writer."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.io import atomic_directory, atomic_path, clean_stale_temporaries, write_json

REPO = Path(__file__).resolve().parents[2]


def _write_dir(path: str, tag: int, rounds: int, barrier) -> None:
    barrier.wait()
    for r in range(rounds):
        with atomic_directory(path) as tmp:
            for i in range(20):
                (tmp / f"f{i}.json").write_text(json.dumps({"writer": tag, "round": r}))


def test_concurrent_writers_of_one_directory_both_succeed(tmp_path):
    target = tmp_path / "out"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_write_dir, args=(str(target), t, 40, barrier)) for t in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    files = sorted(target.iterdir())
    assert len(files) == 20
    writers = {json.loads(f.read_text())["writer"] for f in files}
    assert len(writers) == 1  # one complete directory of one writer, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it


def _killed_writer(path: str, directory: bool) -> None:
    """Write ``path`` and die (SIGKILL) before the rename, as a killed job would."""
    code = ("import os, sys; from analysis.io import atomic_path, atomic_directory; "
            "os.environ['HEPFLOWS_KILL_BEFORE_RENAME'] = '*'; p = sys.argv[1]\n"
            "if sys.argv[2] == '1':\n"
            "    with atomic_directory(p) as t: (t / 'x').write_text('x')\n"
            "else:\n"
            "    with atomic_path(p) as t: t.write_text('x')\n")
    proc = subprocess.run([sys.executable, "-c", code, path, "1" if directory else "0"], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    assert proc.returncode == -9


@pytest.mark.parametrize("directory", [False, True])
def test_killed_writer_leaves_no_output_and_its_temporary_is_cleaned(tmp_path, directory):
    target = tmp_path / ("out" if directory else "out.root")
    _killed_writer(str(target), directory)
    assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{target.name}.") and ".tmp" in leftovers[0].name
    # the next writer of the same output removes it and writes normally
    if directory:
        with atomic_directory(target) as tmp:
            (tmp / "x").write_text("ok")
    else:
        write_json(target, {"ok": True})
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_temporaries_of_running_or_foreign_writers_are_kept(tmp_path):
    target = tmp_path / "model.pt"
    alive = tmp_path / f".model.pt.{os.uname().nodename.split('.')[0]}.{os.getppid()}.abc.tmp.pt"
    foreign = tmp_path / ".model.pt.otherhost.12345.abc.tmp.pt"
    ancient = tmp_path / ".model.pt.otherhost.12346.abc.tmp.pt"
    unrelated = tmp_path / ".model.ptx.host.1.abc.tmp"
    for p in (alive, foreign, ancient, unrelated):
        p.write_text("partial")
    old = time.time() - 2 * 86400
    os.utime(ancient, (old, old))
    removed = clean_stale_temporaries(target)
    assert removed == [ancient]
    assert alive.exists() and foreign.exists() and unrelated.exists()


def test_failed_writer_removes_its_temporary(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(ZeroDivisionError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            1 / 0
    assert list(tmp_path.iterdir()) == []
