"""Shared task machinery: the analysis task base, configuration loading and the versioned output store.

Every output lives under ``$HEPFLOWS_STORE/<TaskFamily>/<config>/<version>/[<settings>/]...``: the task, the
analysis configuration, the user's ``--version``, and any parameter that changes the result (for example
``input-<hash>`` when ``--input-path`` overrides the configured input file).

Branched stages derive from :class:`AnalysisWorkflow`: law's local workflow (default) and law's HTCondor
workflow (``--workflow htcondor``: the branches become HTCondor jobs that bootstrap with the project's
``setup.sh`` on a shared file system). Plain tasks pass ``--workflow`` on to the branched stages they require, so
``law run RunAnalysis --version v1 --workflow htcondor`` sends every branched stage of the chain to the pool.
"""

from __future__ import annotations

import functools
import hashlib
import os

import law
import luigi

from analysis.config import AnalysisConfig, ConfigError, load_config

law.contrib.load("htcondor")


def store_base() -> str:
    """Root of all outputs: ``$HEPFLOWS_STORE``, else ``<repository>/data/store``."""
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "store")
    return os.path.abspath(os.path.expandvars(os.path.expanduser(os.environ.get("HEPFLOWS_STORE", default))))


@functools.lru_cache(maxsize=16)
def _cached_config(name: str, input_path: str) -> AnalysisConfig:
    cfg = load_config(name)
    return cfg.with_input_path(input_path) if input_path else cfg


def _mtime(target) -> float | None:
    """Modification time of a local target, None when it does not exist (or is not local)."""
    try:
        return os.stat(target.path).st_mtime
    except (AttributeError, OSError):
        return None


class AnalysisTask(law.Task):
    """Base of every hepflows task: required ``--version``, ``--config`` and the versioned store."""

    version = luigi.Parameter(description="version of the outputs; required, part of every output path")
    config = luigi.Parameter(default="quickstart", description="analysis configuration: a shipped name "
                             "(quickstart, paper, higgs_uci) or the path of a YAML file; default: quickstart")
    input_path = luigi.Parameter(default="", significant=True, description="override the input file of "
                                 "higgs_csv samples (e.g. the full HIGGS.csv.gz); default: as configured")
    # plain tasks only pass it on to the branched stages they require (workflows use law's own parameter)
    workflow = luigi.Parameter(default="local", significant=False, description="workflow type of the branched "
                               "stages: local or htcondor; default: local")

    task_namespace = None
    # ``--<Task>-version v2`` on the command line gives that task alone a new version, even when it is required
    # by another task (law's req otherwise passes the requiring task's version on)
    prefer_params_cli = ("version",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # load and validate the configuration now, so a bad config stops before any work starts, with one
        # message naming the key (SystemExit passes luigi's exception handling without a traceback)
        try:
            self.analysis_config
        except ConfigError as e:
            raise SystemExit(f"hepflows: {e}") from None

    def complete(self) -> bool:
        """Complete when every output exists, every input exists, and no output is older than an input (as
        ``make`` decides, one level deep): after a stage is rerun (``--remove-output`` on it, or a new version of
        it), exactly the tasks that depend on it are out of date and rerun; everything upstream stays. A task
        whose input has vanished is out of date too, so its requirement is redone first."""
        if not super().complete():
            return False
        if isinstance(self, law.BaseWorkflow) and self.is_workflow():
            return True  # each branch decides for itself
        times = [_mtime(t) for t in law.target.collection.flatten_collections(self.input())]
        if not times:
            return True
        if any(m is None for m in times):
            return False
        newest_input = max(times)
        outputs = law.target.collection.flatten_collections(self.output())
        return all(_mtime(t) is None or _mtime(t) >= newest_input for t in outputs)

    @property
    def analysis_config(self) -> AnalysisConfig:
        return _cached_config(self.config, self.input_path)

    @property
    def config_name(self) -> str:
        return self.analysis_config.name

    def store_parts(self) -> tuple[str, ...]:
        parts = (self.task_family, self.config_name, self.version)
        if self.input_path:
            digest = hashlib.sha1(os.path.abspath(self.input_path).encode()).hexdigest()[:8]
            parts += (f"input-{digest}",)
        return parts

    def local_path(self, *path: str) -> str:
        return os.path.join(store_base(), *self.store_parts(), *(str(p) for p in path))

    def local_target(self, *path: str, dir: bool = False) -> law.LocalTarget:
        cls = law.LocalDirectoryTarget if dir else law.LocalFileTarget
        return cls(self.local_path(*path))

    def progress_callback(self, prefix: str = ""):
        """A ``progress(done, total)`` callback that publishes law progress and a status message."""
        last = [-1]

        def progress(done: int, total: int) -> None:
            pct = 100.0 * done / total if total else 100.0
            self.publish_progress(pct)
            if int(pct // 10) != last[0]:  # a message every 10 %, not every batch
                last[0] = int(pct // 10)
                self.publish_message(f"{prefix}{done}/{total} ({pct:.0f}%)")
        return progress


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AnalysisWorkflow(AnalysisTask, law.LocalWorkflow, law.htcondor.HTCondorWorkflow):
    """Base of every branched stage: runs its branches locally (``--workflow local``, the default; ``--workers
    N`` runs N at once) or as HTCondor jobs (``--workflow htcondor``), one job per branch (``--tasks-per-job``),
    retried ``--retries`` times when they fail; a rerun submits only the branches whose outputs are missing.

    Jobs request ``--htcondor-cpus``, ``--htcondor-memory`` (MB) and ``--htcondor-runtime`` (hours), and a GPU
    when the task runs on ``--device cuda``. Job files, submission records and logs go to ``htcondor/`` in the
    task's store directory.
    """

    workflow = law.BaseWorkflow.workflow  # law's parameter, not the pass-through of plain tasks

    htcondor_cpus = luigi.IntParameter(default=1, significant=False, description="CPUs per HTCondor job")
    htcondor_memory = luigi.IntParameter(default=4000, significant=False, description="memory per HTCondor job "
                                         "in MB; default: 4000")
    htcondor_runtime = law.DurationParameter(default=2.0, unit="h", significant=False,
                                             description="maximum runtime per HTCondor job; default: 2h")

    exclude_params_branch = {"htcondor_cpus", "htcondor_memory", "htcondor_runtime"}

    def htcondor_output_directory(self):
        return law.LocalDirectoryTarget(self.local_path("htcondor"))

    def htcondor_bootstrap_file(self):
        return law.JobInputFile(os.path.join(REPO, "workflow", "htcondor_bootstrap.sh"), share=True,
                                render_job=True)

    def htcondor_job_config(self, config, job_num, branches):
        # where the job finds the project and the store (a shared file system, as on analysis facilities)
        config.render_variables["hepflows_repo"] = REPO
        config.render_variables["hepflows_store"] = store_base()
        config.render_variables["law_home"] = os.environ.get("LAW_HOME", os.path.join(REPO, ".law"))
        # job logs next to the submission records in the store (law appends the job's branch range)
        config.stdout, config.stderr, config.log = "stdout.txt", "stderr.txt", "log.txt"
        config.custom_content.append(("request_cpus", self.htcondor_cpus))
        config.custom_content.append(("request_memory", self.htcondor_memory))
        config.custom_content.append(("+MaxRuntime", int(self.htcondor_runtime * 3600)))
        if str(getattr(self, "device", "cpu")).startswith("cuda"):
            config.custom_content.append(("request_gpus", 1))
        return config
