"""Stage classifier: the digit classifier whose features and confidence the quality metrics use.

Besides test accuracy it records the confident share (p >= 0.9) on real test digits and on
the same digits broken on purpose (:mod:`ebm.corruptions`), so a reader sees how strict the
judge is: ``confident_real`` high, ``confident_<broken set>`` well below it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import numpy as np

from ebm import data as data_lib
from ebm.config import Params
from ebm.io import save_model_atomic, write_text_atomic
from ebm.pipeline.paths import ClassifierPaths


def classifier(params: Params, paths: ClassifierPaths) -> dict:
    use_onednn(params.classifier.onednn)  # before TensorFlow loads
    import keras

    from ebm import metrics
    from ebm.classifier import predict_probs, train_classifier
    from ebm.corruptions import broken_sets
    from ebm.tracking import stage_run

    c = params.classifier
    train = data_lib.load_split(paths.data / "train.npz")
    test = data_lib.load_split(paths.data / "test.npz")
    with stage_run("classifier", params, asdict(c), paths.record, upstream=("prepare",)) as run:
        run.datasets(data_lib.input_datasets(params.data, paths.data, training="train", validation="test"))
        keras.utils.set_random_seed(c.seed)
        start = time.perf_counter()
        model, history = train_classifier(train.x, train.y, test.x, test.y, c.epochs, c.batch_size, c.learning_rate,
                                          members=c.members, outlier_share=c.outlier_share,
                                          calibration_fraction=c.calibration_fraction, seed=c.seed)
        seconds = time.perf_counter() - start
        probs = predict_probs(model, test.x)
        summary = {"test_accuracy": float(np.mean(np.argmax(probs, 1) == test.y)),
                   "temperature": history["temperature"], "seconds": seconds,
                   "confident_real": metrics.confident_share(probs)}
        if (onednn := onednn_enabled()) is not None:
            summary["onednn"] = int(onednn)
        for name, broken in broken_sets(test.x, test.y, seed=c.seed).items():
            summary[f"confident_{name.replace(' ', '_')}"] = metrics.confident_share(predict_probs(model, broken))
        for epoch, (loss, val) in enumerate(zip(history["loss"], history["val_loss"]), start=1):
            run.metrics({"loss": loss, "val_loss": val}, step=epoch)
        save_model_atomic(model, paths.model)
        write_text_atomic(paths.metrics, json.dumps(summary, indent=2) + "\n")
        run.metrics(summary)
        run.artifact(paths.metrics)
    print(f"classifier: test accuracy {summary['test_accuracy']:.4f} in {summary['seconds']:.0f} s -> {paths.model}")
    return summary


def use_onednn(on: bool) -> None:
    """Ask TensorFlow for its oneDNN kernels (``on``) or its own ones through
    ``TF_ENABLE_ONEDNN_OPTS``, unless the environment already sets it. TF reads it once, when it
    loads: call this before the first ``import tensorflow`` (a process that has loaded TF keeps
    what it has)."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1" if on else "0")


def onednn_enabled() -> bool | None:
    """Whether this process's TensorFlow runs its oneDNN kernels (None when TF cannot say)."""
    try:  # a private TF function: a build without it must not fail the stage after training
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None
