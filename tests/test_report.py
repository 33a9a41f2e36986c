"""The report: figures from the exported model, files on disk, and `facegate report`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from components import baselines as B
from components import data, open_set
from components import features as F
from components import report as R


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    patterns = {s: str(tiny_run.data_dir / s / "*") for s in F.SPLITS}
    return R.build_report(tiny_run.model_dir, patterns, out), out


def test_report_files_exist(built):
    report, out = built
    for name in ("reliability", "roc", "det", "known_prob_hist", "per_identity", "html", "json"):
        path = report.files[name]
        assert path.startswith(str(out)) and tf.io.gfile.stat(path).length > 1000, name
    page = (out / R.REPORT_HTML).read_text()
    assert "reliability.png" in page and f"{report.threshold:.4f}" in page


def test_report_threshold_is_the_exported_models(built, tiny_run):
    report, _ = built
    info = json.loads((tiny_run.model_dir / "assets.extra" / "facegate.json").read_text())
    assert np.float32(report.threshold) == np.float32(info["threshold"])
    assert report.temperature == info["temperature"]
    assert R.load_report(built[1])["threshold"] == report.threshold


def test_report_figures_match_numpy_on_model_outputs(built, tiny_run):
    report, _ = built
    ex = list(data.read_examples(str(tiny_run.data_dir / "test" / "*")))
    fn = tf.saved_model.load(str(tiny_run.model_dir)).signatures[F.SIGNATURE_IMAGE_BYTES]
    out = fn(image_bytes=tf.constant([e[F.IMAGE_KEY].numpy() for e in ex]))
    labels = np.array([int(e[F.LABEL_KEY]) for e in ex])
    known = labels >= 0
    kp = out[F.OUTPUT_KNOWN_PROB].numpy()
    assert report.num_known_test == known.sum() == 16
    assert report.num_unknown_test == (~known).sum() == 4 * 6
    top1 = np.mean(out[F.OUTPUT_IDENTITY].numpy()[known] == labels[known])
    assert report.identity_top1 == pytest.approx(top1)
    assert report.test_far == pytest.approx(np.mean(out[F.OUTPUT_IS_KNOWN].numpy()[~known]))
    assert report.known_ece == pytest.approx(open_set.ece(kp, known))
    logits = out[F.OUTPUT_LOGITS].numpy()
    mx = report.scorers[B.MAX_LOGIT]
    assert mx.auroc == pytest.approx(open_set.auroc(logits.max(1), known))
    # sigmoid(a * max_logit + b), a > 0, ranks as the max logit does (DESIGN.md).
    assert report.scorers[R.CERTAINTY].auroc == pytest.approx(mx.auroc, abs=1e-6)


def test_eigenfaces_nearest_neighbour_by_hand():
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 255, (12, 8, 8, 3))
    labels = np.repeat(np.arange(4), 3)
    model = B.Eigenfaces.fit(train, labels, n_components=5)
    assert model.components.shape == (5, 64)
    # A train face is its own nearest neighbour at distance 0.
    pred, score = model.predict(train)
    np.testing.assert_array_equal(pred, labels)
    np.testing.assert_allclose(score, 0.0, atol=1e-6)
    # Whitened: projected train faces have unit variance per component.
    np.testing.assert_allclose(model.gallery.var(axis=0, ddof=1), 1.0, rtol=1e-6)
    q = rng.uniform(0, 255, (3, 8, 8, 3))
    d = np.linalg.norm(model.project(q)[:, None] - model.gallery[None], axis=-1)
    pred, score = model.predict(q)
    np.testing.assert_array_equal(pred, labels[d.argmin(1)])
    np.testing.assert_allclose(score, -d.min(1), rtol=1e-6)


def test_logit_baselines():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    s = B.logit_scores(logits)
    np.testing.assert_allclose(s[B.MAX_LOGIT], [2.0, 0.5])
    np.testing.assert_allclose(s[B.ENERGY], np.log(np.exp(logits).sum(1)))
    np.testing.assert_allclose(s[B.MSP], [np.exp(2) / np.exp(logits[0]).sum(), 1 / 3])


def test_facegate_report_prints_the_figures(built, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    report, out = built
    result = CliRunner().invoke(cli, ["report", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"{report.threshold:.4f}" in result.output
    assert f"{report.scorers[R.CERTAINTY].auroc:.3f}" in result.output
    assert f"{report.identity_top1:.3f}" in result.output
    assert str((out / R.REPORT_HTML).resolve()) in result.output.replace("\n", "")
    missing = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert missing.exit_code != 0 and "neither a report folder" in missing.output


def test_best_sigmoid_ece_is_the_ece_of_the_max_likelihood_sigmoid():
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    x = np.r_[rng.normal(12.0, 3.0, 60), rng.normal(6.0, 4.0, 90)]  # max logits
    y = np.r_[np.ones(60), np.zeros(90)]

    def nll(ab):
        z = ab[0] * x + ab[1]
        return np.sum(np.logaddexp(0, z) - y * z)

    a, b = minimize(nll, [0.1, 0.0], method="Nelder-Mead", options={"xatol": 1e-8}).x
    want = open_set.ece(1 / (1 + np.exp(-(a * x + b))), y)
    assert R.best_sigmoid_ece(x, y) == pytest.approx(want, abs=2e-3)
    # Scores drawn from a logistic model are calibrated by their own best sigmoid.
    xs = rng.normal(0, 2, 20000)
    ys = rng.uniform(size=xs.size) < 1 / (1 + np.exp(-(1.5 * xs - 0.5)))
    assert R.best_sigmoid_ece(xs, ys) < 0.02


def test_report_names_the_best_sigmoid_floor(built):
    report, _ = built
    assert 0.0 <= report.known_ece_best_sigmoid <= 1.0
    from components.report_render import headline_rows

    rows = dict(headline_rows(report))
    key = "ECE of the best sigmoid of the max logit (fitted on test, diagnostic)"
    assert rows[key] == f"{report.known_ece_best_sigmoid:.3f}"
