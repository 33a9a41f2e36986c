"""Open-set and calibration figures on numpy arrays: one definition for TFMA, calibration,
the report and the benchmark.

Conventions: a higher score means "more likely a known person"; `is_known` is 1 for faces of
known people and 0 for everyone else; `is_known = score >= threshold` (as the SavedModel does).
No TensorFlow here: TFMA's Beam workers, the report and the edge checks all import it.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
TARGET_TPR = 0.95


def _as_1d(x, dtype=np.float64) -> np.ndarray:
    return np.asarray(x, dtype=dtype).reshape(-1)


def _split(scores, is_known) -> tuple[np.ndarray, np.ndarray]:
    s = _as_1d(scores)
    y = _as_1d(is_known).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    return s[y], s[~y]


def reliability_bins(
    probs, labels, weights=None, num_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins over [0, 1] -> (weight, sum of weight*prob, sum of weight*label) per bin.

    A probability of exactly 1.0 falls in the last bin. Sums (not means) so partial results
    from different workers add up.
    """
    p = np.clip(_as_1d(probs), 0.0, 1.0)
    y = _as_1d(labels)
    w = np.ones_like(p) if weights is None else _as_1d(weights)
    idx = np.minimum((p * num_bins).astype(np.int64), num_bins - 1)
    return (
        np.bincount(idx, weights=w, minlength=num_bins),
        np.bincount(idx, weights=w * p, minlength=num_bins),
        np.bincount(idx, weights=w * y, minlength=num_bins),
    )


def ece_from_bins(weight: np.ndarray, sum_prob: np.ndarray, sum_label: np.ndarray) -> float:
    """sum over bins of (bin weight / total) * |mean label - mean prob|."""
    total = float(np.sum(weight))
    if total <= 0:
        return math.nan
    return float(np.sum(np.abs(sum_label - sum_prob)) / total)


def ece(probs, labels, weights=None, num_bins: int = ECE_BINS) -> float:
    """Expected Calibration Error of a binary probability (P(known) against is_known)."""
    return ece_from_bins(*reliability_bins(probs, labels, weights, num_bins))


def ece_if_calibrated(probs, num_draws: int = 1000, seed: int = 0) -> float:
    """Expected ECE of these probabilities if they were perfectly calibrated.

    Draws labels y ~ Bernoulli(p) for the given p and averages their ECE: the part of a measured
    ECE that is sampling noise of the binned estimator on this many faces, not miscalibration.
    Uses no labels, so it is safe to report beside the measured ECE on any split.
    """
    p = np.clip(_as_1d(probs), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    draws = rng.random((num_draws, p.size)) < p
    return float(np.mean([ece(p, y) for y in draws]))


def top_label_ece(probs: np.ndarray, labels, num_bins: int = ECE_BINS) -> float:
    """ECE of a classifier's top-label confidence: max prob against argmax == label."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = _as_1d(labels, np.int64)
    correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
    return ece(np.max(probs, axis=-1), correct, num_bins=num_bins)


def brier(probs, labels, weights=None) -> float:
    """Weighted mean of (P(known) - is_known)^2."""
    p, y = _as_1d(probs), _as_1d(labels)
    w = np.ones_like(p) if weights is None else _as_1d(weights)
    total = float(np.sum(w))
    return math.nan if total <= 0 else float(np.sum(w * (p - y) ** 2) / total)


def auroc(scores, is_known) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half)."""
    pos, neg = _split(scores, is_known)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    allv = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(allv, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct value.
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    u = np.sum(ranks[: len(pos)]) - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def fpr_at_tpr(scores, is_known, tpr: float = TARGET_TPR) -> float:
    """False-positive rate at the highest threshold that accepts at least `tpr` of known faces."""
    pos, neg = _split(scores, is_known)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    k = max(1, math.ceil(tpr * len(pos) - 1e-9))
    threshold = np.sort(pos)[::-1][k - 1]
    return float(np.mean(neg >= threshold))


def roc_curve(scores, is_known) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, from (0, 0) to (1, 1)."""
    pos, neg = _split(scores, is_known)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    tp = len(pos) - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = len(neg) - np.searchsorted(neg_sorted, thresholds, side="left")
    tpr = np.concatenate([[0.0], tp / max(len(pos), 1)])
    fpr = np.concatenate([[0.0], fp / max(len(neg), 1)])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def oscr_curve(scores, correct, is_known) -> tuple[np.ndarray, np.ndarray]:
    """(false-accept rate, correct-classification rate) over all thresholds on the score.

    CCR(t): known faces with score >= t AND the right identity, over all known faces.
    FAR(t): unknown faces with score >= t, over all unknown faces.
    """
    s = _as_1d(scores)
    known = _as_1d(is_known).astype(bool)
    ok = _as_1d(correct).astype(bool) & known
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    thresholds = np.unique(s)[::-1]
    ok_sorted, unk_sorted = np.sort(s[ok]), np.sort(s[~known])
    cc = len(ok_sorted) - np.searchsorted(ok_sorted, thresholds, side="left")
    fa = len(unk_sorted) - np.searchsorted(unk_sorted, thresholds, side="left")
    far = np.concatenate([[0.0], fa / max(n_unknown, 1)])
    ccr = np.concatenate([[0.0], cc / max(n_known, 1)])
    return far, ccr


def oscr(scores, correct, is_known) -> float:
    """Area under the OSCR curve (Dhamija et al. 2018); 1.0 is perfect, top-1 accuracy caps it."""
    known = _as_1d(is_known).astype(bool)
    if known.all() or not known.any():
        return math.nan
    far, ccr = oscr_curve(scores, correct, is_known)
    return float(np.sum(np.diff(far) * (ccr[1:] + ccr[:-1]) / 2.0))


def false_accept_rate(scores_unknown, threshold: float) -> float:
    """Fraction of unknown faces the model would accept at `threshold` (score >= threshold)."""
    s = _as_1d(scores_unknown)
    return math.nan if len(s) == 0 else float(np.mean(s >= threshold))


def true_accept_rate(scores_known, threshold: float) -> float:
    s = _as_1d(scores_known)
    return math.nan if len(s) == 0 else float(np.mean(s >= threshold))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=-1)
    return m + np.log(np.exp(z - m[..., None]).sum(axis=-1))
