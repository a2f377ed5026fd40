"""CPU kernels for the Langevin chain, built on first use.

TensorFlow runs a Langevin step as some forty ops, each a pass over memory with its own
overhead, and on a CPU that costs about as much as the convolutions. Two levels of help:

- ``chain.cc``: the whole chain of :func:`ebm.families.deep.network.build_energy_network`'s network in one op
  (:func:`langevin_chain`): every image runs all its steps (noise, forward, input-gradient,
  move) with its activations in cache, the convolutions as register-blocked implicit GEMMs, and
  the images spread over TF's intra-op threads. Used by :func:`ebm.families.deep.network.chain_energy` when
  the network has that shape, on x86 CPUs with AVX-512 or AVX2 (see :func:`native_chain_enabled`).
- ``kernels.cc``: swish with its derivative, the clipped Langevin move, and Gaussian noise
  (Philox and Box-Muller, ``random.h``) added and clipped, one pass each, for the TF-graph chain.

Same math as the TF ops (tests compare them to float tolerance; the noise to its distribution,
since the paths draw different Philox streams).

The library is compiled with the system C++ compiler against the installed TensorFlow, for
this CPU (``-march=native``), into ``$EBM_KERNEL_CACHE`` (default ``~/.cache/ebm``), once per
source, TensorFlow version and CPU: about 15 s the first time (the sources compile in parallel).
Callers fall back to TF ops, with the same results, when ``EBM_NATIVE_KERNELS=0``, when a GPU is visible (the kernels are
CPU-only), or when the build fails (no compiler; the reason is printed once).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tensorflow as tf

HERE = Path(__file__).parent
SOURCES = [HERE / "kernels.cc", HERE / "chain.cc"]
HEADERS = [HERE / "random.h", HERE / "vectors.h"]
# Tried in order: GCC >= 12 with -march=native on an AVX512-FP16 CPU trips over Eigen's FP16
# headers unless that extension is left out; older compilers do not know the flag.
FLAG_SETS = (["-mno-avx512fp16"], [])


def swish_and_derivative(h: tf.Tensor, native: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """``(h * sigmoid(h), its derivative)``; ``native=None`` uses the fused kernel if available."""
    ops = _ops(native)
    if ops is not None and h.dtype == tf.float32:
        return ops.ebm_swish(h)
    s = tf.sigmoid(h)
    return h * s, s + tf.raw_ops.SigmoidGrad(y=s, dy=h)  # s + h s (1 - s)


def langevin_move(x: tf.Tensor, grad: tf.Tensor, step_size: float, grad_clip: float,
                  native: bool | None = None) -> tf.Tensor:
    """``clip(x - step_size * clip(grad, +-grad_clip), -1, 1)``."""
    ops = _ops(native)
    if ops is not None and x.dtype == tf.float32:
        return ops.ebm_langevin_move(x, grad, step_size=float(step_size), grad_clip=float(grad_clip))
    return tf.clip_by_value(x - step_size * tf.clip_by_value(grad, -grad_clip, grad_clip), -1.0, 1.0)


def add_noise(x: tf.Tensor, seed: tf.Tensor, stddev: float, native: bool | None = None) -> tf.Tensor:
    """``clip(x + N(0, stddev^2) noise, -1, 1)`` from a stateless seed of shape (2,).

    Both paths are Box-Muller on Philox uniforms, but they draw different streams: the fused
    kernel runs Philox itself (vectorised), the TF path takes ``tf.random.stateless_uniform``.
    Each is deterministic for a given seed."""
    ops = _ops(native)
    if ops is not None and x.dtype == tf.float32:
        return ops.ebm_noisy(x, tf.cast(seed, tf.int32), stddev=float(stddev))
    return tf.clip_by_value(x + gaussian(tf.shape(x), seed, stddev, x.dtype), -1.0, 1.0)


def gaussian(shape, seed: tf.Tensor, stddev: float, dtype=tf.float32) -> tf.Tensor:
    """N(0, stddev^2) samples from a stateless seed in TF ops: Box-Muller on Philox uniforms
    (tails to 5.6 sd). Same distribution as ``tf.random.stateless_normal``, whose CPU kernel is
    scalar and cost more than the rest of a Langevin step's elementwise work."""
    n = tf.reduce_prod(shape)
    u0, u1 = tf.unstack(tf.random.stateless_uniform(tf.stack([2, (n + 1) // 2]), seed, dtype=dtype))  # [0, 1)
    radius = tf.sqrt((-2.0 * stddev**2) * tf.math.log(1.0 - u0))
    angle = (2 * math.pi) * u1
    return tf.reshape(tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], 0)[:n], shape)


def native_chain_enabled() -> bool:
    """Whether :func:`langevin_chain` runs here: the kernels are built (CPU) and either
    ``EBM_NATIVE_CHAIN=1``, or it is unset and the CPU has AVX-512 or AVX2, the vector widths the
    op is tuned and tested for (measured here, an AVX2 build runs 1.5x slower than the AVX-512
    one, a plain SSE2 build 5.7x). ``EBM_NATIVE_CHAIN=0`` switches it off."""
    switch = os.environ.get("EBM_NATIVE_CHAIN", "")
    if switch == "0" or library() is None:
        return False
    flags = _cpu_signature().split()
    return switch == "1" or "avx512f" in flags or "avx2" in flags


def kernel_path() -> str:
    """Which code draws the numbers here (they differ in the last bits): ``fused-chain`` (the
    whole-chain op), ``fused-ops`` (the fused kernels inside a TF-graph chain) or ``tf-ops``
    (the TF-op fallback). Stage runs are tagged with it (``ebm.kernels``)."""
    if native_chain_enabled():
        return "fused-chain"
    return "fused-ops" if library() is not None else "tf-ops"


def langevin_chain(x: tf.Tensor, seed: tf.Tensor, steps, conv_kernels, conv_biases, dense_kernel, dense_bias,
                   out_kernel, out_bias, step_size: float, noise: float, grad_clip: float):
    """Run ``steps`` Langevin steps of ``build_energy_network``'s energy from ``x`` (B, H, W, 1).

    The network is given by its weights: stride-2 "SAME" swish convolutions (HWIO kernels),
    flatten, a swish dense layer, a linear dense layer to E(x). Each step adds N(0, noise^2)
    (Philox keyed by ``seed[:2]``, counter by pixel pair, image and absolute step, the first being
    ``seed[2]`` when given, else 0) and clips to [-1, 1], then
    moves ``-step_size * clip(dE/dx, +-grad_clip)`` and clips again, as :class:`ebm.families.deep.sampler.LangevinSampler`.
    Returns the final states and per-step sums over the batch, (steps, 4): E, E^2, |grad|, |grad|^2."""
    ops = _ops(True)
    return ops.ebm_langevin_chain(x, tf.cast(seed, tf.int32), tf.cast(steps, tf.int32), list(conv_kernels),
                                  list(conv_biases), dense_kernel, dense_bias, out_kernel, out_bias,
                                  step_size=float(step_size), noise=float(noise), grad_clip=float(grad_clip))


def _ops(native: bool | None):
    ops = library() if native is None or native else None
    if native and ops is None:
        raise RuntimeError("native kernels requested but not available")
    return ops


@functools.cache
def library():
    """The loaded kernel library, or None when the TF-op fallback applies (see module doc)."""
    if os.environ.get("EBM_NATIVE_KERNELS", "1") == "0" or tf.config.list_physical_devices("GPU"):
        return None
    try:
        return tf.load_op_library(str(_build()))
    except (OSError, RuntimeError, subprocess.SubprocessError, tf.errors.OpError) as err:
        print(f"ebm: fused CPU kernels unavailable, using TF ops ({err})", file=sys.stderr)
        return None


def _build() -> Path:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (install g++)")
    key = hashlib.sha256()
    for part in (*(f.read_bytes() for f in SOURCES + HEADERS), tf.__version__.encode(), compiler.encode(),
                 _cpu_signature().encode()):
        key.update(part)
    cache = Path(os.environ.get("EBM_KERNEL_CACHE", Path.home() / ".cache" / "ebm"))
    target = cache / f"ebm_kernels_{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    error = "(no output)"
    for extra in FLAG_SETS:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            out = Path(tmp) / target.name
            error = _compile(compiler, extra, out)
            if error is None:
                os.replace(out, target)  # atomic: concurrent builders each write their own copy
                return target
    raise RuntimeError(f"{compiler} failed: {error}")


def _compile(compiler: str, extra: list[str], out: Path) -> str | None:
    """Build the library at ``out``; None, or the compiler's last line of error. Each source is
    compiled by its own process, all at once (one core each: about half the wall time of one
    ``g++`` call, which compiles them one after the other into the same objects), then linked."""
    flags = ["-fPIC", "-fvisibility=hidden", "-O3", "-march=native", *extra, "-fopenmp-simd", "-ffast-math", "-w",
             *tf.sysconfig.get_compile_flags()]
    objects = [out.with_name(f"{source.stem}.o") for source in SOURCES]
    jobs = [subprocess.Popen([compiler, *flags, "-c", str(source), "-o", str(obj)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for source, obj in zip(SOURCES, objects)]
    try:
        results = [(job.communicate(timeout=600)[1], job.returncode) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    for stderr, code in results:
        if code != 0:
            return _last_line(stderr)
    # linked with the same flags: -ffast-math there adds crtfastmath.o (denormals flushed to zero at load)
    done = subprocess.run([compiler, "-shared", *flags, *map(str, objects), "-o", str(out),
                           *tf.sysconfig.get_link_flags(), "-lmvec"], capture_output=True, text=True, timeout=600)
    return None if done.returncode == 0 else _last_line(done.stderr)


def _last_line(stderr: str) -> str:
    return (stderr.strip().splitlines() or ["(no output)"])[-1]


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return platform.machine() + flags
