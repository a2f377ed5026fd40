import keras
import numpy as np
import pytest
import tensorflow as tf

from ebm.config import ModelConfig
from ebm.errors import ModelFileError
from ebm.families import load_model
from ebm.families.deep.network import (build_energy_network, chain_energy, energy_fn, portable_network,
                                      with_space_to_depth)
from ebm.families.deep.sampler import LangevinSampler, energy_and_grad


@pytest.mark.parametrize("kernel", [2, 3, 4, 5, 6, 7])
def test_space_to_depth_conv_equals_strided_conv(kernel):
    keras.utils.set_random_seed(0)
    fast = build_energy_network(ModelConfig(kernel_sizes=(kernel, 3, 3, 3), fast_first_conv=True))
    plain = with_space_to_depth(fast, False)
    x = tf.random.stateless_uniform((5, 32, 32, 1), seed=[1, 2], minval=-1, maxval=1)
    np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)
    layer = fast.get_layer("conv0")
    ref = tf.nn.conv2d(x, layer.kernel, strides=2, padding="SAME")
    alt = tf.nn.conv2d(tf.nn.space_to_depth(x, 2), layer.block_kernel(), strides=1, padding="SAME")
    np.testing.assert_allclose(ref.numpy(), alt.numpy(), atol=1e-5)


@pytest.mark.parametrize("fast_first_conv", [True, False])
def test_chain_energy_matches_the_network_and_its_gradient(fast_first_conv):
    keras.utils.set_random_seed(2)
    net = build_energy_network(ModelConfig(fast_first_conv=fast_first_conv))
    x = tf.random.stateless_uniform((6, 32, 32, 1), seed=[5, 6], minval=-1, maxval=1)
    e_ref, g_ref = energy_and_grad(energy_fn(net), x)
    chain = chain_energy(net)
    state = chain.to_state(x)
    assert state.shape == ((6, 16, 16, 4) if fast_first_conv else (6, 32, 32, 1))
    e, g = energy_and_grad(chain.energy, state)
    np.testing.assert_allclose(e.numpy(), e_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chain.from_state(g).numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(chain.from_state(state).numpy(), x.numpy())


def test_portable_network_is_plain_keras_with_the_same_energies_and_chain_state(tmp_path):
    """The model MLflow logs: Keras's own layers only (it loads with no custom objects), the same
    energies, and chains that keep the same 2x2-block state with the same energies."""
    keras.utils.set_random_seed(4)
    net = build_energy_network(ModelConfig())
    portable = portable_network(net)
    assert {type(layer).__module__.split(".")[0] for layer in portable.layers} == {"keras"}
    path = tmp_path / "portable.keras"
    portable.save(path)
    loaded = keras.saving.load_model(path, custom_objects={}, safe_mode=True)
    x = tf.random.stateless_uniform((6, 32, 32, 1), seed=[3, 4], minval=-1, maxval=1)
    np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), rtol=1e-5, atol=1e-5)
    ours, theirs = chain_energy(net), chain_energy(loaded)
    state = ours.to_state(x)
    assert theirs.to_state(x).shape == state.shape == (6, 16, 16, 4)
    np.testing.assert_array_equal(theirs.energy(state).numpy(), ours.energy(state).numpy())
    assert (theirs.native is None) == (ours.native is None)


def test_chain_energy_gives_the_networks_weight_gradients():
    keras.utils.set_random_seed(3)
    net = build_energy_network(ModelConfig())
    x = tf.random.stateless_uniform((6, 32, 32, 1), seed=[7, 8], minval=-1, maxval=1)
    chain = chain_energy(net)
    grads = []
    for energy in (energy_fn(net), lambda images: chain.energy(chain.to_state(images))):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(energy(x) ** 2) + tf.reduce_mean(energy(-x))
        grads.append(tape.gradient(loss, net.trainable_weights))
    for ref, fast, w in zip(*grads, net.trainable_weights):
        np.testing.assert_allclose(fast.numpy(), ref.numpy(), rtol=1e-4, atol=1e-6, err_msg=w.path)


@pytest.mark.parametrize("chain", ["native", "graph"])
def test_optimised_sampler_matches_plain_formulation_without_noise(chain):
    """The whole-chain CPU op, and the TF-graph chain (block state, sub-chains), against the plain
    network stepped by the plain sampler."""
    keras.utils.set_random_seed(1)
    fast = build_energy_network(ModelConfig(fast_first_conv=True))
    plain = with_space_to_depth(fast, False)
    energy = chain_energy(fast)
    if chain == "graph":
        energy = energy._replace(native=None)
    elif energy.native is None:
        pytest.skip("whole-chain op not built here")
    x0 = tf.random.stateless_uniform((8, 32, 32, 1), seed=[3, 4], minval=-1, maxval=1)
    a = LangevinSampler(10, 10.0, 0.0, 0.03, splits=2).run(energy, x0)
    b = LangevinSampler(10, 10.0, 0.0, 0.03, splits=1).run(energy_fn(plain), x0)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
    assert float(tf.reduce_mean(tf.abs(a - x0))) > 0.01  # the chains moved


def test_energy_network_shape_and_checkpoint_roundtrip(tmp_path):
    net = build_energy_network(ModelConfig(filters=(8, 8), kernel_sizes=(5, 3), dense_units=16))
    x = tf.zeros((3, 32, 32, 1))
    assert net(x).shape == (3, 1)
    path = tmp_path / "e.keras"
    net.save(path)
    family, loaded = load_model(path)
    assert family.name == "deep"
    np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=1e-6)
    assert loaded.get_layer("conv0").space_to_depth is True
    plain = with_space_to_depth(loaded, False)
    np.testing.assert_allclose(plain(x).numpy(), net(x).numpy(), atol=1e-5)


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.keras")
    from ebm.classifier import build_classifier

    judge = tmp_path / "classifier.keras"
    build_classifier(1, 4)[0].save(judge)
    with pytest.raises(ModelFileError) as err:  # the judge given where an energy model belongs
        load_model(judge)
    assert "is the classifier stage's judge" in str(err.value) and "Could not locate" not in str(err.value)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="could not be loaded"):
        load_model(bad)
    other = tmp_path / "other.keras"  # another architecture: a classifier-like network, 10 outputs
    inputs = keras.Input((32, 32, 1))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(other)
    message = r"other.keras is not an energy model of any family \(deep, rbm, dbn\): it maps \[\(32, 32, 1\)\] to \[\(10,\)\]"
    with pytest.raises(ModelFileError, match=message):
        load_model(other)
