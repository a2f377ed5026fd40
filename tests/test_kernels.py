import os
import platform
import shutil

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from ebm.families.deep import native as kernels

# the fused kernels are absent with EBM_NATIVE_KERNELS=0, on a GPU, or without a compiler
needs_library = pytest.mark.skipif(kernels.library() is None, reason="fused kernels not built here (EBM_NATIVE_KERNELS=0, "
                                   "a GPU, or no compiler): the TF-op path runs instead")


@pytest.fixture
def fresh_library():
    kernels.library.cache_clear()
    yield
    kernels.library.cache_clear()


def test_kernels_build_here():
    """Where a compiler exists the fused kernels must build, so the tests below compare them."""
    if platform.system() != "Linux" or not shutil.which("g++"):
        pytest.skip("no g++ on this platform: the TF-op path is the only one")
    if os.environ.get("EBM_NATIVE_KERNELS") == "0" or tf.config.list_physical_devices("GPU"):
        pytest.skip("kernels switched off (EBM_NATIVE_KERNELS=0) or a GPU is visible")
    assert kernels.library() is not None


@needs_library
def test_fused_swish_matches_tf_ops():
    h = tf.concat([tf.random.stateless_normal((4, 8, 8, 16), seed=[1, 2]) * 4.0,
                   tf.constant([-200.0, -80.0, -1.0, 0.0, 1e-30, 1.0, 80.0, 200.0])[None, None, None, :8] +
                   tf.zeros((4, 8, 8, 8))], axis=-1)
    a_ref, d_ref = kernels.swish_and_derivative(h, native=False)
    a, d = kernels.swish_and_derivative(h, native=True)
    np.testing.assert_allclose(a.numpy(), a_ref.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d.numpy(), d_ref.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d.numpy()[0, 0, 0, 16:], [0.0, 0.0, 0.0723, 0.5, 0.5, 0.9277, 1.0, 1.0], atol=1e-4)
    assert np.isnan(kernels.swish_and_derivative(tf.constant([np.nan]), native=True)[0].numpy()).all()


@needs_library
def test_fused_langevin_move_matches_tf_ops():
    x = tf.random.stateless_uniform((8, 16, 16, 4), seed=[3, 4], minval=-1, maxval=1)
    g = tf.random.stateless_normal((8, 16, 16, 4), seed=[5, 6]) * 0.05
    ref = kernels.langevin_move(x, g, 10.0, 0.03, native=False)
    out = kernels.langevin_move(x, g, 10.0, 0.03, native=True)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-6)
    assert float(tf.reduce_max(tf.abs(out - x))) == pytest.approx(0.3, abs=1e-6)  # 10 x clip 0.03
    with pytest.raises(tf.errors.InvalidArgumentError, match="shapes differ"):
        kernels.langevin_move(x, g[:4], 10.0, 0.03, native=True)


def test_switched_off_or_failing_build_falls_back_to_tf_ops(fresh_library, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EBM_NATIVE_KERNELS", "0")
    assert kernels.library() is None
    kernels.library.cache_clear()
    monkeypatch.delenv("EBM_NATIVE_KERNELS")
    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setenv("EBM_KERNEL_CACHE", str(tmp_path))
    assert kernels.library() is None
    assert "using TF ops" in capsys.readouterr().err
    h = tf.constant([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(kernels.swish_and_derivative(h)[0].numpy(), (h * tf.sigmoid(h)).numpy(), atol=1e-7)
    with pytest.raises(RuntimeError, match="not available"):
        kernels.swish_and_derivative(h, native=True)


@needs_library
@pytest.mark.parametrize("n", [2 * 64 * 16 * 16 * 4, 301 * 333])  # even and odd element counts
def test_fused_noise_is_seeded_gaussian_like_the_tf_path(n):
    x = tf.zeros((n,))
    seed = tf.constant([7, 8])
    fused = kernels.add_noise(x, seed, 0.01, native=True).numpy()
    z = fused / 0.01
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(stats.kurtosis(z)) < 0.05
    half = (n + 1) // 2
    for a, b in ((z[:-1], z[1:]), (z[: n - half], z[half:])):  # neighbours; the cos/sin pair of one draw
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    tf_path = kernels.add_noise(x, seed, 0.01, native=False).numpy()
    assert stats.ks_2samp(fused, tf_path).pvalue > 1e-3  # same distribution, another stream
    np.testing.assert_array_equal(fused, kernels.add_noise(x, seed, 0.01, native=True).numpy())
    other = kernels.add_noise(x, tf.constant([7, 9]), 0.01, native=True).numpy()
    assert abs(np.corrcoef(fused, other)[0, 1]) < 0.01
    edge = kernels.add_noise(tf.fill((n,), 0.999), seed, 0.01, native=True).numpy()
    assert edge.max() == 1.0 and edge.min() < 0.999  # clipped to the unit range
    with pytest.raises(tf.errors.InvalidArgumentError, match="seed must have 2 elements"):
        kernels.add_noise(x, tf.constant([1, 2, 3]), 0.01, native=True)
