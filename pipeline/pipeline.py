"""create_pipeline(): the facegate TFX pipeline, a pure function of its arguments.

ImportExampleGen (train / calib / test) -> StatisticsGen -> SchemaGen -> ExampleValidator
  -> Trainer (components.trainer.run_fn) -> Evaluator (test split, vs latest blessed model)
  -> Pusher (<serving_dir>/<model_name>/<version>/)
  Evaluator -> CertaintyReport (report.html + PNGs of the candidate, blessed or not)
  Pusher -> EdgeExport (TFLite variants behind a parity gate -> <edge_dir>/<model_name>/<version>/)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePath

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.proto import example_gen_pb2

from components import features as F

TRAINER_RUN_FN = "components.trainer.run_fn"

# Stable component ids: tests, lineage queries and progress lines name components by these.
EXAMPLE_GEN = "ImportExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "SchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
TRAINER = "Trainer"
MODEL_RESOLVER = "latest_blessed_model_resolver"
EVALUATOR = "Evaluator"
PUSHER = "Pusher"
CERTAINTY_REPORT = "CertaintyReport"
EDGE_EXPORT = "EdgeExport"


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    labels: Sequence[str],
    serving_model_dir: str,
    train_config: dict,
    eval_config: tfma.EvalConfig,
    calibration_config: dict | None = None,
    edge_model_dir: str | None = None,
    edge_config: dict | None = None,
    model_code_version: str = "",
    edge_code_version: str = "",
    metadata_connection_config=None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """The whole pipeline. `serving_model_dir` is <serving_dir>/<model_name>.

    `calibration_config` is components.calibration.CalibrationConfig as a dict (None: defaults).
    `edge_model_dir` (<edge_dir>/<model_name>): when given, EdgeExport follows the Pusher;
    `edge_config` is export.builder.EdgeExportConfig as a dict (None: defaults).
    `model_code_version` / `edge_code_version` (pipeline.code_version) make the Trainer /
    EdgeExport re-run when their code changes: TFX's cache does not look at user code.
    """
    from components.report_component import CertaintyReportGen

    example_gen = tfx.components.ImportExampleGen(
        input_base=data_root,
        input_config=example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name=s, pattern=f"{s}/*") for s in F.SPLITS]
        ),
    ).with_id(EXAMPLE_GEN)

    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"]).with_id(
        STATISTICS_GEN
    )

    # Inferred from every split, so the known / unknown roles and identities of the test split
    # are in the schema's domains; the validator then flags missing or malformed features.
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
    ).with_id(SCHEMA_GEN)

    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)

    trainer = tfx.components.Trainer(
        run_fn=TRAINER_RUN_FN,
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[F.SPLIT_TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[F.SPLIT_CALIB]),
        custom_config={
            "labels": list(labels),
            "train_config": dict(train_config),
            "calibration_config": dict(calibration_config or {}),
            # Not read by run_fn: it is there so a change of model code invalidates the cache.
            "code_version": model_code_version,
        },
    ).with_id(TRAINER)

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(MODEL_RESOLVER)

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=eval_config,
        example_splits=[F.SPLIT_TEST],
    ).with_id(EVALUATOR)

    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
    ).with_id(PUSHER)

    certainty_report = CertaintyReportGen(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"],
    ).with_id(CERTAINTY_REPORT)

    edge_components = []
    if edge_model_dir:
        from components.edge_export import EdgeExport

        edge_components.append(
            EdgeExport(
                model=trainer.outputs["model"],
                model_blessing=evaluator.outputs["blessing"],
                examples=example_gen.outputs["examples"],
                pushed_model=pusher.outputs["pushed_model"],
                edge_model_dir=edge_model_dir,
                model_name=PurePath(edge_model_dir).name,
                config=json.dumps(edge_config or {}, sort_keys=True),
                code_version=edge_code_version,
            ).with_id(EDGE_EXPORT)
        )

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            trainer,
            model_resolver,
            evaluator,
            pusher,
            certainty_report,
            *edge_components,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
