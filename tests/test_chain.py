"""The whole-chain CPU op (ebm/chain.cc) against the TF-graph chain it replaces."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from ebm.families.deep import native as kernels
from ebm.config import ModelConfig
from ebm.families.deep.network import build_energy_network, chain_energy, energy_fn
from ebm.families.deep.sampler import LangevinSampler, energy_and_grad

pytestmark = pytest.mark.skipif(not kernels.native_chain_enabled(), reason="whole-chain op not built here")

CONFIGS = {
    "default": ModelConfig(),
    # padded channels (24, 40, 72, 20, 8, 33 units), even and 1x1 kernels, odd sizes down to 1x1
    "odd": ModelConfig(filters=(24, 40, 72, 20, 8), kernel_sizes=(4, 3, 5, 2, 1), dense_units=33),
    "wide first layer": ModelConfig(filters=(48, 16), kernel_sizes=(3, 7), dense_units=16),
}


def network(cfg: ModelConfig, seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    net = build_energy_network(cfg)
    for layer in net.layers:  # non-zero biases, so that a dropped bias shows
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(tf.random.stateless_normal(layer.bias.shape, seed=[seed, len(layer.name)]) * 0.1)
    return net


@pytest.mark.parametrize("name", CONFIGS)
def test_one_step_moves_by_the_networks_gradient(name):
    net = network(CONFIGS[name])
    x = tf.random.stateless_uniform((5, 32, 32, 1), seed=[1, 2], minval=-0.5, maxval=0.5)
    e, g = energy_and_grad(energy_fn(net), x)
    native = chain_energy(net).native
    assert native is not None
    # step size 1, no gradient clipping, no noise: x1 = clip(x - grad)
    y, sums = native(x, tf.constant([0, 0]), 1, 1.0, 0.0, 1e9)
    np.testing.assert_allclose((x - y).numpy(), g.numpy(), rtol=1e-4, atol=1e-8 + 1e-4 * float(tf.reduce_max(tf.abs(g))))
    norms = tf.norm(tf.reshape(g, (5, -1)), axis=1)
    expected = [tf.reduce_sum(e), tf.reduce_sum(e * e), tf.reduce_sum(norms), tf.reduce_sum(norms**2)]
    np.testing.assert_allclose(sums.numpy()[0], [float(v) for v in expected], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", CONFIGS)
def test_native_chain_matches_the_graph_chain_without_noise(name):
    net = network(CONFIGS[name], seed=2)
    fast = chain_energy(net)
    x0 = tf.random.stateless_uniform((6, 32, 32, 1), seed=[3, 4], minval=-1, maxval=1)
    sampler = LangevinSampler(12, 10.0, 0.0, 0.03)
    a, trace_a = sampler.run(fast, x0, trace=True)
    b, trace_b = sampler.run(fast._replace(native=None), x0, trace=True)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    np.testing.assert_allclose(trace_a.numpy(), trace_b.numpy(), rtol=1e-4, atol=1e-6)
    assert float(tf.reduce_mean(tf.abs(a - x0))) > 1e-3  # the chains moved


def test_noise_is_seeded_gaussian_and_independent_across_pixels_images_and_steps():
    net = network(ModelConfig(filters=(16,), kernel_sizes=(3,), dense_units=16))
    for w in net.weights:
        w.assign(tf.zeros_like(w))  # a flat energy: the chain is the noise alone
    native = chain_energy(net).native
    x = tf.zeros((64, 32, 32, 1))
    seed = tf.constant([5, 6])
    one, _ = native(x, seed, 1, 10.0, 0.01, 0.03)
    z = one.numpy().reshape(64, -1) / 0.01
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    assert abs(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]) < 0.02  # neighbours
    assert abs(np.corrcoef(z[:, :512].ravel(), z[:, 512:].ravel())[0, 1]) < 0.02  # cos and sin of one draw
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]) < 0.02  # images
    two, _ = native(x, seed, 2, 10.0, 0.01, 0.03)
    step2 = two.numpy().reshape(64, -1) / 0.01 - z
    assert abs(np.corrcoef(z.ravel(), step2.ravel())[0, 1]) < 0.02  # steps
    assert abs(step2.std() - 1) < 0.02
    np.testing.assert_array_equal(one.numpy(), native(x, seed, 1, 10.0, 0.01, 0.03)[0].numpy())
    other = native(x, tf.constant([5, 7]), 1, 10.0, 0.01, 0.03)[0].numpy()
    assert abs(np.corrcoef(one.numpy().ravel(), other.ravel())[0, 1]) < 0.02
    edge = native(tf.fill((4, 32, 32, 1), 0.999), seed, 1, 10.0, 0.01, 0.03)[0].numpy()
    assert edge.max() == 1.0 and edge.min() < 0.999  # clipped to the unit range


def test_bad_inputs_are_named():
    net = network(ModelConfig(filters=(16, 16), kernel_sizes=(3, 3), dense_units=16))
    convs = [net.get_layer("conv0"), net.get_layer("conv1")]
    dense, out = net.get_layer("dense"), net.get_layer("energy")

    def call(x=tf.zeros((2, 32, 32, 1)), seed=tf.constant([1, 2]), dense_kernel=dense.kernel):
        return kernels.langevin_chain(x, seed, 2, [c.kernel for c in convs], [c.bias for c in convs], dense_kernel,
                                      dense.bias, out.kernel, out.bias, 10.0, 0.005, 0.03)

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"seed must have 2 elements \(key\) or 3"):
        call(seed=tf.constant([1, 2, 3, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"state must be \(batch, height, width, 1\)"):
        call(x=tf.zeros((2, 32, 32, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="dense kernel must be"):
        call(x=tf.zeros((2, 28, 28, 1)))  # the network was built for 32 x 32


def test_unsupported_networks_and_the_switch_fall_back_to_the_graph_chain(monkeypatch):
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)  # not swish
    h = keras.layers.Dense(1)(keras.layers.Dense(8, activation="swish")(keras.layers.Flatten()(h)))
    assert chain_energy(keras.Model(inputs, h)).native is None
    net = network(ModelConfig(filters=(8,), kernel_sizes=(3,), dense_units=8))
    assert chain_energy(net).native is not None
    monkeypatch.setenv("EBM_NATIVE_CHAIN", "0")
    assert chain_energy(net).native is None
    # automatic only where it is tuned (AVX-512, AVX2); EBM_NATIVE_CHAIN=1 forces it
    monkeypatch.delenv("EBM_NATIVE_CHAIN")
    monkeypatch.setattr(kernels, "_cpu_signature", lambda: "x86_64flags : fpu sse sse2 avx2 fma")
    assert kernels.native_chain_enabled()
    monkeypatch.setattr(kernels, "_cpu_signature", lambda: "aarch64Features : fp asimd")
    assert not kernels.native_chain_enabled()
    monkeypatch.setenv("EBM_NATIVE_CHAIN", "1")
    assert kernels.native_chain_enabled()


def test_a_diverging_chain_surfaces_as_non_finite_energies():
    """The op is built with -ffast-math, under which clamping swallows NaN (the states stay in
    [-1, 1]); the energies it reports, and the network's energies of its states, must not."""
    net = network(ModelConfig(filters=(8, 16), kernel_sizes=(3, 3), dense_units=8))
    kernel = net.get_layer("dense").kernel
    poisoned = kernel.numpy()
    poisoned[0, 0] = np.nan
    kernel.assign(poisoned)
    x0 = tf.random.stateless_uniform((3, 32, 32, 1), seed=[1, 2], minval=-1, maxval=1)
    x, sums = LangevinSampler(5, 10.0, 0.005, 0.03).run(chain_energy(net), x0, trace=True)
    assert not np.isfinite(sums.numpy()[:, 0]).any()  # every step's energy sum is NaN
    assert not np.isfinite(energy_fn(net)(x).numpy()).any()  # and so is E of what the chain returns
