"""The energy network.

Sign convention, stated once for the whole package: **the network outputs the energy E(x)**,
one scalar per image, and low energy means "looks like data". The Langevin sampler walks
*downhill* on E, and contrastive divergence lowers E on real images and raises it on negatives.
(The reference chapter's network outputs the score -E(x) and climbs it; the two are the same
model with the sign flipped.)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import tensorflow as tf

from ebm.config import ModelConfig

IMAGE_SHAPE = (32, 32, 1)


@keras.saving.register_keras_serializable(package="ebm")
class StridedConv2D(keras.layers.Layer):
    """``Conv2D(filters, kernel_size, strides=2, padding="same")``, optionally computed fast.

    With ``space_to_depth=True`` the input is padded, rearranged into 2x2 blocks
    (space-to-depth) and convolved at stride 1 with the same kernel variable rearranged the same
    way. The result is identical to the strided convolution, but on CPUs the input-gradient of a
    1-channel strided conv is slow, while that of a stride-1 conv over 4 channels is not. The
    weights are the same either way, so a checkpoint loads in both modes.
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
        if self.space_to_depth:
            y = self._conv_space_to_depth(x)
        else:
            y = tf.nn.conv2d(x, self.kernel, strides=2, padding="SAME")
        return self.activation(tf.nn.bias_add(y, self.bias))

    def _conv_space_to_depth(self, x):
        k = self.kernel_size
        k_even = k + k % 2
        blocks = k_even // 2
        # TF "SAME" padding for stride 2 on an even input: k - 2 in total, the extra one after.
        before = (k - 2) // 2
        after = (k - 2) - before + (k_even - k)
        x = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
        x = tf.nn.space_to_depth(x, 2)
        w = tf.pad(self.kernel, [[0, k_even - k], [0, k_even - k], [0, 0], [0, 0]])
        c, f = self.kernel.shape[2], self.kernel.shape[3]
        w = tf.reshape(w, (blocks, 2, blocks, 2, c, f))
        w = tf.reshape(tf.transpose(w, (0, 2, 1, 3, 4, 5)), (blocks, blocks, 4 * c, f))
        return tf.nn.conv2d(x, w, strides=1, padding="VALID")

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


def energy_fn(network: keras.Model):
    """Wrap a network as ``x -> E(x)`` of shape (B,), the form the sampler and losses take."""
    return lambda x: tf.squeeze(network(x), axis=-1)


def with_space_to_depth(network: keras.Model, enabled: bool) -> keras.Model:
    """The same network (same weights) with the fast first convolution switched on or off."""
    config = network.get_config()
    for layer in config["layers"]:
        if layer["class_name"].endswith("StridedConv2D"):
            layer["config"]["space_to_depth"] = enabled
    clone = keras.Model.from_config(config)
    clone.set_weights(network.get_weights())
    return clone


class ModelFileError(RuntimeError):
    """A model file is missing or cannot be loaded."""


def load_model_file(path: str | Path, missing_hint: str = "run the train stage (dvc repro train)") -> keras.Model:
    """Load a ``.keras`` file written by a stage, with a clear error if it is missing or bad."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found: {missing_hint}")
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError) as err:
        raise ModelFileError(f"model file {path} could not be loaded ({type(err).__name__}: {err})") from err


def load_energy_network(path: str | Path) -> keras.Model:
    """The energy network checkpoint written by the train stage."""
    return load_model_file(path)
