import numpy as np
import tensorflow as tf

from ebm.evaluation import class_energy_spread
from ebm.families.deep.losses import contrastive_divergence, energy_regulariser


def test_cdiv_sign_pushes_real_down_and_fake_up():
    e_real = tf.Variable([0.5, 1.0])
    e_fake = tf.Variable([0.2, 0.4])
    with tf.GradientTape() as tape:
        loss = contrastive_divergence(e_real, e_fake)
    g_real, g_fake = tape.gradient(loss, [e_real, e_fake])
    assert np.isclose(float(loss), 0.75 - 0.3)
    assert np.all(g_real.numpy() > 0) and np.all(g_fake.numpy() < 0)  # descent lowers real, raises fake


def test_regulariser_is_mean_square_of_both():
    assert np.isclose(float(energy_regulariser(tf.constant([1.0, -1.0]), tf.constant([2.0, 0.0]))), (1 + 4 + 1 + 0) / 2)


def test_class_energy_spread_is_the_between_class_variance_of_the_means():
    e = tf.constant([1.0, 3.0, 0.0, 0.0, 2.0])
    y = tf.constant([0, 0, 1, 1, 7])  # class means 2, 0, 2; batch mean 1.2; shares 0.4, 0.4, 0.2
    assert np.isclose(float(class_energy_spread(e, y)), 0.4 * 0.8 ** 2 + 0.4 * 1.2 ** 2 + 0.2 * 0.8 ** 2)
    # spread inside each class does not count; equal class means give zero
    assert np.isclose(float(class_energy_spread(tf.constant([0.0, 2.0, 1.0, 1.0]), tf.constant([3, 3, 5, 5]))), 0.0)
