"""Compile the same create_pipeline() for Kubeflow Pipelines v2 / Vertex AI Pipelines.

The output is a pipeline spec JSON to submit with the kfp client or Vertex AI. Paths must be
ones every pipeline step can reach (gs://... in production); the image must contain this
package (`pip install .` on top of a TFX 1.16 image).
"""

from __future__ import annotations

from pathlib import Path

from components.evaluation import BlessingThresholds, make_eval_config
from components.training import TrainConfig

DEFAULT_IMAGE = "gcr.io/tfx-oss-public/tfx:1.16.0"


def compile_kubeflow_v2(
    *,
    output_file: str | Path,
    pipeline_root: str,
    data_root: str,
    labels: list[str],
    serving_model_dir: str,
    image: str = DEFAULT_IMAGE,
    train_config: TrainConfig = TrainConfig(),
    thresholds: BlessingThresholds = BlessingThresholds(),
    pipeline_name: str = "facegate",
    beam_pipeline_args: tuple[str, ...] = ("--runner=DataflowRunner",),
) -> Path:
    """Write the KFP v2 pipeline spec for the facegate pipeline; returns its path."""
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    output_file = Path(output_file)
    pipeline = create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        data_root=data_root,
        labels=labels,
        serving_model_dir=serving_model_dir,
        train_config=train_config.to_dict(),
        eval_config=make_eval_config(thresholds),
        beam_pipeline_args=beam_pipeline_args,
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(output_file.parent),
        output_filename=output_file.name,
    )
    runner.run(pipeline, write_out=True)
    return output_file
