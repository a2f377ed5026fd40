"""The math of the training aids: buffer shifts, the weights' moving average, the buffer's
coverage watch, and a CD step's wiring."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ebm.augment import random_shift
from ebm.buffer import ReplayBuffer
from ebm.model import ContrastiveDivergenceModel, ema_update


def test_random_shift_moves_each_image_by_its_own_offset_and_fills_background():
    x = -np.ones((64, 9, 9, 1), np.float32)
    x[:, 4, 4] = 1.0  # one lit pixel in the centre
    out = random_shift(tf.constant(x), tf.constant([3, 4]), max_shift=2).numpy()
    assert out.shape == x.shape
    assert np.all(np.sum(out == 1.0, axis=(1, 2, 3)) == 1)  # every pixel moved whole, nothing lost
    assert np.all(np.isin(out, [-1.0, 1.0]))
    rows, cols = np.nonzero(out[..., 0] == 1.0)[1:]
    offsets = set(zip(rows - 4, cols - 4))
    assert max(max(abs(a), abs(b)) for a, b in offsets) == 2 and len(offsets) > 10  # all within 2, and varied
    edge = random_shift(tf.constant(np.ones((32, 5, 5, 1), np.float32)), tf.constant([0, 1]), 1).numpy()
    assert np.mean(edge == -1.0) > 0.05  # shifted-in rows/columns are background
    assert np.array_equal(random_shift(tf.constant(x), tf.constant([3, 4]), 0).numpy(), x)


def test_random_shift_is_deterministic_in_its_seed():
    x = tf.random.stateless_uniform((8, 6, 6, 1), [1, 2], -1, 1)
    a, b = (random_shift(x, tf.constant([5, 6]), 2).numpy() for _ in range(2))
    c = random_shift(x, tf.constant([5, 7]), 2).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_ema_update_is_the_exponential_moving_average():
    avg, value = tf.Variable([0.0, 10.0]), tf.Variable([1.0, 0.0])
    for _ in range(3):
        ema_update([avg], [value], decay=0.5)
    assert np.allclose(avg.numpy(), [1 - 0.5 ** 3, 10 * 0.5 ** 3])


def test_buffer_mask_marks_the_fresh_rows():
    buf = ReplayBuffer(capacity=64, batch_size=32, image_shape=(2, 2, 1), fresh_fraction=0.5, seed=3)
    buf.examples.assign(tf.fill((64, 2, 2, 1), 2.0))  # out of range on purpose: fresh noise is in [-1, 1]
    starts, fresh = buf.sample(with_mask=True)
    assert np.array_equal(fresh.numpy(), starts.numpy()[:, 0, 0, 0] != 2.0)
    assert 0 < fresh.numpy().sum() < 32


def tiny_model(**kwargs):
    from ebm.config import ModelConfig
    from ebm.network import build_energy_network
    from ebm.sampler import LangevinSampler

    keras.utils.set_random_seed(0)
    net = build_energy_network(ModelConfig(filters=(8, 8), kernel_sizes=(3, 3), dense_units=8))
    model = ContrastiveDivergenceModel(net, LangevinSampler(3, 10.0, 0.005, 0.03, seed=1),
                                       ReplayBuffer(64, 16, (32, 32, 1), seed=2), seed=3, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def digits(n=16):
    from ebm.config import DataConfig
    from ebm.data import load_mnist5k

    return load_mnist5k(DataConfig())[0].x[:n]


@pytest.mark.parametrize("kwargs", [{}, {"kl_weight": 1.0, "kl_repel": 0.3, "kl_compare": 8}], ids=["cd", "cd+kl"])
def test_a_cd_step_lowers_real_energy_relative_to_the_negatives(kwargs):
    model = tiny_model(**kwargs)
    real = tf.constant(digits())
    starts = model.buffer.examples[:16]
    gap = lambda: float(tf.reduce_mean(model.energy(real)) - tf.reduce_mean(model.energy(starts)))  # noqa: E731
    before = gap()
    for _ in range(5):
        logs = model.train_step(real)
    assert gap() < before - 1e-3
    assert ("kl" in logs) == bool(kwargs) and all(np.isfinite(float(v)) for v in logs.values())


@pytest.mark.skipif(not __import__("ebm.kernels").kernels.native_chain_enabled(), reason="CPU ops not built here")
def test_the_native_update_takes_the_tapes_step():
    """train.native_update: the forward and weight-gradient op gives the same update as the tape
    (to float rounding: the sums run in another order), and is the path taken when it applies."""
    calls = []
    weights = {}
    for native in (True, False):
        model = tiny_model(native_update=native, ema_decay=0.9)
        gradients = model.chain_energy.weight_gradients
        assert gradients is not None

        def counted(*args, gradients=gradients):
            calls.append(native)
            return gradients(*args)

        model.chain_energy = model.chain_energy._replace(weight_gradients=counted)
        real = tf.constant(digits())
        logs = [model.train_step(real) for _ in range(3)]
        weights[native] = [w.numpy() for w in model.energy_net.weights + model.ema_weights]
        assert all(np.isfinite(float(v)) for v in logs[-1].values())
    assert calls == [True] * 3  # the tape path never calls the op
    for fast, tape in zip(weights[True], weights[False]):
        np.testing.assert_allclose(fast, tape, rtol=1e-4, atol=1e-6)
    assert any(not np.array_equal(fast, tape) for fast, tape in zip(weights[True], weights[False]))


def test_nearest_log_distance_is_the_mean_log_distance_to_the_nearest_other():
    from ebm.losses import nearest_log_distance

    rng = np.random.default_rng(0)
    x, others = rng.uniform(-1, 1, (5, 4, 4, 1)), rng.uniform(-1, 1, (7, 4, 4, 1))
    dist = np.linalg.norm(x.reshape(5, 1, -1) - others.reshape(1, 7, -1), axis=-1)
    expected = np.mean(np.log(dist.min(axis=1)))
    got = float(nearest_log_distance(tf.constant(x, tf.float32), tf.constant(others, tf.float32)))
    assert got == pytest.approx(expected, abs=1e-4)


def test_the_kl_term_is_the_gradient_through_the_last_step_with_the_energy_held_fixed():
    """d/dw of mean E_w0(step_w(x)) at w = w0, the KL term of Du et al. (2021), against central
    differences along a random direction of every weight. Large clip, small step and no noise
    keep the step smooth (no clipped component) so that differences measure the derivative."""
    from ebm.losses import through_sampler

    model = tiny_model(kl_weight=1.0)
    model.sampler.noise, model.sampler.grad_clip, model.sampler.step_size = 0.0, 1e3, 0.5
    x = tf.constant(np.random.default_rng(1).uniform(-0.5, 0.5, (6, 32, 32, 1)), tf.float32)
    weights = model.energy_net.trainable_weights
    w0 = [w.numpy() for w in weights]
    with tf.GradientTape() as tape:
        stepped = model._last_step(x)
        _, direction = model._kl_objective(tf.stop_gradient(stepped))
        term = through_sampler(stepped, direction)
    grads = [tf.zeros_like(w) if g is None else g  # the last bias moves no input gradient
             for w, g in zip(weights, tape.gradient(term, weights))]
    assert np.abs(stepped.numpy()).max() < 1 and sum(float(tf.reduce_sum(g * g)) for g in grads) > 0

    rng = np.random.default_rng(2)
    v = [rng.standard_normal(w.shape).astype(np.float32) for w in w0]

    def objective(eps):  # the step taken with w0 + eps * v, its result scored by w0's energy
        for w, a, b in zip(weights, w0, v):
            w.assign(a + eps * b)
        moved = model._last_step(x)
        for w, a in zip(weights, w0):
            w.assign(a)
        return float(tf.reduce_mean(tf.cast(model.energy(moved), tf.float64)))

    eps = 1e-2
    numeric = (objective(eps) - objective(-eps)) / (2 * eps)
    analytic = sum(float(tf.reduce_sum(g * b)) for g, b in zip(grads, v))
    assert abs(numeric) > 1e-4 and analytic == pytest.approx(numeric, rel=0.05)


def test_sampling_network_holds_the_moving_average():
    model = tiny_model(ema_decay=0.9)
    start = [w.numpy() for w in model.energy_net.weights]
    real = tf.constant(digits())
    model.train_step(real)
    trained = [w.numpy() for w in model.energy_net.weights]
    ema = model.sampling_network()
    for s, t, e in zip(start, trained, ema.get_weights()):
        assert np.allclose(e, 0.9 * s + 0.1 * t, atol=1e-6)
    assert len(model.trainable_variables) == len(model.energy_net.trainable_variables)  # the copy is not trained
    first = ema.get_weights()
    model.train_step(real)  # a later call holds the later average, never the first one
    later = model.sampling_network().get_weights()
    assert all(np.array_equal(e, a.numpy()) for e, a in zip(later, model.ema_weights))
    assert not all(np.array_equal(e, f) for e, f in zip(later, first))
    assert tiny_model().sampling_network() is not None


def test_shifted_starts_keep_fresh_noise_and_shift_replays():
    model = tiny_model(buffer_shift=2)
    model.buffer.examples.assign(tf.fill(model.buffer.examples.shape, -1.0))
    model.buffer.examples[:, 10:22, 10:22].assign(tf.ones((64, 12, 12, 1)))  # a lit square in every replay
    starts = model._starts().numpy()
    replays = [s for s in starts if np.isin(s, [-1.0, 1.0]).all()]
    assert replays and all((s == 1.0).sum() == 144 for s in replays)  # moved whole, inside the frame
    assert len({tuple(np.argwhere(s[..., 0] == 1.0)[0]) for s in replays}) > 1


def test_buffer_coverage_reads_a_collapsed_buffer_as_one_class():
    from ebm.callbacks import BufferCoverage

    rng = np.random.default_rng(0)
    reference = rng.uniform(-1, 1, (20, 32, 32, 1)).astype(np.float32)
    labels = np.arange(20) % 10
    model = tiny_model()
    watch = BufferCoverage(reference, labels, every=2, n=40)
    watch.set_model(model)
    model.buffer.examples.assign(np.repeat(reference[3:4], 64, axis=0) + 0.01)  # every negative near image 3
    logs = {}
    watch.on_epoch_end(1, logs)
    assert logs["buffer_coverage"] == pytest.approx(0.0) and logs["buffer_nn_dist"] < 1.0
    e = np.asarray(model.sampling_network()(reference)).reshape(-1)  # n >= 20: every reference digit
    class_means = [e[labels == c].mean() for c in range(10)]
    assert logs["energy_class_gap"] == pytest.approx(max(class_means) - min(class_means), rel=1e-4)
    assert logs["energy_class_gap"] > 0
    model.buffer.examples.assign(np.concatenate([reference] * 3 + [reference[:4]]))
    model.buffer.head.assign(0)
    logs = {}
    watch.on_epoch_end(3, logs)
    assert logs["buffer_coverage"] > 0.95
    skipped = {}
    watch.on_epoch_end(2, skipped)  # epoch 3 of every=2: not measured
    assert skipped == {}


def test_cosine_schedule_decays_the_learning_rate_to_its_floor_at_the_last_step():
    from ebm.config import parse_params
    from ebm.pipeline.train import build_model
    from tests.conftest import tiny_params_dict

    raw = tiny_params_dict()
    raw["train"].update(lr_schedule="cosine", lr_min_fraction=0.1, learning_rate=0.001, epochs=3)
    model = build_model(parse_params(raw), steps_per_epoch=10)
    schedule = model.optimizer._learning_rate  # the schedule object (``learning_rate`` is its current value)
    rates = [float(schedule(step)) for step in (0, 15, 30, 40)]
    assert rates[0] == pytest.approx(0.001)
    assert rates[1] == pytest.approx(0.001 * (0.1 + 0.9 * 0.5))  # half way: half of the way down
    assert rates[2] == pytest.approx(0.0001) and rates[3] == pytest.approx(0.0001)  # the floor, then held
    raw["train"]["lr_schedule"] = "constant"
    assert float(build_model(parse_params(raw), steps_per_epoch=10).optimizer.learning_rate) == pytest.approx(0.001)


def test_an_epoch_whose_gap_rises_above_the_band_is_unhealthy():
    from ebm.callbacks import DivergenceGuard

    guard = DivergenceGuard(1e4, 5.0, max_epoch_cdiv=0.05)
    guard.set_model(tiny_model())

    def epoch(number, cdiv):
        guard.on_epoch_begin(number - 1)
        logs = {"loss": cdiv, "real": 0.0, "fake": -cdiv, "cdiv": cdiv}
        return guard.healthy(logs), guard.healthy(logs)  # asked twice per epoch (checkpoint, keeper)

    # a healthy run: falling from the first epoch (above the band: fine), then noise near zero
    assert [epoch(n, c) for n, c in enumerate([-0.46, -0.17, -0.02, -0.04, -0.03], 1)] == [(True, True)] * 5
    assert not guard.model.stop_training
    assert epoch(6, -0.09) == (False, False)  # rising past the band: the collapse starting
    assert guard.model.stop_training
    assert "rose from 0.03 to 0.09 in epoch 6" in guard.reason and "train.max_epoch_cdiv=0.05" in guard.reason
    guard.reset()
    guard.seed([{"epoch": 1, "cdiv": -0.46}, {"epoch": 2, "cdiv": -0.17}, {"epoch": 3, "event": "rollback 1"}])
    assert epoch(3, -0.1) == (True, True)  # after a rollback to epoch 2: judged against epoch 2 (falling)
    assert epoch(4, 0.31) == (False, False)


def test_each_rollback_goes_back_one_more_healthy_epoch():
    from ebm import resume
    from ebm.callbacks import DivergenceGuard, HistoryCSV, TrainingStateKeeper

    model = tiny_model()
    model.optimizer.build(model.energy_net.trainable_variables)  # as the train stage does before keeping
    history = HistoryCSV("unused.csv")
    keeper = TrainingStateKeeper(None, "k", DivergenceGuard(1e4), history, depth=3)
    keeper.set_model(model)
    bias = model.energy_net.weights[1]
    for epoch in range(5):
        bias.assign(tf.fill(bias.shape, float(epoch)))
        history.rows.append({"epoch": epoch})
        keeper.keep(epoch)
    assert [s.epoch for s in keeper.states] == [2, 3, 4]  # the newest `depth`
    assert keeper.rewind(1).epoch == 4 and [s.epoch for s in keeper.states] == [2, 3, 4]
    assert keeper.rewind(2).epoch == 3 and [s.epoch for s in keeper.states] == [2, 3]
    resume.restore(model, keeper.last)
    assert np.all(bias.numpy() == 3.0) and keeper.last.history[-1] == {"epoch": 3}
    keeper.keep(3)  # the rolled-back state replaces its old copy
    assert [s.epoch for s in keeper.states] == [2, 3]
    assert keeper.rewind(3).epoch == 2  # asked further back than is kept: the oldest kept


def test_weight_decay_shrinks_every_weight_by_rate_times_decay_per_step():
    from ebm.config import parse_params
    from ebm.pipeline.train import build_model
    from tests.conftest import tiny_params_dict

    raw = tiny_params_dict()
    raw["train"].update(lr_schedule="constant", learning_rate=0.01, weight_decay=0.5)
    model = build_model(parse_params(raw))
    weights = model.energy_net.trainable_weights
    before = [w.numpy() for w in weights]
    model.optimizer.apply_gradients([(tf.zeros_like(w), w) for w in weights])  # no gradient: decay alone
    for b, w in zip(before, weights):
        assert np.allclose(w.numpy(), b * (1 - 0.01 * 0.5), atol=1e-7)


def test_the_class_balance_term_narrows_the_class_energy_gap_that_plain_cd_leaves():
    from ebm.config import DataConfig
    from ebm.data import load_mnist5k
    from ebm.losses import class_energy_spread

    split = load_mnist5k(DataConfig())[0]
    real, labels = tf.constant(split.x[:16]), tf.constant(split.y[:16])  # the tiny buffer's batch
    after = {}
    for weight in (0.0, 3000.0):
        model = tiny_model(class_balance=weight, real_noise=0.0, alpha=0.0)  # the same start and streams
        model.compile(optimizer=keras.optimizers.SGD(1e-3))
        before = float(class_energy_spread(model.energy(real), labels))
        logs = model.train_step((real, labels))
        after[weight] = float(class_energy_spread(model.energy(real), labels))
        assert ("spread" in logs) == (weight > 0)
    assert np.isclose(float(logs["spread"]), before, rtol=1e-4)  # the metric is the spread the step saw
    assert after[3000.0] < 0.5 * min(before, after[0.0])  # measured: 0.40 of it
    with pytest.raises(ValueError, match="labelled batches"):
        tiny_model(class_balance=1.0).train_step(real)
