"""How long Keras ``fit`` sits idle after its last epoch, with tf.data's autotuning on and off.

    python bench/fit_exit.py               # 6 epochs a fit, 3 rounds (about 4 minutes on 2 cores)
    python bench/fit_exit.py --epochs 10 --rounds 2

The train stage's input pipeline (the network and params of ``params.yaml``, the embedded
digits, ``ebm.families.deep.distribute.gathered``'s batches and the validation set, both through
``ebm.data.fixed_pipeline``) is fitted as the stages use it (autotuning off) and with TF's
autotuning switched back on, alternately, on one model in one process. Each fit prints its wall
time and the seconds from its last callback (``on_train_end``) to its return, which is when Keras
deletes the training iterator; medians last. Both yield the same batches, so only the idle time
differs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ebm.config import load_params
    from ebm.families.deep.runtime import configure_threads

    params = load_params(ROOT / "params.yaml")
    configure_threads(params.train)
    import keras
    import tensorflow as tf

    from ebm import data as data_lib
    from ebm.families.deep import distribute, resume
    from ebm.families.deep.train import build_model

    train, test = data_lib.load_mnist5k(params.data)
    batch = params.train.batch_size
    steps = len(train.x) // batch
    model = build_model(params, steps_per_epoch=steps)
    model.optimizer.build(model.energy_net.trainable_variables)
    ended: list[float] = []
    mark = keras.callbacks.LambdaCallback(on_train_end=lambda logs=None: ended.append(time.perf_counter()))
    idle: dict[str, list[float]] = {"autotuning on": [], "autotuning off": []}
    autotuned = tf.data.Options()
    autotuned.autotune.enabled = True
    for round_ in range(args.rounds):
        for name in idle:
            wrap = (lambda ds: ds) if name == "autotuning off" else (lambda ds: ds.with_options(autotuned))
            order = resume.epoch_order(len(train.x), batch, params.train.seed, range(args.epochs))
            data = distribute.gathered(tf.data.Dataset.from_tensor_slices(order), train.x)
            validation = data_lib.fixed_pipeline(tf.data.Dataset.from_tensor_slices(test.x).batch(512))
            start = time.perf_counter()
            model.fit(wrap(data), epochs=args.epochs, steps_per_epoch=steps, validation_data=wrap(validation),
                      callbacks=[mark], verbose=0, shuffle=False)
            done = time.perf_counter()
            idle[name].append(done - ended[-1])
            print(f"round {round_ + 1}, {name}: fit {done - start:.1f} s, idle after its last epoch "
                  f"{idle[name][-1]:.2f} s", flush=True)
    for name, values in idle.items():
        print(f"median idle, {name}: {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
