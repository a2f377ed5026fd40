"""The RBM and DBN math against brute-force sums over every state of tiny models."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from ebm.families.dbn.model import DBN
from ebm.families.rbm.ais import ais_log_partition, base_rate_biases, exact_log_partition
from ebm.families.rbm.data import binarize, intensities, to_images
from ebm.families.rbm.model import gibbs_chain
from ebm.families.rbm.model import RBM, free_energy, pseudo_likelihood, sgd


def states(n: int) -> np.ndarray:
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def random_rbm(visible, hidden, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, scale, (visible, hidden)), rng.normal(0, scale, visible), rng.normal(0, scale, hidden)


def brute_log_joint(w, b, c):
    """log exp(-E(v, h)) for every (v, h): array (2^V, 2^H)."""
    v, h = states(len(b)), states(len(c))
    return (v @ b)[:, None] + (h @ c)[None, :] + v @ w @ h.T


def logsumexp(x, axis=None):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True)), axis=axis)


def exact_log_p(w, b, c):
    joint = brute_log_joint(w, b, c)
    return logsumexp(joint, axis=1) - logsumexp(joint)


def test_exact_log_partition_by_hidden_enumeration_equals_the_sum_over_all_states():
    w, b, c = random_rbm(6, 4)
    assert exact_log_partition(w, b, c) == pytest.approx(float(logsumexp(brute_log_joint(w, b, c))), abs=1e-9)


def test_free_energy_and_pseudo_likelihood_match_direct_computation():
    w, b, c = random_rbm(6, 4, seed=1)
    v = states(6)
    joint = brute_log_joint(w, b, c)
    f = free_energy(tf.constant(v, tf.float64), w, b, c).numpy()
    np.testing.assert_allclose(f, -logsumexp(joint, axis=1), rtol=1e-9, atol=1e-9)
    # pseudo-likelihood with bit i flipped: D * log p(v_i | v_-i) = D * log p(v) / (p(v) + p(v~))
    log_p = exact_log_p(w, b, c)
    index = {tuple(s): k for k, s in enumerate(v)}
    flips = np.arange(len(v)) % 6
    flipped = v.copy()
    flipped[np.arange(len(v)), flips] = 1 - flipped[np.arange(len(v)), flips]
    other = log_p[[index[tuple(s)] for s in flipped]]
    expected = 6 * (log_p - np.logaddexp(log_p, other))
    got = pseudo_likelihood(tf.constant(v, tf.float64), w, b, c, tf.constant(flips)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_ais_agrees_with_the_exact_log_partition_within_its_error():
    w, b, c = random_rbm(784, 16, scale=0.3, seed=2)
    b = b - 1.0
    data = (np.random.default_rng(0).uniform(size=(500, 784)) < 0.2).astype(np.float32)
    exact = exact_log_partition(w, b, c)
    ais = ais_log_partition(w, b, c, base_rate_biases(data), runs=100, betas=2000, seed=0)
    assert ais.log_z_low <= exact <= ais.log_z_high, (ais, exact)
    assert abs(ais.log_z - exact) < 0.5
    crude = ais_log_partition(w, b, c, base_rate_biases(data), runs=100, betas=3, seed=0)  # barely annealed
    assert abs(crude.log_z - exact) > abs(ais.log_z - exact)


def test_gibbs_sampling_leaves_the_exact_distribution_invariant():
    w, b, c = random_rbm(4, 3, seed=3)
    p = np.exp(exact_log_p(w, b, c))
    v = states(4)
    n = 20000
    rng = np.random.default_rng(0)
    start = v[rng.choice(len(v), n, p=p)]  # exact draws; a sweep must keep them exact
    for steps in (1, 30):
        final, _, _ = gibbs_chain(tf.constant(w, tf.float32), tf.constant(b, tf.float32), tf.constant(c, tf.float32),
                                  start.astype(np.float32), steps, seed=steps)
        codes = (final @ (2 ** np.arange(4)[::-1])).astype(int)
        counts = np.bincount(codes, minlength=16)
        assert stats.chisquare(counts, n * p).pvalue > 1e-3, (steps, counts, n * p)
    # and from uniform random bits, a long chain converges to it
    noise = (rng.uniform(size=(n, 4)) < 0.5).astype(np.float32)
    final, _, _ = gibbs_chain(tf.constant(w, tf.float32), tf.constant(b, tf.float32), tf.constant(c, tf.float32),
                              noise, 50, seed=9)
    counts = np.bincount((final @ (2 ** np.arange(4)[::-1])).astype(int), minlength=16)
    assert stats.chisquare(counts, n * p).pvalue > 1e-3


@pytest.mark.parametrize("persistent", [True, False])
def test_contrastive_divergence_raises_the_exact_likelihood_of_the_data(persistent):
    data = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]] * 50, np.float32)
    rbm = RBM(6, 4, cd_k=1, persistent=persistent, batch_size=20, seed=0)
    rbm.compile(optimizer=sgd(0.1, 0.5, 0.0))

    def loglik():
        w, b, c = (x.numpy().astype(np.float64) for x in (rbm.w, rbm.b, rbm.c))
        return float(np.mean(-free_energy(tf.constant(data, tf.float64), w, b, c).numpy()) - exact_log_partition(w, b, c))

    before = loglik()
    rbm.fit(tf.data.Dataset.from_tensor_slices(data).shuffle(100, seed=0).batch(20), epochs=30, verbose=0)
    after = loglik()
    assert after > before + 2.0, (before, after)  # ln 2 per pattern is the optimum: -0.69
    assert after > -2.5


def test_dbn_bound_is_below_the_exact_log_probability_and_close_with_many_samples():
    wb, bb, cb = random_rbm(6, 4, seed=4)
    wt, bt, ct = random_rbm(4, 3, seed=5)
    dbn = DBN(bottom=dict(visible=6, hidden=4, batch_size=4), top=dict(visible=4, hidden=3, batch_size=4))
    for rbm, values in ((dbn.bottom, (wb, bb, cb)), (dbn.top, (wt, bt, ct))):
        for var, value in zip((rbm.w, rbm.b, rbm.c), values):
            var.assign(value.astype(np.float32))
    v, h = states(6), states(4)
    log_z_top = exact_log_partition(wt, bt, ct)
    log_p_h = -free_energy(tf.constant(h, tf.float64), wt, bt, ct).numpy() - log_z_top  # top RBM's p(h1)
    a = h @ wb.T + bb  # (2^4, 6): visible logits given each h1
    log_p_v_given_h = v @ np.log(1 / (1 + np.exp(-a))).T + (1 - v) @ np.log(1 / (1 + np.exp(a))).T
    exact = logsumexp(log_p_v_given_h + log_p_h[None, :], axis=1)
    bound = dbn.log_likelihood_bound(v.astype(np.float32), log_z_top, samples=4000, seed=0)
    assert np.all(bound <= exact + 0.05)
    assert np.all(bound > exact - 3.0)
    assert np.exp(exact).sum() == pytest.approx(1.0, abs=1e-9)  # the brute force is a distribution


def test_models_round_trip_through_the_model_file(tmp_path):
    from ebm.families import load_model_file

    rbm = RBM(784, 8, batch_size=4, seed=3)
    dbn = DBN(bottom=dict(visible=784, hidden=8, batch_size=4), top=dict(visible=8, hidden=5, batch_size=4))
    for model in (rbm, dbn):
        path = tmp_path / f"{model.family}.keras"
        model.save(path)
        back = load_model_file(path)
        assert back.family == model.family
        x = (np.random.default_rng(0).uniform(size=(3, 784)) < 0.3).astype(np.float32)
        np.testing.assert_allclose(back.visible_energy(x), model.visible_energy(x), rtol=1e-6)


def test_binarised_digits_and_images_convert_both_ways():
    img = np.full((2, 32, 32, 1), -1.0, np.float32)
    img[:, 2:30, 2:30, 0] = np.linspace(-1, 1, 784).reshape(28, 28)
    p = intensities(img)
    assert p.shape == (2, 784) and p.min() == 0.0 and p.max() == 1.0
    np.testing.assert_allclose(to_images(p), img, atol=1e-6)
    np.testing.assert_array_equal(binarize(img, "threshold", 0), (p > 0.5).astype(np.float32))
    draw = binarize(img, "stochastic", 0)
    np.testing.assert_array_equal(draw, binarize(img, "stochastic", 0))  # one fixed draw per seed
    assert abs(draw.mean() - p.mean()) < 0.03


def test_clamped_gibbs_completion_keeps_the_observed_pixels():
    from ebm import families
    from ebm.config import Params
    from ebm.images import hidden_mask

    rbm = RBM(784, 16, seed=0)
    rbm.w.assign(tf.random.stateless_normal((784, 16), (1, 2), stddev=0.5))
    rng = np.random.default_rng(0)
    observed = to_images(rng.uniform(size=(3, 784)).round().astype(np.float32))
    hidden = hidden_mask("bottom-half", 3)
    filled = families.get("rbm").complete(Params(), rbm, observed, hidden, steps=5, seed=0)
    assert filled.shape == observed.shape
    np.testing.assert_allclose(filled[~hidden], observed[~hidden], atol=1e-6)
    assert 0.0 < intensities(filled)[:, 14 * 28:].std()  # the hidden half holds the chains' probabilities
    with pytest.raises(ValueError, match="not supported for the dbn family yet"):
        families.get("dbn").complete(Params(), object(), observed, hidden, steps=1, seed=0)
