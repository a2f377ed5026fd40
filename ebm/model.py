"""The contrastive-divergence model: a ``keras.Model`` whose ``train_step`` is the recipe.

It receives its energy network, Langevin sampler and replay buffer; it reads no config file
and logs nothing (callbacks attached by the train stage do that).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ebm.augment import random_shift
from ebm.buffer import ReplayBuffer
from ebm.kernels import add_noise, langevin_move
from ebm.losses import class_energy_spread, contrastive_divergence, energy_regulariser, nearest_log_distance, through_sampler
from ebm.network import chain_energy, energy_fn
from ebm.sampler import LangevinSampler


class ContrastiveDivergenceModel(keras.Model):
    """Trains E(x) by contrastive divergence with replay-buffer Langevin negatives.

    Metrics (energies, so lower = more data-like): ``loss`` = cdiv + reg (+ the class-balance
    term when on), ``cdiv``,
    ``reg`` = alpha * mean(E_real^2 + E_fake^2), ``real`` = mean E(real), ``fake`` = mean E(negatives). ``test_step`` scores real
    test images against uniform noise (``cdiv``, ``real``, ``fake``).

    ``buffer_shift`` > 0 moves each replayed chain start by a random offset of up to that many
    pixels before its chain runs (:func:`ebm.augment.random_shift`). ``ema_decay`` > 0 keeps an
    exponential moving average of the weights (:func:`ema_update`) after every step;
    :meth:`sampling_network` is the network with those weights, the one to sample from.

    ``kl_weight`` > 0 adds the KL term of Du et al. (2021): the chain's last Langevin step is
    taken again, differentiably in the weights (:meth:`_last_step`), and ``kl_weight`` x the
    mean energy of its result, under the weights held fixed, is minimised *through that step*
    (:func:`ebm.losses.through_sampler`): the network learns to make one step of its own sampler
    go further downhill. ``kl_repel`` > 0 adds their entropy term to that objective: minus
    ``kl_repel`` x the mean log distance of each negative to its nearest of ``kl_compare``
    buffer examples. Metric ``kl``: that objective's value.

    ``class_balance`` > 0 adds ``class_balance`` x the between-class variance of the real
    digits' energies (:func:`ebm.losses.class_energy_spread`) to the loss; the batches must then
    be ``(images, labels)``. Metric ``spread``: that variance (the term's value / its weight).
    Under ``tf.distribute`` each replica measures it on its own share of the batch.

    ``native_update`` (with neither of those two terms, where the network has the whole-chain
    CPU op): the update's forward and weight-gradient pass is one op
    (:func:`ebm.kernels.energy_gradients`), the loss being sum_i a_i E_i + b_i E_i^2 in each
    image's energy. Same gradients as the tape's to float rounding, summed in another order: a
    model trained either way is a different draw of the same recipe, not the same bits.
    """

    def __init__(self, energy_net: keras.Model, sampler: LangevinSampler, buffer: ReplayBuffer,
                 alpha: float = 0.1, real_noise: float = 0.005, seed: int = 0, buffer_shift: int = 0,
                 ema_decay: float = 0.0, kl_weight: float = 0.0, kl_repel: float = 0.0, kl_compare: int = 100,
                 class_balance: float = 0.0, native_update: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.energy_net = energy_net
        self.sampler = sampler
        self.buffer = buffer
        self.alpha = alpha
        self.real_noise = real_noise
        self.buffer_shift = buffer_shift
        self.ema_decay = ema_decay
        self.kl_weight = kl_weight
        self.kl_repel = kl_repel
        self.kl_compare = kl_compare
        self.class_balance = class_balance
        self.native_update = native_update
        self.rng = tf.random.Generator.from_seed(seed)
        self.val_rng = tf.random.Generator.from_seed(seed + 7919)  # validation noise, apart from training's
        self.lr_scale = tf.Variable(1.0, trainable=False, name="lr_scale")  # lowered by each rollback
        self.rollbacks = tf.Variable(0, trainable=False, name="rollbacks")
        self.chain_energy = chain_energy(energy_net)
        self._sampling_copy = None  # built by sampling_network()
        self.ema_weights = [tf.Variable(w, trainable=False, name="ema",  # the same on every replica
                                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                            for w in energy_net.weights] if ema_decay > 0 else []
        names = (("loss", "cdiv", "reg", "real", "fake") + (("kl",) if kl_weight > 0 else ())
                 + (("spread",) if class_balance > 0 else ()))
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, x):
        return self.energy_net(x)

    def energy(self, x):
        return energy_fn(self.energy_net)(x)

    def train_step(self, data):
        real = self._images(data)
        if self.real_noise > 0:
            real = add_noise(real, self.rng.make_seeds(1)[:, 0], self.real_noise)
        kl = self.kl_weight > 0
        steps = self.sampler.steps - 1 if kl else self.sampler.steps  # with the KL term the last step runs below
        fake = self.sampler.run(self.chain_energy, self._starts(), steps=steps) if steps > 0 else self._starts()
        chain = self.chain_energy  # the network's fast form: same energies and gradients
        # under tf.distribute each replica's loss is the mean over its share of the batch and the
        # optimizer sums the replicas' gradients: dividing by their number gives the batch mean's
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        weights = self.energy_net.trainable_weights
        if self.native_update and chain.weight_gradients is not None and not kl and self.class_balance <= 0:
            e_real, e_fake, grads = self._native_gradients(real, fake, replicas)
            cdiv = contrastive_divergence(e_real, e_fake)
            reg = self.alpha * energy_regulariser(e_real, e_fake)
            loss, extra = cdiv + reg, {}
        else:
            with tf.GradientTape() as tape:
                if kl:
                    stepped = self._last_step(fake)  # depends on the weights through the step
                    fake = tf.stop_gradient(stepped)
                e_real, e_fake = tf.split(chain.energy(chain.to_state(tf.concat([real, fake], axis=0))), 2)
                cdiv = contrastive_divergence(e_real, e_fake)
                reg = self.alpha * energy_regulariser(e_real, e_fake)
                loss = cdiv + reg
                extra = {}
                if self.class_balance > 0:
                    extra["spread"] = class_energy_spread(e_real, self._labels(data))
                    loss += self.class_balance * extra["spread"]
                objective = loss
                if kl:  # the surrogate is differentiated, not reported: its value means nothing
                    with tape.stop_recording():
                        extra["kl"], direction = self._kl_objective(fake)
                    objective = loss + self.kl_weight * through_sampler(stepped, direction)
                replica_loss = objective / replicas if replicas > 1 else objective
            grads = tape.gradient(replica_loss, weights)
        self.buffer.push(fake)
        self.optimizer.apply_gradients(zip(grads, weights))
        if self.ema_weights:
            ema_update(self.ema_weights, self.energy_net.weights, self.ema_decay)
        return self._update(loss=loss, cdiv=cdiv, reg=reg, real=tf.reduce_mean(e_real), fake=tf.reduce_mean(e_fake),
                            **extra)

    def _native_gradients(self, real, fake, replicas):
        """Energies of ``real`` and ``fake`` and the weight gradients of cdiv + alpha x reg, in one
        op: d loss / d E_i is 1/n + 2 alpha E_i / n for the n real images, -1/n + 2 alpha E_i / n
        for the negatives (divided by the replicas, as the tape's loss is)."""
        n = tf.cast(tf.shape(real)[0], tf.float32)
        ones = tf.ones(tf.shape(real)[:1])
        a = tf.concat([ones, -ones], axis=0) / (n * replicas)
        b = tf.concat([ones, ones], axis=0) * (self.alpha / (n * replicas))
        energies, grads = self.chain_energy.weight_gradients(tf.concat([real, fake], axis=0), a, b)
        e_real, e_fake = tf.split(energies, 2)
        return e_real, e_fake, grads

    def _last_step(self, x):
        """One step of the sampler's update in TF ops whose result stays differentiable in the
        weights (the whole-chain op is not): noise, dE/dx under a recording tape, the clipped
        move. Only the unclipped components of the move carry a gradient, as in the chain."""
        s = self.sampler
        if s.noise > 0:
            x = add_noise(x, self.rng.make_seeds(1)[:, 0], s.noise)
        with tf.GradientTape() as inner:  # Keras' own layers: the fast form's swish has no second derivative
            inner.watch(x)
            total = tf.reduce_sum(self.energy(x))
        return langevin_move(x, inner.gradient(total, x), s.step_size, s.grad_clip, native=False)

    def _kl_objective(self, x):
        """The KL term's objective on negatives ``x`` with the weights held fixed, and its
        gradient in ``x``: mean E(x), minus ``kl_repel`` x the mean log nearest-neighbour
        distance to ``kl_compare`` buffer examples."""
        with tf.GradientTape() as tape:
            tape.watch(x)
            objective = tf.reduce_mean(self.energy(x))
            if self.kl_repel > 0:
                idx = self.rng.uniform([self.kl_compare], minval=0, maxval=self.buffer.size, dtype=tf.int32)
                objective -= self.kl_repel * nearest_log_distance(x, tf.gather(self.buffer.examples, idx))
        return objective, tape.gradient(objective, x)

    def _starts(self):
        """Chain starts from the buffer; replayed ones shifted when ``buffer_shift`` > 0 (fresh
        noise gains nothing from a shift)."""
        starts, fresh = self.buffer.sample(with_mask=True)
        if self.buffer_shift <= 0:
            return starts
        shifted = random_shift(starts, self.rng.make_seeds(1)[:, 0], self.buffer_shift)
        return tf.where(fresh[:, None, None, None], starts, shifted)

    def sampling_network(self) -> keras.Model:
        """The network to sample from: when ``ema_decay`` > 0, a copy holding the moving-average
        weights as they are now (the same copy at every call, its weights refreshed: cloning a
        network costs more than saving it, and callbacks ask after every epoch), else the
        trained network itself."""
        if not self.ema_weights:
            return self.energy_net
        if self._sampling_copy is None:  # kept out of Keras's tracking: not a layer of this model
            object.__setattr__(self, "_sampling_copy", keras.models.clone_model(self.energy_net))
        self._sampling_copy.set_weights([w.numpy() for w in self.ema_weights])
        return self._sampling_copy

    def test_step(self, data):
        real = self._images(data)
        noise = self.val_rng.uniform(tf.shape(real), minval=-1.0, maxval=1.0)
        e_real, e_fake = self.energy(real), self.energy(noise)
        return self._update(cdiv=contrastive_divergence(e_real, e_fake), real=tf.reduce_mean(e_real),
                            fake=tf.reduce_mean(e_fake))

    def _update(self, **values):
        for name, value in values.items():
            self.trackers[name].update_state(value)
        results = {name: self.trackers[name].result() for name in values}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras averages multi-worker step outputs along axis 0, which a scalar lacks
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    @staticmethod
    def _images(data):
        return data[0] if isinstance(data, (tuple, list)) else data

    @staticmethod
    def _labels(data):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            raise ValueError("class_balance > 0 needs labelled batches: (images, labels)")
        return data[1]


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``scale * base(step)``: a learning-rate schedule (or constant) times a variable, so a
    rollback can lower the rate of a compiled model."""

    def __init__(self, base, scale: tf.Variable):
        self.base = base
        self.scale = scale

    def __call__(self, step):
        base = self.base(step) if callable(self.base) else self.base
        return tf.cast(base, tf.float32) * self.scale

    def get_config(self):
        return {"base": self.base if not callable(self.base) else self.base.get_config(),
                "scale": float(self.scale.numpy())}


def ema_update(averages, values, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * value`` for each pair of variables."""
    for average, value in zip(averages, values):
        average.assign(decay * average + (1.0 - decay) * value)
