"""Run the pipeline on this machine with LocalDagRunner and SQLite ML Metadata.

Layout under the output folder:
  pipeline/          TFX pipeline root (artifacts of every component)
  metadata.sqlite    ML Metadata
  serving/<model>/<version>/   pushed SavedModels, as TF Serving expects them
  edge/<model>/<version>/      TFLite variants that passed the parity gate, with sidecars
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components.evaluation import BlessingThresholds, make_eval_config
from components.training import TrainConfig
from pipeline.code_version import EDGE_CODE, MODEL_CODE, source_fingerprint
from pipeline.ingest import read_labels
from pipeline.progress import ComponentProgress
from pipeline.summary import RunSummary, summarize

DEFAULT_PIPELINE_NAME = "facegate"
DEFAULT_MODEL_NAME = "facegate"
# No Beam args by default: Beam's DirectRunner then runs in memory with one worker, which on a
# 2-core machine beats multi-processing. Any Beam arg makes every Beam component of TFX 1.16
# build an sdist of TFX itself for remote workers (~10 s each), so add them only when needed.
DEFAULT_BEAM_ARGS: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunPaths:
    output_dir: Path
    model_name: str = DEFAULT_MODEL_NAME

    @property
    def pipeline_root(self) -> Path:
        return self.output_dir / "pipeline"

    @property
    def metadata_path(self) -> Path:
        return self.output_dir / "metadata.sqlite"

    @property
    def serving_dir(self) -> Path:
        return self.output_dir / "serving"

    @property
    def serving_model_dir(self) -> Path:
        return self.serving_dir / self.model_name

    @property
    def edge_dir(self) -> Path:
        return self.output_dir / "edge"

    @property
    def edge_model_dir(self) -> Path:
        return self.edge_dir / self.model_name


def run_local(
    data_root: str | Path,
    output_dir: str | Path,
    train_config: TrainConfig = TrainConfig(),
    thresholds: BlessingThresholds = BlessingThresholds(),
    model_name: str = DEFAULT_MODEL_NAME,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    beam_pipeline_args: Sequence[str] = DEFAULT_BEAM_ARGS,
    enable_cache: bool = True,
    calibration_config: dict | None = None,
) -> RunSummary:
    """Run the whole pipeline on ingested TFRecords in data_root; returns the run summary."""
    from tfx import v1 as tfx
    from tfx.orchestration import metadata

    from pipeline.pipeline import create_pipeline

    data_root = Path(data_root).resolve()
    paths = RunPaths(Path(output_dir).resolve(), model_name)
    labels = read_labels(data_root)
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    pipeline = create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=str(paths.pipeline_root),
        data_root=str(data_root),
        labels=labels,
        serving_model_dir=str(paths.serving_model_dir),
        train_config=train_config.to_dict(),
        eval_config=make_eval_config(thresholds),
        calibration_config=calibration_config,
        edge_model_dir=str(paths.edge_model_dir),
        model_code_version=source_fingerprint(MODEL_CODE),
        edge_code_version=source_fingerprint(EDGE_CODE),
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            str(paths.metadata_path)
        ),
        beam_pipeline_args=beam_pipeline_args,
        enable_cache=enable_cache,
    )
    with ComponentProgress() as progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return summarize(paths.output_dir, paths.metadata_path, progress.times.seconds)
