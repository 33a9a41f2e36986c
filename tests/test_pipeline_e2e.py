"""The whole TFX pipeline on the real ORL faces, at a small setting (32x32, few epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import data
from components import features as F
from components.evaluation import IDENTITY_ACCURACY, KNOWN_AUC, BlessingThresholds
from components.training import TrainConfig
from pipeline import pipeline as P
from pipeline.ingest import SplitSpec, ingest
from pipeline.local_runner import RunPaths, run_local
from pipeline.summary import metadata_store

pytestmark = pytest.mark.e2e

SMALL = TrainConfig(input_size=32, epochs=25, certainty_epochs=100, verbose=0)
# Thresholds lowered by argument so a small model is blessed and pushed.
LOW = BlessingThresholds(min_identity_accuracy=0.0, min_known_auc=0.0, max_known_ece=1.0)
COMPONENTS = [
    P.EXAMPLE_GEN, P.STATISTICS_GEN, P.SCHEMA_GEN, P.EXAMPLE_VALIDATOR, P.TRAINER,
    P.MODEL_RESOLVER, P.EVALUATOR, P.PUSHER, P.CERTAINTY_REPORT, P.EDGE_EXPORT,
]  # fmt: skip


@pytest.fixture(scope="module")
def run(orl_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    ingest(orl_dir, root / "data", SplitSpec(num_known=24, num_known_unknown=8), progress=False)
    summary = run_local(root / "data", root / "run", train_config=SMALL, thresholds=LOW)
    return root, summary


def _executions_by_node(store):
    """node id -> list of executions, from ML Metadata contexts."""
    out: dict[str, list] = {}
    for ctx in store.get_contexts_by_type("node"):
        node = ctx.name.split(".")[-1]
        out[node] = store.get_executions_by_context(ctx.id)
    return out


def test_every_component_ran_once_and_produced_artifacts(run):
    root, summary = run
    assert set(summary.component_seconds) == set(COMPONENTS)
    store = metadata_store(RunPaths(root / "run").metadata_path)
    executions = _executions_by_node(store)
    for node in COMPONENTS:
        assert len(executions[node]) == 1, node
    for type_name in ("Examples", "ExampleStatistics", "Schema", "ExampleAnomalies", "Model",
                      "ModelEvaluation", "ModelBlessing", "PushedModel"):  # fmt: skip
        artifacts = store.get_artifacts_by_type(type_name)
        assert len(artifacts) == 1, type_name
        assert tf.io.gfile.exists(artifacts[0].uri), type_name


def test_tfma_wrote_both_outputs_metrics(run):
    _, summary = run
    ident = summary.metrics[F.OUTPUT_IDENTITY_PROBS]
    known = summary.metrics[F.OUTPUT_KNOWN_PROB]
    assert 0.0 <= ident[IDENTITY_ACCURACY] <= 1.0
    assert ident["weighted_example_count"] == pytest.approx(48.0)  # known test faces only
    assert known["example_count"] == pytest.approx(128.0)  # 48 known + 80 unknown-unknown
    assert known["mean_label"] == pytest.approx(48 / 128)
    for name in (KNOWN_AUC, "auc_precision_recall", "calibration", "binary_accuracy"):
        assert name in known
    assert set(summary.by_role) == {F.ROLE_KNOWN, F.ROLE_UNKNOWN_UNKNOWN}
    assert summary.by_role[F.ROLE_KNOWN][F.OUTPUT_KNOWN_PROB]["example_count"] == 48
    assert summary.blessed is True and summary.pushed is True


def test_pushed_model_names_known_test_faces(run):
    root, summary = run
    pushed = Path(summary.pushed_model_dir)
    assert pushed.parent == RunPaths(root / "run").serving_model_dir and pushed.name.isdigit()
    loaded = tf.saved_model.load(str(pushed))
    raw = [
        {k: v.numpy() for k, v in r.items()}
        for r in data.read_examples(str(root / "data" / "test" / "*"))
    ]
    images = [r[F.IMAGE_KEY] for r in raw]
    labels = np.array([r[F.LABEL_KEY] for r in raw])
    out = loaded.signatures[F.SIGNATURE_IMAGE_BYTES](image_bytes=tf.constant(images))
    known = labels >= 0
    top1 = float(np.mean(out[F.OUTPUT_IDENTITY].numpy()[known] == labels[known]))
    assert top1 > 0.5, top1
    # The TFMA figure is the same quantity computed independently.
    assert summary.identity_top1 == pytest.approx(top1, abs=1e-6)
    info = json.loads((pushed / "assets.extra" / "facegate.json").read_text())
    assert len(info["labels"]) == 24 and info["input_size"] == 32


def test_certainty_report_names_the_pushed_models_threshold(run):
    root, summary = run
    from components.report import REPORT_TYPE, load_report

    store = metadata_store(RunPaths(root / "run").metadata_path)
    (artifact,) = store.get_artifacts_by_type(REPORT_TYPE)
    report = load_report(artifact.uri)
    info = json.loads(
        (Path(summary.pushed_model_dir) / "assets.extra" / "facegate.json").read_text()
    )
    assert report["threshold"] == pytest.approx(info["threshold"], abs=1e-7)
    assert report["calibration"]["inputs"]["role_counts"].get("unknown_unknown", 0) == 0
    # TFMA's custom metrics ran in Beam and agree with the report's numpy figures.
    known = summary.metrics[F.OUTPUT_KNOWN_PROB]
    assert known["ece"] == pytest.approx(report["known_ece"], abs=1e-5)
    assert known["fpr_at_95_tpr"] == pytest.approx(
        report["scorers"]["certainty_neuron"]["fpr_at_95_tpr"], abs=1e-6
    )
    assert report["tfma"]["both/oscr"] == pytest.approx(
        report["scorers"]["certainty_neuron"]["oscr"], abs=1e-5
    )
    assert (Path(artifact.uri) / "report.html").is_file()


def test_second_run_reuses_cached_outputs(run):
    root, _ = run
    run_local(root / "data", root / "run", train_config=SMALL, thresholds=LOW)
    store = metadata_store(RunPaths(root / "run").metadata_path)
    executions = _executions_by_node(store)
    trainer_states = [e.last_known_state for e in executions[P.TRAINER]]
    from ml_metadata.proto import metadata_store_pb2

    assert trainer_states.count(metadata_store_pb2.Execution.CACHED) == 1
    assert len(store.get_artifacts_by_type("Model")) == 1
