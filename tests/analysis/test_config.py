import copy

import pytest
import yaml

from analysis.config import ConfigError, available_configs, config_from_dict, load_config
from tests.conftest import tiny_config_dict


def test_shipped_configs_load():
    assert {"quickstart", "paper", "higgs_uci"} <= set(available_configs())
    q, p, h = load_config("quickstart"), load_config("paper"), load_config("higgs_uci")
    assert q.sample("background").source == "generator" and q.sample("signal").label == 1
    n_paper = sum(s.n_files * s.events_per_file for s in p.samples.values() if s.label == 0)
    assert n_paper >= 10**7  # paper scale: millions of background events
    assert h.feature_units == "normalised" and h.sample("signal").source == "higgs_csv"
    assert q.physics.top.mass == 172.5 and q.physics.w.width == 2.09
    r = load_config("regression")
    assert r.regression.applications == ("neutrino", "bjet") and not q.regression.applications
    assert {k: v.n_files for k, v in r.regression_samples.items()} == {"background_regression": 20,
                                                                       "signal_regression": 5}
    assert set(r.all_samples) == {"background", "signal", "background_truth", "background_regression",
                                  "signal_regression"}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(colour="red"), "colour: unknown key"),
    (lambda d: d["samples"]["background"].update(nfiles=2), "samples.background.nfiles: unknown key"),
    (lambda d: d.update(physics={"top": {"mass": "heavy"}}), "physics.top.mass: expected a number"),
    (lambda d: d.update(physics={"top": {"width": -1.4}}), "physics.top.width: must be > 0"),
    (lambda d: d.update(detector={"jet": {"constant": -0.1}}), "detector.jet.constant: must be >= 0"),
    (lambda d: d.update(detector={"btag": {"efficiency_b": 1.5}}), "detector.btag.efficiency_b: must lie in"),
    (lambda d: d.update(detector={"btag": {"efficiency_c": 0.9}}), "efficiencies must be ordered"),
    (lambda d: d["samples"]["signal"].update(process="zprime"), "samples.signal.process: must be one of"),
    (lambda d: d["samples"]["signal"].update(n_files=0), "samples.signal.n_files: must be >= 1"),
    (lambda d: d["samples"]["signal"].update(label=2), "samples.signal.label"),
    (lambda d: d["samples"]["signal"].pop("source"), "samples.signal.source: required key is missing"),
    (lambda d: d.update(skim={"min_jets": 3}), "skim.min_jets"),
    (lambda d: d.update(skim={"btag_working_point": "ultra"}), "skim.btag_working_point"),
    (lambda d: d.update(seed=1.5), "seed: expected an integer"),
    (lambda d: d.update(luminosity_fb=0), "luminosity_fb: must be > 0"),
    (lambda d: d.update(physics={"heavy_higgs": {"mass": 300.0}}), "physics.heavy_higgs.mass"),
    (lambda d: d.update(samples={}), "samples: at least one sample"),
    (lambda d: d.update(regression={"applications": ["neutrinos"]}), "regression.applications: unknown application"),
    (lambda d: d.update(regression={"model": "glow"}), "regression.model: unknown flow model"),
    (lambda d: d.update(regression={"train_factor": -1}), "regression.train_factor: must be >= 0"),
    (lambda d: d.update(regression={"hyperparameters": {"bins": 8}}), "regression.hyperparameters.bins"),
    (lambda d: d.update(flows={"hyperparameters": {"cfm": {"atol": 2}}}),
     "flows.hyperparameters.cfm.atol: expected a number between 0 and 1"),
    (lambda d: d.update(flows={"hyperparameters": {"cfm": {"freqs": 0.5}}}),
     "flows.hyperparameters.cfm.freqs: expected a positive integer"),
    (lambda d: d.update(flows={"model_training": {"glow": {"epochs": 5}}}), "flows.model_training.glow: unknown"),
    (lambda d: d.update(flows={"model_training": {"cfm": {"epoch": 5}}}),
     "flows.model_training.cfm.epoch: unknown training setting"),
    (lambda d: d.update(flows={"model_training": {"cfm": {"epochs": 0}}}), "flows.model_training.cfm.epochs: must be"),
    (lambda d: d.update(flows={"model_training": {"cfm": {"epochs": "many"}}}),
     "flows.model_training.cfm.epochs: expected a number"),
    (lambda d: d["samples"]["background"].update(source="higgs_csv", path="x.csv") or d.update(
        feature_units="normalised", regression={"applications": ["bjet"]}), "need the truth record"),
    (lambda d: d["samples"].update(background_regression=d["samples"]["background"]), "are reserved"),
    (lambda d: d.update(regression={"feed": True}), "regression.feed: needs at least one of applications"),
    (lambda d: d.update(regression={"applications": ["bjet"], "feed_draws": 0}), "regression.feed_draws"),
    (lambda d: d.update(regression={"applications": ["bjet"], "feed": True}, flows={"derive_masses": True}),
     "regression.feed: the regressed masses cannot be derived"),
    (lambda d: d.update(classifiers={"models": ["bdt", "gnn"]}), "classifiers.models: unknown classifier 'gnn'"),
    (lambda d: d.update(classifiers={"transformer": {"dim": 30, "heads": 4}}), "classifiers.transformer.dim"),
    (lambda d: d.update(classifiers={"models": ["bdt", "transformer"]}, limits={"classifier": "transformer"}),
     "limits.classifier: 'transformer' reads the reconstructed objects"),
    (lambda d: d["samples"]["background"].update(source="higgs_csv", path="x.csv") or d.update(
        feature_units="normalised", classifiers={"models": ["bdt", "transformer"]}),
     "the object-level classifier needs the reconstructed objects"),
])
def test_invalid_values_name_the_key(mutate, message):
    d = copy.deepcopy(tiny_config_dict())
    mutate(d)
    with pytest.raises(ConfigError) as err:
        config_from_dict(d, "tiny")
    assert message in str(err.value)
    assert str(err.value).startswith("config 'tiny': ")
    assert "\n" not in str(err.value)


def test_unknown_name_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration; shipped: higgs_uci, paper, pythia_quickstart, quickstart, regression"):
        load_config("quickstrat")
    with pytest.raises(ConfigError, match="file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(bad))


def test_yaml_roundtrip_and_override(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict()))
    cfg = load_config(str(path))
    assert cfg.sample("background").events_per_file == 6000
    csv = load_config("higgs_uci").with_input_path("/data/HIGGS.csv.gz")
    assert all(s.path == "/data/HIGGS.csv.gz" for s in csv.samples.values())
    # configurations are immutable
    with pytest.raises(Exception):
        cfg.seed = 3


def test_per_model_training_settings_override_only_their_model():
    d = copy.deepcopy(tiny_config_dict())
    d["flows"] = {"models": ["made_mog", "cfm"], "training": {"epochs": 7, "patience": 3},
                  "model_training": {"cfm": {"epochs": 600, "patience": 600, "learning_rate": 0.002}}}
    flows = config_from_dict(d, "tiny").flows
    assert (flows.training_for("made_mog").epochs, flows.training_for("made_mog").patience) == (7, 3)
    cfm = flows.training_for("cfm")
    assert (cfm.epochs, cfm.patience, cfm.learning_rate, cfm.batch_size) == (600, 600, 0.002,
                                                                             flows.training.batch_size)
