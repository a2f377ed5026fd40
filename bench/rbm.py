"""RBM and DBN benchmarks: ours against scikit-learn, and AIS likelihoods against the literature.

    python bench/rbm.py                 # both parts (about 20 minutes on 2 CPU cores)
    python bench/rbm.py --part sklearn  # (a) only: a few minutes
    python bench/rbm.py --part ais      # (b) only

(a) scikit-learn's ``BernoulliRBM`` (PCD with one Gibbs sweep, constant learning rate, no
momentum or weight decay) and ours with the same settings, on the same binarised digits, epoch
by epoch in one process: median seconds per epoch and the test pseudo-log-likelihood after each
epoch, both models scored by the same function with the same flipped bits (scikit-learn's own
``score_samples`` is shown too; it flips its own random bits).

(b) Average test log-probability (nats) by AIS for RBMs with 500 hidden units trained by CD-1,
CD-3, CD-25 and PCD-1, and a two-layer DBN (lower bound), next to Salakhutdinov & Murray (ICML
2008), whose figures are for 60,000 training digits, many more epochs and the standard
stochastic binarisation.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

PUBLISHED = {"CD-1": -125.53, "CD-3": -105.50, "CD-25": -86.34, "DBN (2 layers)": -86.22}  # S&M 2008, tables 1-2


def load_binary(seed: int = 0):
    from ebm.config import DataConfig
    from ebm.data import load_source
    from ebm.families.rbm.data import binarize

    train, test = load_source(DataConfig())  # the pipeline's default split of the 5,000 bundled digits
    return binarize(train.x, "stochastic", seed), binarize(test.x, "stochastic", seed + 10_000)


def sklearn_vs_ours(v_train, v_test, epochs: int, hidden: int, lr: float, batch: int) -> dict:
    import tensorflow as tf
    from sklearn.neural_network import BernoulliRBM

    from ebm.families.rbm.model import RBM, pseudo_likelihood, sgd

    flips = np.random.default_rng(1).integers(0, v_test.shape[1], len(v_test))

    def pl(w, b, c):
        return float(np.mean(pseudo_likelihood(tf.constant(v_test), tf.constant(w, tf.float32),
                                               tf.constant(b, tf.float32), tf.constant(c, tf.float32), flips)))

    sk = BernoulliRBM(n_components=hidden, learning_rate=lr, batch_size=batch, n_iter=1, random_state=0)
    ours = RBM(v_train.shape[1], hidden, cd_k=1, persistent=True, batch_size=batch, seed=0)
    ours.compile(optimizer=sgd(lr, 0.0, 0.0))
    ds = (tf.data.Dataset.from_tensor_slices(v_train).shuffle(len(v_train), seed=0)
          .batch(batch, drop_remainder=True).prefetch(2))
    rows, rng = [], np.random.default_rng(0)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(v_train))
        start = time.perf_counter()
        for i in range(0, len(v_train) - batch + 1, batch):  # partial_fit = one PCD-1 update per batch
            sk.partial_fit(v_train[order[i:i + batch]])
        sk_s = time.perf_counter() - start
        start = time.perf_counter()
        ours.fit(ds, epochs=1, verbose=0, shuffle=False)
        ours_s = time.perf_counter() - start
        rows.append({"epoch": epoch, "sklearn_s": sk_s, "ours_s": ours_s,
                     "sklearn_pl": pl(sk.components_.T, sk.intercept_visible_, sk.intercept_hidden_),
                     "ours_pl": pl(ours.w.numpy(), ours.b.numpy(), ours.c.numpy()),
                     "sklearn_own_score": float(np.mean(sk.score_samples(v_test)))})
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    return {"epochs": epochs, "hidden": hidden, "learning_rate": lr, "batch_size": batch,
            "sklearn_s_per_epoch": statistics.median(r["sklearn_s"] for r in rows[1:] or rows),
            "ours_s_per_epoch": statistics.median(r["ours_s"] for r in rows[1:] or rows),
            "sklearn_pl": rows[-1]["sklearn_pl"], "ours_pl": rows[-1]["ours_pl"],
            "sklearn_own_score": rows[-1]["sklearn_own_score"], "per_epoch": rows}


def ais_table(v_train, v_test, epochs: int, runs: int, betas: int) -> dict:
    from ebm.config import DBNConfig, ModelConfig, Params, RBMConfig
    from ebm.families.rbm.family import fit_model
    from ebm.families.rbm.ais import ais_log_partition, average_log_likelihood, base_rate_biases

    settings = {"CD-1": dict(cd_k=1, persistent=False), "CD-3": dict(cd_k=3, persistent=False),
                "CD-25": dict(cd_k=25, persistent=False), "PCD-1 (our default)": dict(cd_k=1, persistent=True),
                "DBN (2 layers)": None}
    out = {}
    for name, overrides in settings.items():
        rbm = RBMConfig(epochs=epochs, **(overrides or {}))
        family = "dbn" if overrides is None else "rbm"
        params = Params(model=ModelConfig(family=family), rbm=rbm, dbn=DBNConfig(epochs=epochs))
        start = time.perf_counter()
        model = fit_model(params, v_train, v_test)
        train_s = time.perf_counter() - start
        top = model.top if family == "dbn" else model
        if family == "dbn":
            q = model.bottom.hidden_probs(v_train).numpy()
            base = (np.random.default_rng(0).uniform(size=q.shape) < q).astype(np.float32)
        else:
            base = v_train
        start = time.perf_counter()
        ais = ais_log_partition(top.w.numpy(), top.b.numpy(), top.c.numpy(), base_rate_biases(base), runs, betas)
        ais_s = time.perf_counter() - start
        if family == "dbn":
            test_ll = float(np.mean(model.log_likelihood_bound(v_test, ais.log_z, samples=10)))
        else:
            test_ll = average_log_likelihood(model.visible_energy(v_test), ais.log_z)
        out[name] = {"test_loglik": test_ll, "log_z": ais.log_z, "log_z_se": ais.log_z_se, "train_s": train_s,
                     "ais_s": ais_s, "published": PUBLISHED.get(name)}
        print(f"{name}: test log-likelihood {test_ll:.2f} nats (log Z {ais.log_z:.2f} +- {ais.log_z_se:.3f} se); "
              f"train {train_s:.0f} s, AIS {ais_s:.0f} s; published {PUBLISHED.get(name)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "sklearn", "ais"), default="all")
    parser.add_argument("--epochs", type=int, default=20, help="(a) epochs (default %(default)s)")
    parser.add_argument("--ais-epochs", type=int, default=50, help="(b) epochs per model (default %(default)s)")
    parser.add_argument("--ais-runs", type=int, default=100)
    parser.add_argument("--ais-betas", type=int, default=14500)
    args = parser.parse_args()
    v_train, v_test = load_binary()
    print(f"data: {len(v_train)} train / {len(v_test)} test digits, 784 binary pixels (stochastic binarisation)")
    result = {}
    if args.part in ("all", "sklearn"):
        result["sklearn"] = sklearn_vs_ours(v_train, v_test, args.epochs, hidden=500, lr=0.05, batch=100)
        r = result["sklearn"]
        print(f"\n| | s / epoch | test pseudo-log-likelihood after {r['epochs']} epochs |\n|---|---:|---:|\n"
              f"| scikit-learn BernoulliRBM | {r['sklearn_s_per_epoch']:.2f} | {r['sklearn_pl']:.2f} "
              f"(its own score_samples: {r['sklearn_own_score']:.2f}) |\n"
              f"| ebm RBM | {r['ours_s_per_epoch']:.2f} | {r['ours_pl']:.2f} |\n"
              f"speed ratio (sklearn / ours): {r['sklearn_s_per_epoch'] / r['ours_s_per_epoch']:.2f}x\n")
    if args.part in ("all", "ais"):
        result["ais"] = ais_table(v_train, v_test, args.ais_epochs, args.ais_runs, args.ais_betas)
        print("\n| model | ours: test log-likelihood (nats) | Salakhutdinov & Murray 2008 |\n|---|---:|---:|")
        for name, r in result["ais"].items():
            print(f"| {name} | {r['test_loglik']:.2f} | {r['published'] if r['published'] else '-'} |")
    print(json.dumps(result, default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else str(o)))


if __name__ == "__main__":
    main()
