"""Serving building blocks without a model: registry policy, batching, validation, REST JSON."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving.batching import BatchingParameters, BatchScheduler
from serving.errors import ServingError
from serving.registry import ModelRegistry, State
from serving.rest import JsonInputs, json_to_array, predict_response, status_json
from serving.servable import Signature, TensorSpec
from serving.validation import validate_content, validate_structure

# ---- registry ---------------------------------------------------------------------------------


class FakeServable:
    def __init__(self, name: str, version: int, path: Path):
        self.name, self.version, self.path = name, version, path
        self.released = False

    def release(self) -> None:
        self.released = True


class FakeLoader:
    def __init__(self, broken: set[int] = frozenset()):
        self.broken = set(broken)
        self.calls: list[int] = []

    def __call__(self, name: str, version: int, path: Path) -> FakeServable:
        self.calls.append(version)
        if version in self.broken:
            raise ValueError(f"version {version} is broken")
        return FakeServable(name, version, path)


def make_version(base: Path, version: int, pb: bytes = b"pb") -> Path:
    folder = base / str(version)
    (folder / "variables").mkdir(parents=True, exist_ok=True)
    (folder / "saved_model.pb").write_bytes(pb)
    return folder


def states(registry: ModelRegistry) -> dict[int, State]:
    return {s.version: s.state for s in registry.statuses()}


def test_registry_loads_only_complete_stable_folders(tmp_path):
    make_version(tmp_path, 1)
    (tmp_path / "2" / "variables").mkdir(parents=True)  # still being copied: no saved_model.pb
    make_version(tmp_path, 7).rename(tmp_path / ".7.incoming")  # hidden staging folder
    (tmp_path / "notes").mkdir()
    loader = FakeLoader()
    registry = ModelRegistry("m", tmp_path, loader=loader)

    registry.scan()
    assert loader.calls == []  # seen once: could still be changing
    registry.scan()
    assert loader.calls == [1]
    assert states(registry) == {1: State.AVAILABLE}
    with registry.lease() as servable:
        assert servable.version == 1


def test_registry_waits_until_a_copy_stops_changing(tmp_path):
    make_version(tmp_path, 1)
    loader = FakeLoader()
    registry = ModelRegistry("m", tmp_path, loader=loader)
    registry.initial_load(settle_seconds=0)
    folder = make_version(tmp_path, 2)
    registry.scan()
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * 10)
    registry.scan()  # changed since the last poll: not yet
    assert loader.calls == [1]
    registry.scan()
    assert loader.calls == [1, 2]
    assert states(registry) == {2: State.AVAILABLE, 1: State.END}


def test_registry_keeps_serving_when_a_new_version_is_broken(tmp_path):
    make_version(tmp_path, 1)
    loader = FakeLoader(broken={2})
    registry = ModelRegistry("m", tmp_path, loader=loader)
    registry.initial_load(settle_seconds=0)
    make_version(tmp_path, 2)
    registry.scan()
    registry.scan()
    status = {s.version: s for s in registry.statuses()}
    assert status[2].state == State.END and "version 2 is broken" in status[2].error
    assert status[1].state == State.AVAILABLE
    with registry.lease() as servable:
        assert servable.version == 1
    registry.scan()
    assert loader.calls == [1, 2]  # unchanged and broken: not retried every poll
    loader.broken.clear()
    make_version(tmp_path, 2, pb=b"fixed")  # re-pushed: retried once stable
    registry.scan()
    registry.scan()
    assert loader.calls == [1, 2, 2]
    assert states(registry) == {2: State.AVAILABLE, 1: State.END}


def test_registry_unloads_only_after_the_last_request(tmp_path):
    make_version(tmp_path, 1)
    registry = ModelRegistry("m", tmp_path, loader=FakeLoader())
    registry.initial_load(settle_seconds=0)
    with registry.lease() as old:
        make_version(tmp_path, 2)
        registry.scan()
        registry.scan()
        assert states(registry) == {2: State.AVAILABLE, 1: State.UNLOADING}
        assert not old.released  # still in use by this request
        with registry.lease() as new:
            assert new.version == 2
        with pytest.raises(ServingError) as err:
            registry._acquire(1)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert registry.wait_for_state(1, State.END, timeout=10)  # freed off the request thread
    assert old.released


def test_registry_serves_the_newest_n_and_any_of_them_on_request(tmp_path):
    for version in (1, 2, 3):
        make_version(tmp_path, version)
    registry = ModelRegistry("m", tmp_path, num_versions=2, loader=FakeLoader())
    registry.initial_load(settle_seconds=0)
    assert registry.loaded_versions() == [2, 3]
    with registry.lease() as latest, registry.lease(2) as pinned:
        assert (latest.version, pinned.version) == (3, 2)
    with pytest.raises(ServingError, match=r"version 1 .* not loaded \(loaded: 2, 3\)"):
        registry._acquire(1)


def test_registry_unloads_a_deleted_version(tmp_path):
    make_version(tmp_path, 1)
    registry = ModelRegistry("m", tmp_path, loader=FakeLoader())
    registry.initial_load(settle_seconds=0)
    for path in sorted((tmp_path / "1").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (tmp_path / "1").rmdir()
    registry.scan()
    assert registry.loaded_versions() == []
    with pytest.raises(ServingError) as err:
        registry._acquire(None)
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert "Latest(m)" in err.value.message


# ---- batching ---------------------------------------------------------------------------------


class RecordingRunner:
    """Doubles x; remembers each call's batch size; the first call can be held open."""

    def __init__(self, hold_first: threading.Event | None = None):
        self.sizes: list[int] = []
        self.hold_first = hold_first
        self.started = threading.Event()

    def __call__(self, inputs):
        self.sizes.append(len(inputs["x"]))
        self.started.set()
        if self.hold_first is not None and len(self.sizes) == 1:
            self.hold_first.wait(5)
        if (inputs["x"] < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative input")
        return {"y": inputs["x"] * 2, "row": inputs["x"][:, 0]}


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] for v in values], dtype=np.float32)}


def test_batching_merges_what_queued_while_the_model_was_busy():
    release = threading.Event()
    runner = RecordingRunner(hold_first=release)
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=0))
    try:
        first = scheduler.submit("k", runner, rows(0), 1)
        assert runner.started.wait(5)
        queued = [scheduler.submit("k", runner, rows(i, i + 0.5), 2) for i in (1, 2, 3)]
        release.set()
        assert first.result(5)["y"].tolist() == [[0.0]]
        for i, future in zip((1, 2, 3), queued, strict=True):
            out = future.result(5)
            assert out["y"].tolist() == [[2 * i], [2 * i + 1]]  # each gets its own rows back
            assert out["row"].tolist() == [i, i + 0.5]
        assert runner.sizes == [1, 6]
    finally:
        release.set()
        scheduler.close()


def test_batch_timeout_waits_for_company_and_max_size_caps_batches():
    runner = RecordingRunner()
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=4, batch_timeout_micros=300_000))
    try:
        futures = [scheduler.submit("k", runner, rows(i), 1) for i in range(6)]
        for i, future in enumerate(futures):
            assert future.result(5)["y"].tolist() == [[2 * i]]
        assert runner.sizes == [4, 2]
    finally:
        scheduler.close()


def test_a_bad_request_fails_alone_in_a_merged_batch():
    release = threading.Event()
    runner = RecordingRunner(hold_first=release)
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=8))
    try:
        scheduler.submit("k", runner, rows(0), 1)
        assert runner.started.wait(5)
        good_a = scheduler.submit("k", runner, rows(1), 1)
        bad = scheduler.submit("k", runner, rows(-1), 1)
        good_b = scheduler.submit("k", runner, rows(2), 1)
        release.set()
        assert good_a.result(5)["y"].tolist() == [[2.0]]
        assert good_b.result(5)["y"].tolist() == [[4.0]]
        with pytest.raises(ServingError, match="negative input"):
            bad.result(5)
    finally:
        release.set()
        scheduler.close()


def test_batching_keeps_models_apart_and_bounds_the_queue():
    release = threading.Event()
    runner_a = RecordingRunner(hold_first=release)
    runner_b = RecordingRunner()
    params = BatchingParameters(max_batch_size=2, max_enqueued_batches=2)
    scheduler = BatchScheduler(params)
    try:
        scheduler.submit("a", runner_a, rows(0), 1)
        assert runner_a.started.wait(5)
        queued = [
            scheduler.submit("a", runner_a, rows(1), 1),
            scheduler.submit("b", runner_b, rows(2), 1),
            scheduler.submit("a", runner_a, rows(3), 1),
        ]
        scheduler.submit("b", runner_b, rows(4), 1)  # 4 rows queued: the limit
        with pytest.raises(ServingError) as err:
            scheduler.submit("a", runner_a, rows(5), 1)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        release.set()
        assert [f.result(5)["y"][0, 0] for f in queued] == [2.0, 4.0, 6.0]
        assert runner_a.sizes == [1, 2] and runner_b.sizes == [2]
    finally:
        release.set()
        scheduler.close()


def test_an_expired_request_is_dropped_before_it_runs():
    runner = RecordingRunner()
    scheduler = BatchScheduler()
    try:
        future = scheduler.submit("k", runner, rows(1), 1, deadline=time.monotonic() - 1)
        with pytest.raises(ServingError) as err:
            future.result(5)
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert runner.sizes == []
    finally:
        scheduler.close()


# ---- validation -------------------------------------------------------------------------------

IMAGE_BYTES_SIG = Signature(
    "serving_image_bytes",
    "tensorflow/serving/predict",
    inputs={"image_bytes": TensorSpec("image_bytes", tf.string, (None,))},
    outputs={"known_prob": TensorSpec("known_prob", tf.float32, (None,))},
)
IMAGE_SIG = Signature(
    "serving_image",
    "tensorflow/serving/predict",
    inputs={"image": TensorSpec("image", tf.float32, (None, 32, 32, 3))},
    outputs={"known_prob": TensorSpec("known_prob", tf.float32, (None,))},
)
PNG = b"\x89PNG\r\n\x1a\n" + b"rest"


@pytest.mark.parametrize(
    ("sig", "tensors", "message"),
    [
        (IMAGE_BYTES_SIG, {"images": (tf.string, [1])}, "unexpected: images; missing: image_bytes"),
        (IMAGE_BYTES_SIG, {"image_bytes": (tf.float32, [1])}, "must be DT_STRING, got DT_FLOAT"),
        (IMAGE_BYTES_SIG, {"image_bytes": (tf.string, [1, 1])}, "shape [?] (? = any size)"),
        (IMAGE_SIG, {"image": (tf.float32, [2, 32, 31, 3])}, "[?,32,32,3] (? = any size), got"),
        (IMAGE_SIG, {"image": (tf.float32, [0, 32, 32, 3])}, "empty batch"),
    ],
)
def test_structure_errors_name_the_problem(sig, tensors, message):
    with pytest.raises(ServingError) as err:
        validate_structure(sig, tensors)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.message


def test_structure_returns_the_batch_size():
    assert validate_structure(IMAGE_SIG, {"image": (tf.float32, [5, 32, 32, 3])}) == 5


def test_content_checks_image_bytes():
    validate_content(IMAGE_BYTES_SIG, {"image_bytes": np.array([PNG, b"\xff\xd8\xff\xe0"], object)})
    with pytest.raises(ServingError, match=r"image_bytes\[1\] is not a JPEG, PNG"):
        validate_content(IMAGE_BYTES_SIG, {"image_bytes": np.array([PNG, b"hello"], object)})
    with pytest.raises(ServingError, match=r"image_bytes\[0\] is empty"):
        validate_content(IMAGE_BYTES_SIG, {"image_bytes": np.array([b""], object)})


def test_content_checks_examples():
    sig = Signature(
        "serving_default",
        "tensorflow/serving/predict",
        inputs={"examples": TensorSpec("examples", tf.string, (None,))},
        outputs={},
    )
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[PNG]))
    good = tf.train.Example(
        features=tf.train.Features(feature={"image/encoded": feature})
    ).SerializeToString()
    validate_content(sig, {"examples": np.array([good], object)})
    with pytest.raises(ServingError, match=r"examples\[0\] is not a serialized tf.Example"):
        validate_content(sig, {"examples": np.array([b"\xff\xff\xff"], object)})
    empty = tf.train.Example().SerializeToString()
    with pytest.raises(ServingError, match=r"examples\[0\] needs exactly one 'image/encoded'"):
        validate_content(sig, {"examples": np.array([empty], object)})


# ---- REST JSON ----------------------------------------------------------------------------------


def test_json_strings_and_b64_decode_to_bytes():
    array = json_to_array([{"b64": "aGk="}, "plain"], tf.string, "x")
    assert array.dtype == object and array.tolist() == [b"hi", b"plain"]
    with pytest.raises(ServingError, match="invalid base64"):
        json_to_array([{"b64": "***"}], tf.string, "x")
    with pytest.raises(ServingError, match="ragged"):
        json_to_array([["a"], ["b", "c"]], tf.string, "x")
    with pytest.raises(ServingError, match="expects strings"):
        json_to_array([1.5], tf.string, "x")


def test_json_numbers_decode_strictly():
    assert json_to_array([[1, 2.5]], tf.float32, "x").tolist() == [[1.0, 2.5]]
    with pytest.raises(ServingError, match="must hold DT_FLOAT values, got strings"):
        json_to_array(["1.0"], tf.float32, "x")
    with pytest.raises(ServingError, match="ragged or malformed"):
        json_to_array([[1], [2, 3]], tf.float32, "x")
    with pytest.raises(ServingError, match="objects are not numbers"):
        json_to_array([{"b64": "aGk="}], tf.float32, "x")


def test_row_and_column_inputs_decode_the_same():
    rows_in = JsonInputs({"instances": [{"b64": "aGk="}, {"b64": "aG8="}]})
    named_rows = JsonInputs(
        {"instances": [{"image_bytes": {"b64": "aGk="}}, {"image_bytes": "ho"}]}
    )
    cols_in = JsonInputs({"inputs": {"image_bytes": [{"b64": "aGk="}, "ho"]}})
    for inputs in (rows_in, named_rows, cols_in):
        declared = inputs.declared(IMAGE_BYTES_SIG)
        assert declared == {"image_bytes": (tf.string, (2,))}
        assert inputs.arrays(IMAGE_BYTES_SIG)["image_bytes"].tolist() == [b"hi", b"ho"]
    with pytest.raises(ServingError, match='exactly one of "instances"'):
        JsonInputs({"instances": [], "inputs": []})


def test_predict_response_row_and_column_formats():
    outputs = {
        "identity": np.array([2, 0], dtype=np.int64),
        "is_known": np.array([True, False]),
        "logits": np.array([[0.5, 1.5], [2.0, -1.0]], dtype=np.float32),
    }
    assert predict_response(outputs, row_format=True) == {
        "predictions": [
            {"identity": 2, "is_known": True, "logits": [0.5, 1.5]},
            {"identity": 0, "is_known": False, "logits": [2.0, -1.0]},
        ]
    }
    assert predict_response(outputs, row_format=False) == {
        "outputs": {
            "identity": [2, 0],
            "is_known": [True, False],
            "logits": [[0.5, 1.5], [2.0, -1.0]],
        }
    }
    single = {"y": np.array([1.0, 2.0], dtype=np.float32)}
    assert predict_response(single, row_format=True) == {"predictions": [1.0, 2.0]}
    assert predict_response(single, row_format=False) == {"outputs": [1.0, 2.0]}


def test_status_json_is_tf_servings():
    from serving.registry import VersionStatus

    assert status_json([VersionStatus(3, State.AVAILABLE), VersionStatus(2, State.END, "bad")]) == {
        "model_version_status": [
            {
                "version": "3",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
            {
                "version": "2",
                "state": "END",
                "status": {"error_code": "UNKNOWN", "error_message": "bad"},
            },
        ]
    }


# ---- production path configuration ------------------------------------------------------------

SERVING_DIR = Path(__file__).resolve().parents[1] / "serving"


def test_tensorflow_serving_batching_matches_the_local_defaults():
    import re

    text = (SERVING_DIR / "batching.config").read_text()
    values = {k: int(v) for k, v in re.findall(r"^(\w+) \{ value: (\d+) \}", text, re.M)}
    defaults = BatchingParameters()
    assert values == {
        "max_batch_size": defaults.max_batch_size,
        "batch_timeout_micros": defaults.batch_timeout_micros,
        "num_batch_threads": defaults.num_batch_threads,
        "max_enqueued_batches": defaults.max_enqueued_batches,
    }


def test_compose_file_serves_the_pushed_folder_on_loopback():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((SERVING_DIR / "docker-compose.yml").read_text())
    service = compose["services"]["tensorflow-serving"]
    assert service["image"].startswith("tensorflow/serving:2.16")
    assert sorted(service["ports"]) == ["127.0.0.1:8500:8500", "127.0.0.1:8501:8501"]
    assert service["environment"]["MODEL_NAME"] == "facegate"
    models_volume = next(v for v in service["volumes"] if v.endswith(":/models:ro"))
    default = models_volume.split(":-", 1)[1].split("}", 1)[0]
    assert (SERVING_DIR / default).resolve() == SERVING_DIR.parent / "out" / "demo" / "serving"
    assert "--batching_parameters_file=/config/batching.config" in service["command"]
