"""The export side: representative data, the gate deciding what is written, the atomic push,
and the EdgeExport TFX component in a small LocalDagRunner pipeline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import edge_testlib as L
import numpy as np
import pytest

from components import features as F
from export import samples
from export.builder import EdgeExportConfig, build_edge_models
from export.parity import ParityReport
from export.push import push_files


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return L.edge_root(tmp_path_factory)


def test_config_defaults_and_round_trip():
    cfg = EdgeExportConfig()
    assert cfg.variants == ("float32", "float16", "dynamic_range", "int8")
    assert cfg.gate.min_agreement == 0.99 and cfg.gate.max_auroc_diff == 0.01
    assert EdgeExportConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    partial = EdgeExportConfig.from_dict({"gate": {"min_agreement": 0.5}, "variants": ["int8"]})
    assert partial.gate.min_agreement == 0.5 and partial.gate.max_auroc_diff == 0.01
    assert partial.variants == ("int8",) and partial.num_calibration_samples == 200
    with pytest.raises(ValueError, match="unknown edge export settings"):
        EdgeExportConfig.from_dict({"gates": {}})
    with pytest.raises(ValueError):
        EdgeExportConfig.from_dict({"variants": ["int4"]})


def test_representative_set_mixes_known_and_known_unknown(root):
    train = str(root / "data" / "train" / "*")
    rep = samples.representative_images(train, L.SIZE, num_samples=6, seed=1)
    assert rep.role_counts() == {F.ROLE_KNOWN: 3, F.ROLE_KNOWN_UNKNOWN: 3}
    assert rep.images.shape == (6, L.SIZE, L.SIZE, 3) and rep.images.dtype == np.float32
    again = samples.representative_images(train, L.SIZE, num_samples=6, seed=1)
    np.testing.assert_array_equal(rep.images, again.images)  # deterministic
    with pytest.raises(ValueError, match="unknown_unknown"):
        samples.representative_images(train, L.SIZE, roles=(F.ROLE_KNOWN, F.ROLE_UNKNOWN_UNKNOWN))


def test_quota_hands_unused_share_to_other_roles():
    assert samples._quotas({"a": 2, "b": 50}, 10) == {"a": 2, "b": 8}
    assert samples._quotas({"a": 3, "b": 3}, 100) == {"a": 3, "b": 3}
    assert samples._quotas({"a": 10, "b": 10}, 7) in ({"a": 4, "b": 3}, {"a": 3, "b": 4})


def test_a_failing_variant_is_reported_and_not_written(root, tmp_path):
    data = root / "data"
    config = EdgeExportConfig.from_dict(
        {"variants": ["float32", "dynamic_range"], "latency_runs": 0,
         "gate": {"min_agreement": 0.5, "max_auroc_diff": 0.5, "max_known_prob_diff": 1e-4}}
    )  # fmt: skip
    report = build_edge_models(
        root / "saved_model", str(data / "train" / "*"), str(data / "test" / "*"),
        tmp_path / "out", "facegate", "7", config,
    )  # fmt: skip
    by_name = {v.variant: v for v in report.variants}
    assert by_name["float32"].passed and by_name["float32"].file == "facegate-float32.tflite"
    assert not by_name["dynamic_range"].passed
    assert "P(known)" in by_name["dynamic_range"].failures[0]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["facegate-float32.json", "facegate-float32.tflite", "parity_report.json"]
    assert report.representative == {}  # no int8: no calibration needed
    assert (
        ParityReport.read(tmp_path / "out").variants[1].failures
        == by_name["dynamic_range"].failures
    )


def test_push_is_atomic_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.tflite").write_bytes(b"x")
    (src / "a.json").write_text("{}")
    dest = push_files([src / "a.tflite", src / "a.json"], tmp_path / "edge" / "m", "12")
    assert dest == tmp_path / "edge" / "m" / "12"
    assert sorted(os.listdir(dest)) == ["a.json", "a.tflite"]
    assert os.listdir(tmp_path / "edge" / "m") == ["12"]  # no temporary folder left
    with pytest.raises(FileExistsError):
        push_files([src / "a.json"], tmp_path / "edge" / "m", "12")
    with pytest.raises(FileNotFoundError):
        push_files([src / "missing"], tmp_path / "edge" / "m", "13")
    assert os.listdir(tmp_path / "edge" / "m") == ["12"]


def _run_component_pipeline(root: Path, work: Path):
    from tfx import v1 as tfx
    from tfx.orchestration import metadata
    from tfx.proto import example_gen_pb2

    from components.edge_export import EdgeExport

    example_gen = tfx.components.ImportExampleGen(
        input_base=str(root / "data"),
        input_config=example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name=s, pattern=f"{s}/*") for s in F.SPLITS]
        ),
    ).with_id("ImportExampleGen")
    # A Trainer's Model artifact holds the SavedModel under Format-Serving/.
    model_uri = work / "model"
    model_uri.mkdir()
    (model_uri / "Format-Serving").symlink_to(root / "saved_model", target_is_directory=True)
    model = tfx.dsl.Importer(
        source_uri=str(model_uri), artifact_type=tfx.types.standard_artifacts.Model
    ).with_id("model_importer")
    blessings = {}
    for blessed in (1, 0):
        folder = work / f"blessing{blessed}"
        folder.mkdir(parents=True)
        blessings[blessed] = tfx.dsl.Importer(
            source_uri=str(folder),
            artifact_type=tfx.types.standard_artifacts.ModelBlessing,
            custom_properties={"blessed": blessed},
        ).with_id(f"blessing{blessed}_importer")
    config = json.dumps(
        EdgeExportConfig.from_dict(
            {"gate": L.TEST_GATE, "num_calibration_samples": 16, "latency_runs": 2,
             "variants": ["float16", "int8"]}
        ).to_dict()
    )  # fmt: skip
    exports = [
        EdgeExport(
            model=model.outputs["result"],
            model_blessing=blessings[blessed].outputs["result"],
            examples=example_gen.outputs["examples"],
            edge_model_dir=str(work / f"edge{blessed}" / "facegate"),
            config=config,
        ).with_id(f"EdgeExport{blessed}")
        for blessed in (1, 0)
    ]
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="edge_test",
        pipeline_root=str(work / "root"),
        components=[example_gen, model, *blessings.values(), *exports],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            str(work / "metadata.sqlite")
        ),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return work / "metadata.sqlite"


def test_component_in_a_pipeline(root, tmp_path):
    import ml_metadata as mlmd
    from tfx.orchestration import metadata

    db = _run_component_pipeline(root, tmp_path)
    store = mlmd.metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(str(db)))
    edge = {a.uri.split("/")[-3]: a for a in store.get_artifacts_by_type("EdgeModels")}
    reports = {a.uri.split("/")[-3]: a for a in store.get_artifacts_by_type("EdgeParityReport")}
    assert set(edge) == set(reports) == {"EdgeExport1", "EdgeExport0"}

    blessed = edge["EdgeExport1"]
    assert blessed.custom_properties["pushed"].int_value == 1
    destination = Path(blessed.custom_properties["pushed_destination"].string_value)
    version = blessed.custom_properties["pushed_version"].string_value
    assert destination == tmp_path / "edge1" / "facegate" / version
    assert sorted(os.listdir(destination)) == [
        "facegate-float16.json", "facegate-float16.tflite",
        "facegate-int8.json", "facegate-int8.tflite", "parity_report.json",
    ]  # fmt: skip
    assert os.listdir(destination.parent) == [version]
    report = ParityReport.read(reports["EdgeExport1"].uri)
    assert [v.variant for v in report.passed] == ["float16", "int8"]
    assert report.pushed_destination == str(destination)
    assert report.representative == {F.ROLE_KNOWN: 9, F.ROLE_KNOWN_UNKNOWN: 6}
    sidecar = json.loads((destination / "facegate-int8.json").read_text())
    assert sidecar["model_version"] == version and sidecar["labels"] == list(L.LABELS)

    # The run summary finds the latest report and prints it.
    from rich.console import Console

    from pipeline.report_table import print_edge_parity
    from pipeline.summary import RunSummary, read_edge_export

    parity, _pushed_dir = read_edge_export(store)
    assert parity is not None
    summary = RunSummary(output_dir=str(tmp_path), edge_parity_report=parity)
    console = Console(record=True, width=200)
    print_edge_parity(summary, console)
    text = console.export_text()
    assert "Edge export" in text and ("int8" in text or "skipped" in text)

    unblessed = edge["EdgeExport0"]
    assert unblessed.custom_properties["pushed"].int_value == 0
    assert not (tmp_path / "edge0").exists()
    skipped = ParityReport.read(reports["EdgeExport0"].uri)
    assert skipped.blessed is False and skipped.variants == []


def test_create_pipeline_appends_edge_export_after_the_pusher(tmp_path):
    from components.evaluation import make_eval_config
    from pipeline import pipeline as P

    kwargs = dict(
        pipeline_name="t",
        pipeline_root=str(tmp_path / "root"),
        data_root=str(tmp_path / "data"),
        labels=["a", "b"],
        serving_model_dir=str(tmp_path / "serving" / "m"),
        train_config={"epochs": 1},
        eval_config=make_eval_config(),
    )
    without = [c.id for c in P.create_pipeline(**kwargs).components]
    assert P.EDGE_EXPORT not in without
    pipeline = P.create_pipeline(
        **kwargs,
        edge_model_dir=str(tmp_path / "edge" / "m"),
        edge_config={"gate": {"min_agreement": 0.98}},
    )
    edge = next(c for c in pipeline.components if c.id == P.EDGE_EXPORT)
    assert edge.exec_properties["edge_model_dir"] == str(tmp_path / "edge" / "m")
    assert edge.exec_properties["model_name"] == "m"
    cfg = EdgeExportConfig.from_dict(json.loads(edge.exec_properties["config"]))
    assert cfg.gate.min_agreement == 0.98
    upstream = {c.id for c in edge.upstream_nodes}
    assert {P.TRAINER, P.EVALUATOR, P.PUSHER, P.EXAMPLE_GEN} <= upstream
    assert not (tmp_path / "root").exists()


def test_no_strangers_in_train_means_no_int8_but_the_rest_still_ship(root, tmp_path):
    import tensorflow as tf

    only_known = tmp_path / "train.tfrecord"
    with tf.io.TFRecordWriter(str(only_known)) as w:
        for record in tf.data.TFRecordDataset(str(root / "data" / "train" / "faces.tfrecord")):
            ex = tf.train.Example.FromString(record.numpy())
            if ex.features.feature[F.ROLE_KEY].bytes_list.value[0] == F.ROLE_KNOWN.encode():
                w.write(record.numpy())
    config = EdgeExportConfig.from_dict(
        {"variants": ["float16", "int8"], "latency_runs": 0, "gate": L.TEST_GATE}
    )
    report = build_edge_models(
        root / "saved_model", str(only_known), str(root / "data" / "test" / "*"),
        tmp_path / "out", "facegate", "1", config,
    )  # fmt: skip
    assert "known_unknown" in report.errors["int8"]
    assert [v.variant for v in report.passed] == ["float16"]
    assert not (tmp_path / "out" / "facegate-int8.tflite").exists()
