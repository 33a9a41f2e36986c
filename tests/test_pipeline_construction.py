"""Cheap construction tests: the pipeline builds for each runner and compiles for KFP v2."""

from __future__ import annotations

import json

from components.evaluation import make_eval_config
from pipeline import pipeline as P
from pipeline.kubeflow_v2_runner import compile_kubeflow_v2

IDS = [
    P.EXAMPLE_GEN, P.STATISTICS_GEN, P.SCHEMA_GEN, P.EXAMPLE_VALIDATOR, P.TRAINER,
    P.MODEL_RESOLVER, P.EVALUATOR, P.PUSHER,
]  # fmt: skip


def test_create_pipeline_is_pure_and_names_components(tmp_path):
    kwargs = dict(
        pipeline_name="t",
        pipeline_root=str(tmp_path / "root"),
        data_root=str(tmp_path / "data"),
        labels=["a", "b"],
        serving_model_dir=str(tmp_path / "serving" / "m"),
        train_config={"epochs": 1},
        eval_config=make_eval_config(),
    )
    pipeline = P.create_pipeline(**kwargs)
    ids = [c.id for c in pipeline.components]
    assert set(IDS) <= set(ids) and len(ids) == len(set(ids))
    trainer = next(c for c in pipeline.components if c.id == P.TRAINER)
    assert trainer.exec_properties["run_fn"] == P.TRAINER_RUN_FN
    assert json.loads(trainer.exec_properties["custom_config"])["labels"] == ["a", "b"]
    assert not (tmp_path / "root").exists()  # building a pipeline writes nothing


def test_compiles_for_kubeflow_v2(tmp_path):
    out = compile_kubeflow_v2(
        output_file=tmp_path / "facegate.json",
        pipeline_root="gs://bucket/root",
        data_root="gs://bucket/data",
        labels=["a", "b", "c"],
        serving_model_dir="gs://bucket/serving/facegate",
    )
    spec = json.loads(out.read_text())
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    for component_id in IDS:
        # KFP v2 compiles the resolver into an importer-like task with a suffixed name.
        assert any(task.startswith(component_id) for task in tasks), component_id


def test_code_version_changes_with_the_code(tmp_path, monkeypatch):
    from pipeline.code_version import MODEL_CODE, source_fingerprint

    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("LAYERS = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_fingerprint(["fakepkg"])
    assert before == source_fingerprint(["fakepkg"])
    (package / "model.py").write_text("LAYERS = 4\n")
    after = source_fingerprint(["fakepkg"])
    assert after != before and len(after) == 16
    assert source_fingerprint(MODEL_CODE) != source_fingerprint(["fakepkg"])


def test_code_versions_reach_the_exec_properties(tmp_path):
    pipeline = P.create_pipeline(
        pipeline_name="t",
        pipeline_root=str(tmp_path / "root"),
        data_root=str(tmp_path / "data"),
        labels=["a", "b"],
        serving_model_dir=str(tmp_path / "serving" / "m"),
        train_config={},
        eval_config=make_eval_config(),
        edge_model_dir=str(tmp_path / "edge" / "m"),
        model_code_version="abc",
        edge_code_version="def",
    )
    by_id = {c.id: c for c in pipeline.components}
    assert json.loads(by_id[P.TRAINER].exec_properties["custom_config"])["code_version"] == "abc"
    assert by_id[P.EDGE_EXPORT].exec_properties["code_version"] == "def"
