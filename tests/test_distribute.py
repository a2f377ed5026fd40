"""tf.distribute: `mirrored` on a CPU split into two logical devices takes the same step as one
device (and its saved state keeps each replica's buffer), and `multi_worker` trains with two real
worker processes on loopback (TF_CONFIG).
Each case runs in its own process: devices and collectives are fixed when TensorFlow starts."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, free_port, tiny_params_dict

STEP = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    from ebm.families.deep import distribute
    distribute.split_cpu(2)
    from ebm.config import parse_params
    from ebm.families.deep.train import build_model
    import yaml

    raw = yaml.safe_load(open(sys.argv[1]))
    out = {}
    x = np.load(sys.argv[2])["x"]
    for name in ("default", "mirrored"):
        raw["train"]["strategy"] = name
        params = parse_params(raw)
        strategy = distribute.make_strategy(name)
        model = build_model(params, strategy=strategy)
        with strategy.scope():
            model.optimizer.build(model.energy_net.trainable_variables)
        # every chain starts from one image, without noise: the negatives do not depend on
        # which replica's buffer or random stream they come from
        model.buffer.examples.assign(tf.fill(model.buffer.examples.shape, -0.5))
        model.buffer.chains.assign(tf.fill(model.buffer.chains.shape, -0.5))
        out[f"{name}/init"] = np.concatenate([w.numpy().ravel() for w in model.energy_net.weights])
        order = np.arange(len(x))[None]
        data = distribute.distributed_batches(strategy, x, order) if name == "mirrored" \\
            else tf.data.Dataset.from_tensors(tf.constant(x))
        model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
        out[f"{name}/weights"] = np.concatenate([w.numpy().ravel() for w in model.energy_net.weights])
        out[f"{name}/ema"] = np.concatenate([w.numpy().ravel() for w in model.ema_weights])
        out[f"{name}/replicas"] = np.array(strategy.num_replicas_in_sync)
        out[f"{name}/buffer_rows"] = np.array(model.buffer.capacity)
        out[f"{name}/chains"] = np.array([model.buffer.persistent, model.buffer.persistent_rows])
    # each replica gets its slice of every batch
    xs = next(iter(distribute.distributed_batches(strategy, x, order)))
    out["replica_images"] = np.stack([v.numpy() for v in strategy.experimental_local_results(xs)])
    # a saved training state holds each replica's own buffer, and gives each back its own
    from ebm.families.deep import resume
    replica_id = lambda: tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
    strategy.run(lambda: model.buffer.examples.assign(tf.fill(model.buffer.examples.shape, replica_id())))
    state = resume.capture(model, 1, [])
    strategy.run(lambda: model.buffer.examples.assign(tf.fill(model.buffer.examples.shape, 9.0)))
    resume.restore(model, state)
    out["restored"] = np.array([v.numpy().mean() for v in strategy.experimental_local_results(model.buffer.examples)])
    raw["train"]["strategy"] = "default"
    single = build_model(parse_params(raw))
    before = [w.numpy() for w in single.energy_net.weights]
    try:
        resume.restore(single, state)
    except resume.ResumeError as err:
        out["mismatch"] = np.array(str(err))
    out["untouched"] = np.array(all(np.array_equal(a, w.numpy()) for a, w in zip(before, single.energy_net.weights)))
    np.savez(sys.argv[3], **out)
""")


def test_mirrored_on_two_cpu_devices_takes_the_single_device_step(tmp_path, mnist5k):
    raw = tiny_params_dict()
    raw["train"].update(batch_size=32, buffer_size=256, real_noise=0.0, fresh_fraction=0.0, ema_decay=0.9,
                        lr_schedule="constant", learning_rate=0.001, persistent_chains=64, persistent_share=0.25)
    raw["train"]["sampler"].update(noise=0.0, steps=3)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    np.savez(tmp_path / "x.npz", x=mnist5k[0].x[:32])  # 32 different digits: 16 per replica
    out = subprocess.run([sys.executable, "-c", STEP, str(tmp_path / "p.yaml"), str(tmp_path / "x.npz"),
                          str(tmp_path / "out.npz")], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    r = np.load(tmp_path / "out.npz")
    assert int(r["mirrored/replicas"]) == 2 and int(r["default/replicas"]) == 1
    assert int(r["mirrored/buffer_rows"]) == 128  # each replica keeps half the buffer
    assert r["mirrored/chains"].tolist() == [32, 4] and r["default/chains"].tolist() == [64, 8]  # and half the chains
    np.testing.assert_array_equal(r["default/init"], r["mirrored/init"])
    moved = np.abs(r["default/weights"] - r["default/init"]).max()
    assert moved > 1e-4  # the step did something
    # the same step: the gradient of the whole batch's mean loss, not the sum over replicas
    np.testing.assert_allclose(r["mirrored/weights"], r["default/weights"], atol=moved * 1e-3)
    np.testing.assert_allclose(r["mirrored/ema"], r["default/ema"], atol=moved * 1e-3)
    # resume: each replica's buffer comes back to that replica; a state of two replicas does not
    # load into one, and the failed load changes nothing
    assert r["replica_images"].shape[0] == 2
    np.testing.assert_array_equal(r["replica_images"].reshape(32, 32, 32, 1), mnist5k[0].x[:32])
    assert r["restored"].tolist() == [0.0, 1.0]
    assert "replay buffers of 2 replicas, this run has 1" in str(r["mismatch"]) and bool(r["untouched"])


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ebm import pipeline
    from ebm.config import load_params
    folder = Path(sys.argv[1])
    summary = pipeline.train(load_params(folder / "params.yaml"), pipeline.TrainPaths(
        data=folder / "data", model=folder / "out/model.keras", history=folder / "out/history.csv",
        negatives=folder / "out/negatives.png", filters=folder / "out/filters.png", record=folder / "out/train.json"),
        verbose=0)
    print("steps", summary["steps"])
""")


@pytest.mark.e2e
def test_multi_worker_trains_with_two_worker_processes(tmp_path, mlflow_store):
    from ebm import pipeline
    from ebm.config import parse_params

    raw = tiny_params_dict()
    raw["train"].update(strategy="multi_worker", epochs=2)
    ports = [free_port(), free_port()]
    workers = []
    for index in range(2):
        folder = tmp_path / f"worker{index}"
        folder.mkdir()
        (folder / "params.yaml").write_text(yaml.safe_dump(raw))
        pipeline.prepare(parse_params(raw), pipeline.PreparePaths(data=folder / "data", record=tmp_path / f"p{index}.json"))
        config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": json.dumps(config)}
        workers.append((folder, subprocess.Popen([sys.executable, "-c", WORKER, str(folder)], cwd=folder, env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    results = [(folder, *proc.communicate(timeout=600), proc.returncode) for folder, proc in workers]
    for _, stdout, stderr, code in results:
        assert code == 0, stderr[-3000:]
        assert "steps 40" in stdout  # 2 epochs of 640 digits in global batches of 32
    chief, other = results[0][0], results[1][0]
    assert (chief / "out/model.keras").is_file() and (chief / "out/history.csv").is_file()
    assert not (other / "out").exists()  # the other worker trained and wrote nothing of the stage's
    import mlflow

    runs = mlflow.search_runs(experiment_names=["ebm"], filter_string="tags.`ebm.stage` = 'train'")
    assert runs["status"].tolist() == ["FINISHED"]  # one training run, logged by the chief
    assert runs["params.strategy"].tolist() == ["multi_worker"]
