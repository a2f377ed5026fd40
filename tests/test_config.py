import pytest

from ebm.config import ConfigError, Params, flatten, load_params, parse_params
from tests.conftest import ROOT


def test_project_params_parse_and_hash_is_stable():
    p = load_params(ROOT / "params.yaml")
    # separate samplers; generation runs no longer than a replay-buffer chain has lived on average
    # (docs/experiments.md, "Generation length": beyond it chains leave what the model was trained to shape)
    assert p.train.sampler.steps < p.sampler.steps <= round(p.train.sampler.steps / p.train.fresh_fraction)
    assert max(p.generate.snapshot_steps) == p.sampler.steps  # the figure shows the final state
    assert p.digest() == load_params(ROOT / "params.yaml").digest()
    assert p.digest() != parse_params({"sampler": {"step_size": 5}}).digest()


def test_the_code_defaults_are_the_recipe_in_params_yaml():
    # one source of defaults: a command run without params.yaml runs the same recipe as dvc repro
    assert Params() == load_params(ROOT / "params.yaml")
    assert flatten(Params().to_dict()) == flatten(load_params(ROOT / "params.yaml").to_dict())


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"sampler": {"steps": -3}}, "sampler.steps"),
        ({"train": {"sampler": {"steps": 0}}}, "train.sampler.steps"),
        ({"data": {"source": "cifar"}}, "data.source"),
        ({"data": {"source": "npz"}}, "data.npz_path"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"generate": {"snapshot_steps": [0, 5000]}}, "generate.snapshot_steps"),
        ({"model": {"family": "gan"}}, "model.family"),
        ({"train": {"lr_schedule": "linear"}}, "train.lr_schedule"),
        ({"train": {"lr_min_fraction": 1.5}}, "train.lr_min_fraction"),
        ({"rbm": {"binarize": "round"}}, "rbm.binarize"),
        ({"rbm": {"cd_k": 0}}, "rbm.cd_k"),
        ({"dbn": {"momentum": 1.0}}, "dbn.momentum"),
        ({"dbn": {"hidden_units": 10}}, "dbn.hidden_units"),
        ({"evaluate": {"ais_runs": 1}}, "evaluate.ais_runs"),
        ({"evaluate": {"floor_draws": 0}}, "evaluate.floor_draws"),
        ({"train": {"on_divergence": "retry"}}, "train.on_divergence"),
        ({"train": {"strategy": "ring"}}, "train.strategy"),
        ({"train": {"max_rollbacks": -1}}, "train.max_rollbacks"),
        ({"train": {"rollback_lr_factor": 0.0}}, "train.rollback_lr_factor"),
        ({"train": {"max_abs_cdiv": 0}}, "train.max_abs_cdiv"),
        ({"train": {"kl_weight": 1.0}}, "train.kl_weight"),  # pruned leads are unknown keys now
        ({"train": {"class_balance": 0.5}}, "train.class_balance"),
        ({"train": {"persistent_chains": -1}}, "train.persistent_chains"),
        ({"train": {"persistent_chains": 256, "persistent_restart": 0.1}}, "train.persistent_restart"),
        ({"train": {"persistent_chains": 256, "persistent_share": 1.0}}, "train.persistent_share"),
        ({"train": {"persistent_chains": 256, "persistent_from": 60, "epochs": 60}}, "train.persistent_from"),
        ({"train": {"snapshot_every": -5}}, "train.snapshot_every"),
        ({"train": {"persistent_chains": 256, "persistent_share": 0.001}}, "train.persistent_share"),
        ({"train": {"persistent_chains": 4, "batch_size": 64, "persistent_share": 0.25}}, "train.persistent_chains"),
        ({"model": {"family": "rbm"}, "generate": {"gibbs_steps": 10, "snapshot_steps": [0, 20]}},
         "generate.snapshot_steps"),
        # values that once passed and then crashed a stage or gave a silent wrong answer
        ({"sampler": {"noise": float("inf")}}, "sampler.noise"),
        ({"sampler": {"step_size": float("inf")}}, "sampler.step_size"),
        ({"train": {"max_abs_energy": float("nan")}}, "train.max_abs_energy"),
        ({"train": {"seed": -1}}, "train.seed"),
        ({"data": {"seed": -5}}, "data.seed"),
        ({"classifier": {"seed": 2**40}}, "classifier.seed"),
        ({"generate": {"snapshot_steps": []}}, "generate.snapshot_steps"),
        ({"generate": {"n": 1}}, "generate.n"),
        ({"generate": {"n": 7}}, "generate.n"),  # below evaluate.longrun_n
        ({"data": {"max_test": 1}}, "data.max_test"),
        ({"classifier": {"calibration_fraction": 0.99}}, "classifier.calibration_fraction"),
        ({"evaluate": None}, "evaluate"),
    ],
)
def test_bad_params_name_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert key in str(err.value)


@pytest.mark.parametrize("epochs, start", [(175, 140), (60, 25), (35, 0), (2, 0)])
def test_a_negative_persistent_from_counts_back_from_the_last_epoch(epochs, start):
    t = parse_params({"train": {"persistent_chains": 512, "persistent_from": -35, "epochs": epochs}}).train
    assert t.persistent_start == start
    assert parse_params({"train": {"persistent_chains": 512, "persistent_from": 20}}).train.persistent_start == 20


@pytest.mark.parametrize("raw, message", [
    ({"sampler": {"noise": float("inf")}}, "must be a finite number; got inf"),
    ({"train": {"seed": -1}}, "must be in [0, 2**32 - 1]"),
    ({"generate": {"n": 7}}, "=7 is below evaluate.longrun_n=500"),
    ({"evaluate": None}, "is empty (null)"),
])
def test_bad_params_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert message in str(err.value)


def test_unknown_source_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="mnist5k, mnist, npz"):
        parse_params({"data": {"source": "cifar"}})


def test_missing_and_corrupt_params_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_flatten_for_mlflow():
    flat = flatten(Params().to_dict())
    assert flat["train.sampler.steps"] == 20
    assert flat["model.filters"] == "16,32,64,64"
