"""Smoke tests: each stage's library function on a tiny config, with a real MLflow store."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from ebm import pipeline, tracking
from ebm.config import parse_params
from ebm.errors import TrainingDiverged
from tests.conftest import tiny_params_dict


def run_all(tmp_path, params):
    prepared = tmp_path / "data/prepared"
    runs = tmp_path / "r/runs"
    pipeline.prepare(params, pipeline.PreparePaths(data=prepared, record=runs / "prepare.json"))
    tp = pipeline.TrainPaths(data=prepared, model=tmp_path / "models/e.keras", history=tmp_path / "r/history.csv",
                             negatives=tmp_path / "r/negatives.png", filters=tmp_path / "r/filters.png",
                             record=runs / f"train-{params.model.family}.json")
    pipeline.train(params, tp, verbose=0)
    cp = pipeline.ClassifierPaths(data=prepared, model=tmp_path / "models/c.keras", metrics=tmp_path / "r/clf.json",
                                  record=runs / "classifier.json")
    pipeline.classifier(params, cp)
    g = tmp_path / "g"
    gp = pipeline.GeneratePaths(model=tp.model, samples=g / "samples.npz", grid=g / "samples.png",
                                chains=g / "chains.png", gif=g / "chains.gif", health=g / "health.csv",
                                health_plot=g / "chain_health.png", record=runs / "generate.json")
    pipeline.generate(params, gp)
    ep = pipeline.EvaluatePaths(data=prepared, model=tp.model, classifier=cp.model, classifier_metrics=cp.metrics,
                                samples=gp.samples, history=tp.history, generate_reports=g, negatives=tp.negatives,
                                filters=tp.filters,
                                metrics=tmp_path / "r/metrics.json", figures=tmp_path / "r/eval",
                                ood=tmp_path / "r/eval/ood.csv", report=tmp_path / "r/report.html",
                                record=runs / "evaluate.json")
    metrics = pipeline.evaluate(params, ep)
    return tp, gp, ep, metrics


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The five stages once, on tiny params, into a fresh SQLite store; shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("stages")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("DVC_ROOT", str(tmp_path))
        mp.chdir(tmp_path)
        params = parse_params(tiny_params_dict())
        result = run_all(tmp_path, params)
    mlflow.set_tracking_uri(uri)
    yield (tmp_path, params, *result)
    mlflow.set_tracking_uri(None)


def test_every_stage_writes_its_outputs_and_logs_a_run(pipeline_run):
    tmp_path, params, tp, gp, ep, metrics = pipeline_run

    assert np.load(tmp_path / "data/prepared/train.npz")["x"].shape == (640, 32, 32, 1)  # tiny params: data.max_train
    history = pd.read_csv(tp.history)
    assert history["epoch"].tolist() == [1, 2]
    assert {"loss", "cdiv", "reg", "real", "fake", "val_cdiv", "val_real", "val_fake"} <= set(history.columns)
    assert history["buffer_coverage"].notna().tolist() == [True, False]  # epoch 1, then every 5th
    assert 0 <= history["buffer_coverage"][0] <= 1
    assert history["energy_class_gap"].notna().tolist() == [True, False] and history["energy_class_gap"][0] > 0
    with np.load(gp.samples) as f:
        assert f["samples"].shape == (24, 32, 32, 1)
        assert f["snapshot_steps"].tolist() == [0, 2, 6] and f["snapshots"].shape == (3, 4, 32, 32, 1)
        assert -1.0 <= f["samples"].min() and f["samples"].max() <= 1.0
    health = pd.read_csv(gp.health)
    assert health["step"].tolist() == list(range(1, 7)) and health["grad_norm_mean"].gt(0).all()
    for png in (tp.negatives, tp.filters, gp.grid, gp.chains, gp.health_plot, *ep.figures.glob("*.png")):
        assert Image.open(png).size[0] > 50
    gif = Image.open(gp.gif)
    assert gif.n_frames == 4  # steps 0, 2, 4, 6
    saved = json.loads(ep.metrics.read_text())
    assert saved == pytest.approx(metrics)
    for key in ("fid", "fid_real_floor", "kid", "kid_std", "precision", "recall", "coverage", "confident_share",
                "nn_dist_generated_median", "nn_dist_test_median", "auroc_uniform_noise", "auroc_gaussian_noise",
                "auroc_flipped_digits", "auroc_inverted_digits", "auroc_pixel_shuffled_digits", "auroc_mixture",
                "longrun_confident_share", "longrun_fid", "longrun_fid_floor", "longrun_kid", "longrun_coverage",
                "longrun_stable", "test_cdiv", "fid_real_floor_std", "longrun_fid_floor_std"):
        assert np.isfinite(saved[key]), key
    assert saved["longrun_n"] == params.evaluate.longrun_n
    curve = pd.read_csv(ep.figures / "longrun_curve.csv")  # one row per multiple of the 6 generation steps
    assert curve["multiple"].tolist() == [1, 2, 3] and curve[[f"share_{c}" for c in range(10)]].sum(1).round(6).eq(1).all()
    assert curve["fid"].iloc[-1] == pytest.approx(saved["longrun_fid"])
    assert {"by_class.png", "least_confident.png", "most_confident.png"} <= {p.name for p in ep.figures.glob("*.png")}
    judge = json.loads(ep.classifier_metrics.read_text())
    assert {"test_accuracy", "temperature", "confident_real", "confident_erased_strokes", "confident_elastic_warp",
            "confident_two_blended", "onednn"} <= set(judge)
    assert saved["test_cdiv"] == pytest.approx(saved["energy_real"] - saved["energy_noise"])
    assert pd.read_csv(ep.ood)["outliers"].tolist()[-1] == "mixture"

    runs = mlflow.search_runs(experiment_names=["ebm"])
    assert (runs["status"] == "FINISHED").all()
    parents = runs[runs["tags.ebm.role"] == "pipeline"]
    assert len(parents) == 1  # one pipeline run, its stages below it
    parent = parents.iloc[0]
    stages = runs[runs["tags.ebm.role"] == "stage"]
    by_stage = {row["tags.ebm.stage"]: row for _, row in stages.iterrows()}
    assert set(by_stage) == {"prepare", "train", "classifier", "generate", "evaluate"}
    assert (stages["tags.mlflow.parentRunId"] == parent["run_id"]).all()
    assert parent["params.train.sampler.steps"] == "3" and parent["params.sampler.steps"] == "6"
    assert parent["metrics.fid"] == pytest.approx(metrics["fid"])  # evaluate writes onto the parent
    assert by_stage["evaluate"]["tags.ebm.upstream.train"] == by_stage["train"]["run_id"]
    assert by_stage["evaluate"]["tags.ebm.upstream.classifier"] == by_stage["classifier"]["run_id"]
    assert by_stage["generate"]["tags.ebm.upstream.train"] == by_stage["train"]["run_id"]
    train_run = by_stage["train"]
    assert train_run["params.sampler.steps"] == "3"
    assert train_run["params.learning_rate"] == str(params.train.learning_rate)
    assert train_run["tags.params.hash"] == params.digest()
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(train_run["run_id"], "loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(train_run["run_id"])}
    assert {"history.csv", "negatives.png", "checkpoint", "images"} <= artifacts
    steps = sorted(int(a.path.split("+step+")[1].split("+")[0]) for a in client.list_artifacts(train_run["run_id"], "images")
                   if a.path.endswith(".png") and "/negatives+step+" in a.path)
    assert steps == [1, 2]  # the buffer's negatives each epoch, on the run page's image slider
    # MLflow's own source and user tags (the UI's Source and User columns), beside the project's
    assert train_run["tags.mlflow.source.name"] == "stages.train" and train_run["tags.mlflow.source.type"] == "LOCAL"
    assert parent["tags.mlflow.source.name"] == "dvc.yaml" and parent["tags.mlflow.user"] == train_run["tags.mlflow.user"] != ""
    assert train_run["tags.ebm.kernels"] in ("fused-chain", "fused-ops", "tf-ops")
    assert [a.path for a in client.list_artifacts(parent["run_id"])] == ["params.yaml"]
    # the parent spans its stages; every stage's data is an MLflow dataset input (the Dataset column)
    assert parent["start_time"] <= stages["start_time"].min() and parent["end_time"] == stages["end_time"].max()
    md5 = {split: tracking.file_md5(tmp_path / f"data/prepared/{split}.npz") for split in ("train", "test")}

    def inputs(run_id):
        return {(d.dataset.name, d.dataset.digest, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
                for d in client.get_run(run_id).inputs.dataset_inputs}

    assert inputs(train_run["run_id"]) == {("mnist5k-train", md5["train"], "training"),
                                           ("mnist5k-test", md5["test"], "validation")}
    assert inputs(by_stage["evaluate"]["run_id"]) == {
        ("mnist5k-train", md5["train"], "reference"), ("mnist5k-test", md5["test"], "evaluation"),
        ("generated-samples", tracking.file_md5(gp.samples), "generated")}
    assert {name for name, _, _ in inputs(parent["run_id"])} == {"mnist5k-train", "mnist5k-test", "generated-samples"}
    source = json.loads(client.get_run(train_run["run_id"]).inputs.dataset_inputs[0].dataset.source)
    assert source["uri"].endswith(".npz") and source["uri"].startswith(str(tmp_path))
    assert {"report.html", "longrun_curve.csv"} <= {a.path for a in client.list_artifacts(by_stage["evaluate"]["run_id"])}
    assert [m.step for m in client.get_metric_history(by_stage["evaluate"]["run_id"], "longrun_curve_fid")] == [6, 12, 18]
    assert by_stage["generate"]["params.step_size"] == "10.0"


def test_report_has_every_section_with_decodable_images(pipeline_run):
    import base64
    import io
    import re

    from ebm.report import SECTIONS

    ep = pipeline_run[4]
    page = ep.report.read_text()
    for section in SECTIONS:
        assert f">{section}</h2>" in page, section
    images = re.findall(r'src="data:(image/\w+);base64,([^"]+)"', page)
    assert len(images) >= 11 and "not available" not in page
    kinds = set()
    for mime, data in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()
        kinds.add(mime)
    assert kinds == {"image/png", "image/gif"}
    assert "auroc_mixture" in page and "fid_real_floor" in page


def test_divergence_stops_with_a_clear_error_and_a_failed_run(tmp_path, mlflow_store):
    raw = tiny_params_dict()
    raw["train"]["max_abs_energy"] = 1e-9  # any energy at all counts as runaway
    raw["train"]["on_divergence"] = "stop"
    params = parse_params(raw)
    prepared = tmp_path / "data"
    pipeline.prepare(params, pipeline.PreparePaths(data=prepared))
    tp = pipeline.TrainPaths(data=prepared, model=tmp_path / "m.keras", history=tmp_path / "h.csv",
                             negatives=tmp_path / "n.png")
    with pytest.raises(TrainingDiverged, match="train.max_abs_energy"):
        pipeline.train(params, tp, verbose=0)
    assert tp.history.is_file()  # what was measured is kept
    runs = mlflow.search_runs(experiment_names=["ebm"], filter_string="tags.`ebm.stage` = 'train'")
    assert runs["status"].tolist() == ["FAILED"]


def test_train_rejects_a_batch_larger_than_the_data(tmp_path, mlflow_store):
    raw = tiny_params_dict()
    raw["data"]["test_fraction"] = 0.99  # 50 training images
    raw["train"]["batch_size"] = 64
    raw["train"]["buffer_size"] = 64
    params = parse_params(raw)
    pipeline.prepare(params, pipeline.PreparePaths(data=tmp_path / "d"))
    with pytest.raises(Exception, match="train.batch_size"):
        pipeline.train(params, pipeline.TrainPaths(data=tmp_path / "d", model=tmp_path / "m.keras"), verbose=0)


LOAD_WITHOUT_EBM = """
import json, sys
sys.modules["ebm"] = None  # this package cannot be imported: the logged model must not need it
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
local = mlflow.artifacts.download_artifacts(sys.argv[2], dst_path=sys.argv[3])
info = mlflow.models.Model.load(local)
x = info.load_input_example(local)
network = mlflow.keras.load_model(sys.argv[2])
print(json.dumps({"x": x.tolist(), "energy": network.predict(x, verbose=0).tolist(),
                  "signature": info.signature.to_dict(), "requirements": open(local + "/requirements.txt").read()}))
"""


def test_logged_model_loads_where_this_package_is_not_installed(pipeline_run):
    import subprocess
    import sys

    import keras

    from ebm import families

    tmp_path, params, tp, gp, ep, metrics = pipeline_run
    train_id = json.loads(tp.record.read_text())["run_id"]
    out = subprocess.run([sys.executable, "-I", "-c", LOAD_WITHOUT_EBM, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          f"runs:/{train_id}/model", str(tmp_path / "downloaded")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    x = np.asarray(got["x"], dtype=np.float32)
    assert x.shape == (2, 32, 32, 1) and -1 <= x.min() and x.max() <= 1  # two training digits
    families.register_all()
    trained = keras.saving.load_model(tp.model, compile=False)
    np.testing.assert_allclose(np.asarray(got["energy"]), trained(x).numpy(), rtol=1e-5, atol=1e-5)
    inputs = json.loads(got["signature"]["inputs"])
    assert inputs[0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 32, 32, 1]}
    assert sorted(line.split("==")[0] for line in got["requirements"].split()) == ["keras", "mlflow", "tensorflow"]


def test_ebm_evaluate_scores_any_logged_model(pipeline_run, monkeypatch):
    from typer.testing import CliRunner

    from ebm.cli import app

    tmp_path, params, tp, gp, ep, metrics = pipeline_run
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    train_id = json.loads(tp.record.read_text())["run_id"]
    params_file = tmp_path / "tiny.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    out = tmp_path / "cli-eval"
    result = CliRunner().invoke(app, ["evaluate", "--model-uri", f"runs:/{train_id}/model", "--params", str(params_file),
                                      "--data", str(tmp_path / "data/prepared"), "--classifier", str(ep.classifier),
                                      "--out", str(out), "--n", "16"])
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(scores["fid"]) and 0.0 <= scores["auroc_mixture"] <= 1.0
    assert "Evaluation of runs:/" in (out / "report.html").read_text()
    assert len(pd.read_csv(out / "history.csv")) == 2  # the logged run's per-epoch metrics
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("ebm").experiment_id
    assert len(client.search_runs([experiment])) == 6  # nothing logged by the hand evaluation

    # a model file has no logged history: the same metrics and report, the loss panel says so
    from_file = CliRunner().invoke(app, ["evaluate", "--model", str(tp.model), "--params", str(params_file),
                                         "--data", str(tmp_path / "data/prepared"), "--classifier", str(ep.classifier),
                                         "--out", str(tmp_path / "file-eval"), "--n", "16"])
    assert from_file.exit_code == 0, from_file.output
    assert (tmp_path / "file-eval/report.html").is_file() and (tmp_path / "file-eval/figures/loss_curves.png").is_file()
    assert json.loads((tmp_path / "file-eval/metrics.json").read_text())["fid"] == scores["fid"]  # same model, seeds

    bad = CliRunner().invoke(app, ["evaluate", "--model-uri", "runs:/0123456789abcdef/model", "--out", str(out)])
    assert bad.exit_code == 1 and "could not load an MLflow Keras model" in bad.output


def test_generate_refuses_a_model_whose_chains_diverge_and_writes_nothing(tmp_path, mlflow_store):
    from ebm.errors import SamplingDiverged
    from ebm.families.deep.network import build_energy_network

    params = parse_params(tiny_params_dict())
    net = build_energy_network(params.model)
    kernel = net.get_layer("dense").kernel
    poisoned = kernel.numpy()
    poisoned[0, 0] = np.nan
    kernel.assign(poisoned)
    net.save(tmp_path / "broken.keras")
    g = tmp_path / "g"
    gp = pipeline.GeneratePaths(model=tmp_path / "broken.keras", samples=g / "samples.npz", grid=g / "s.png",
                                chains=g / "c.png", gif=g / "c.gif", health=g / "h.csv", health_plot=g / "h.png")
    with pytest.raises(SamplingDiverged, match="non-finite at step 1 of 6: the model file .*broken.keras"):
        pipeline.generate(params, gp)
    assert not gp.samples.exists()
    runs = mlflow.search_runs(experiment_names=["ebm"], filter_string="tags.`ebm.stage` = 'generate'")
    assert runs["status"].tolist() == ["FAILED"]


def test_ebm_score_flags_images_against_the_real_test_digits(pipeline_run, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from ebm.cli import app

    tmp_path, params, tp, gp, ep, metrics = pipeline_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params_file = tmp_path / "tiny.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    test_npz = tmp_path / "data/prepared/test.npz"
    digits = np.load(test_npz)["x"][:3]
    pngs = []
    for i, digit in enumerate(digits):  # the prepared digits back as the 28x28 PNGs they came from
        pngs.append(tmp_path / f"digit{i}.png")
        Image.fromarray(np.rint(digit[2:30, 2:30, 0] * 127.5 + 127.5).astype(np.uint8)).save(pngs[-1])
    common = ["--model", str(tp.model), "--data", str(tmp_path / "data/prepared"), "--params", str(params_file)]
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["score", str(test_npz), *map(str, pngs), *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    n = len(np.load(test_npz)["y"])
    assert len(table) == n + 3 and table["image"].iloc[0] == f"{test_npz}[0]" and table["image"].iloc[-1] == str(pngs[-1])
    assert 0.95 <= table["looks_like_data"][:n].mean() <= 0.95 + 1.5 / n  # the threshold: 5% of the test digits above
    np.testing.assert_allclose(table["energy"][n:].to_numpy(), table["energy"][:3].to_numpy(), atol=1e-5)  # PNG = npz
    assert f"of {n + 3} image(s) look like the training digits (deep energy <= " in result.output

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(big := tmp_path / "big.png")
    Image.fromarray(np.dstack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8),
                               np.zeros((28, 28), np.uint8)])).save(colour := tmp_path / "colour.png")
    (text := tmp_path / "text.png").write_text("not an image")
    for path, message in ((big, "40x40 pixels; give 28x28 digits"), (colour, "a colour image (RGB)"),
                          (text, "not a readable image"), (tmp_path / "none.png", "file not found")):
        bad = CliRunner().invoke(app, ["score", str(path), *common, "--out", str(out)])
        assert bad.exit_code == 1 and message in bad.output, bad.output


def test_ebm_complete_fills_the_masked_pixels_and_keeps_the_others(pipeline_run, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from ebm.cli import app

    tmp_path, params, tp, gp, ep, metrics = pipeline_run
    params_file = tmp_path / "tiny.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    test_npz = tmp_path / "data/prepared/test.npz"
    out = tmp_path / "completions.png"
    common = ["--model", str(tp.model), "--params", str(params_file), "--out", str(out)]
    result = CliRunner().invoke(app, ["complete", str(test_npz), "--mask", "bottom-half", "--chains", "3", *common])
    assert result.exit_code == 0, result.output
    assert "x 3 deep completion(s) of the bottom-half mask, 6 Langevin steps" in result.output
    saved = np.load(out.with_suffix(".npz"))
    x, filled, hidden = saved["images"], saved["completions"], saved["hidden"]
    n = len(np.load(test_npz)["y"])
    assert filled.shape == (n, 3, 32, 32, 1) and -1 <= filled.min() and filled.max() <= 1
    for c in range(3):
        np.testing.assert_array_equal(filled[:, c][~hidden], x[~hidden])  # the observed pixels, clamped
    assert not np.allclose(filled[:, 0][hidden], filled[:, 1][hidden])  # each chain from its own noise
    assert Image.open(out).size == ((5 * 34 + 2) * 3, (n * 34 + 2) * 3)  # rows: input, mask, three completions

    for args, message in ((["--mask", "random:2"], "must be a number in (0, 1)"),
                          (["--mask", "middle"], "not a file nor one of")):
        bad = CliRunner().invoke(app, ["complete", str(test_npz), *args, *common])
        assert bad.exit_code == 1 and message in bad.output, bad.output
