"""A small digit classifier whose penultimate layer is the feature space of the quality metrics."""

from __future__ import annotations

import keras
import numpy as np

from ebm.network import IMAGE_SHAPE

FEATURES = "features"


def build_classifier(width: int = 32, feature_dim: int = 128, dropout: float = 0.3, shift: float = 0.06) -> keras.Model:
    """Conv-Conv-Pool-Conv-Pool, Dense ``feature_dim`` (``features``), Dense 10 softmax. Random shifts of up to
    ``shift`` of the image size augment training only."""
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.RandomTranslation(shift, shift, fill_mode="constant", fill_value=-1.0, name="shift")(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(feature_dim, activation="relu", name=FEATURES)(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="digit_classifier")


def train_classifier(x, y, x_val, y_val, epochs: int, batch_size: int, learning_rate: float = 1e-3,
                     verbose: int = 0) -> tuple[keras.Model, dict]:
    model = build_classifier()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch_size,
                        verbose=verbose)
    return model, history.history


class FeatureExtractor:
    """Penultimate-layer features and class probabilities of a trained classifier."""

    def __init__(self, classifier: keras.Model):
        self.model = keras.Model(classifier.input, [classifier.get_layer(FEATURES).output, classifier.output])

    def __call__(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            f, p = self.model(images[i:i + batch_size], training=False)
            feats.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(feats), np.concatenate(probs)
