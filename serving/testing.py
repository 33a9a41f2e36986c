"""Helpers for serving tests and benchmarks, after TF Serving's test_util: tiny deterministic
models in numbered version folders, version pushes (atomic or copy-in-place), test images."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

TINY_LABELS = ("ada", "grace", "linus")
TINY_INPUT_SIZE = 32


@dataclass(frozen=True)
class TinyModels:
    """Two exported versions of a tiny facegate model, different weights and thresholds."""

    v1: Path
    v2: Path
    labels: tuple[str, ...]
    input_size: int


def export_untrained(
    export_dir: Path,
    *,
    num_classes: int,
    input_size: int,
    seed: int = 0,
    threshold: float = 0.5,
    labels: tuple[str, ...] | None = None,
) -> Path:
    """An untrained (seeded, so deterministic) facegate model exported as a SavedModel."""
    from components.exporter import export_saved_model
    from components.model import ModelSpec, build_model

    model = build_model(
        ModelSpec(num_classes=num_classes, input_size=input_size, weights="none", seed=seed)
    )
    labels = labels or tuple(f"person_{i:02d}" for i in range(num_classes))
    return export_saved_model(model, labels, export_dir, threshold=threshold)


@functools.cache
def tiny_models() -> TinyModels:
    """Exported once per process (about 15 s each) into a temporary folder removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="facegate-serving-models-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    kwargs = {"num_classes": len(TINY_LABELS), "input_size": TINY_INPUT_SIZE}
    v1 = export_untrained(root / "v1", seed=1, threshold=0.5, labels=TINY_LABELS, **kwargs)
    v2 = export_untrained(root / "v2", seed=2, threshold=0.25, labels=TINY_LABELS, **kwargs)
    return TinyModels(v1, v2, TINY_LABELS, TINY_INPUT_SIZE)


def link_version(source: Path, base_path: Path, version: int) -> Path:
    """Place `source` as version `version` with hard links: instant, and the files are shared."""
    target = base_path / str(version)
    shutil.copytree(source, target, copy_function=os.link)
    return target


def push_version(source: Path, base_path: Path, version: int, *, atomic: bool = True) -> Path:
    """Copy a SavedModel in as a new version.

    atomic=True copies to a hidden folder and renames it into place (what pushers should do);
    atomic=False copies file by file into the version folder, as `cp -r` would.
    """
    target = base_path / str(version)
    if not atomic:
        shutil.copytree(source, target)
        return target
    staging = base_path / f".{version}.incoming"
    shutil.copytree(source, staging)
    staging.rename(target)
    return target


def face_image(seed: int, size: tuple[int, int] = (40, 48), fmt: str = "png") -> bytes:
    """A deterministic noise 'face' (any size: the model resizes) as PNG or JPEG bytes."""
    rng = np.random.default_rng(seed)
    pixels = tf.constant(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    encoded = tf.io.encode_png(pixels) if fmt == "png" else tf.io.encode_jpeg(pixels, quality=90)
    return encoded.numpy()


def free_port() -> int:
    import portpicker

    return portpicker.pick_unused_port()
