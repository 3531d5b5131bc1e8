"""Shared task machinery: the analysis task base, configuration loading and the versioned output store.

Every output lives under ``$HEPFLOWS_STORE/<TaskFamily>/<config>/<version>/[<settings>/]...``: the task, the
analysis configuration, the user's ``--version``, and any parameter that changes the result (for example
``input-<hash>`` when ``--input-path`` overrides the configured input file).

Branched stages derive from :class:`AnalysisWorkflow`, a ``law.LocalWorkflow``; a remote workflow base (law's
HTCondor workflow) can be added to that class alone without touching any task.
"""

from __future__ import annotations

import functools
import hashlib
import os

import law
import luigi

from analysis.config import AnalysisConfig, ConfigError, load_config


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
        """Complete when every output exists and none is older than any input (as ``make`` decides): after a
        stage is rerun (``--remove-output`` on it, or a new version of it), exactly the tasks that depend on it
        are out of date and rerun; everything upstream stays."""
        if not super().complete():
            return False
        if isinstance(self, law.BaseWorkflow) and self.is_workflow():
            return True  # each branch decides for itself
        inputs = law.target.collection.flatten_collections(self.input())
        newest_input = max((_mtime(t) for t in inputs), default=None)
        if newest_input is None:
            return True
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


class AnalysisWorkflow(AnalysisTask, law.LocalWorkflow):
    """Base of every branched stage. Remote execution (law's HTCondor workflow) is added here as a second
    workflow base, so that no task changes."""
