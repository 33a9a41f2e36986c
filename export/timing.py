"""Latency of an edge model at batch 1 (no TensorFlow)."""

from __future__ import annotations

import time

import numpy as np

from export.runtime import EdgeModel


def edge_latencies(model: EdgeModel, image: np.ndarray, runs: int, warmup: int = 3) -> list[float]:
    """Seconds per `model.run()` call on one (S, S, 3) image, after warm-up calls."""
    batch = np.asarray(image, np.float32)[None]
    for _ in range(warmup):
        model.run(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(batch)
        times.append(time.perf_counter() - start)
    return times
