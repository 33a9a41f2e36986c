"""EdgeExport: the TFX component that turns the blessed SavedModel into TFLite for devices.

    edge_export = EdgeExport(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        examples=example_gen.outputs["examples"],
        pushed_model=pusher.outputs["pushed_model"],   # optional: reuse the Pusher's version
        edge_model_dir="<edge_dir>/<model_name>",
        config=json.dumps(EdgeExportConfig().to_dict()),
    ).with_id("EdgeExport")

A thin adapter over export/builder.py: int8 calibration from train images of known and
known-unknown people, parity on the test split, the passing variants pushed to
`<edge_model_dir>/<version>/` (same version as the SavedModel push when `pushed_model` is
given) through a temporary folder and a rename. Outputs: `edge_models` (the passing .tflite
files and sidecars; custom properties pushed, pushed_destination, pushed_version, variants)
and `parity_report` (parity_report.json, for every variant, passing or not).

No `from __future__ import annotations` here: TFX reads the raw type hints of the function.
"""

import json
import logging
import os
import time
from pathlib import Path

from tfx import v1 as tfx
from tfx.types.artifact import Artifact

from components import features as F

PARITY_REPORT_TYPE = "EdgeParityReport"
EDGE_MODELS_TYPE = "EdgeModels"
PUSHED = "pushed"
PUSHED_DESTINATION = "pushed_destination"
PUSHED_VERSION = "pushed_version"
VARIANTS = "variants"


class EdgeModels(Artifact):
    """TFLite variants that passed the parity gate, each with its JSON sidecar."""

    TYPE_NAME = EDGE_MODELS_TYPE


class EdgeParityReport(Artifact):
    """parity_report.json: every variant against the SavedModel on the test split."""

    TYPE_NAME = PARITY_REPORT_TYPE


def _split_pattern(examples: Artifact, split: str) -> str:
    from tfx.types import artifact_utils

    return os.path.join(artifact_utils.get_split_uri([examples], split), "*")


def _version(pushed_model: Artifact | None) -> str:
    """The Pusher's version when it pushed, so both pushes share one folder name."""
    if pushed_model is not None and pushed_model.get_int_custom_property(PUSHED) == 1:
        version = pushed_model.get_string_custom_property(PUSHED_VERSION)
        if version:
            return version
    return str(int(time.time()))


@tfx.dsl.components.component
def EdgeExport(  # noqa: N802 (TFX names components like classes)
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    edge_models: tfx.dsl.components.OutputArtifact[EdgeModels],
    parity_report: tfx.dsl.components.OutputArtifact[EdgeParityReport],
    edge_model_dir: tfx.dsl.components.Parameter[str],
    model_name: tfx.dsl.components.Parameter[str] = "facegate",
    config: tfx.dsl.components.Parameter[str] = "{}",
    code_version: tfx.dsl.components.Parameter[str] = "",
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel] = None,
) -> None:
    """Convert, gate, report and push. `config` is EdgeExportConfig.to_dict() as JSON;
    `code_version` is only there so the cache notices a change of the conversion code."""
    from tfx.components.util import model_utils
    from tfx.utils import path_utils

    from export.builder import EdgeExportConfig, build_edge_models
    from export.parity import ParityReport
    from export.push import push_files
    from export.sidecar import SIDECAR_SUFFIX

    cfg = EdgeExportConfig.from_dict(json.loads(config or "{}"))
    out_dir = Path(edge_models.uri)
    report_dir = Path(parity_report.uri)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    edge_models.set_int_custom_property(PUSHED, 0)

    if not model_utils.is_model_blessed(model_blessing):
        logging.info("EdgeExport: model not blessed, nothing converted or pushed")
        ParityReport(
            model_name=model_name, gate=cfg.gate, blessed=False,
            skipped_reason="model not blessed by the Evaluator",
        ).write(report_dir)  # fmt: skip
        return

    version = _version(pushed_model)
    report = build_edge_models(
        saved_model_dir=path_utils.serving_model_path(model.uri),
        train_patterns=_split_pattern(examples, F.SPLIT_TRAIN),
        test_patterns=_split_pattern(examples, F.SPLIT_TEST),
        out_dir=out_dir,
        model_name=model_name,
        model_version=version,
        config=cfg,
    )
    passed = [v for v in report.passed if v.file]
    edge_models.set_string_custom_property(VARIANTS, ",".join(v.variant for v in passed))
    if passed:
        files = [out_dir / v.file for v in passed]
        files += [f.with_suffix(SIDECAR_SUFFIX) for f in files]
        files.append(out_dir / "parity_report.json")
        # Write the destination into the report before pushing, so the pushed copy has it too.
        report.pushed_destination = str(Path(edge_model_dir) / version)
        report.write(out_dir)
        destination = push_files(files, edge_model_dir, version)
        edge_models.set_int_custom_property(PUSHED, 1)
        edge_models.set_string_custom_property(PUSHED_DESTINATION, str(destination))
        edge_models.set_string_custom_property(PUSHED_VERSION, version)
    else:
        logging.warning("EdgeExport: no variant passed the parity gate; nothing pushed")
    report.write(report_dir)
