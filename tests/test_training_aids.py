"""The math of the training aids: the weights' moving average, the buffer's
coverage watch, and a CD step's wiring."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ebm.families.deep.buffer import ReplayBuffer
from ebm.families.deep.model import ContrastiveDivergenceModel, ema_update


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
    from ebm.families.deep.network import build_energy_network
    from ebm.families.deep.sampler import LangevinSampler

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


def test_a_cd_step_lowers_real_energy_relative_to_the_negatives():
    model = tiny_model()
    real = tf.constant(digits())
    starts = model.buffer.examples[:16]
    gap = lambda: float(tf.reduce_mean(model.energy(real)) - tf.reduce_mean(model.energy(starts)))  # noqa: E731
    before = gap()
    for _ in range(5):
        logs = model.train_step(real)
    assert gap() < before - 1e-3
    assert set(logs) == {"loss", "cdiv", "reg", "real", "fake"} and all(np.isfinite(float(v)) for v in logs.values())


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


def test_buffer_coverage_reads_a_collapsed_buffer_as_one_class():
    from ebm.families.deep.callbacks import BufferCoverage

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
    from ebm.families.deep.train import build_model
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
    from ebm.families.deep.callbacks import DivergenceGuard

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
    from ebm.families.deep import resume
    from ebm.families.deep.callbacks import DivergenceGuard, HistoryCSV, TrainingStateKeeper

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
    from ebm.families.deep.train import build_model
    from tests.conftest import tiny_params_dict

    raw = tiny_params_dict()
    raw["train"].update(lr_schedule="constant", learning_rate=0.01, weight_decay=0.5)
    model = build_model(parse_params(raw))
    weights = model.energy_net.trainable_weights
    before = [w.numpy() for w in weights]
    model.optimizer.apply_gradients([(tf.zeros_like(w), w) for w in weights])  # no gradient: decay alone
    for b, w in zip(before, weights):
        assert np.allclose(w.numpy(), b * (1 - 0.01 * 0.5), atol=1e-7)
