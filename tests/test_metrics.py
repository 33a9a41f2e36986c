"""The custom TFMA metrics against plain, loop-by-loop numpy on fixed inputs."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from tensorflow_model_analysis.metrics import metric_specs, metric_types

from components import features as F
from components import metrics as M
from components import open_set
from components.evaluation import make_eval_config

RNG = np.random.default_rng(7)
N = 60
NUM_CLASSES = 4
IS_KNOWN = (np.arange(N) % 3 != 0).astype(np.int64)  # 40 known, 20 unknown
# Known faces score higher on average, with overlap; a few exact ties and a p == 1.0.
KNOWN_PROB = np.clip(0.35 * IS_KNOWN + RNG.uniform(0.0, 0.65, N), 0.0, 1.0).round(3)
KNOWN_PROB[5] = 1.0
KNOWN_PROB[6] = KNOWN_PROB[7]
LABEL = np.where(IS_KNOWN == 1, RNG.integers(0, NUM_CLASSES, N), -1)
IDENTITY_PROBS = RNG.dirichlet(np.ones(NUM_CLASSES), N)


# Independent references: the textbook definitions, written out with loops.
def ref_ece(p, y, bins=15):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(len(p)) if lo <= p[i] < hi or (b == bins - 1 and p[i] == hi)]
        if members:
            total += len(members) / len(p) * abs(np.mean(y[members]) - np.mean(p[members]))
    return total


def ref_fpr95(s, y):
    best = None
    for t in sorted(set(s)):  # ascending: the last one with TPR >= 0.95 is the highest
        if np.mean(s[y == 1] >= t) >= 0.95:
            best = t
    return np.mean(s[y == 0] >= best)


def ref_oscr(s, correct, y):
    points = [(0.0, 0.0)]
    for t in sorted(set(s), reverse=True):
        far = np.mean(s[y == 0] >= t)
        ccr = np.sum((s >= t) & correct & (y == 1)) / np.sum(y == 1)
        points.append((far, ccr))
    fars, ccrs = zip(*points, strict=True)
    return np.trapz(ccrs, fars)


def ref_auroc(s, y):
    pos, neg = s[y == 1], s[y == 0]
    return np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])


CORRECT = (np.argmax(IDENTITY_PROBS, axis=1) == LABEL) & (IS_KNOWN == 1)


def test_open_set_functions_match_references():
    assert open_set.ece(KNOWN_PROB, IS_KNOWN) == pytest.approx(ref_ece(KNOWN_PROB, IS_KNOWN))
    assert open_set.brier(KNOWN_PROB, IS_KNOWN) == pytest.approx(
        np.mean((KNOWN_PROB - IS_KNOWN) ** 2)
    )
    assert open_set.fpr_at_tpr(KNOWN_PROB, IS_KNOWN) == pytest.approx(
        ref_fpr95(KNOWN_PROB, IS_KNOWN)
    )
    assert open_set.oscr(KNOWN_PROB, CORRECT, IS_KNOWN) == pytest.approx(
        ref_oscr(KNOWN_PROB, CORRECT, IS_KNOWN)
    )
    assert open_set.auroc(KNOWN_PROB, IS_KNOWN) == pytest.approx(ref_auroc(KNOWN_PROB, IS_KNOWN))


def test_edge_cases():
    # Perfectly separated and perfectly calibrated.
    assert open_set.ece([0.0, 1.0], [0, 1]) == 0.0
    assert open_set.fpr_at_tpr([0.9, 0.8, 0.1], [1, 1, 0]) == 0.0
    assert open_set.oscr([0.9, 0.8, 0.1], [True, True, False], [1, 1, 0]) == pytest.approx(1.0)
    # Half the known faces misidentified caps OSCR at 0.5.
    assert open_set.oscr([0.9, 0.8, 0.1], [True, False, False], [1, 1, 0]) == pytest.approx(0.5)
    assert np.isnan(open_set.fpr_at_tpr([0.5, 0.6], [1, 1]))  # no unknown faces
    assert np.isnan(open_set.oscr([0.5, 0.6], [True, True], [1, 1]))


def _inputs() -> list[metric_types.StandardMetricInputs]:
    return [
        metric_types.StandardMetricInputs(
            labels={
                F.OUTPUT_IDENTITY_PROBS: np.array([LABEL[i]]),
                F.OUTPUT_KNOWN_PROB: np.array([float(IS_KNOWN[i])]),
            },
            predictions={
                F.OUTPUT_IDENTITY_PROBS: IDENTITY_PROBS[i],
                F.OUTPUT_KNOWN_PROB: np.array([KNOWN_PROB[i]]),
            },
            example_weights={
                F.OUTPUT_IDENTITY_PROBS: np.array([float(IS_KNOWN[i])]),
                F.OUTPUT_KNOWN_PROB: np.array([1.0]),
            },
        )
        for i in range(N)
    ]


def _our_computations() -> dict[str, metric_types.MetricComputation]:
    """Computations TFMA builds from the project's EvalConfig (class + module lookup)."""
    config = make_eval_config()
    out = {}
    for comp in metric_specs.to_computations(config.metrics_specs, config):
        for key in getattr(comp, "keys", []):
            if key.name in (M.ECE_NAME, M.BRIER_NAME, M.FPR_AT_TPR_NAME, M.OSCR_NAME):
                out[key.name] = comp
    return out


def test_ece_if_calibrated_is_the_binomial_expectation():
    # All faces at p = 0.5 share one bin, so ECE = |k/n - 0.5| with k ~ Binomial(n, 0.5):
    # its exact expectation is a finite sum over the binomial pmf.
    from scipy.stats import binom

    n = 40
    k = np.arange(n + 1)
    want = float(np.sum(binom.pmf(k, n, 0.5) * np.abs(k / n - 0.5)))
    got = open_set.ece_if_calibrated(np.full(n, 0.5), num_draws=20000, seed=1)
    assert got == pytest.approx(want, abs=0.003)
    # Certain probabilities leave no room for noise; more faces leave less.
    assert open_set.ece_if_calibrated(np.r_[np.zeros(20), np.ones(20)]) == 0.0
    spread = np.random.default_rng(3).uniform(0, 1, 2000)
    assert open_set.ece_if_calibrated(spread, num_draws=200) < open_set.ece_if_calibrated(
        spread[:100], num_draws=200
    )


def test_eval_config_names_every_custom_metric():
    comps = _our_computations()
    assert set(comps) == {M.ECE_NAME, M.BRIER_NAME, M.FPR_AT_TPR_NAME, M.OSCR_NAME}
    for name in (M.ECE_NAME, M.BRIER_NAME, M.FPR_AT_TPR_NAME):
        assert comps[name].keys[0].output_name == F.OUTPUT_KNOWN_PROB
    assert comps[M.OSCR_NAME].keys[0].output_name == ""


def test_tfma_combiners_in_beam_match_numpy():
    comps = _our_computations()
    expected = {
        M.ECE_NAME: ref_ece(KNOWN_PROB, IS_KNOWN),
        M.BRIER_NAME: float(np.mean((KNOWN_PROB - IS_KNOWN) ** 2)),
        M.FPR_AT_TPR_NAME: float(ref_fpr95(KNOWN_PROB, IS_KNOWN)),
        M.OSCR_NAME: float(ref_oscr(KNOWN_PROB, CORRECT, IS_KNOWN)),
    }
    inputs = _inputs()
    with beam.Pipeline() as p:
        # Several bundles so merge_accumulators is exercised as well as add_input.
        pcoll = p | beam.Create(inputs, reshuffle=True)
        for name, comp in comps.items():

            def check(got, name=name, key=comp.keys[0]):
                assert len(got) == 1
                assert got[0][key] == pytest.approx(expected[name], abs=1e-9), name

            result = pcoll | f"combine_{name}" >> beam.CombineGlobally(comp.combiner)
            assert_that(result, check, label=f"check_{name}")


def test_combiner_merge_equals_single_pass():
    comp = _our_computations()[M.ECE_NAME]
    c = comp.combiner
    inputs = _inputs()
    halves = [c.create_accumulator(), c.create_accumulator()]
    for i, element in enumerate(inputs):
        halves[i % 2] = c.add_input(halves[i % 2], element)
    merged = c.extract_output(c.merge_accumulators(halves))
    assert merged[comp.keys[0]] == pytest.approx(ref_ece(KNOWN_PROB, IS_KNOWN))
