"""The digit classifier that judges samples: a small calibrated ensemble of CNNs.

Its class probabilities give coverage and the confident share, and its penultimate layer
(``features``, the members' features side by side) is the feature space of FID, KID and
precision/recall. It is built to be *strict*, to read a malformed digit the way a person does:

* each member trains with its own random shifts, rotations and zooms;
* outlier exposure (Hendrycks et al. 2019): two digits blended and digits cut into patches and
  shuffled are trained towards the uniform distribution, so off-manifold strokes get low confidence;
* members disagree on what none of them has seen, and their probabilities are averaged;
* one temperature, fitted on held-out real digits, calibrates the average (Guo et al. 2017).

:mod:`ebm.corruptions` has the broken digits (erased strokes, elastic warps, blends) the
classifier stage scores to show that its confidence falls where it should.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from scipy import optimize

from ebm.data import IMAGE_SHAPE


FEATURES = "features"
PROBS = "probs"
CLASSES = 10


@keras.saving.register_keras_serializable(package="ebm")
class TemperedMean(keras.layers.Layer):
    """Members' logits (B, K, 10) -> mean over members of softmax(logits / T), shape (B, 10).
    ``T`` is a non-trainable weight set by :func:`fit_temperature`; saved with the model."""

    def build(self, input_shape):
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)

    def call(self, logits):
        return ops.mean(ops.softmax(logits / self.temperature, axis=-1), axis=1)


def _member(inputs, index: int, width: int, feature_dim: int, dropout: float, shift: float, rotation: float,
            zoom: float):
    name = f"m{index}_"
    x = keras.layers.RandomTranslation(shift, shift, fill_mode="constant", fill_value=-1.0, name=name + "shift")(inputs)
    x = keras.layers.RandomRotation(rotation, fill_mode="constant", fill_value=-1.0, name=name + "rotate")(x)
    x = keras.layers.RandomZoom(zoom, fill_mode="constant", fill_value=-1.0, name=name + "zoom")(x)
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}conv{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"{name}pool{i}")(x)
    x = keras.layers.Flatten(name=name + "flatten")(x)
    x = keras.layers.Dropout(dropout, name=name + "dropout0")(x)
    features = keras.layers.Dense(feature_dim, activation="relu", name=name + "features")(x)
    x = keras.layers.Dropout(dropout, name=name + "dropout1")(features)
    return features, keras.layers.Dense(CLASSES, name=name + "logits")(x)


def build_classifier(members: int = 3, width: int = 16, feature_dim: int = 64, dropout: float = 0.3,
                     shift: float = 0.08, rotation: float = 0.04, zoom: float = 0.1) -> tuple[keras.Model, keras.Model]:
    """``(classifier, trainer)`` sharing their layers: ``classifier`` maps images to a dict of
    calibrated class probabilities (``probs``) and the members' features side by side (``features``);
    ``trainer`` maps images to the members' logits (B, K, 10), for :func:`members_crossentropy`.
    Augmentation (shift and zoom as fractions of the size, rotation as a fraction of a turn) acts
    in training only."""
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    outs = [_member(inputs, k, width, feature_dim, dropout, shift, rotation, zoom) for k in range(members)]
    features = keras.layers.Concatenate(name=FEATURES)([f for f, _ in outs]) if members > 1 else \
        keras.layers.Identity(name=FEATURES)(outs[0][0])
    logits = keras.layers.Concatenate(axis=1, name="logits")([keras.layers.Reshape((1, CLASSES))(z) for _, z in outs])
    probs = TemperedMean(name=PROBS)(logits)
    classifier = keras.Model(inputs, {PROBS: probs, FEATURES: features}, name="digit_classifier")
    return classifier, keras.Model(inputs, logits, name="classifier_trainer")


def members_crossentropy(targets, logits):
    """Mean over members of the cross-entropy of each member's softmax against ``targets``
    (B, 10) rows of probabilities: one-hot for digits, uniform for outliers."""
    log_p = ops.log_softmax(logits, axis=-1)
    return -ops.mean(ops.sum(targets[:, None, :] * log_p, axis=-1), axis=1)


def outliers(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator, patch: int = 8) -> np.ndarray:
    """``n`` training outliers: half two digits of different classes averaged, half digits cut
    into ``patch`` x ``patch`` tiles and shuffled."""
    from ebm.corruptions import blend

    half = n // 2
    idx = rng.choice(len(x), n, replace=len(x) < n)
    blended = blend(x[idx[:half]], y[idx[:half]], rng, weight=rng.uniform(0.4, 0.6))
    h, w = x.shape[1:3]
    tiles = x[idx[half:]].reshape(n - half, h // patch, patch, w // patch, patch, 1).transpose(0, 1, 3, 2, 4, 5)
    tiles = tiles.reshape(n - half, -1, patch, patch, 1)
    tiles = np.stack([t[rng.permutation(len(t))] for t in tiles])
    shuffled = tiles.reshape(n - half, h // patch, w // patch, patch, patch, 1).transpose(0, 1, 3, 2, 4, 5)
    return np.concatenate([blended, shuffled.reshape(n - half, h, w, 1)]).astype(np.float32)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of the members' averaged softmax
    on held-out labelled digits (``logits`` (N, K, 10))."""
    logits = np.asarray(logits, np.float64)

    def nll(log_t):
        z = logits / np.exp(log_t)
        p = np.exp(z - z.max(-1, keepdims=True))
        p = (p / p.sum(-1, keepdims=True)).mean(1)
        return -np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)))

    return float(np.exp(optimize.minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def train_classifier(x, y, x_val, y_val, epochs: int, batch_size: int, learning_rate: float = 1e-3,
                     members: int = 3, width: int = 16, outlier_share: float = 0.5,
                     calibration_fraction: float = 0.1, seed: int = 0, verbose: int = 0) -> tuple[keras.Model, dict]:
    """Train the ensemble on ``x, y`` less a held-out ``calibration_fraction`` (which fits the
    temperature), with ``outlier_share`` x len(x) outliers aimed at the uniform distribution.
    Returns the classifier and a history: per-epoch ``loss`` and ``val_loss``,
    and ``temperature``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_cal = int(round(calibration_fraction * len(x)))
    cal, fit = order[:n_cal], order[n_cal:]
    x_fit, y_fit = x[fit], np.eye(CLASSES, dtype=np.float32)[y[fit]]
    n_out = int(round(outlier_share * len(fit)))
    if n_out:
        x_fit = np.concatenate([x_fit, outliers(x[fit], y[fit], n_out, rng)])
        y_fit = np.concatenate([y_fit, np.full((n_out, CLASSES), 1.0 / CLASSES, np.float32)])
    model, trainer = build_classifier(members, width)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=members_crossentropy)
    history = trainer.fit(x_fit, y_fit, validation_data=(x_val, np.eye(CLASSES, dtype=np.float32)[y_val]),
                          epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose).history
    temperature = 1.0
    if n_cal:
        temperature = fit_temperature(trainer.predict(x[cal], batch_size=500, verbose=0), y[cal])
        model.get_layer(PROBS).temperature.assign(temperature)
    history["temperature"] = temperature
    return model, history


def predict_probs(classifier: keras.Model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Calibrated class probabilities (N, 10)."""
    return FeatureExtractor(classifier)(images, batch_size)[1]


class FeatureExtractor:
    """Penultimate-layer features and class probabilities of a trained classifier."""

    def __init__(self, classifier: keras.Model):
        self.model = classifier

    def __call__(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            out = self.model(images[i:i + batch_size], training=False)
            feats.append(np.asarray(out[FEATURES]))
            probs.append(np.asarray(out[PROBS]))
        return np.concatenate(feats), np.concatenate(probs)
