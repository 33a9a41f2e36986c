"""The SavedModel as the parity reference: its `serving_image` signature, called in-process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import features as F


class SavedModelReference:
    """Loads the SavedModel once; `run()` gives every output by name as numpy."""

    def __init__(self, saved_model_dir: str | Path):
        self.saved_model_dir = Path(saved_model_dir)
        self._loaded = tf.saved_model.load(str(saved_model_dir))
        if F.SIGNATURE_IMAGE not in self._loaded.signatures:
            raise ValueError(
                f"{saved_model_dir}: no {F.SIGNATURE_IMAGE!r} signature "
                f"(has {sorted(self._loaded.signatures)})"
            )
        self._fn = self._loaded.signatures[F.SIGNATURE_IMAGE]

    def run(self, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        images = np.asarray(images, np.float32)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(images), batch_size):
            out = self._fn(**{F.INPUT_IMAGE: tf.constant(images[start : start + batch_size])})
            for name, value in out.items():
                parts.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(values) for name, values in parts.items()}

    def latencies(self, image: np.ndarray, runs: int, warmup: int = 3) -> list[float]:
        """Seconds per call at batch 1 (after warm-up calls)."""
        batch = tf.constant(np.asarray(image, np.float32)[None])
        for _ in range(warmup):
            self._fn(**{F.INPUT_IMAGE: batch})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._fn(**{F.INPUT_IMAGE: batch})[F.OUTPUT_KNOWN_PROB].numpy()
            times.append(time.perf_counter() - start)
        return times
