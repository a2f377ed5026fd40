"""A faithful copy of the reference chapter's EBM training step, kept only for benchmarking.

Eager Python loop of GradientTape Langevin steps, a replay buffer that is a Python list of
single images, ``run_eagerly=True``, and a network that outputs the *score* -E(x), climbed by
the sampler, exactly as published. Do not import this from the library.
"""

from __future__ import annotations

import random

import keras
import numpy as np
import tensorflow as tf
from keras import activations, layers

IMAGE_SIZE, CHANNELS, BATCH_SIZE, BUFFER_SIZE = 32, 1, 128, 8192
STEP_SIZE, STEPS, NOISE, ALPHA, GRADIENT_CLIP = 10, 60, 0.005, 0.1, 0.03


def build_score_network() -> keras.Model:
    ebm_input = layers.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, CHANNELS))
    x = layers.Conv2D(16, kernel_size=5, strides=2, padding="same", activation=activations.swish)(ebm_input)
    x = layers.Conv2D(32, kernel_size=3, strides=2, padding="same", activation=activations.swish)(x)
    x = layers.Conv2D(64, kernel_size=3, strides=2, padding="same", activation=activations.swish)(x)
    x = layers.Conv2D(64, kernel_size=3, strides=2, padding="same", activation=activations.swish)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation=activations.swish)(x)
    return keras.Model(ebm_input, layers.Dense(1)(x))


def generate_samples(model, inp_imgs, steps, step_size, noise):
    for _ in range(steps):
        inp_imgs += tf.random.normal(inp_imgs.shape, mean=0, stddev=noise)
        inp_imgs = tf.clip_by_value(inp_imgs, -1.0, 1.0)
        with tf.GradientTape() as tape:
            tape.watch(inp_imgs)
            out_score = model(inp_imgs)
        grads = tape.gradient(out_score, inp_imgs)
        grads = tf.clip_by_value(grads, -GRADIENT_CLIP, GRADIENT_CLIP)
        inp_imgs += step_size * grads
        inp_imgs = tf.clip_by_value(inp_imgs, -1.0, 1.0)
    return inp_imgs


class Buffer:
    def __init__(self, model):
        self.model = model
        self.examples = [tf.random.uniform(shape=(1, IMAGE_SIZE, IMAGE_SIZE, CHANNELS)) * 2 - 1
                         for _ in range(BATCH_SIZE)]

    def sample_new_exmps(self, steps, step_size, noise):
        n_new = np.random.binomial(BATCH_SIZE, 0.05)
        rand_imgs = tf.random.uniform((n_new, IMAGE_SIZE, IMAGE_SIZE, CHANNELS)) * 2 - 1
        old_imgs = tf.concat(random.choices(self.examples, k=BATCH_SIZE - n_new), axis=0)
        inp_imgs = tf.concat([rand_imgs, old_imgs], axis=0)
        inp_imgs = generate_samples(self.model, inp_imgs, steps=steps, step_size=step_size, noise=noise)
        self.examples = tf.split(inp_imgs, BATCH_SIZE, axis=0) + self.examples
        self.examples = self.examples[:BUFFER_SIZE]
        return inp_imgs


class EBM(keras.Model):
    def __init__(self):
        super().__init__()
        self.model = build_score_network()
        self.buffer = Buffer(self.model)
        self.loss_metric = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_metric]

    def train_step(self, real_imgs):
        real_imgs += tf.random.normal(shape=tf.shape(real_imgs), mean=0, stddev=NOISE)
        real_imgs = tf.clip_by_value(real_imgs, -1.0, 1.0)
        fake_imgs = self.buffer.sample_new_exmps(steps=STEPS, step_size=STEP_SIZE, noise=NOISE)
        inp_imgs = tf.concat([real_imgs, fake_imgs], axis=0)
        with tf.GradientTape() as training_tape:
            real_out, fake_out = tf.split(self.model(inp_imgs), 2, axis=0)
            cdiv_loss = tf.reduce_mean(fake_out, axis=0) - tf.reduce_mean(real_out, axis=0)
            reg_loss = ALPHA * tf.reduce_mean(real_out**2 + fake_out**2, axis=0)
            loss = reg_loss + cdiv_loss
        grads = training_tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        self.loss_metric.update_state(loss)
        return {m.name: m.result() for m in self.metrics}


def build_reference() -> EBM:
    model = EBM()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4), run_eagerly=True)
    return model
