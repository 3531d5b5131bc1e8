"""Flow stages: partitioning of the skimmed events, flow training per (model, seed), and event generation."""

from __future__ import annotations

import dataclasses
import os
import functools
import math
import zlib

import luigi
import numpy as np

from analysis.config import PARTITIONS
from analysis.feed import regressed_columns
from analysis.features import JET_PTS, in_support, support_thresholds
from analysis.io import InputError, write_json
from analysis.ntuple import OPTIONAL_COLUMNS, read_metadata, read_ntuples, read_objects, write_ntuple
from analysis.partition import bootstrap_rows, split_sample
from analysis.plotting import plot_features, plot_training_history
from analysis.regression_plots import plot_regressed_masses
from models.fit import fit_generator, generator_columns, ordered_columns, write_generated
from models.registry import hyperparameters
from models.io import load_generator, save_generator
from models.training import NonFiniteLossError, TrainSettings
from workflow.base import AnalysisTask, AnalysisWorkflow, FeatureSetMixin, SampleSetMixin
from workflow.skim import Skim, SkimSummary
from analysis.skim import merge_cutflows


class FlowTask(AnalysisTask):
    """Parameters shared by the flow stages: where to run, not what is computed (outputs do not depend on them)."""

    device = luigi.Parameter(default="cpu", significant=False, description="torch device: cpu or cuda")
    threads = luigi.IntParameter(default=0, significant=False, description="torch CPU threads (0: default)")

    def train_settings(self, t, seed: int) -> TrainSettings:
        """The training loop's settings from a configuration's ``training`` section (:class:`FlowTrainingConfig`),
        with this task's device and threads."""
        return TrainSettings(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
                             weight_decay=t.weight_decay, patience=t.patience, grad_clip=t.grad_clip, seed=seed,
                             device=self.device, threads=self.threads)


class RegressedFeatures:
    """For the tasks that write feature ntuples with ``--features regressed``: the trained nu-Flows and b-jet
    models (first regression seed) that :func:`analysis.feed.regressed_columns` recomputes the high-level masses
    with, and the inference itself (:class:`RegressEvents`, one branch per skimmed file)."""

    def regression_models(self) -> dict:
        from workflow.regression import TrainRegression  # the regression stages import this module
        train = TrainRegression.req(self)
        seed = self.analysis_config.regression.seeds[0]
        return {d["application"]: TrainRegression.req(self, branch=b) for b, d in train.create_branch_map().items()
                if d["method"] == "flow" and d["seed"] == seed}

    def regressed_by_sample(self, regress: "RegressEvents") -> dict[str, list[str]]:
        """The regressed ntuples of the workflow ``regress`` by sample, in file order."""
        branch_map = regress.get_branch_map()
        grouped: dict[str, list[str]] = {}
        for b, target in sorted(regress.output()["collection"].targets.items()):
            grouped.setdefault(branch_map[b]["sample"], []).append(target.path)
        return grouped


class RegressEvents(RegressedFeatures, SampleSetMixin, FlowTask, AnalysisWorkflow):
    """The feeding's inference (configurations with ``regression.feed``): one branch per skimmed file (of the
    configured samples, or with ``--truth`` of the truth samples), each the file's flat ntuple with the
    high-level masses of :data:`analysis.feed.REGRESSED_FEATURES` recomputed with the regressed neutrino (mode of
    ``regression.feed_draws`` posterior draws) and b-jet momenta (:mod:`analysis.feed`), from the file's own
    object-level columns. Branches run in parallel (``--workers``) or as HTCondor jobs like every branched
    stage; the draws of each file are seeded by the first regression seed, the sample and the file index.
    Output per branch: ``<sample>_<index>.root`` (the skim's metadata, ``features: regressed``)."""

    truth = luigi.BoolParameter(default=False, description="regress the truth samples' files instead of the "
                                "configured samples'; default: false")
    regression = False  # the regressions' own training samples are never fed back

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.analysis_config.regression.feed:
            raise SystemExit(f"hepflows: {self.task_family}: needs a configuration with regression.feed: true "
                             f"({self.config_name!r} has none)")

    def create_branch_map(self):
        return Skim.req(self, truth=self.truth).get_branch_map()

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["skim"] = Skim.req(self, truth=self.truth)
        reqs["regression"] = self.regression_models()
        return reqs

    def requires(self):
        return {"skim": Skim.req(self, truth=self.truth, branch=self.branch), "regression": self.regression_models()}

    def store_parts(self) -> tuple[str, ...]:
        return super().store_parts() + (("truth",) if self.truth else ())

    def output(self):
        d = self.branch_data
        return self.local_target(f"{d['sample']}_{d['index']}.root")

    def run(self):
        from models.io import load_conditional
        r, d = self.analysis_config.regression, self.branch_data
        path = self.input()["skim"]["ntuple"].path
        cols = read_ntuples([path], optional=OPTIONAL_COLUMNS)
        what = f"{d['sample']} {d['index']}"
        fits = {a: load_conditional(t["model"].path)[0] for a, t in self.input()["regression"].items()}
        self.publish_message(f"{what}: regressing the neutrino and b jets of {len(cols['weight']):,} events")
        seed = int(np.random.SeedSequence([r.seeds[0], zlib.crc32(d["sample"].encode()), d["index"]])
                   .generate_state(1)[0] % 2**31)
        cols = regressed_columns(cols, read_objects([path]), fits, r.feed_draws, seed, device=self.device,
                                 what=what, progress=self.progress_callback(f"{what}: regressed "))
        write_ntuple(self.output().path, cols, {**read_metadata(path), "features": "regressed"})


class PartitionEvents(RegressedFeatures, FeatureSetMixin, AnalysisTask):
    """Split every sample's skimmed events into disjoint ``train``, ``validation`` and ``reference`` partitions
    (fractions from the configuration, seeded by the configuration's seed and the sample name).

    Weights in each partition are scaled so that every partition carries the sample's full expected yield.
    With ``--features regressed`` the events are those of :class:`RegressEvents` (high-level masses recomputed
    with the regressed neutrino and b jets, :mod:`analysis.feed`). Outputs: ``<sample>_<partition>.root`` and ``partition.json`` with the sizes and
    yields.
    """

    def requires(self):
        # the summary too: its cutflow and plots belong to every run, and it stops on an empty sample
        reqs = {"skim": Skim.req(self), "summary": SkimSummary.req(self)}
        if self.regressed:
            reqs["regressed"] = RegressEvents.req(self)
        return reqs

    def output(self):
        cfg = self.analysis_config
        out = {f"{s}_{p}": self.local_target(f"{s}_{p}.root") for s in cfg.samples for p in PARTITIONS}
        out["partition"] = self.local_target("partition.json")
        if self.regressed:  # standard against regressed masses
            out["masses"], out["masses_pdf"] = self.local_target("masses.png"), self.local_target("masses.pdf")
        return out

    def run(self):
        cfg = self.analysis_config
        out = self.output()
        report, figure = {}, {}
        regressed = self.regressed_by_sample(self.requires()["regressed"]) if self.regressed else {}
        for sample, outputs in self.requires()["skim"].outputs_by_sample().items():
            files = [t["ntuple"].path for t in outputs]
            cols = read_ntuples(regressed.get(sample, files), optional=OPTIONAL_COLUMNS,
                                expect={"sample": sample, "label": cfg.sample(sample).label})
            n = len(cols["label"])
            if n == 0:
                raise InputError(f"sample {sample!r}: no skimmed events to partition")
            if self.regressed:
                standard = read_ntuples(files, optional=OPTIONAL_COLUMNS)
                if len(standard["weight"]) != n:
                    raise InputError(f"sample {sample!r}: {n} regressed events but {len(standard['weight'])} "
                                     "skimmed; rerun RegressEvents")
                keep = slice(0, 100_000)
                figure[f"{sample}"] = ({k: v[keep] for k, v in standard.items()},
                                       {k: v[keep] for k, v in cols.items()}, np.abs(cols["weight"][keep]))
            total = float(cols["weight"].sum())
            parts = split_sample(cols, cfg.partition, cfg.seed, sample)
            sizes = {p: int(len(part["weight"])) for p, part in parts.items()}
            for p, part in parts.items():
                write_ntuple(out[f"{sample}_{p}"].path, part, {
                    "sample": sample, "label": cfg.sample(sample).label, "partition": p, "sizes": sizes,
                    "expected_yield": total, "seed": cfg.seed, "units": cfg.feature_units,
                    "features": self.features})
            report[sample] = {"label": cfg.sample(sample).label, "sizes": sizes, "expected_yield": total}
            self.publish_message(f"{sample}: " + ", ".join(f"{p} {k}" for p, k in sizes.items()))
        write_json(out["partition"].path, {"fractions": {p: getattr(cfg.partition, p) for p in PARTITIONS},
                                           "features": self.features, "samples": report})
        if self.regressed:
            plot_regressed_masses(figure, out["masses"].path, title=f"{cfg.name}: standard (dashed) against "
                                  "regressed (solid) high-level masses")

    def expected_background(self) -> float:
        """Expected yield of the selected background (label 0), from ``partition.json``."""
        report = self.output()["partition"].load(formatter="json")
        return sum(s["expected_yield"] for s in report["samples"].values() if s["label"] == 0)

    def background_size(self, partition: str) -> int:
        """Selected background events (label 0) in ``partition``, from ``partition.json``."""
        report = self.output()["partition"].load(formatter="json")
        return sum(s["sizes"][partition] for s in report["samples"].values() if s["label"] == 0)

    def background_files(self, partition: str) -> list[str]:
        """Outputs of the background samples (label 0) for ``partition``."""
        return self.files(partition, label=0)

    def files(self, partition: str, label: int) -> list[str]:
        """Outputs of the samples with ``label`` (0: background, 1: signal) for ``partition``."""
        cfg = self.analysis_config
        out = self.output()
        return [out[f"{s}_{partition}"].path for s, sc in cfg.samples.items() if sc.label == label]


class TruthSample(RegressedFeatures, FeatureSetMixin, AnalysisTask):
    """The independent simulated background ("truth", :class:`analysis.config.TruthConfig`): the skimmed truth
    samples of the embedded generator, never used to train, tune, early-stop or bin anything; where the
    configuration has none (real NanoAOD, the HIGGS CSV), the reference partition's background, which also
    sets the binning, so statements against it are weaker (the report says so).

    Output ``truth.json``: the ntuple files, what they are (``source``), events generated and selected, and the
    expected yield. With ``--features regressed`` the files are those of :class:`RegressEvents` ``--truth`` (the
    regressed high-level masses, the same models as every other sample).
    """

    def requires(self):
        reqs = {"skim": Skim.req(self, truth=True), "partition": PartitionEvents.req(self)}
        if self.regressed and self.analysis_config.truth_samples:
            reqs["regressed"] = RegressEvents.req(self, truth=True)
        return reqs

    def output(self):
        return self.local_target("truth.json")

    def run(self):
        cfg = self.analysis_config
        by_sample = self.requires()["skim"].outputs_by_sample()
        if cfg.truth_samples:
            if self.regressed:
                regressed = self.regressed_by_sample(self.requires()["regressed"])
                files = [f for s in cfg.truth_samples for f in regressed[s]]
            else:
                files = [t["ntuple"].path for s in cfg.truth_samples for t in by_sample[s]]
            cutflow = merge_cutflows([t["cutflow"].load(formatter="json")["cutflow"]
                                      for s in cfg.truth_samples for t in by_sample[s]])
            source = "independent simulation"
        else:
            files, cutflow = self.requires()["partition"].background_files("reference"), {}
            source = "reference partition"
        cols = read_ntuples(files, columns=["weight"])
        n = len(cols["weight"])
        if n == 0:
            raise InputError(f"truth sample ({source}): no selected events")
        write_json(self.output().path, {"source": source, "files": files, "selected": n,
                                        "expected_yield": float(cols["weight"].sum()), "cutflow": cutflow})
        self.publish_message(f"truth sample ({source}): {n:,} selected events")

    def files(self) -> tuple[list[str], str]:
        """(ntuple files, source) of the truth sample."""
        info = self.output().load(formatter="json")
        return info["files"], info["source"]


def flow_tag(branch_data: dict) -> str:
    """Directory name of a trained generator: ``<model>_s<seed>``, or ``<model>_boot<seed>`` for a bootstrap
    replica (trained on a resample of the train partition)."""
    kind = "boot" if branch_data.get("bootstrap") else "s"
    return f"{branch_data['model']}_{kind}{branch_data['seed']}"


class TrainFlow(FeatureSetMixin, FlowTask, AnalysisWorkflow):
    """Train the configured zoo models on simulated background; one branch per (model, seed): every model with
    each of ``flows.seeds``, and the default model also with each of ``flows.analysis_seeds``.

    The bootstrap replicas of the default model (``flows.replicas``) are branches too: each trains on a resample,
    with replacement, of the train partition (:func:`analysis.partition.bootstrap_rows`) with its own seed; their
    spread is the generator uncertainty of the fit.

    Outputs per branch under ``<model>_s<seed>/`` (replicas: ``<model>_boot<seed>/``): ``model.pt`` (weights, preprocessing, specification),
    ``metrics.json`` (history, NLLs against a multivariate Gaussian, rates), ``loss.png`` and ``marginals.png``
    (generated against reference events, all 28 features).
    """

    def create_branch_map(self):
        flows = self.analysis_config.flows
        pairs = [(m, s) for m in flows.models for s in flows.seeds]
        pairs += [(flows.default, s) for s in flows.analysis_seeds if (flows.default, s) not in pairs]
        branches = [{"model": m, "seed": s, "bootstrap": False} for m, s in pairs]
        branches += [{"model": flows.default, "seed": s, "bootstrap": True} for s in flows.replicas.seeds]
        return dict(enumerate(branches))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["partition"] = PartitionEvents.req(self)
        return reqs

    def requires(self):
        return PartitionEvents.req(self)

    def _dir(self) -> str:
        return flow_tag(self.branch_data)

    def output(self):
        d = self._dir()
        return {name: self.local_target(d, name) for name in
                ("model.pt", "metrics.json", "loss.png", "loss.pdf", "marginals.png", "marginals.pdf")}

    @classmethod
    def branch_of(cls, branch_map: dict, model: str, seed: int) -> int:
        for b, data in branch_map.items():
            if data["model"] == model and data["seed"] == seed:
                return b
        raise ValueError(f"no flow ({model}, seed {seed}) in the configuration; trained: "
                         + ", ".join(f"({d['model']}, {d['seed']})" for d in branch_map.values()))

    def run(self):
        cfg = self.analysis_config
        name, seed = self.branch_data["model"], self.branch_data["seed"]
        part = self.requires()
        cols = {p: read_ntuples(part.background_files(p), optional=OPTIONAL_COLUMNS) for p in PARTITIONS}
        columns, derived, wps = generator_columns(cols["train"], cfg.feature_units, cfg.btag_feature_thresholds,
                                                  derive_masses=cfg.flows.derive_masses,
                                                  derive_lv=not self.regressed)
        data = {p: np.stack([np.asarray(c[f], np.float64) for f in columns], axis=1) for p, c in cols.items()}
        t = cfg.flows.training_for(name)
        if t.max_train_events:
            data["train"] = data["train"][:t.max_train_events]
        if self.branch_data["bootstrap"]:
            data["train"] = data["train"][bootstrap_rows(len(data["train"]), seed)]
        hyper = hyperparameters(name, cfg.flows.hyperparameters.get(name))
        options = {k: v for k, v in dataclasses.asdict(t).items() if k != "max_train_events"}
        settings = TrainSettings(**options, seed=seed, device=self.device, threads=self.threads)
        ckpt = self.local_target(self._dir(), "checkpoint.pt")

        def on_epoch(rec):
            msg = (f"{name} s{seed} epoch {rec.epoch}/{t.epochs}: train NLL {rec.train_nll:.4f}, validation NLL "
                   f"{rec.val_nll:.4f} (median {rec.val_median_nll:.4f}), lr {rec.learning_rate:.2e}, "
                   f"{rec.events_per_s:,.0f} events/s")
            self.logger.info(msg)
            self.publish_message(msg)
            self.publish_progress(100.0 * rec.epoch / t.epochs)

        try:
            ordered = ordered_columns(cols["train"], JET_PTS) if cfg.flows.ordered_jets else []
            fit = fit_generator(name, hyper, data, columns, settings, derived, on_epoch, ckpt.path, wps,
                                ordered=ordered)
        except ValueError as e:
            raise InputError(f"flow ({name}, seed {seed}): {e}") from None
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"flow ({name}, seed {seed}): {e}; last good checkpoint: {ckpt.path}") \
                from None

        m = fit.metrics
        out = self.output()
        support = support_thresholds(cols["train"]) if cfg.feature_units == "GeV" else {}
        save_generator(out["model.pt"].path, name, hyper, fit.model.state_dict(), fit.preprocessor,
                       {"seed": seed, "bootstrap": self.branch_data["bootstrap"], "config": cfg.name,
                        "support": support, "partition_sizes": m["partition_sizes"],
                        "test_nll": m["nll"]["test"], "gaussian_test_nll": m["nll"]["gaussian_test"],
                        "test_median_nll": m["nll"]["test_median"]})
        write_json(out["metrics.json"].path, m)
        title = f"{cfg.name}: {name}, {'bootstrap replica' if self.branch_data['bootstrap'] else 'seed'} {seed}"
        plot_training_history(m["history"], out["loss.png"].path, title=title,
                              baseline=m["nll"]["gaussian_test_median"], test_nll=m["nll"]["test_median"])
        w = np.ones(len(data["reference"]))
        plot_features({"reference (simulated)": (dict(zip(columns, data["reference"].T)), w),
                       f"generated ({name})": (dict(zip(columns, fit.generated.T)), w)},
                      out["marginals.png"].path, units=cfg.feature_units, title=title)
        ckpt.remove(silent=True)
        self.publish_message(f"{name} s{seed}: median test NLL {m['nll']['test_median']:.3f} (Gaussian "
                             f"{m['nll']['gaussian_test_median']:.3f}), sampling {m['sampling_events_per_s']:,.0f} "
                             "events/s")


class SampleFlow(FeatureSetMixin, FlowTask, AnalysisWorkflow):
    """Generate ``--n-events`` background events with a trained flow, in chunks of ``events_per_chunk``
    (one branch each), written in the skim's ntuple format with ``generated = 1`` and weights normalised to the
    expected background yield. Memory stays flat: each chunk is sampled and written in batches.
    """

    flow_model = luigi.Parameter(default="", description="zoo model to sample; default: the config's default")
    flow_seed = luigi.IntParameter(default=-1, description="training seed of the flow; default: the first one")
    n_events = luigi.IntParameter(default=0, description="number of events; default: the config's value")

    @property
    def model_name(self) -> str:
        return self.flow_model or self.analysis_config.flows.default

    @property
    def model_seed(self) -> int:
        return self.flow_seed if self.flow_seed >= 0 else self.analysis_config.flows.seeds[0]

    @property
    def total_events(self) -> int:
        return self.n_events or self.analysis_config.flows.generation.n_events

    def store_parts(self):
        return super().store_parts() + (flow_tag(self._flow_branch_data()), f"n{self.total_events}")

    def _flow_branch_data(self) -> dict:
        bmap = TrainFlow.req(self).get_branch_map()
        return bmap[TrainFlow.branch_of(bmap, self.model_name, self.model_seed)]

    def create_branch_map(self):
        n, per = self.total_events, self.analysis_config.flows.generation.events_per_chunk
        return {i: {"start": i * per, "stop": min((i + 1) * per, n)} for i in range(math.ceil(n / per))}

    def _flow(self):
        train = TrainFlow.req(self)
        return TrainFlow.req(self, branch=TrainFlow.branch_of(train.get_branch_map(), self.model_name,
                                                              self.model_seed))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["flow"] = self._flow()
        reqs["partition"] = PartitionEvents.req(self)
        return reqs

    def requires(self):
        return {"flow": self._flow(), "partition": PartitionEvents.req(self)}

    def output(self):
        return self.local_target(f"generated_{self.branch}.root")

    def run(self):
        cfg = self.analysis_config
        inputs = self.input()
        model, prep, payload = load_generator(inputs["flow"]["model.pt"].path, device=self.device)
        expected = self.requires()["partition"].expected_background()
        start, stop = self.branch_data["start"], self.branch_data["stop"]
        n = stop - start
        weight = expected / self.total_events
        seed = zlib.crc32(f"{self.model_name}/{self.model_seed}/{self.branch}".encode())
        meta = {"sample": "generated", "model": self.model_name, "flow_seed": self.model_seed, "label": 0,
                "generated": True, "chunk": self.branch, "total_events": self.total_events, "config": cfg.name,
                "expected_yield": expected, "units": cfg.feature_units,
                "partition_sizes": payload["metadata"].get("partition_sizes", {})}
        support = payload["metadata"].get("support", {}) if cfg.flows.generation.reject_outside_support else {}
        accept = functools.partial(in_support, thresholds=support) if support else None
        meta["support"] = support
        write_generated(self.output().path, model, prep, n, start, weight, seed, cfg.flows.generation.batch_size,
                        meta, self.device, progress=self.progress_callback(f"chunk {self.branch}: "), accept=accept)
