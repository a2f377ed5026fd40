"""The energy network.

Sign convention, stated once for the whole package: **the network outputs the energy E(x)**,
one scalar per image, and low energy means "looks like data". The Langevin sampler walks
*downhill* on E, and contrastive divergence lowers E on real images and raises it on negatives.
(The reference chapter's network outputs the score -E(x) and climbs it; the two are the same
model with the sign flipped.)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ebm.families.deep import native as kernels
from ebm.config import ModelConfig
from ebm.data import IMAGE_SHAPE
from ebm.families.deep.sampler import ChainEnergy



@keras.saving.register_keras_serializable(package="ebm")
class StridedConv2D(keras.layers.Layer):
    """``Conv2D(filters, kernel_size, strides=2, padding="same")``, optionally computed fast.

    With ``space_to_depth=True`` (and an even-sized input) the image is rearranged into 2x2
    blocks (space-to-depth) and convolved at stride 1 with the same kernel variable rearranged
    the same way (:meth:`block_kernel`). The result is identical to the strided convolution,
    but on CPUs the input-gradient of a 1-channel strided conv is slow, while that of a
    stride-1 conv over 4 channels is not. A Langevin chain can even keep its state in block
    layout (:meth:`call_on_blocks`, :func:`chain_energy`) and skip the rearrangement at every
    step. The weights are the same either way, so a checkpoint loads in both modes.
    """

    def __init__(self, filters: int, kernel_size: int, activation=None, space_to_depth: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.activation = keras.activations.get(activation)
        self.space_to_depth = space_to_depth

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, channels, self.filters), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x):
        even = x.shape[1] is not None and x.shape[1] % 2 == 0 and x.shape[2] is not None and x.shape[2] % 2 == 0
        if self.space_to_depth and even:
            return self.call_on_blocks(tf.nn.space_to_depth(x, 2))
        y = tf.nn.conv2d(x, self.kernel, strides=2, padding="SAME")
        return self.activation(tf.nn.bias_add(y, self.bias))

    def call_on_blocks(self, blocks, activation=None):
        """The layer on an even-sized input already in space-to-depth layout (B, H/2, W/2, 4C)."""
        y = tf.nn.conv2d(blocks, self.block_kernel(), strides=1, padding="SAME")
        return (activation or self.activation)(tf.nn.bias_add(y, self.bias))

    def block_kernel(self):
        """The kernel rearranged for a stride-1 "SAME" conv over 2x2 blocks (:func:`block_kernel`)."""
        return block_kernel(self.kernel)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else (h + 1) // 2, None if w is None else (w + 1) // 2, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "activation": keras.activations.serialize(self.activation),
            "space_to_depth": self.space_to_depth,
        }


def block_kernel(kernel):
    """A stride-2 "SAME" conv kernel (k, k, C, F) rearranged for a stride-1 "SAME" conv over 2x2 blocks.

    TF's "SAME" stride-2 conv on an even input pads ``b = (k - 2) // 2`` before, so output
    ``o`` reads rows ``2o - b .. 2o - b + k - 1``. Zero taps added in front (``b % 2``) make
    that window start on a block boundary and at the back make it a whole number of blocks
    ``kb``; the window then starts ``(b + b % 2) / 2`` blocks before block ``o``, which is
    exactly the padding of a "SAME" stride-1 conv of size ``kb``."""
    k = kernel.shape[0]
    front = max(k - 2, 0) // 2 % 2
    back = (front + k) % 2
    kb = (front + k + back) // 2
    w = tf.pad(kernel, [[front, back], [front, back], [0, 0], [0, 0]])
    c, f = kernel.shape[2], kernel.shape[3]
    w = tf.reshape(w, (kb, 2, kb, 2, c, f))
    return tf.reshape(tf.transpose(w, (0, 2, 1, 3, 4, 5)), (kb, kb, 4 * c, f))


def build_energy_network(cfg: ModelConfig, image_shape=IMAGE_SHAPE) -> keras.Model:
    """Strided Conv2D stack with swish, flatten, Dense swish, Dense 1 -> E(x) of shape (B, 1)."""
    inputs = keras.Input(shape=image_shape, name="image")
    x = inputs
    for i, (filters, kernel) in enumerate(zip(cfg.filters, cfg.kernel_sizes)):
        if i == 0:
            x = StridedConv2D(filters, kernel, activation="swish", space_to_depth=cfg.fast_first_conv, name="conv0")(x)
        else:
            x = keras.layers.Conv2D(filters, kernel, strides=2, padding="same", activation="swish", name=f"conv{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(cfg.dense_units, activation="swish", name="dense")(x)
    outputs = keras.layers.Dense(1, name="energy")(x)
    return keras.Model(inputs, outputs, name="energy_net")


def portable_network(network: keras.Model) -> keras.Model:
    """``network`` built of Keras's own layers only, with the same weights: each
    :class:`StridedConv2D` becomes the ``Conv2D(strides=2, padding="same")`` it computes. The model
    MLflow logs, so that ``mlflow.keras.load_model`` needs no code of this package; its chains
    run the same kernels as the original's (:func:`chain_energy` reads either layer)."""

    def clone(layer):
        if isinstance(layer, StridedConv2D):
            return keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=2, padding="same",
                                       activation=layer.activation, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(network, clone_function=clone)
    copy.set_weights(network.get_weights())
    return copy


def energy_fn(network: keras.Model):
    """Wrap a network as ``x -> E(x)`` of shape (B,), the form the sampler and losses take."""
    return lambda x: tf.squeeze(network(x), axis=-1)


@tf.custom_gradient
def swish(h):
    """``h * sigmoid(h)`` that keeps its derivative from the forward pass, so the backward pass
    is one multiply instead of recomputing the sigmoid (first-order gradients only). Both come
    from one fused pass on a CPU (:mod:`ebm.families.deep.native`)."""
    a, derivative = kernels.swish_and_derivative(h)
    return a, lambda upstream: upstream * derivative


def chain_energy(network: keras.Model) -> ChainEnergy:
    """E(x) of ``network`` in the form a Langevin chain runs fastest, same values and gradients.

    On a CPU, a network of :func:`build_energy_network`'s shape gets the whole-chain op
    (``native``, see :func:`ebm.families.deep.native.langevin_chain`). The step-by-step form, used otherwise
    and for the CD update, keeps the chain's state in 2x2-block layout when the first layer can
    read it directly (:meth:`StridedConv2D.call_on_blocks`), and swish layers use :func:`swish`.
    Layers it does not know are called as they are. For a layer-after-layer network like
    :func:`build_energy_network`'s (tests compare energies and gradients with the network's)."""
    layers = [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)]
    first = layers[0]
    height, width = network.input_shape[1:3]
    even = height % 2 == 0 and width % 2 == 0
    blocks = even and (isinstance(first, StridedConv2D) and first.space_to_depth or _is_strided_conv(first))

    def energy(state):
        if not blocks:
            y = _fast_call(first, state)
        elif isinstance(first, StridedConv2D):
            y = first.call_on_blocks(state, _activation(first))
        else:  # the same computation for the Conv2D of a portable network
            y = _activation(first)(tf.nn.bias_add(tf.nn.conv2d(state, block_kernel(first.kernel), 1, "SAME"), first.bias))
        for layer in layers[1:]:
            y = _fast_call(layer, y)
        return tf.squeeze(y, axis=-1)

    native = _native_chain(network, layers) if kernels.native_chain_enabled() else None
    if blocks:
        return ChainEnergy(energy, lambda x: tf.nn.space_to_depth(x, 2), lambda z: tf.nn.depth_to_space(z, 2), native)
    return ChainEnergy(energy, native=native)


def _native_chain(network: keras.Model, layers):
    """The whole-chain CPU op (:func:`ebm.families.deep.native.langevin_chain`) for a network of
    :func:`build_energy_network`'s shape (one-channel images; stride-2 "same" swish convolutions
    with bias; flatten; swish dense; linear dense to one unit), else None."""
    *convs, flatten, dense, out = layers if len(layers) >= 4 else (None,) * 4
    swish_layer = lambda layer: keras.activations.serialize(layer.activation) in ("silu", "swish")  # noqa: E731

    def is_conv(layer):
        return (isinstance(layer, StridedConv2D) or _is_strided_conv(layer)) and swish_layer(layer)

    supported = (network.input_shape[-1] == 1 and convs and all(is_conv(c) for c in convs)
                 and type(flatten) is keras.layers.Flatten
                 and type(dense) is keras.layers.Dense and dense.use_bias and swish_layer(dense)
                 and type(out) is keras.layers.Dense and out.use_bias and out.units == 1
                 and keras.activations.serialize(out.activation) == "linear")
    if not supported:
        return None

    def run(x, seed, steps, step_size, noise, grad_clip):
        return kernels.langevin_chain(x, seed, steps, [c.kernel for c in convs], [c.bias for c in convs],
                                      dense.kernel, dense.bias, out.kernel, out.bias, step_size, noise, grad_clip)

    return run


def _is_strided_conv(layer) -> bool:
    """A Keras ``Conv2D`` that computes what :class:`StridedConv2D` does: square kernel, stride 2,
    "same" padding, bias, no dilation or groups."""
    return (type(layer) is keras.layers.Conv2D and tuple(layer.strides) == (2, 2) and layer.padding == "same"
            and layer.use_bias and layer.groups == 1 and layer.data_format == "channels_last"
            and tuple(layer.dilation_rate) == (1, 1) and layer.kernel_size[0] == layer.kernel_size[1])


def _activation(layer):
    return swish if keras.activations.serialize(layer.activation) in ("silu", "swish") else layer.activation


def _fast_call(layer, y):
    if type(layer) is keras.layers.Conv2D and layer.groups == 1 and layer.data_format == "channels_last" \
            and tuple(layer.dilation_rate) == (1, 1):
        y = tf.nn.conv2d(y, layer.kernel, strides=layer.strides, padding=layer.padding.upper())
    elif type(layer) is keras.layers.Dense:
        y = tf.matmul(y, layer.kernel)
    elif type(layer) is keras.layers.Flatten:
        return tf.reshape(y, (tf.shape(y)[0], -1))
    else:
        return layer(y)
    if layer.use_bias:
        y = tf.nn.bias_add(y, layer.bias)
    return _activation(layer)(y)


def with_space_to_depth(network: keras.Model, enabled: bool) -> keras.Model:
    """The same network (same weights) with the fast first convolution switched on or off."""
    config = network.get_config()
    for layer in config["layers"]:
        if layer["class_name"].endswith("StridedConv2D"):
            layer["config"]["space_to_depth"] = enabled
    clone = keras.Model.from_config(config)
    clone.set_weights(network.get_weights())
    return clone
