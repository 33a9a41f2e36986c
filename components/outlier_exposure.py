"""Outlier exposure for phase 1 (Hendrycks et al. 2019), off by default.

With `TrainConfig(outlier_exposure=True)` the identity classifier also sees the known-unknown
train faces (label -1): for them the loss is the cross-entropy between the softmax and the
uniform distribution, so the network learns to spread its belief over all known people
instead of picking one confidently. Known faces keep the usual cross-entropy.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


def open_set_loss(weight: float, margin: float = 0.0):
    """Per-example loss on (label, logits): CE for label >= 0, weight * CE-to-uniform for -1.

    `margin` (logit units) is taken off the true class's logit in the known faces' CE (CosFace):
    0 gives the plain sparse softmax cross-entropy.
    """

    def loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        y = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        true_class = tf.one_hot(tf.maximum(y, 0), tf.shape(logits)[-1], dtype=logits.dtype)
        known_log_probs = tf.nn.log_softmax(logits - margin * true_class, axis=-1)
        known_ce = -tf.gather(known_log_probs, tf.maximum(y, 0), axis=1, batch_dims=1)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        # -mean_k log p_k: cross-entropy to uniform; its minimum, log N, is at uniform.
        uniform_ce = -tf.reduce_mean(log_probs, axis=-1)
        return tf.where(y >= 0, known_ce, weight * uniform_ce)

    loss.__name__ = "open_set_loss"
    return loss


class KnownAccuracy(keras.metrics.Metric):
    """Top-1 accuracy over examples with a label >= 0 (known faces) only."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_weight(name="correct", initializer="zeros")
        self.total = self.add_weight(name="total", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = tf.cast(tf.reshape(y_true, [-1]), tf.int64)
        known = tf.cast(y >= 0, tf.float32)
        hit = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), y), tf.float32) * known
        self.correct.assign_add(tf.reduce_sum(hit))
        self.total.assign_add(tf.reduce_sum(known))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)
