import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_params_dict() -> dict:
    """The project's params.yaml shrunk to seconds: few epochs, short chains, small sets."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(max_train=640, max_test=200)  # 20 batches of 32 per epoch
    p["train"].update(epochs=2, batch_size=32, buffer_size=256)
    p["train"]["sampler"]["steps"] = 3
    p["sampler"]["steps"] = 6
    p["generate"].update(n=24, snapshot_steps=[0, 2, 6], chains_shown=4)
    p["generate"]["gif_every"] = 2
    p["classifier"]["epochs"] = 1
    p["evaluate"].update(batch_size=64, longrun_factor=3, longrun_n=8, ais_runs=8, ais_betas=60, bound_samples=2)
    p["generate"]["gibbs_steps"] = 6
    for family in ("rbm", "dbn"):
        p[family].update(hidden=16, epochs=2, batch_size=32)
    p["tracking"]["experiment"] = "ebm"
    return p


@pytest.fixture
def tiny_params_dict_():
    return tiny_params_dict()


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store for one test, run from inside ``tmp_path``."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_tracking_uri(uri)  # for the tests' own mlflow.search_runs
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def mnist5k():
    from ebm.config import DataConfig
    from ebm.data import load_mnist5k

    return load_mnist5k(DataConfig())


@pytest.fixture(scope="session")
def trained_judge(mnist5k):
    """The classifier stage's judge (3 members, outliers, temperature), on 6 epochs: trained once
    per session for the classifier and metrics tests. Returns (model, history)."""
    import keras

    from ebm.classifier import train_classifier

    train, test = mnist5k
    keras.utils.set_random_seed(0)
    return train_classifier(train.x, train.y, test.x, test.y, epochs=6, batch_size=128)
