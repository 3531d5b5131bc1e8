"""A small command-line stand-in for an HTCondor pool, for tests only: ``condor_submit``, ``condor_q``,
``condor_history``, ``condor_rm`` and ``condor_version`` as law's HTCondor job manager calls them.

Every submitted job runs as a separate local process in its own scratch directory: input files are copied in,
the executable runs with the job's arguments and environment (not the submitter's, as on a real pool), output
files are transferred back with their remaps, and the job's state is kept under ``$FAKE_CONDOR_HOME`` so that
later ``condor_q`` / ``condor_history`` calls (from any process) report it in the ``-af:lng`` format law parses.

Test knobs: ``FAKE_CONDOR_FAIL_FIRST=N`` at submission makes the first N jobs of this pool exit with code 1
without running (to test law's retries).

Never used outside tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STATUS_IDLE, STATUS_RUNNING, STATUS_REMOVED, STATUS_COMPLETED = 1, 2, 3, 4


def home() -> Path:
    if "FAKE_CONDOR_HOME" not in os.environ:
        sys.exit("fake condor: FAKE_CONDOR_HOME is not set")
    path = Path(os.environ["FAKE_CONDOR_HOME"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def _counter(name: str, increment: int = 1) -> int:
    """Atomically increment the counter ``name`` of the pool; returns the value before."""
    path = home() / f"{name}.counter"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        value = int(f.read() or 0)
        f.seek(0)
        f.truncate()
        f.write(str(value + increment))
    return value


def _job_path(job_id: str) -> Path:
    return home() / "jobs" / f"{job_id}.json"


def load_job(job_id: str) -> dict | None:
    try:
        return json.loads(_job_path(job_id).read_text())
    except (OSError, ValueError):
        return None


def save_job(job: dict) -> None:
    path = _job_path(job["id"])
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)


# -- condor_submit --------------------------------------------------------------------------------------------


def _substitute(value: str, macros: dict) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: str(macros.get(m.group(1), m.group(0))), value)


def parse_submit_file(text: str) -> list[dict]:
    """The jobs of a submit description: a list of attribute dicts (with ``arguments`` and queue variables)."""
    jobs: list[dict] = []
    attrs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        low = line.lower()
        if low.startswith("queue"):
            rest = line[5:].strip()
            m = re.match(r"^([\w\s,]+)\s+from\s*\($", rest)
            if m:  # queue var1, var2 from ( ... )
                names = [v.strip() for v in m.group(1).split(",")]
                for item in lines:
                    item = item.strip()
                    if item == ")":
                        break
                    if not item:
                        continue
                    values = [v.strip() for v in item.split(",", len(names) - 1)]
                    jobs.append({**attrs, **dict(zip(names, values))})
            else:
                for _ in range(int(rest) if rest else 1):
                    jobs.append(dict(attrs))
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            attrs[key.strip()] = value.strip()
    return jobs


def submit(argv: list[str]) -> int:
    files = [a for a in argv if not a.startswith("-") and (Path.cwd() / a).is_file()]
    if not files:
        print("condor_submit: no submit file given", file=sys.stderr)
        return 1
    cwd = Path.cwd()
    fail_first = int(os.environ.get("FAKE_CONDOR_FAIL_FIRST", "0"))
    out_lines = []
    for fname in files:
        jobs = parse_submit_file((cwd / fname).read_text())
        if not jobs:
            print(f"condor_submit: no queue statement in {fname}", file=sys.stderr)
            return 1
        cluster = _counter("cluster") + 1
        for proc, attrs in enumerate(jobs):
            macros = {"Cluster": cluster, "ClusterId": cluster, "Process": proc, "ProcId": proc, **attrs}
            attrs = {k: _substitute(v, macros) for k, v in attrs.items()}
            initialdir = Path(attrs.get("initialdir", str(cwd)))
            if not initialdir.is_absolute():
                initialdir = cwd / initialdir
            job = {"id": f"{cluster}.{proc}", "cluster": cluster, "proc": proc, "status": STATUS_IDLE,
                   "exit_code": None, "attrs": attrs, "initialdir": str(initialdir),
                   "fail": _counter("submitted") < fail_first, "submitted": time.time()}
            save_job(job)
            subprocess.Popen([sys.executable, os.path.abspath(__file__), "_run", job["id"]],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, env=dict(os.environ))
        out_lines.append(f"{len(jobs)} job(s) submitted to cluster {cluster}.")
    print("Submitting job(s).")
    print("\n".join(out_lines))
    return 0


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _remaps(value: str) -> dict[str, str]:
    value = value.strip().strip('"')
    return dict((a.strip(), b.strip()) for a, b in (p.split("=", 1) for p in value.split(";") if "=" in p))


def run_job(job_id: str) -> int:
    """Execute one job (the detached process started by condor_submit)."""
    job = load_job(job_id)
    attrs = job["attrs"]
    initialdir = Path(job["initialdir"])
    scratch = home() / "scratch" / job_id
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    job.update(status=STATUS_RUNNING, pid=os.getpid(), started=time.time())
    save_job(job)
    remaps = _remaps(attrs.get("transfer_output_remaps", ""))

    def local(name: str) -> Path:
        target = remaps.get(name, name)
        return Path(target) if os.path.isabs(target) else initialdir / target

    stdout = local(attrs["output"]) if attrs.get("output") else Path(os.devnull)
    stderr = local(attrs["error"]) if attrs.get("error") else Path(os.devnull)
    for p in (stdout, stderr):
        if str(p) != os.devnull:
            p.parent.mkdir(parents=True, exist_ok=True)
    if job["fail"]:
        stderr.write_text("fake condor: injected failure\n")
        code = 1
    else:
        for name in _split_list(attrs.get("transfer_input_files", "")):
            src = Path(name) if os.path.isabs(name) else initialdir / name
            shutil.copy(src, scratch / src.name)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
               "_CONDOR_SCRATCH_DIR": str(scratch), "_CONDOR_JOB_IWD": str(initialdir)}
        for item in shlex.split(attrs.get("environment", "").strip('"')):
            if "=" in item:
                k, v = item.split("=", 1)
                env[k] = v
        exe = attrs["executable"]
        exe_path = scratch / os.path.basename(exe) if (scratch / os.path.basename(exe)).exists() else Path(exe)
        args = shlex.split(attrs.get("arguments", "").strip('"'))
        with open(stdout, "w") as out, open(stderr, "w") as err:
            proc = subprocess.run(["/bin/bash", str(exe_path), *args], cwd=scratch, env=env, stdout=out,
                                  stderr=err, stdin=subprocess.DEVNULL)
        code = proc.returncode
        for name in _split_list(attrs.get("transfer_output_files", "")):
            src = scratch / name
            if src.exists():
                dest = local(name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dest)
    job = load_job(job_id)
    if job["status"] != STATUS_REMOVED:
        job.update(status=STATUS_COMPLETED, exit_code=code, finished=time.time())
        save_job(job)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


# -- queries --------------------------------------------------------------------------------------------------


def _ids(argv: list[str]) -> list[str]:
    return [a for a in argv if re.match(r"^\d+\.\d+$", a)]


def _block(job: dict, ads: list[str]) -> str:
    values = {"ClusterId": job["cluster"], "ProcId": job["proc"], "JobStatus": job["status"],
              "ExitCode": job["exit_code"] if job["exit_code"] is not None else "undefined",
              "ExitStatus": "undefined", "HoldReason": "undefined",
              "RemoveReason": '"removed by user"' if job["status"] == STATUS_REMOVED else "undefined",
              "MemoryUsage": "undefined", "RemoteHost": '"slot1@fake"', "LastRemoteHost": '"slot1@fake"'}
    return "\n".join(f"{ad} = {values.get(ad, 'undefined')}" for ad in ads)


def _query(argv: list[str], history: bool) -> int:
    ads = argv[argv.index("-af:lng") + 1:] if "-af:lng" in argv else ["ClusterId", "ProcId", "JobStatus"]
    ads = [a for a in ads if not a.startswith("-") and not a.isdigit()]
    if "-limit" in argv:
        i = argv.index("-limit")
        ads = [a for a in ads if a != argv[i + 1]]
    blocks = []
    for job_id in _ids(argv):
        job = load_job(job_id)
        if job is None:
            continue
        done = job["status"] in (STATUS_COMPLETED, STATUS_REMOVED)
        if done == history:
            blocks.append(_block(job, ads))
    if blocks:
        print("\n\n".join(blocks) + "\n")
    return 0


def remove(argv: list[str]) -> int:
    for job_id in _ids(argv):
        job = load_job(job_id)
        if job is None:
            print(f"Couldn't find/remove job {job_id}", file=sys.stderr)
            continue
        if job["status"] in (STATUS_IDLE, STATUS_RUNNING):
            if job.get("pid"):
                try:
                    os.killpg(job["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    pass
            job.update(status=STATUS_REMOVED)
            save_job(job)
        print(f"Job {job_id} marked for removal")
    return 0


def main(argv: list[str]) -> int:
    command, args = Path(argv[0]).name, argv[1:]
    if command == "fake_condor.py":
        command, args = args[0], args[1:]
    if command == "_run":
        return run_job(args[0])
    if command == "condor_submit":
        return submit(args)
    if command == "condor_q":
        return _query(args, history=False)
    if command == "condor_history":
        return _query(args, history=True)
    if command == "condor_rm":
        return remove(args)
    if command == "condor_version":
        print("$CondorVersion: 10.0.0 Nov 22 2026 BuildID: fake $\n$CondorPlatform: x86_64_fake $")
        return 0
    print(f"fake condor: unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
