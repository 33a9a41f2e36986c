"""Calibration: temperature and threshold fitted on the calib split only, carried by the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from components import calibration as C
from components import data, open_set
from components import features as F


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_fit_temperature_matches_a_brute_force_nll_minimum():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2000, 5))
    # Labels drawn from softmax(logits / 2.5): the model is over-confident by T = 2.5.
    probs = open_set.softmax(logits, 2.5)
    labels = np.array([rng.choice(5, p=p) for p in probs])
    fitted = C.fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
    z = logits[None] / grid[:, None, None]
    nll = np.mean(
        np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, labels[None, :, None], -1)[..., 0], 1
    )
    assert fitted == pytest.approx(grid[np.argmin(nll)], rel=1e-3)
    assert fitted == pytest.approx(2.5, rel=0.1)


def test_threshold_is_the_weibull_quantile_of_unknown_scores():
    scores = _sigmoid(np.linspace(-5, 5, 21))  # logits -5, -4.5, ..., 5
    t = C.threshold_for_far(scores, 0.05)
    # Order statistic k = 0.95 * (21 + 1) = 20.9: 90% of the way from logit 4.5 to 5.0.
    assert t == pytest.approx(_sigmoid(4.95))
    assert open_set.false_accept_rate(scores, t) == pytest.approx(1 / 21)
    t10 = C.threshold_for_far(scores, 0.125)  # k = 0.875 * 22 = 19.25 -> logit 4.125
    assert t10 == pytest.approx(_sigmoid(4.125))
    # Too few faces for the target: the highest score.
    assert C.threshold_for_far(scores[:10], 0.05) == pytest.approx(scores[9])


@pytest.mark.parametrize("n, expected_far", [(99, 0.05), (16, 1 / 17)])
def test_threshold_lets_through_the_target_share_of_new_unknown_faces(n, expected_far):
    from scipy.stats import norm

    # Unknown faces' P(known) logits ~ N(0, 1): a new face passes with probability 1 - Phi(t).
    rng = np.random.default_rng(5)
    far = [
        norm.sf(C._logit(C.threshold_for_far(_sigmoid(rng.normal(size=n)), 0.05)))
        for _ in range(3000)
    ]
    assert np.mean(far) == pytest.approx(expected_far, abs=0.004)


def _calib_arrays(n_known=12, n_unknown=12):
    rng = np.random.default_rng(1)
    labels = np.concatenate([rng.integers(0, 3, n_known), -np.ones(n_unknown, int)])
    logits = rng.normal(0, 1, (n_known + n_unknown, 3))
    logits[np.arange(n_known), labels[:n_known]] += 2  # a few wrong: an interior optimum
    known_prob = np.concatenate([rng.uniform(0.5, 1, n_known), rng.uniform(0, 0.6, n_unknown)])
    is_known = (labels >= 0).astype(int)
    return logits, labels, known_prob, is_known


def test_calibrate_arrays_reports_what_it_fitted():
    logits, labels, known_prob, is_known = _calib_arrays()
    res = C.calibrate_arrays(logits, labels, known_prob, is_known, C.CalibrationConfig())
    known = is_known == 1
    fitted = C.fit_temperature(logits[known], labels[known])
    assert res.temperature_fitted == pytest.approx(fitted)
    all_right = np.all(np.argmax(logits[known], 1) == labels[known])
    assert res.temperature == (1.0 if all_right else pytest.approx(fitted))
    assert res.threshold == pytest.approx(C.threshold_for_far(known_prob[~known], 0.05))
    assert res.calib_far == pytest.approx(np.mean(known_prob[~known] >= res.threshold))
    assert res.calib_tar == pytest.approx(np.mean(known_prob[known] >= res.threshold))
    assert res.nll_after <= res.nll_before + 1e-12
    assert (res.num_known, res.num_known_unknown) == (12, 12)


@pytest.mark.parametrize(
    "n_known, n_unknown, message",
    [
        (12, 0, "0 known-unknown face"),  # one class only
        (0, 12, "0 known face"),  # one class only
        (2, 12, "2 known face"),  # too few
        (12, 3, "3 known-unknown face"),  # too few
    ],
)
def test_degenerate_calib_split_is_a_clear_error(n_known, n_unknown, message):
    with pytest.raises(C.CalibrationError, match=message) as err:
        C.calibrate_arrays(*_calib_arrays(n_known, n_unknown))
    assert "--num-known-unknown" in str(err.value)


def test_config_rejects_bad_settings():
    assert C.CalibrationConfig.from_dict(None) == C.CalibrationConfig()
    assert C.CalibrationConfig().target_far == 0.05
    with pytest.raises(ValueError, match="unknown calibration settings"):
        C.CalibrationConfig.from_dict({"target_fpr": 0.1})
    with pytest.raises(ValueError, match="target_far"):
        C.CalibrationConfig.from_dict({"target_far": 1.5})


def test_unknown_unknown_faces_in_calib_split_are_refused(tiny_run, tmp_path):
    # A calib file polluted with one test-split (unknown-unknown) face.
    test_records = list(tf.data.TFRecordDataset(str(next((tiny_run.data_dir / "test").iterdir()))))
    calib_records = list(
        tf.data.TFRecordDataset(str(next((tiny_run.data_dir / "calib").iterdir())))
    )
    uu = next(
        r
        for r in test_records
        if tf.io.parse_single_example(r, data.FEATURE_SPEC)[F.ROLE_KEY] == F.ROLE_UNKNOWN_UNKNOWN
    )
    path = tmp_path / "calib.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in [*calib_records, uu]:
            w.write(r.numpy())
    with pytest.raises(C.CalibrationError, match="1 unknown-unknown face"):
        C.read_calib_split(str(path), 32)


def test_trainer_calibrates_on_calib_split_only(tiny_run):
    # The Trainer asked for the calib split, and nothing else.
    assert tiny_run.calib_reads == [[str(tiny_run.data_dir / "calib" / "*")]]
    report = json.loads((tiny_run.run_dir / "training_report.json").read_text())
    inputs = report["calibration"]["inputs"]
    assert inputs["files"] and all("/calib/" in f for f in inputs["files"])
    assert set(inputs["role_counts"]) == {F.ROLE_KNOWN, F.ROLE_KNOWN_UNKNOWN}
    assert inputs["role_counts"] == {F.ROLE_KNOWN: 8 * 2, F.ROLE_KNOWN_UNKNOWN: 4 * 2}
    assert not set(inputs["identities"]) & set(tiny_run.roles[F.ROLE_UNKNOWN_UNKNOWN])
    # Every calib face was read (so none was silently skipped either).
    n_calib = sum(1 for _ in data.read_examples(str(tiny_run.data_dir / "calib" / "*")))
    assert sum(inputs["role_counts"].values()) == n_calib


def test_exported_model_carries_temperature_and_threshold(tiny_run):
    info = json.loads((tiny_run.model_dir / "assets.extra" / "facegate.json").read_text())
    cal = info["calibration"]
    assert info["threshold"] == cal["threshold"] and info["temperature"] == cal["temperature"]
    assert 0.0 < info["threshold"] < 1.0 and info["temperature"] > 0
    loaded = tf.saved_model.load(str(tiny_run.model_dir))
    images = [
        r[F.IMAGE_KEY].numpy() for r in data.read_examples(str(tiny_run.data_dir / "test" / "*"))
    ]
    out = loaded.signatures[F.SIGNATURE_IMAGE_BYTES](image_bytes=tf.constant(images))
    threshold = out[F.OUTPUT_THRESHOLD].numpy()
    assert np.all(threshold == np.float32(info["threshold"]))
    known_prob = out[F.OUTPUT_KNOWN_PROB].numpy()
    np.testing.assert_array_equal(out[F.OUTPUT_IS_KNOWN].numpy(), known_prob >= threshold)
    np.testing.assert_allclose(
        out[F.OUTPUT_IDENTITY_PROBS].numpy(),
        open_set.softmax(out[F.OUTPUT_LOGITS].numpy(), info["temperature"]),
        atol=1e-5,
    )


def test_temperature_on_a_bound_falls_back_to_one():
    # Every known calib face right with a wide margin: the NLL falls all the way to T -> 0.
    _, labels, known_prob, is_known = _calib_arrays()
    logits = 3.0 * np.eye(3)[np.maximum(labels, 0)]
    res = C.calibrate_arrays(logits, labels, known_prob, is_known)
    assert res.temperature_fitted < 0.1  # the NLL optimum heads for the lower bound
    assert res.temperature == 1.0
    assert res.nll_after == pytest.approx(res.nll_before)
