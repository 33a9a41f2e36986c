"""Outlier exposure: the phase-1 loss and the known-only accuracy against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components import outlier_exposure as OE
from components.training import TrainConfig

LOGITS = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0], [4.0, -2.0, 0.0]])
LABELS = np.array([0, 2, -1, -1])


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_loss_is_cross_entropy_for_known_and_to_uniform_for_outliers():
    got = OE.open_set_loss(0.5)(tf.constant(LABELS), tf.constant(LOGITS)).numpy()
    lp = _log_softmax(LOGITS)
    want = [-lp[0, 0], -lp[1, 2], 0.5 * -lp[2].mean(), 0.5 * -lp[3].mean()]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Uniform logits are the outlier loss' minimum: log(number of classes).
    assert got[2] == pytest.approx(0.5 * np.log(3))


def test_known_accuracy_ignores_outliers():
    m = OE.KnownAccuracy()
    m.update_state(tf.constant(LABELS), tf.constant(LOGITS))
    assert float(m.result()) == pytest.approx(0.5)  # row 0 right, row 1 wrong; rows 2-3 skipped


def test_off_by_default():
    assert TrainConfig().outlier_exposure is False
    assert TrainConfig.from_dict({"outlier_exposure": True}).outlier_exposure is True


def test_margin_is_taken_off_the_true_logit_of_known_faces_only():
    margin = 0.8
    got = OE.open_set_loss(0.5, margin=margin)(tf.constant(LABELS), tf.constant(LOGITS)).numpy()
    shifted = LOGITS.copy()
    shifted[0, 0] -= margin
    shifted[1, 2] -= margin
    lp_shift, lp = _log_softmax(shifted), _log_softmax(LOGITS)
    want = [-lp_shift[0, 0], -lp_shift[1, 2], 0.5 * -lp[2].mean(), 0.5 * -lp[3].mean()]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Without outlier exposure (weight 0) the known rows are plain sparse cross-entropy.
    plain = OE.open_set_loss(0.0)(tf.constant(LABELS[:2]), tf.constant(LOGITS[:2])).numpy()
    np.testing.assert_allclose(plain, [-lp[0, 0], -lp[1, 2]], rtol=1e-6)


def test_mixed_outliers_are_blends_of_two_different_known_people():
    from components.data import add_mixed_outliers

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(8, 4, 4, 3)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, -1, 3])
    tf.random.set_seed(3)
    out_images, out_labels = add_mixed_outliers(tf.constant(images), tf.constant(labels), 0.5)
    out_images, out_labels = out_images.numpy(), out_labels.numpy()
    # The batch itself is untouched; at most ceil(0.5 * 8) = 4 blends follow it, all labelled -1.
    np.testing.assert_array_equal(out_images[:8], images)
    np.testing.assert_array_equal(out_labels[:8], labels)
    blends = out_images[8:]
    assert 1 <= len(blends) <= 4
    assert np.all(out_labels[8:] == -1)
    # Each blend is mix * a + (1 - mix) * b, mix in [0.4, 0.6], for two faces of different
    # known people: solve for (a, b, mix) by least squares over every pair.
    flat = images.reshape(8, -1)
    for blend in blends.reshape(len(blends), -1):
        best = None
        for i in range(8):
            for j in range(8):
                if i == j:
                    continue
                d = flat[i] - flat[j]
                mix = float(np.dot(blend - flat[j], d) / np.dot(d, d))
                err = float(np.abs(mix * flat[i] + (1 - mix) * flat[j] - blend).max())
                if best is None or err < best[0]:
                    best = (err, i, j, mix)
        err, i, j, mix = best
        assert err < 1e-3
        assert 0.4 - 1e-6 <= mix <= 0.6 + 1e-6
        assert labels[i] >= 0 and labels[j] >= 0 and labels[i] != labels[j]


def test_mixed_outliers_on_by_default_and_independent_of_outlier_exposure():
    assert TrainConfig().mixed_outliers == 0.5 and TrainConfig().outlier_exposure is False
    assert TrainConfig.from_dict({"mixed_outliers": 0.0}).mixed_outliers == 0.0
