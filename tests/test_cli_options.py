"""`facegate run` options reach the pipeline's configs (the runner itself is replaced)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline import local_runner
from pipeline.cli import cli


class _Captured(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    calls: dict = {}

    def fake_run_local(data, out, **kwargs):
        calls.update(kwargs)
        raise _Captured

    monkeypatch.setattr(local_runner, "run_local", fake_run_local)
    return calls


def test_calibration_blessing_and_model_options_reach_the_pipeline(captured, tmp_path):
    args = [
        "run", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
        "--target-far", "0.1", "--max-ece", "0.08", "--head", "cosine",
        "--outlier-exposure", "--epochs", "3", "--mixed-outliers", "0.25",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, _Captured), result.output
    assert captured["calibration_config"]["target_far"] == 0.1
    assert captured["thresholds"].max_known_ece == 0.08
    cfg = captured["train_config"]
    assert (cfg.head, cfg.outlier_exposure, cfg.epochs) == ("cosine", True, 3)
    assert cfg.mixed_outliers == 0.25


def test_defaults_leave_the_configs_at_their_defaults(captured, tmp_path):
    from components.training import TrainConfig

    args = ["run", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, _Captured), result.output
    assert captured["calibration_config"]["target_far"] == 0.05
    cfg = captured["train_config"]
    assert (cfg.head, cfg.outlier_exposure) == (TrainConfig().head, False)
    assert cfg.mixed_outliers == TrainConfig().mixed_outliers


@pytest.mark.parametrize("far", ["0", "1", "1.5", "-0.1"])
def test_target_far_outside_0_1_is_refused_by_name(captured, tmp_path, far):
    args = ["run", "--data", str(tmp_path), "--out", str(tmp_path), "--target-far", far]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "--target-far" in result.output
    assert not captured
