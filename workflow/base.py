"""Shared task machinery: the analysis task base, configuration loading and the versioned output store.

Every output lives under ``$HEPFLOWS_STORE/<TaskFamily>/<config>-<digest>/<version>/[<settings>/]...``: the
task, the analysis configuration's name and a short digest of its resolved content (so an edited configuration
never reuses the outputs of the old one), the user's ``--version``, and any parameter that changes the result
(for example ``input-<hash>`` when ``--input-path`` overrides the configured input file).

A task is complete when its outputs exist and are not older than its inputs, and everything it requires is
complete in the same sense, through the whole requirement tree and through every branch of a workflow (as
``make`` decides): a changed, rewritten or corrupted output anywhere makes exactly the tasks that depend on it,
directly or not, rerun.

Errors of the user's inputs (:class:`analysis.io.InputError`, configuration, statistics and template errors) are
printed once as ``hepflows: <message>`` instead of luigi's tracebacks, and a task that fails with one leaves none
of the outputs it had begun to write.

Branched stages derive from :class:`AnalysisWorkflow`: law's local workflow (default) and law's HTCondor
workflow (``--workflow htcondor``: the branches become HTCondor jobs that bootstrap with the project's
``setup.sh`` on a shared file system). Plain tasks pass ``--workflow`` on to the branched stages they require, so
``law run RunAnalysis --version v1 --workflow htcondor`` sends every branched stage of the chain to the pool.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shlex
import sys

import law
import luigi

from analysis.config import AnalysisConfig, ConfigError, config_to_dict, load_config

law.contrib.load("htcondor")


def store_base() -> str:
    """Root of all outputs: ``$HEPFLOWS_STORE``, else ``<repository>/data/store``."""
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "store")
    return os.path.abspath(os.path.expandvars(os.path.expanduser(os.environ.get("HEPFLOWS_STORE", default))))


_STORE_NAME = re.compile(r"[A-Za-z0-9._+-]+")


def check_store_name(key: str, value: object) -> str:
    """``value`` if it is safe as one directory level of the store (letters, digits and ``. _ + -``, not empty,
    ``.`` or ``..``), else SystemExit with one message naming ``key``: an absolute name or ``..`` would write
    outside the store, an empty one would drop a level and mix outputs of different versions or configs."""
    text = str(value)
    if text == "":
        why = "is empty"
    elif os.path.isabs(text):
        why = "is an absolute path"
    elif "/" in text or os.sep in text or (os.altsep and os.altsep in text):
        why = "contains a path separator"
    elif text in (".", ".."):
        why = f"is {text!r}"
    elif not _STORE_NAME.fullmatch(text):
        bad = "".join(sorted({c for c in text if not _STORE_NAME.fullmatch(c)}))
        why = f"contains characters other than letters, digits and . _ + - ({bad!r})"
    else:
        return text
    raise SystemExit(f"hepflows: {key} {text!r} {why}; it names a directory of the output store, so use letters, "
                     "digits and . _ + - only")


def _check_store_part(key: str, value: object) -> str:
    """Looser check for the other levels of an output path (file names, sample or model names): one or more
    relative path levels, none empty, ``.`` or ``..``; :meth:`AnalysisTask.local_path` also checks the result
    stays inside the store."""
    text = str(value)
    if os.path.isabs(text) or any(p in ("", ".", "..") for p in re.split(r"[/\\]", text)):
        raise SystemExit(f"hepflows: {key} {text!r} is not a relative path below the output store")
    return text


@functools.lru_cache(maxsize=16)
def _cached_config(name: str, input_path: str) -> AnalysisConfig:
    cfg = load_config(name)
    return cfg.with_input_path(input_path) if input_path else cfg


@functools.lru_cache(maxsize=16)
def _cached_digest(name: str, input_path: str) -> str:
    return config_digest(_cached_config(name, input_path))


def config_digest(cfg: AnalysisConfig) -> str:
    """Eight hex digits of the SHA-256 of the resolved configuration: every setting after defaults are filled in
    (the free-text ``description`` and the ``name``, a level of its own, left out, and the ``pythia`` settings
    where no sample uses Pythia 8) and the input paths of the
    samples as configured (relative ones are relative to the repository, so every checkout shares the digest).
    Any edit of the configuration that can change a result changes it; edited input files make the tasks that
    read them out of date instead (:meth:`AnalysisTask.external_inputs`)."""
    content = config_to_dict(cfg)
    content.pop("description", None)
    content.pop("name", None)
    if not any(s.source == "pythia8" for s in cfg.all_samples.values()):
        content.pop("pythia", None)  # Pythia's settings cannot change a result without a Pythia sample
    inputs = {}
    for name, s in cfg.samples.items():
        paths = [getattr(s, "path", "")] + list(getattr(s, "files", ()) or ())
        # as configured (variables and ~ expanded): a relative path means the same file in every checkout,
        # so a job on a worker that mounts the repository elsewhere finds the same store directory
        inputs[name] = [os.path.expandvars(os.path.expanduser(p)) for p in paths if p]
    text = json.dumps({"config": content, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _mtime(target) -> float | None:
    """Modification time of a local target or a path, None when it does not exist (or is not local)."""
    try:
        return os.stat(target if isinstance(target, str) else target.path).st_mtime
    except (AttributeError, OSError):
        return None


# task ids found complete through their whole requirement tree in this process. Only "complete" is remembered:
# a task found complete has a complete requirement tree, so nothing it depends on reruns in this process and
# the answer cannot change; an incomplete one is asked again after its requirements ran.
_COMPLETE: set[str] = set()


def _requirement_tasks(task) -> list:
    return [t for t in law.util.flatten(task.requires()) if isinstance(t, luigi.Task)]


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
        # --version and the configuration's name are directory levels of every output path: refuse one that
        # would leave the store or drop a level before any work starts
        check_store_name("--version", self.version)
        check_store_name(f"config {self.config!r}: name", self.config_name)

    def complete(self) -> bool:
        """Complete when every output exists, every input exists, no output is older than an input, and every
        requirement is complete in the same sense, recursively; a workflow also needs every branch complete.
        So after any output changes (rerun, ``--remove-output``, edited or corrupted by hand: anything that
        touches its modification time), exactly the tasks that depend on it, directly or not, are out of date
        and rerun; everything upstream stays. A task whose input has vanished is out of date too, so its
        requirement is redone first. Each answer "complete" is remembered for the rest of the process."""
        if self.task_id in _COMPLETE:
            return True
        done = self._complete_here() and all(t.complete() for t in _requirement_tasks(self))
        if done and isinstance(self, law.BaseWorkflow) and self.is_workflow():
            done = all(b.complete() for b in self.get_branch_tasks().values())
        if done:
            _COMPLETE.add(self.task_id)
        return done

    def _complete_here(self) -> bool:
        """This task's own level: outputs exist and none is older than the newest input."""
        if not super().complete():
            return False
        if isinstance(self, law.BaseWorkflow) and self.is_workflow():
            return True  # each branch compares its own inputs and outputs
        times = [_mtime(t) for t in law.target.collection.flatten_collections(self.input())]
        times += [_mtime(p) for p in self.external_inputs()]
        if not times:
            return True
        if any(m is None for m in times):
            return False
        newest_input = max(times)
        outputs = law.target.collection.flatten_collections(self.output())
        return all(_mtime(t) is None or _mtime(t) >= newest_input for t in outputs)

    def external_inputs(self) -> list[str]:
        """Input files outside the store that this task reads (NanoAOD files, a HIGGS CSV): edited or replaced,
        they make the task out of date like a changed upstream output. None by default."""
        return []

    @property
    def analysis_config(self) -> AnalysisConfig:
        return _cached_config(self.config, self.input_path)

    @property
    def config_name(self) -> str:
        return self.analysis_config.name

    @property
    def config_level(self) -> str:
        """The configuration's level of the store: ``<name>-<digest>`` (:func:`config_digest`)."""
        return f"{check_store_name(f'config {self.config!r}: name', self.config_name)}-" \
               f"{_cached_digest(self.config, self.input_path)}"

    def store_parts(self) -> tuple[str, ...]:
        parts = (self.task_family, self.config_level, check_store_name("--version", self.version))
        if self.input_path:
            digest = hashlib.sha1(os.path.abspath(self.input_path).encode()).hexdigest()[:8]
            parts += (f"input-{digest}",)
        return parts

    def local_path(self, *path: str) -> str:
        """``<store>/<store_parts>/<path...>``; SystemExit for any level that would leave the store (checked on
        the resolved path too, so a symbolic link inside the store cannot point it elsewhere)."""
        base = store_base()
        parts = [_check_store_part(f"{self.task_family}: output path level", p)
                 for p in (*self.store_parts(), *path)]
        full = os.path.join(base, *parts)
        real_base, real_full = os.path.realpath(base), os.path.realpath(full)
        if real_full == real_base or os.path.commonpath([real_base, real_full]) != real_base:
            raise SystemExit(f"hepflows: {self.task_family}: output path {full} resolves to {real_full}, outside "
                             f"the output store {real_base}")
        return full

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


# ------------------------------------------------------------------------------------------------------------
# errors of the user's inputs: one message, printed once, and no partial outputs
# ------------------------------------------------------------------------------------------------------------

def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a problem with the user's inputs, configuration or command line (their message
    says what and where), as opposed to a bug: printed as one line, without a traceback."""
    from analysis.io import InputError
    from analysis.statistics import StatisticsError
    from analysis.templates import TemplateError
    from models.training import NonFiniteLossError
    return (InputError, ConfigError, StatisticsError, TemplateError, NonFiniteLossError, SystemExit,
            luigi.parameter.MissingParameterException)


def _user_error_names() -> tuple[str, ...]:
    """The names under which tracebacks print :func:`user_error_types` (``SystemExit`` without its module)."""
    return tuple(t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
                 for t in user_error_types())


_REPORTED: set[str] = set()


def _first_report(message: str) -> bool:
    """Whether ``message`` is reported here for the first time in this run: in this process, and (by creating a
    marker file exclusively) in the other worker processes of the same ``law run`` (one process group)."""
    if message in _REPORTED:
        return False
    _REPORTED.add(message)
    try:
        import tempfile
        folder = os.path.join(tempfile.gettempdir(), f"hepflows-{os.getuid()}", f"reported-{os.getpgrp()}")
        os.makedirs(folder, exist_ok=True)
        marker = os.path.join(folder, hashlib.sha256(message.encode()).hexdigest()[:16])
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:
        pass  # no shared marker possible: at worst one line per worker process
    return True


def report_user_error(message: str) -> None:
    """Print ``hepflows: <message>`` on stderr, once per run for the same message (also with ``--workers N``)."""
    message = message.strip()
    if message.startswith("hepflows: "):
        message = message[len("hepflows: "):]
    if message and _first_report(message):
        print(f"hepflows: {message}", file=sys.stderr, flush=True)


def user_error_message(record: logging.LogRecord) -> str | None:
    """The message of a user error that luigi is about to log with its traceback, or None for anything else:
    from the record's exception (a task's ``run`` failed) or from a traceback pasted into the text (luigi's
    "Will not run ... due to error in complete()/deps() method")."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        if isinstance(exc, user_error_types()) and str(exc):
            return str(exc)
        return None
    text = record.getMessage()
    if "Traceback (most recent call last)" not in text:
        return None
    for name in _user_error_names():
        marker = f"\n{name}: "
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    return None


class _UserErrorFilter(logging.Filter):
    """On luigi's logger: replaces the traceback of a user error by one line (:func:`report_user_error`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = user_error_message(record)
        if message is None:
            return True
        report_user_error(message)
        return False


if not any(isinstance(f, _UserErrorFilter) for f in logging.getLogger("luigi-interface").filters):
    logging.getLogger("luigi-interface").addFilter(_UserErrorFilter())


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _remove_outputs_of_failed_task(task, exception) -> None:
    """A plain task or a workflow branch that failed removes its outputs: those it wrote in this attempt (files
    are written atomically, but a task with several outputs may have written some of them) and those of an
    earlier run, which are out of date or the task would not have run. Nothing it leaves looks like a result.
    Workflows themselves keep the outputs of their successful branches."""
    if not isinstance(task, AnalysisTask) or (isinstance(task, law.BaseWorkflow) and task.is_workflow()):
        return
    for target in law.target.collection.flatten_collections(task.output()):
        try:
            if target.exists():
                target.remove()
        except Exception:  # never hide the original failure behind a clean-up problem
            pass


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bootstrap_render_variables() -> dict[str, str]:
    """The variables law renders into ``htcondor_bootstrap.sh`` (plain text replacement of ``{{name}}``), each
    one shell word (:func:`shlex.quote`), so a path with spaces, quotes or ``$`` arrives in the job unchanged."""
    return {"hepflows_repo": shlex.quote(REPO), "hepflows_store": shlex.quote(store_base()),
            "law_home": shlex.quote(os.environ.get("LAW_HOME", os.path.join(REPO, ".law")))}


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

    def workflow_complete(self) -> bool:
        """law asks the workflow proxy, which asks this hook: the same check as every task
        (:meth:`AnalysisTask.complete`: the whole requirement tree and every branch)."""
        return AnalysisTask.complete(self)

    def htcondor_output_directory(self):
        return law.LocalDirectoryTarget(self.local_path("htcondor"))

    def htcondor_bootstrap_file(self):
        return law.JobInputFile(os.path.join(REPO, "workflow", "htcondor_bootstrap.sh"), share=True,
                                render_job=True)

    def htcondor_job_config(self, config, job_num, branches):
        # where the job finds the project and the store (a shared file system, as on analysis facilities)
        # law pastes these into the bootstrap script as they are: shell-quoted here, used unquoted there
        config.render_variables.update(bootstrap_render_variables())
        # job logs next to the submission records in the store (law appends the job's branch range)
        config.stdout, config.stderr, config.log = "stdout.txt", "stderr.txt", "log.txt"
        config.custom_content.append(("request_cpus", self.htcondor_cpus))
        config.custom_content.append(("request_memory", self.htcondor_memory))
        config.custom_content.append(("+MaxRuntime", int(self.htcondor_runtime * 3600)))
        if str(getattr(self, "device", "cpu")).startswith("cuda"):
            config.custom_content.append(("request_gpus", 1))
        return config


class SampleSetMixin:
    """For the stages that produce samples (generation, skim): which set of samples their ``--truth``,
    ``--regression`` and ``--unfolding`` flags select, and submission records kept apart per set (same store
    directory, other branches)."""

    unfolding = luigi.BoolParameter(default=False, description="the samples of the unfolding (training sample and "
                                    "top-mass-shifted pseudo-data) instead of the configured ones; default: false")

    def sample_set(self):
        cfg = self.analysis_config
        if self.truth + self.regression + self.unfolding > 1:
            raise SystemExit(f"hepflows: {self.task_family}: --truth, --regression and --unfolding select "
                             "different samples; give one of them")
        return (cfg.truth_samples if self.truth else cfg.regression_samples if self.regression
                else cfg.unfolding_samples if self.unfolding else cfg.samples)

    def htcondor_output_directory(self):
        kind = (("truth",) if self.truth else ("regression",) if self.regression
                else ("unfolding",) if self.unfolding else ())
        return law.LocalDirectoryTarget(self.local_path("htcondor", *kind))


FEATURE_SETS = ("standard", "regressed")


class FeatureSetMixin:
    """For the stages from the partitioned events on: ``--features regressed`` runs them on the features whose
    high-level masses use the regressed neutrino and b jets (:mod:`analysis.feed`; configurations with
    ``regression.feed``), with outputs under a ``regressed`` level of the store; ``standard`` (default): the
    features as the skim computed them. Stages before (generation, skim, the regressions) have no such
    parameter, so both feature sets share them."""

    features = luigi.ChoiceParameter(choices=FEATURE_SETS, default="standard", description="feature set of the "
                                     "analysis: standard or regressed (needs regression.feed); default: standard")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.features == "regressed" and not self.analysis_config.regression.feed:
            raise SystemExit(f"hepflows: {self.task_family}: --features regressed needs a configuration with "
                             f"regression.feed: true ({self.config_name!r} has none)")

    @property
    def regressed(self) -> bool:
        return self.features == "regressed"

    def store_parts(self) -> tuple[str, ...]:
        parts = super().store_parts()
        return parts + ("regressed",) if self.regressed else parts
