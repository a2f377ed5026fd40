"""Stage classifier: the digit classifier whose features the quality metrics use."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np

from ebm import data as data_lib
from ebm.config import Params
from ebm.pipeline.paths import ClassifierPaths


def classifier(params: Params, paths: ClassifierPaths) -> dict:
    import keras

    from ebm.classifier import train_classifier
    from ebm.tracking import stage_run

    c = params.classifier
    train = data_lib.load_split(paths.data / "train.npz")
    test = data_lib.load_split(paths.data / "test.npz")
    if (train.y < 0).any() or (test.y < 0).any():
        raise data_lib.DataError("the classifier stage needs labels: the npz source must hold y_train and y_test")
    with stage_run("classifier", params, asdict(c), paths.record, upstream=("prepare",)) as run:
        keras.utils.set_random_seed(c.seed)
        start = time.perf_counter()
        model, history = train_classifier(train.x, train.y, test.x, test.y, c.epochs, c.batch_size, c.learning_rate)
        probs = model.predict(test.x, batch_size=500, verbose=0)
        summary = {"test_accuracy": float(np.mean(np.argmax(probs, 1) == test.y)),
                   "train_accuracy": float(history["accuracy"][-1]), "seconds": time.perf_counter() - start}
        for epoch, (acc, val) in enumerate(zip(history["accuracy"], history["val_accuracy"]), start=1):
            run.metrics({"accuracy": acc, "val_accuracy": val}, step=epoch)
        paths.model.parent.mkdir(parents=True, exist_ok=True)
        model.save(paths.model)
        paths.metrics.parent.mkdir(parents=True, exist_ok=True)
        paths.metrics.write_text(json.dumps(summary, indent=2) + "\n")
        run.metrics(summary)
        run.artifact(paths.metrics)
    print(f"classifier: test accuracy {summary['test_accuracy']:.4f} in {summary['seconds']:.0f} s -> {paths.model}")
    return summary
