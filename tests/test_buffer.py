import numpy as np
import pytest
import tensorflow as tf

from ebm.families.deep.buffer import ReplayBuffer


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


def test_persistent_chains_fill_the_last_rows_in_turn_and_are_written_back_in_place():
    buf = ReplayBuffer(capacity=32, batch_size=8, image_shape=(2, 2, 1), fresh_fraction=1.0, seed=3,
                       persistent=6, persistent_rows=2)
    buf.chains.assign(tf.reshape(tf.range(6, dtype=tf.float32), (6, 1, 1, 1)) * tf.ones((6, 2, 2, 1)))
    seen = []
    for _ in range(6):
        x, fresh = buf.sample(with_mask=True)
        assert x.shape == (8, 2, 2, 1)
        assert fresh.numpy().tolist() == [True] * 6 + [False] * 2  # every ring row fresh here, no chain row
        seen += x.numpy()[6:, 0, 0, 0].tolist()
        buf.push(x + 100.0)  # "refine" every row
    # round robin: each of the 6 chains twice, in order, the second time after its own refinement
    assert seen == [0, 1, 2, 3, 4, 5, 100, 101, 102, 103, 104, 105]
    assert buf.chains.numpy()[:, 0, 0, 0].tolist() == [200, 201, 202, 203, 204, 205]
    assert np.all(np.abs(buf.examples.numpy()[8:8 + 6 * 6]) >= 99)  # the ring took 6 rows per batch
    assert int(buf.size) == 32 and int(buf.head) == (8 + 36) % 32


def test_persistent_chains_are_never_restarted_from_noise():
    buf = ReplayBuffer(capacity=64, batch_size=16, image_shape=(2, 2, 1), fresh_fraction=1.0, seed=4,
                       persistent=8, persistent_rows=4)
    buf.chains.assign(tf.fill((8, 2, 2, 1), 5.0))  # outside [-1, 1]: noise would be visible
    for _ in range(20):
        x = buf.sample()
        assert np.all(x.numpy()[12:] == 5.0) and np.all(np.abs(x.numpy()[:12]) <= 1.0)
        buf.push(x)


def test_waiting_persistent_chains_replay_the_ring_into_their_slots_then_continue_once_live():
    buf = ReplayBuffer(capacity=32, batch_size=8, image_shape=(2, 2, 1), fresh_fraction=0.0, seed=6,
                       persistent=4, persistent_rows=2, persistent_wait=True)
    buf.chains.assign(tf.fill((4, 2, 2, 1), 5.0))  # outside [-1, 1]: a chain row is visible
    buf.push(tf.fill((8, 2, 2, 1), 0.5))  # its last two rows go to chains 0 and 1
    assert not bool(buf.live.numpy())
    for step in range(2):  # waiting: the chain rows are ring replays, refined into the chain slots
        x = buf.sample().numpy()
        ring = buf.examples.numpy()[:int(buf.size), 0, 0, 0]
        assert np.all(np.isin(x[6:, 0, 0, 0], ring)) and not np.any(x == 5.0)
        buf.push(tf.concat([x[:6], tf.fill((2, 2, 2, 1), 7.0 + step)], axis=0))
    assert buf.chains.numpy()[:, 0, 0, 0].tolist() == [8, 8, 7, 7]  # chains 2, 3, then 0, 1; the ring took none
    assert not np.any(np.isin(buf.examples.numpy(), [7.0, 8.0]))
    buf.live.assign(True)
    for step in range(2):  # live: the chains continue from what the waiting rows left
        x = buf.sample().numpy()
        assert x[6:, 0, 0, 0].tolist() == [[7, 7], [8, 8]][step]
        buf.push(x)


def test_persistent_rows_must_leave_room_for_the_ring():
    with pytest.raises(ValueError, match="persistent_rows"):
        ReplayBuffer(capacity=64, batch_size=8, image_shape=(2, 2, 1), persistent=16, persistent_rows=8)
    with pytest.raises(ValueError, match="persistent"):
        ReplayBuffer(capacity=64, batch_size=8, image_shape=(2, 2, 1), persistent=2, persistent_rows=4)
