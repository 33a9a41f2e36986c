"""Numpy metrics for the parity gate: AUROC and ECE of P(known), agreement, differences.

No TensorFlow, so the benchmark and the edge side can use them too.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); nan if one class."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    positives = np.asarray(positives).reshape(-1).astype(bool)
    if scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and labels {positives.shape} differ in shape")
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, np.float64)
    # Average rank (1-based) over each run of equal scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], scores.size]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def ece(probs: np.ndarray, positives: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(positive), equal-width bins on [0, 1].

    Bin i holds i/bins <= p < (i+1)/bins; the last bin also holds p == 1.
    ECE = sum over bins of (n_bin / n) * |mean(p) - fraction positive|.
    """
    probs = np.asarray(probs, np.float64).reshape(-1)
    positives = np.asarray(positives).reshape(-1).astype(np.float64)
    if probs.size == 0:
        return float("nan")
    edges = np.arange(bins + 1) / bins
    idx = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(probs[mask].mean() - positives[mask].mean())
    return float(total / probs.size)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal entries (top-1 identity agreement when given argmax indices)."""
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean(a == b)) if a.size else float("nan")


def abs_diff_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max, mean) of |a - b|."""
    d = np.abs(np.asarray(a, np.float64).reshape(-1) - np.asarray(b, np.float64).reshape(-1))
    return (float(d.max()), float(d.mean())) if d.size else (float("nan"), float("nan"))


def percentile_ms(seconds: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(seconds, np.float64) * 1000.0, q))
