import numpy as np
import tensorflow as tf

from ebm.buffer import ReplayBuffer


def test_starts_with_one_batch_and_grows_to_capacity_then_drops_oldest():
    buf = ReplayBuffer(capacity=40, batch_size=8, image_shape=(4, 4, 1), seed=0)
    assert int(buf.size) == 8
    for i in range(10):
        buf.push(tf.fill((8, 4, 4, 1), float(i) / 10))
    assert int(buf.size) == 40 and buf.examples.shape[0] == 40
    kept = sorted({round(float(v), 2) for v in buf.examples.numpy()[:, 0, 0, 0]})
    assert kept == [0.5, 0.6, 0.7, 0.8, 0.9]  # the five newest batches
    assert np.allclose(buf.newest(8).numpy(), 0.9)


def test_sample_mixes_about_five_percent_fresh_noise():
    buf = ReplayBuffer(capacity=256, batch_size=128, image_shape=(4, 4, 1), fresh_fraction=0.05, seed=1)
    for _ in range(2):
        buf.push(tf.zeros((128, 4, 4, 1)))
    fresh = []
    for _ in range(200):
        x = buf.sample().numpy()
        assert x.shape == (128, 4, 4, 1)
        assert x.min() >= -1.0 and x.max() <= 1.0
        fresh.append(np.mean(np.any(x != 0.0, axis=(1, 2, 3))))
    assert abs(np.mean(fresh) - 0.05) < 0.005
    assert np.std(fresh) > 0  # Binomial, not a fixed count


def test_sample_draws_from_filled_slots_only():
    buf = ReplayBuffer(capacity=64, batch_size=8, image_shape=(2, 2, 1), fresh_fraction=0.0, seed=2)
    buf.push(tf.fill((8, 2, 2, 1), 0.5))  # slots 8..15; 0..7 hold the initial noise
    values = np.concatenate([buf.sample().numpy()[:, 0, 0, 0] for _ in range(50)])
    assert np.mean(values == 0.5) > 0.3
    assert np.all(np.isin(values, np.concatenate([[0.5], buf.examples.numpy()[:8, 0, 0, 0]])))
