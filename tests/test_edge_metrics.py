"""Parity metrics and the gate, against independent brute-force references on fixed inputs."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from export import metrics
from export.parity import ParityGate, ParityReport, apply_gate, compare


def pairwise_auroc(scores, positives) -> float:
    """P(score of a random positive > that of a random negative), ties count half."""
    pos = [s for s, p in zip(scores, positives, strict=True) if p]
    neg = [s for s, p in zip(scores, positives, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def loop_ece(probs, positives, bins=15) -> float:
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [
            (p, y)
            for p, y in zip(probs, positives, strict=True)
            if lo <= p < hi or (b == bins - 1 and p == 1.0)
        ]
        if members:
            conf = sum(p for p, _ in members) / len(members)
            acc = sum(y for _, y in members) / len(members)
            total += len(members) * abs(conf - acc)
    return total / len(probs)


SCORES = np.array([0.9, 0.8, 0.8, 0.35, 0.6, 0.1, 0.8, 0.05, 0.999, 1.0, 0.0, 0.42])
LABELS = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0])


def test_auroc_matches_pairwise_count_with_ties():
    assert metrics.auroc(SCORES, LABELS) == pytest.approx(pairwise_auroc(SCORES, LABELS))
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60) / 4.0  # many ties
    y = rng.integers(0, 2, 60)
    assert metrics.auroc(s, y) == pytest.approx(pairwise_auroc(s, y))


def test_auroc_edge_cases():
    assert metrics.auroc([0.1, 0.9], [0, 1]) == 1.0
    assert metrics.auroc([0.9, 0.1], [0, 1]) == 0.0
    assert math.isnan(metrics.auroc([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError):
        metrics.auroc([0.1, 0.2], [1])


def test_ece_matches_loop_reference_including_bin_edges():
    assert metrics.ece(SCORES, LABELS) == pytest.approx(loop_ece(SCORES, LABELS))
    edges = np.array([0.0, 1 / 15, 2 / 15, 0.2, 0.5, 14 / 15, 1.0])
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    assert metrics.ece(edges, y) == pytest.approx(loop_ece(edges, y))
    assert metrics.ece([1.0, 1.0, 0.0], [1, 1, 0]) == 0.0  # perfectly calibrated


def test_compare_against_independent_reference():
    rng = np.random.default_rng(3)
    ref_logits = rng.normal(size=(12, 4))
    cand_logits = ref_logits + rng.normal(scale=0.3, size=(12, 4))
    ref_p = SCORES
    cand_p = np.clip(SCORES + rng.normal(scale=0.05, size=12), 0, 1)
    result = compare(
        "int8",
        {"logits": ref_logits, "known_prob": ref_p},
        {"logits": cand_logits, "known_prob": cand_p},
        LABELS,
        ParityGate(),
        size_bytes=1234,
    )
    pairs = zip(ref_logits, cand_logits, strict=True)
    agree = sum(int(np.argmax(a) == np.argmax(b)) for a, b in pairs) / 12
    diffs = [abs(a - b) for a, b in zip(ref_p, cand_p, strict=True)]
    assert result.agreement == pytest.approx(agree)
    assert result.known_prob_max_diff == pytest.approx(max(diffs))
    assert result.known_prob_mean_diff == pytest.approx(sum(diffs) / 12)
    assert result.auroc == pytest.approx(pairwise_auroc(cand_p, LABELS))
    assert result.auroc_reference == pytest.approx(pairwise_auroc(ref_p, LABELS))
    assert result.auroc_diff == pytest.approx(result.auroc - result.auroc_reference)
    assert result.ece == pytest.approx(loop_ece(cand_p, LABELS))
    assert result.ece_reference == pytest.approx(loop_ece(ref_p, LABELS))
    assert result.size_bytes == 1234 and result.num_images == 12
    assert result.passed == (agree >= 0.99 and abs(result.auroc_diff) <= 0.01)


def test_gate_defaults_and_each_rule():
    identical = {"logits": np.eye(4)[[0, 1, 2, 3, 0, 1]], "known_prob": np.linspace(0, 1, 6)}
    known = np.array([0, 0, 0, 1, 1, 1])
    ok = compare("float32", identical, identical, known, ParityGate())
    assert ok.passed and ok.failures == [] and ok.agreement == 1.0 and ok.auroc_diff == 0.0

    flipped = dict(identical, logits=identical["logits"][[1, 0, 2, 3, 4, 5]])
    bad = compare("int8", identical, flipped, known, ParityGate())
    assert not bad.passed and "agreement" in bad.failures[0]
    assert compare("int8", identical, flipped, known, ParityGate(min_agreement=0.6)).passed

    shifted = dict(identical, known_prob=identical["known_prob"][[0, 1, 3, 2, 4, 5]])
    worse = compare("int8", identical, shifted, known, ParityGate())
    assert not worse.passed and any("AUROC" in f for f in worse.failures)

    gated = ParityGate(max_known_prob_diff=0.1)
    result = apply_gate(compare("int8", identical, shifted, known, ParityGate()), gated)
    assert any("P(known)" in f for f in result.failures)


def test_one_class_test_set_is_not_gated_on_auroc():
    out = {"logits": np.eye(3), "known_prob": np.array([0.2, 0.5, 0.9])}
    result = compare("float16", out, out, np.ones(3), ParityGate())
    assert math.isnan(result.auroc) and result.passed


def test_report_round_trips_through_json(tmp_path):
    out = {"logits": np.eye(3), "known_prob": np.array([0.2, 0.5, 0.9])}
    variant = compare("float16", out, out, np.ones(3), ParityGate())
    report = ParityReport(model_name="m", gate=ParityGate(0.95, 0.02), variants=[variant])
    path = report.write(tmp_path)
    data = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert data["variants"][0]["auroc"] is None
    back = ParityReport.read(tmp_path)
    assert back.gate == ParityGate(0.95, 0.02)
    assert back.variants[0].variant == "float16" and math.isnan(back.variants[0].auroc)
    assert [v.variant for v in back.passed] == ["float16"]
