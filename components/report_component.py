"""CertaintyReportGen: the calibration / open-set report as a pipeline artifact.

    report = CertaintyReportGen(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"],
    ).with_id("CertaintyReport")

Runs after the Evaluator (it copies TFMA's overall figures in beside its own) on every
candidate, blessed or not: a model that failed its blessing is exactly the one whose report
you want to read. Output: a `CertaintyReport` artifact holding report.json, report.html and
the PNGs, with the headline figures as custom properties (visible in ML Metadata).

No `from __future__ import annotations` here: TFX reads the raw type hints of the function.
"""

import math

from tfx import v1 as tfx
from tfx.types.artifact import Artifact

from components.report import REPORT_TYPE

PROPERTIES = ("identity_top1", "threshold", "temperature", "test_far", "known_ece")


class CertaintyReport(Artifact):
    """report.json + report.html + PNGs of one model on the test split."""

    TYPE_NAME = REPORT_TYPE


def overall_tfma_metrics(evaluation_uri: str) -> dict:
    """TFMA's overall-slice figures of the candidate, keyed "<output>/<metric>"."""
    import tensorflow_model_analysis as tfma

    out = {}
    for record in tfma.load_metrics(evaluation_uri):
        if record.slice_key.single_slice_keys:
            continue
        for kv in record.metric_keys_and_values:
            key = kv.key
            if key.model_name not in ("", "candidate") or key.is_diff or key.HasField("sub_key"):
                continue
            if kv.value.HasField("double_value"):
                out[f"{key.output_name or 'both'}/{key.name}"] = kv.value.double_value.value
    return out


@tfx.dsl.components.component
def CertaintyReportGen(  # noqa: N802 (TFX names components like classes)
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    report: tfx.dsl.components.OutputArtifact[CertaintyReport],
    evaluation: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ModelEvaluation
    ] = None,
) -> None:
    """Build the report of the Trainer's model on the test split into the output artifact."""
    import os

    from tfx.types import artifact_utils
    from tfx.utils import path_utils

    from components import features as F
    from components.report import build_report

    patterns = {
        split: os.path.join(artifact_utils.get_split_uri([examples], split), "*")
        for split in F.SPLITS
    }
    tfma_metrics = overall_tfma_metrics(evaluation.uri) if evaluation is not None else None
    result = build_report(
        path_utils.serving_model_path(model.uri), patterns, report.uri, tfma_metrics
    )
    values = result.to_dict()
    for name in PROPERTIES:
        value = float(values[name])
        if not math.isnan(value):
            report.set_float_custom_property(name, value)
    report.set_float_custom_property(
        "known_auroc", float(values["scorers"]["certainty_neuron"]["auroc"])
    )
    report.set_string_custom_property("html", result.files["html"])
