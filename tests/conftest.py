"""Shared fixtures. Keras 2 for everything TFX touches: set before TensorFlow is imported."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ORL_DIR = (REPO / ".." / "shared" / "data" / "orl_faces").resolve()


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    if not ORL_DIR.is_dir():
        pytest.skip(f"ORL faces not found at {ORL_DIR}")
    return ORL_DIR


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny trained + calibrated + exported facegate model on synthetic faces (~1 min)."""
    from calib_testlib import build

    return build(tmp_path_factory.mktemp("tiny_run"))
