"""Speed and memory of CD training and Langevin generation, side by side in one run.

    python bench/bench.py            # full table (about 4 minutes on 2 CPU cores)
    python bench/bench.py --steps 4  # fewer timed steps

Each variant runs in its own process (thread settings must be fixed before TensorFlow starts),
times ``--steps`` training steps after ``--warmup`` steps (batch 128, 60 Langevin steps of size
10, noise 0.005) and reports the median. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH, LANGEVIN_STEPS = 128, 60

# name -> (what it is, model overrides, train overrides)
VARIANTS = {
    "reference": ("reference chapter, eager (run_eagerly, Python-list buffer)", None, None),
    "ebm_plain": ("ebm, compiled graph, plain strided conv, one chain", {"fast_first_conv": False},
                  {"sampler_splits": 1}),
    "ebm": ("ebm, defaults (space-to-depth first conv, automatic sub-chains/threads)", {}, {}),
}


def _batch_times(model, data, n_batches: int) -> list[float]:
    import keras

    stamps: list[float] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=n_batches, verbose=0, shuffle=False, callbacks=[Stamp()])
    return [b - a for a, b in zip([start] + stamps[:-1], stamps)]


def worker(variant: str, steps: int, warmup: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ebm.config import ModelConfig, Params, SamplerConfig, TrainConfig
    from ebm.runtime import configure_threads

    _, model_over, train_over = VARIANTS[variant]
    params = Params(
        model=ModelConfig(**(model_over or {})),
        train=TrainConfig(batch_size=BATCH, sampler=SamplerConfig(steps=LANGEVIN_STEPS), **(train_over or {})),
    )
    threads = configure_threads(params.train) if variant != "reference" else {}
    import numpy as np
    import tensorflow as tf

    images = np.random.default_rng(0).uniform(-1, 1, (BATCH * (steps + warmup), 32, 32, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(images).batch(BATCH, drop_remainder=True).repeat()
    if variant == "reference":
        sys.path.insert(0, str(HERE))
        from reference import build_reference

        model = build_reference()
    else:
        from ebm.pipeline import build_model

        model = build_model(params)
    times = _batch_times(model, data, steps + warmup)[warmup:]
    out = {"variant": variant, "step_s": statistics.median(times), "step_times": times, **threads}
    if variant == "ebm":
        out.update(generation(params))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def generation(params) -> dict:
    """Seconds to draw 256 samples with 1000 Langevin steps from noise (after a short warm-up)."""
    import dataclasses

    import tensorflow as tf

    from ebm.config import SamplerConfig
    from ebm.network import build_energy_network, energy_fn
    from ebm.pipeline import generation_sampler

    params = dataclasses.replace(params, sampler=SamplerConfig(steps=1000))
    energy = energy_fn(build_energy_network(params.model))
    sampler = generation_sampler(params)
    x0 = tf.random.uniform((256, 32, 32, 1), -1, 1)
    sampler.run(energy, x0[:2], 2)  # trace eagerly once; chain() compiles its own graph
    start = time.perf_counter()
    sampler.chain(energy, x0)
    return {"generate_256x1000_s": time.perf_counter() - start}


def forward_flops_per_image() -> int:
    """Multiply-adds x 2 of one forward pass of the default energy network on a 32x32 image."""
    from ebm.config import ModelConfig

    cfg = ModelConfig()
    size, channels, flops = 32, 1, 0
    for filters, k in zip(cfg.filters, cfg.kernel_sizes):
        size = (size + 1) // 2
        flops += 2 * size * size * k * k * channels * filters
        channels = filters
    flops += 2 * size * size * channels * cfg.dense_units + 2 * cfg.dense_units
    return flops


def step_flops() -> float:
    """A CD step: 60 Langevin steps (forward + input-gradient, ~2 forwards) on the batch, then a
    forward and backward (~3 forwards) on real + fake images."""
    return forward_flops_per_image() * (2 * LANGEVIN_STEPS * BATCH + 3 * 2 * BATCH)


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    a = tf.random.uniform((n, n))
    b = tf.random.uniform((n, n))
    mm = tf.function(lambda a, b: tf.matmul(a, b))
    mm(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, caches)")
    parser.add_argument("--reference-steps", type=int, default=4, help="timed steps of the slow eager reference")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        steps = args.reference_steps if args.worker == "reference" else args.steps
        print(json.dumps(worker(args.worker, steps, args.warmup)))
        return

    results = {}
    for name in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--reference-steps", str(args.reference_steps)],
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"variant {name} failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    gflops = matmul_gflops()
    flops = step_flops()
    floor = flops / (gflops * 1e9)
    ref = results["reference"]["step_s"]
    print(f"{'variant':<11} {'s/step':>8} {'x ref':>7} {'GFLOP/s':>8}  what")
    for name, (what, _, _) in VARIANTS.items():
        s = results[name]["step_s"]
        print(f"{name:<11} {s:8.3f} {ref / s:7.1f} {flops / s / 1e9:8.1f}  {what}")
    fast = results["ebm"]
    print(f"threads (ebm): intra-op {fast.get('intra_op')}, inter-op {fast.get('inter_op')}, "
          f"sub-chains {fast.get('sampler_splits')}")
    print(f"generation 256 x 1000 steps: {fast['generate_256x1000_s']:.2f} s")
    print(f"machine: {os.cpu_count()} cores, fp32 matmul {gflops:.0f} GFLOP/s; a CD step is {flops / 1e9:.1f} GFLOP, "
          f"floor {floor:.3f} s/step; ebm is at {fast['step_s'] / floor:.1f}x the floor")
    print(f"peak RSS (ebm worker): {fast['peak_rss_mb']:.0f} MB")
    summary = {
        "train_step_s": round(fast["step_s"], 4),
        "train_step_plain_s": round(results["ebm_plain"]["step_s"], 4),
        "reference_step_s": round(ref, 4),
        "speedup": round(ref / fast["step_s"], 2),
        "generate_256x1000_s": round(fast["generate_256x1000_s"], 3),
        "matmul_gflops": round(gflops, 1),
        "step_gflop": round(flops / 1e9, 2),
        "floor_step_s": round(floor, 4),
        "peak_rss_mb": round(fast["peak_rss_mb"], 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
