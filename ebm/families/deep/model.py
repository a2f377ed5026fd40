"""The contrastive-divergence model: a ``keras.Model`` whose ``train_step`` is the recipe.

It receives its energy network, Langevin sampler and replay buffer; it reads no config file
and logs nothing (callbacks attached by the train stage do that).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ebm.families.deep.buffer import ReplayBuffer
from ebm.families.deep.native import add_noise
from ebm.families.deep.losses import contrastive_divergence, energy_regulariser
from ebm.families.deep.network import chain_energy, energy_fn
from ebm.families.deep.sampler import LangevinSampler


class ContrastiveDivergenceModel(keras.Model):
    """Trains E(x) by contrastive divergence with replay-buffer Langevin negatives.

    Metrics (energies, so lower = more data-like): ``loss`` = cdiv + reg, ``cdiv``,
    ``reg`` = alpha * mean(E_real^2 + E_fake^2), ``real`` = mean E(real), ``fake`` = mean E(negatives).
    ``test_step`` scores real test images against uniform noise (``cdiv``, ``real``, ``fake``).

    ``ema_decay`` > 0 keeps an exponential moving average of the weights (:func:`ema_update`)
    after every step; :meth:`sampling_network` is the network with those weights, the one to
    sample from.
    """

    def __init__(self, energy_net: keras.Model, sampler: LangevinSampler, buffer: ReplayBuffer,
                 alpha: float = 0.1, real_noise: float = 0.005, seed: int = 0, ema_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.energy_net = energy_net
        self.sampler = sampler
        self.buffer = buffer
        self.alpha = alpha
        self.real_noise = real_noise
        self.ema_decay = ema_decay
        self.rng = tf.random.Generator.from_seed(seed)
        self.val_rng = tf.random.Generator.from_seed(seed + 7919)  # validation noise, apart from training's
        self.lr_scale = tf.Variable(1.0, trainable=False, name="lr_scale")  # lowered by each rollback
        self.rollbacks = tf.Variable(0, trainable=False, name="rollbacks")
        self.chain_energy = chain_energy(energy_net)
        self._sampling_copy = None  # built by sampling_network()
        self.ema_weights = [tf.Variable(w, trainable=False, name="ema",  # the same on every replica
                                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                            for w in energy_net.weights] if ema_decay > 0 else []
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "cdiv", "reg", "real", "fake")}

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
        fake = self.sampler.run(self.chain_energy, self.buffer.sample())
        chain = self.chain_energy  # the network's fast form: same energies and gradients
        # under tf.distribute each replica's loss is the mean over its share of the batch and the
        # optimizer sums the replicas' gradients: dividing by their number gives the batch mean's
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        weights = self.energy_net.trainable_weights
        with tf.GradientTape() as tape:
            e_real, e_fake = tf.split(chain.energy(chain.to_state(tf.concat([real, fake], axis=0))), 2)
            cdiv = contrastive_divergence(e_real, e_fake)
            reg = self.alpha * energy_regulariser(e_real, e_fake)
            loss = cdiv + reg
            replica_loss = loss / replicas if replicas > 1 else loss
        grads = tape.gradient(replica_loss, weights)
        self.buffer.push(fake)
        self.optimizer.apply_gradients(zip(grads, weights))
        if self.ema_weights:
            ema_update(self.ema_weights, self.energy_net.weights, self.ema_decay)
        return self._update(loss=loss, cdiv=cdiv, reg=reg, real=tf.reduce_mean(e_real), fake=tf.reduce_mean(e_fake))

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
