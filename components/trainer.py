"""TFX Trainer entry point: `Trainer(run_fn='components.trainer.run_fn', ...)`.

A thin adapter: it reads the labels and settings from custom_config, calls
components.training, components.calibration (on the calib split, fn_args.eval_files) and
components.exporter, and writes a small training report.
"""

from __future__ import annotations

import json
from pathlib import Path

from components import calibration, exporter, training

# custom_config keys the pipeline passes to the Trainer.
LABELS = "labels"
TRAIN_CONFIG = "train_config"
CALIBRATION_CONFIG = "calibration_config"
TRAINING_REPORT = "training_report.json"


def run_fn(fn_args) -> None:
    """Train both phases and export the SavedModel to fn_args.serving_model_dir."""
    custom = fn_args.custom_config or {}
    labels = list(custom.get(LABELS) or [])
    if len(labels) < 2:
        raise ValueError(f"custom_config[{LABELS!r}] must list at least 2 identities, got {labels}")
    cfg = training.TrainConfig.from_dict(custom.get(TRAIN_CONFIG))
    cal_cfg = calibration.CalibrationConfig.from_dict(custom.get(CALIBRATION_CONFIG))
    result = training.train(len(labels), fn_args.train_files, fn_args.eval_files, cfg)
    w, b = result.certainty_weights
    # Temperature and threshold from the calib split only: the test split stays unseen, and
    # so do the outlier-exposure people (phase 1 flattened them: they would set the bar low).
    cal = calibration.calibrate(
        result.model,
        fn_args.eval_files,
        cfg.input_size,
        cal_cfg,
        batch_size=cfg.batch_size,
        skip_people=result.outlier_people,
    )
    extra = {
        "certainty": {"weight": w, "bias": b},
        "outlier_exposure_people": result.outlier_people,
        "train_config": cfg.to_dict(),
        "calibration": cal.to_dict(),
    }
    exporter.export_saved_model(
        result.model,
        labels,
        fn_args.serving_model_dir,
        threshold=cal.threshold,
        temperature=cal.temperature,
        extra_info=extra,
    )
    report_dir = Path(fn_args.model_run_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "phase1": {k: [float(v) for v in vals] for k, vals in result.phase1_history.items()},
        "phase2_final": {k: float(vals[-1]) for k, vals in result.phase2_history.items()},
        **extra,
    }
    (report_dir / TRAINING_REPORT).write_text(json.dumps(report, indent=2))
