"""Speed and memory of CD training and Langevin generation, side by side in one run.

    python bench/bench.py              # full table (about 4 minutes on 2 CPU cores)
    python bench/bench.py --rounds 3   # fewer timed rounds

Each variant runs in its own process (thread settings must be fixed before TensorFlow starts),
builds its model, runs ``--warmup`` untimed training steps (batch 128, 60 Langevin steps of size
10, noise 0.005) and waits. The driver then times the variants *interleaved*: each round runs
one step of every variant in turn (``--reference-every`` rounds for the slow eager reference),
so a shared or throttled host slows all of them alike and the ratios stay fair. Medians are
reported. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH, LANGEVIN_STEPS = 128, 60

# name -> (what it is, model overrides, train overrides, environment)
VARIANTS = {
    "reference": ("reference chapter, eager (run_eagerly, Python-list buffer)", None, None, {}),
    "ebm_plain": ("ebm as a plain compiled TF graph: strided convs, one chain, TF ops only",
                  {"fast_first_conv": False}, {"sampler_splits": 1}, {"EBM_NATIVE_KERNELS": "0"}),
    "ebm_graph": ("ebm's TF-graph chain: s2d first conv, block state, fused elementwise kernels, 2 sub-chains",
                  {}, {}, {"EBM_NATIVE_CHAIN": "0"}),
    "ebm": ("ebm, defaults: the whole chain in one CPU op (ebm/chain.cc), CD update in TF", {}, {}, {}),
}
GENERATION = ("ebm_graph", "ebm")  # variants whose 256 x 1000 generation is timed


def worker(variant: str, warmup: int) -> None:
    """Build the variant, warm up, then serve the driver: ``step`` runs one timed training step
    and answers its seconds; ``finish`` answers the closing figures (generation for ``ebm``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ebm.config import ModelConfig, Params, SamplerConfig, TrainConfig
    from ebm.families.deep.runtime import configure_threads

    _, model_over, train_over, _ = VARIANTS[variant]
    params = Params(
        model=ModelConfig(**(model_over or {})),
        train=TrainConfig(batch_size=BATCH, sampler=SamplerConfig(steps=LANGEVIN_STEPS), **(train_over or {})),
    )
    threads = configure_threads(params.train) if variant != "reference" else {}
    import numpy as np
    import tensorflow as tf

    images = np.random.default_rng(0).uniform(-1, 1, (BATCH * 8, 32, 32, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(images).batch(BATCH, drop_remainder=True).repeat()
    if variant == "reference":
        sys.path.insert(0, str(HERE))
        from reference import build_reference

        model = build_reference()
    else:
        from ebm.families.deep.train import build_model

        model = build_model(params)
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)  # builds, traces, fills caches
    batches = iter(data)
    print(json.dumps({"ready": variant, **threads}), flush=True)
    for command in sys.stdin:
        if command.strip() == "step":
            start = time.perf_counter()
            logs = model.train_function(batches)
            float(logs["loss"])  # wait for the step to finish
            print(json.dumps({"step_s": time.perf_counter() - start}), flush=True)
        elif command.strip() == "finish":
            out = generation(params) if variant in GENERATION else {}
            out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps(out), flush=True)
            return


class Worker:
    """One variant's process, driven line by line over its stdin/stdout."""

    def __init__(self, variant: str, warmup: int):
        self.variant = variant
        self.log = tempfile.TemporaryFile("w+")  # TF's start-up chatter; shown if the worker dies
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", variant, "--warmup", str(warmup)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, bufsize=1, env={**os.environ, **VARIANTS[variant][3]})
        self.info = self._read()
        self.times: list[float] = []

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        while line and not line.startswith("{"):
            line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            sys.exit(f"variant {self.variant} failed:\n{self.log.read()[-3000:]}")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        return self._read()

    def step(self) -> None:
        self.times.append(self.ask("step")["step_s"])

    def finish(self) -> dict:
        out = self.ask("finish")
        self.proc.wait()
        return out


def generation(params) -> dict:
    """Seconds to draw 256 samples with 1000 Langevin steps from noise (after a short warm-up)."""
    import dataclasses

    import tensorflow as tf

    from ebm.config import SamplerConfig
    from ebm.families.deep.network import build_energy_network, chain_energy
    from ebm.families.deep.family import generation_sampler

    params = dataclasses.replace(params, sampler=SamplerConfig(steps=1000))
    energy = chain_energy(build_energy_network(params.model))
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


def monitor_search(rounds: int = 5) -> dict:
    """The training monitor's nearest-neighbour search (``ebm.metrics.nearest``: 500 buffer
    negatives against 4,500 training digits of 32 x 32, twice every ``train.monitor_every``
    epochs with persistent chains) against the ``scipy`` ``cdist`` search it replaced,
    interleaved; medians in seconds."""
    import numpy as np
    from scipy.spatial.distance import cdist

    from ebm.metrics import nearest

    rng = np.random.default_rng(0)
    queries = rng.uniform(-1, 1, (500, 32 * 32)).astype(np.float32)
    reference = rng.uniform(-1, 1, (4500, 32 * 32)).astype(np.float32)
    times = {"matmul": [], "cdist": []}
    for _ in range(rounds):
        start = time.perf_counter()
        found = nearest(queries, reference)[1]
        times["matmul"].append(time.perf_counter() - start)
        start = time.perf_counter()
        brute = cdist(queries, reference).argmin(1)
        times["cdist"].append(time.perf_counter() - start)
        assert np.array_equal(found, brute), "the two searches disagree"
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (one step of each ebm variant each)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, caches)")
    parser.add_argument("--reference-every", type=int, default=2,
                        help="time the slow eager reference every N rounds")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.warmup)
        return

    workers = {name: Worker(name, args.warmup) for name in VARIANTS}  # started one after another
    for r in range(args.rounds):
        for name, w in workers.items():
            if name != "reference" or r % args.reference_every == 0:
                w.step()
    closing = {name: w.finish() for name, w in workers.items()}
    search = monitor_search()
    gflops = matmul_gflops()
    flops = step_flops()
    floor = flops / (gflops * 1e9)
    median = {name: statistics.median(w.times) for name, w in workers.items()}
    ref = median["reference"]
    print(f"{'variant':<11} {'s/step':>8} {'x ref':>7} {'GFLOP/s':>8} {'steps':>6}  what")
    for name, (what, *_) in VARIANTS.items():
        s = median[name]
        print(f"{name:<11} {s:8.3f} {ref / s:7.1f} {flops / s / 1e9:8.1f} {len(workers[name].times):6d}  {what}")
    print(f"interleaved: {args.rounds} rounds; the reference timed every {args.reference_every}. "
          f"ebm step times {min(workers['ebm'].times):.3f}-{max(workers['ebm'].times):.3f} s")
    for name in ("ebm_graph", "ebm"):
        info = workers[name].info
        chain = "whole-chain op" if info.get("native_chain") else "TF graph"
        print(f"threads ({name}): {chain}, intra-op {info.get('intra_op')}, "
              f"inter-op {info.get('inter_op')}, sub-chains {info.get('sampler_splits')}")
    fast = closing["ebm"]
    print("generation 256 x 1000 steps: " + ", ".join(f"{name} {closing[name]['generate_256x1000_s']:.2f} s"
                                                      for name in GENERATION))
    print(f"machine: {os.cpu_count()} cores, fp32 matmul {gflops:.0f} GFLOP/s; a CD step is {flops / 1e9:.1f} GFLOP, "
          f"floor {floor:.3f} s/step; ebm is at {median['ebm'] / floor:.1f}x the floor")
    print(f"peak RSS (ebm worker): {fast['peak_rss_mb']:.0f} MB")
    print(f"monitor nearest-neighbour search (500 x 4,500 digits): {search['matmul']:.3f} s "
          f"(cdist {search['cdist']:.3f} s, {search['cdist'] / search['matmul']:.1f}x)")
    summary = {
        "train_step_s": round(median["ebm"], 4),
        "train_step_plain_s": round(median["ebm_plain"], 4),
        "train_step_graph_s": round(median["ebm_graph"], 4),
        "reference_step_s": round(ref, 4),
        "speedup": round(ref / median["ebm"], 2),
        "speedup_plain": round(ref / median["ebm_plain"], 2),
        "speedup_graph": round(ref / median["ebm_graph"], 2),
        "generate_256x1000_s": round(fast["generate_256x1000_s"], 3),
        "generate_256x1000_graph_s": round(closing["ebm_graph"]["generate_256x1000_s"], 3),
        "matmul_gflops": round(gflops, 1),
        "step_gflop": round(flops / 1e9, 2),
        "floor_step_s": round(floor, 4),
        "peak_rss_mb": round(fast["peak_rss_mb"], 1),
        "monitor_search_s": round(search["matmul"], 4),
        "monitor_search_cdist_s": round(search["cdist"], 4),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
