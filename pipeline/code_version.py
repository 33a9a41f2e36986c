"""Fingerprints of the project's own code, for TFX's cache.

TFX fingerprints a component's inputs and exec properties, but not user code named by a dotted
path (`run_fn='components.trainer.run_fn'`) or a function component's body. Without this, a change
to the training or conversion code would silently reuse the cached model of an earlier run.
Each fingerprint covers the packages a component's code lives in and goes into its exec
properties, so exactly the affected components re-run.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

# The packages whose code shapes each component's output.
MODEL_CODE = ("components",)  # Trainer: model, training, calibration, export to SavedModel
EDGE_CODE = ("export", "components")  # EdgeExport: conversion, parity, push (and the model API)


def source_fingerprint(packages: Iterable[str]) -> str:
    """sha256 over the .py files of the named packages (paths and contents), 16 hex digits."""
    digest = hashlib.sha256()
    for package in sorted(packages):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"package {package!r} not found")
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
