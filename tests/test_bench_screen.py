"""bench/screen.py's --set parsing: each value takes its TrainConfig field's type."""

from __future__ import annotations

import pytest

from bench.screen import parse_overrides


def test_values_take_the_field_types():
    got = parse_overrides(
        ["head=cosine", "epochs=3", "augment=false", "logit_scale=8", "outlier_exposure=true"]
    )
    assert got == {
        "head": "cosine",
        "epochs": 3,
        "augment": False,
        "logit_scale": 8.0,
        "outlier_exposure": True,
    }
    assert isinstance(got["logit_scale"], float) and isinstance(got["epochs"], int)


@pytest.mark.parametrize("pair", ["heads=cosine", "epochs", "=3"])
def test_unknown_or_malformed_pairs_name_the_problem(pair):
    with pytest.raises(SystemExit, match="TrainConfig field"):
        parse_overrides([pair])
