"""The server over the wire, checked against direct in-process SavedModel calls.

Parity tests also run against a real tensorflow_model_server when one is on PATH (the
production path); they are skipped otherwise. Ports are free loopback ports; every call has a
timeout.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    regression_pb2,
)

from components import features as F
from serving.client import PredictionClient, RestClient
from serving.server import ModelServer, ServerOptions
from serving.testing import face_image, free_port, link_version, tiny_models
from serving.warmup import synthetic_example

MODEL = "facegate"
SIZE_LIMIT = 1024 * 1024
IMAGES = [face_image(1, (40, 48), "png"), face_image(2, (64, 50), "jpeg")]


@dataclass(frozen=True)
class Endpoint:
    kind: str
    grpc_target: str
    rest_url: str


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def base_path(models, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("models") / MODEL
    base.mkdir()
    link_version(models.v1, base, 1)
    link_version(models.v2, base, 2)
    return base


@pytest.fixture(scope="module")
def reference(models):
    """Direct in-process calls of each version's signatures: the numbers to match."""
    loaded = {1: tf.saved_model.load(str(models.v1)), 2: tf.saved_model.load(str(models.v2))}

    def call(version: int, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        fn = loaded[version].signatures[signature]
        return {
            k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()
        }

    return call


@pytest.fixture(scope="module")
def server(base_path):
    options = ServerOptions(
        model_base_path=base_path,
        model_name=MODEL,
        grpc_port=free_port(),
        rest_port=free_port(),
        num_versions=2,
        poll_seconds=0.5,
        max_message_bytes=SIZE_LIMIT,
    )
    with ModelServer(options) as running:
        yield running


@pytest.fixture(scope="module")
def tf_serving(base_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (production-path parity test)")
    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            f"--model_name={MODEL}",
            f"--model_base_path={base_path}",
            "--file_system_poll_wait_seconds=1",
        ]
    )
    try:
        with PredictionClient(f"127.0.0.1:{grpc_port}") as client:
            client.wait_until_available(MODEL, version=2, timeout=120)
        yield Endpoint(
            "tensorflow_model_server", f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}"
        )
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(params=["facegate", "tensorflow_model_server"])
def endpoint(request) -> Endpoint:
    if request.param == "tensorflow_model_server":
        return request.getfixturevalue("tf_serving")
    running = request.getfixturevalue("server")
    return Endpoint("facegate", running.grpc_address, running.rest_url)


@pytest.fixture(scope="module")
def client(server):
    with PredictionClient(server.grpc_address, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def rest(server):
    with RestClient(server.rest_url, timeout=30) as r:
        yield r


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def assert_outputs_close(got: dict, want: dict) -> None:
    assert (
        set(got)
        == set(want)
        == {
            F.OUTPUT_LOGITS,
            F.OUTPUT_IDENTITY_PROBS,
            F.OUTPUT_KNOWN_PROB,
            F.OUTPUT_IDENTITY,
            F.OUTPUT_IS_KNOWN,
            F.OUTPUT_THRESHOLD,
        }
    )
    for name, value in want.items():
        actual = np.asarray(got[name])
        assert actual.shape == value.shape, name
        if value.dtype.kind == "f":
            np.testing.assert_allclose(actual, value, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(actual, value, err_msg=name)


SIGNATURE_INPUTS = {
    F.SIGNATURE_IMAGE_BYTES: lambda: {F.INPUT_IMAGE_BYTES: np.array(IMAGES, dtype=object)},
    F.SIGNATURE_EXAMPLES: lambda: {
        F.INPUT_EXAMPLES: np.array([synthetic_example(32), synthetic_example(20)], dtype=object)
    },
    F.SIGNATURE_IMAGE: lambda: {
        F.INPUT_IMAGE: np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    },
}


# ---- parity with the SavedModel (and with TF Serving when present) ------------------------


@pytest.mark.parametrize("signature", sorted(SIGNATURE_INPUTS))
def test_grpc_predict_matches_the_saved_model(endpoint, reference, signature):
    inputs = SIGNATURE_INPUTS[signature]()
    with PredictionClient(endpoint.grpc_target, timeout=30) as client:
        out = client.predict(inputs, model_name=MODEL, signature_name=signature)
    assert (out.model_name, out.version, out.signature_name) == (MODEL, 2, signature)
    assert_outputs_close(out.outputs, reference(2, signature, inputs))


def test_rest_rows_and_columns_match_grpc(endpoint):
    with PredictionClient(endpoint.grpc_target, timeout=30) as client:
        grpc_out = client.predict(
            {F.INPUT_IMAGE_BYTES: IMAGES}, model_name=MODEL, signature_name=F.SIGNATURE_IMAGE_BYTES
        ).outputs
    with RestClient(endpoint.rest_url, timeout=30) as rest:
        status, rows = rest.predict(
            MODEL,
            {"signature_name": F.SIGNATURE_IMAGE_BYTES, "instances": [b64(i) for i in IMAGES]},
        )
        assert status == 200, rows
        status, cols = rest.predict(
            MODEL,
            {
                "signature_name": F.SIGNATURE_IMAGE_BYTES,
                "inputs": {F.INPUT_IMAGE_BYTES: [b64(i) for i in IMAGES]},
            },
        )
        assert status == 200, cols
    assert len(rows["predictions"]) == len(IMAGES)
    for i, row in enumerate(rows["predictions"]):
        assert_outputs_close(
            {k: np.asarray(v) for k, v in row.items()}, {k: v[i] for k, v in grpc_out.items()}
        )
    assert_outputs_close({k: np.asarray(v) for k, v in cols["outputs"].items()}, grpc_out)


def test_status_over_rest_and_grpc(endpoint):
    with RestClient(endpoint.rest_url) as rest:
        status, body = rest.status(MODEL, version=2)
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    with PredictionClient(endpoint.grpc_target) as client:
        states = client.status(MODEL, version=2)
    assert [(s.version, s.state) for s in states] == [(2, "AVAILABLE")]


def test_metadata_over_grpc_and_rest(endpoint):
    with PredictionClient(endpoint.grpc_target) as client:
        response = client.metadata(MODEL)
        # TensorFlow Serving also lists "__saved_model_init_op"; facegate serve leaves it out.
        sigs = {k: v for k, v in client.signature_defs(MODEL).items() if not k.startswith("__")}
    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL, 2)
    assert set(sigs) == {F.SIGNATURE_EXAMPLES, F.SIGNATURE_IMAGE_BYTES, F.SIGNATURE_IMAGE}
    image = sigs[F.SIGNATURE_IMAGE].inputs[F.INPUT_IMAGE]
    assert image.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, 32, 32, 3]
    assert set(sigs[F.SIGNATURE_IMAGE_BYTES].outputs) >= {F.OUTPUT_KNOWN_PROB, F.OUTPUT_IS_KNOWN}
    with RestClient(endpoint.rest_url) as rest:
        status, body = rest.metadata(MODEL)
    assert status == 200
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "2"}
    rest_sigs = body["metadata"]["signature_def"]["signature_def"]
    assert {k for k in rest_sigs if not k.startswith("__")} == set(sigs)
    assert rest_sigs[F.SIGNATURE_IMAGE_BYTES]["inputs"][F.INPUT_IMAGE_BYTES]["dtype"] == "DT_STRING"


# ---- facegate server specifics ------------------------------------------------------------


def test_any_loaded_version_on_request(client, rest, reference):
    inputs = {F.INPUT_IMAGE_BYTES: np.array(IMAGES[:1], dtype=object)}
    for version in (1, 2):
        out = client.predict(inputs, signature_name=F.SIGNATURE_IMAGE_BYTES, version=version)
        assert out.version == version
        assert_outputs_close(out.outputs, reference(version, F.SIGNATURE_IMAGE_BYTES, inputs))
        status, body = rest.predict_images(MODEL, IMAGES[:1], version=version)
        assert status == 200
        np.testing.assert_allclose(
            body["predictions"][0][F.OUTPUT_KNOWN_PROB],
            out.outputs[F.OUTPUT_KNOWN_PROB][0],
            rtol=1e-6,
        )
    status, body = rest.status(MODEL)
    assert [(s["version"], s["state"]) for s in body["model_version_status"]] == [
        ("2", "AVAILABLE"),
        ("1", "AVAILABLE"),
    ]


def test_face_client_reads_labels_and_the_decision(client, reference, models):
    results = client.predict_images(IMAGES)
    want = reference(2, F.SIGNATURE_IMAGE_BYTES, {F.INPUT_IMAGE_BYTES: np.array(IMAGES, object)})
    assert [r.identity for r in results] == want[F.OUTPUT_IDENTITY].tolist()
    assert [r.label for r in results] == [models.labels[i] for i in want[F.OUTPUT_IDENTITY]]
    for r, p in zip(results, want[F.OUTPUT_KNOWN_PROB], strict=True):
        assert r.known_prob == pytest.approx(float(p), rel=1e-5)
        assert r.threshold == pytest.approx(0.25)  # version 2 was exported with 0.25
        assert r.is_known == (r.known_prob >= r.threshold)
        assert r.decision == (f"known: {r.label}" if r.is_known else "unknown")
    assert client.model_info()["labels"] == list(models.labels)


def test_concurrent_requests_are_batched_and_a_corrupt_image_fails_alone(client, reference):
    truncated = IMAGES[0][:60]  # PNG magic, broken body: only the decoder can tell
    results: dict[int, object] = {}

    def call(i: int, image: bytes) -> None:
        try:
            results[i] = client.predict_images([image])[0]
        except grpc.RpcError as err:
            results[i] = err

    threads = [
        threading.Thread(target=call, args=(i, truncated if i == 3 else IMAGES[i % 2]))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    want = reference(2, F.SIGNATURE_IMAGE_BYTES, {F.INPUT_IMAGE_BYTES: np.array(IMAGES, object)})
    for i, result in results.items():
        if i == 3:
            assert isinstance(result, grpc.RpcError)
            assert result.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert result.known_prob == pytest.approx(float(want[F.OUTPUT_KNOWN_PROB][i % 2]), 1e-5)
    assert len(results) == 8


# ---- bad requests: right status, a message naming the problem, and the server keeps serving


def grpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def assert_still_serving(client: PredictionClient, rest: RestClient) -> None:
    assert client.predict_images(IMAGES[:1])[0].version == 2
    status, body = rest.predict_images(MODEL, IMAGES[:1])
    assert status == 200 and len(body["predictions"]) == 1


IMG = F.INPUT_IMAGE_BYTES
SIG = F.SIGNATURE_IMAGE_BYTES

BAD_PREDICTS = {
    # name: (predict kwargs, gRPC code, REST body, HTTP status, message fragment)
    "unknown model": (
        {"inputs": {IMG: IMAGES[:1]}, "model_name": "nobody", "signature_name": SIG},
        grpc.StatusCode.NOT_FOUND,
        ("nobody", None, {"signature_name": SIG, "instances": [b64(IMAGES[0])]}),
        404,
        "model 'nobody' is not served here",
    ),
    "unknown version": (
        {"inputs": {IMG: IMAGES[:1]}, "version": 9, "signature_name": SIG},
        grpc.StatusCode.NOT_FOUND,
        (MODEL, 9, {"signature_name": SIG, "instances": [b64(IMAGES[0])]}),
        404,
        "version 9 of model 'facegate' is not loaded (loaded: 1, 2)",
    ),
    "wrong input name": (
        {"inputs": {"image": IMAGES[:1]}, "signature_name": SIG},
        grpc.StatusCode.INVALID_ARGUMENT,
        (MODEL, None, {"signature_name": SIG, "inputs": {"image": [b64(IMAGES[0])]}}),
        400,
        "unexpected: image; missing: image_bytes",
    ),
    "wrong dtype": (
        {"inputs": {IMG: np.zeros([1], np.float32)}, "signature_name": SIG},
        grpc.StatusCode.INVALID_ARGUMENT,
        (MODEL, None, {"signature_name": SIG, "instances": [0.5]}),
        400,
        "image_bytes",
    ),
    "wrong shape": (
        {
            "inputs": {F.INPUT_IMAGE: np.zeros([1, 31, 32, 3], np.float32)},
            "signature_name": F.SIGNATURE_IMAGE,
        },
        grpc.StatusCode.INVALID_ARGUMENT,
        (
            MODEL,
            None,
            {"signature_name": F.SIGNATURE_IMAGE, "instances": [[[[0.0] * 3] * 32] * 31]},
        ),
        400,
        "must have shape [?,32,32,3] (? = any size), got [1,31,32,3]",
    ),
    "undecodable image": (
        {"inputs": {IMG: [b"this is not a picture"]}, "signature_name": SIG},
        grpc.StatusCode.INVALID_ARGUMENT,
        (MODEL, None, {"signature_name": SIG, "instances": [b64(b"this is not a picture")]}),
        400,
        "image_bytes[0] is not a JPEG, PNG, GIF or BMP image",
    ),
    "empty batch": (
        {"inputs": {IMG: tf.make_tensor_proto([], tf.string, [0])}, "signature_name": SIG},
        grpc.StatusCode.INVALID_ARGUMENT,
        (MODEL, None, {"signature_name": SIG, "instances": []}),
        400,
        "empty batch",
    ),
    "unknown signature": (
        {"inputs": {IMG: IMAGES[:1]}, "signature_name": "classify_faces"},
        grpc.StatusCode.FAILED_PRECONDITION,
        (MODEL, None, {"signature_name": "classify_faces", "instances": [b64(IMAGES[0])]}),
        400,
        'Serving signature key "classify_faces" not found',
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PREDICTS))
def test_bad_predict_requests(client, rest, case):
    kwargs, code, (model, version, body), http_status, fragment = BAD_PREDICTS[case]
    err = grpc_error(lambda: client.predict(**kwargs))
    assert err.code() == code, err.details()
    assert fragment in err.details()
    status, answer = rest.predict(model, body, version=version)
    assert status == http_status, answer
    assert set(answer) == {"error"}
    if case != "wrong dtype":  # REST converts by the signature's dtype, so it words it apart
        assert fragment in answer["error"]
    assert_still_serving(client, rest)


def test_oversized_messages_are_refused(server, client, rest):
    big = [b"\x89PNG\r\n\x1a\n" + bytes(2 * SIZE_LIMIT)]
    err = grpc_error(lambda: client.predict_images(big))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in err.details()
    status, body = rest.predict_images(MODEL, big)
    assert status == 413
    assert body == {
        "error": f"request body of {len(_rest_body(big))} bytes exceeds the 1048576 limit"
    }
    assert_still_serving(client, rest)


def _rest_body(images: list[bytes]) -> bytes:
    import json

    body = {"signature_name": SIG, "instances": [b64(i) for i in images]}
    return json.dumps(body).encode()


def test_other_bad_requests(client, rest):
    spec_kwargs = {"model_spec": {"name": MODEL}}
    for method, request in (
        (client.prediction.Classify, classification_pb2.ClassificationRequest(**spec_kwargs)),
        (client.prediction.Regress, regression_pb2.RegressionRequest(**spec_kwargs)),
        (client.prediction.MultiInference, inference_pb2.MultiInferenceRequest()),
    ):
        err = grpc_error(lambda m=method, r=request: m(r, timeout=10))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "call Predict" in err.details()
    status, body = rest.request("POST", f"/v1/models/{MODEL}:classify", {"examples": []})
    assert (status, set(body)) == (501, {"error"})

    err = grpc_error(lambda: client.metadata(MODEL, fields=()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = grpc_error(lambda: client.metadata(MODEL, fields=("graph",)))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field graph is not supported",
    )
    labelled = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    labelled.model_spec.name = MODEL
    labelled.model_spec.version_label = "stable"
    err = grpc_error(lambda: client.prediction.GetModelMetadata(labelled, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "version labels" in err.details()
    err = grpc_error(
        lambda: client.predict(
            {IMG: IMAGES[:1]}, signature_name=SIG, output_filter=[F.OUTPUT_KNOWN_PROB, "age"]
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "age" in err.details()
    err = grpc_error(lambda: client.status("nobody"))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    assert rest.request("POST", f"/v1/models/{MODEL}:predict", b"{not json")[0] == 400
    assert rest.request("POST", f"/v1/models/{MODEL}:predict", b"[1, 2]")[0] == 400
    assert rest.request("GET", "/v2/anything")[0] == 404
    assert rest.request("GET", f"/v1/models/{MODEL}:predict")[0] == 404
    assert rest.request("GET", f"/v1/models/{MODEL}/versions/two")[0] == 400
    assert_still_serving(client, rest)


def test_output_filter_returns_only_those_outputs(client, reference):
    out = client.predict(
        {IMG: IMAGES}, signature_name=SIG, output_filter=[F.OUTPUT_KNOWN_PROB, F.OUTPUT_IS_KNOWN]
    )
    assert set(out.outputs) == {F.OUTPUT_KNOWN_PROB, F.OUTPUT_IS_KNOWN}
    want = reference(2, SIG, {IMG: np.array(IMAGES, object)})
    np.testing.assert_allclose(out.outputs[F.OUTPUT_KNOWN_PROB], want[F.OUTPUT_KNOWN_PROB], 1e-5)


def _metric(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prometheus_metrics_count_requests_and_batches(server, client, rest):
    import urllib.request

    def scrape() -> str:
        with urllib.request.urlopen(
            server.rest_url + "/monitoring/prometheus/metrics", timeout=10
        ) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            return r.read().decode()

    ok = 'facegate_predict_requests_total{model="facegate",code="OK"}'
    bad = 'facegate_predict_requests_total{model="facegate",code="INVALID_ARGUMENT"}'
    before = scrape()
    client.predict_images(IMAGES)
    grpc_error(lambda: client.predict_images([b"not an image"]))
    after = scrape()
    assert _metric(after, ok) == _metric(before, ok) + 1
    assert _metric(after, bad) == _metric(before, bad) + 1
    assert (
        _metric(after, "facegate_batch_rows_total")
        == _metric(before, "facegate_batch_rows_total") + 2
    )
    assert 'facegate_model_version_available{model="facegate",version="2"} 1' in after


def test_warmup_file_is_written_in_tf_servings_format_and_replayed(models, tmp_path):
    from serving.servable import Servable
    from serving.warmup import read_warmup_requests, warm_up, warmup_path, write_warmup_requests

    version_dir = link_version(models.v1, tmp_path, 1)
    requests = [
        (SIG, {IMG: np.array(IMAGES, dtype=object)}),
        (F.SIGNATURE_IMAGE, {F.INPUT_IMAGE: np.zeros([1, 32, 32, 3], np.float32)}),
    ]
    path = write_warmup_requests(version_dir, MODEL, requests)
    assert (
        path
        == warmup_path(version_dir)
        == version_dir / "assets.extra" / "tf_serving_warmup_requests"
    )
    replayed = read_warmup_requests(path)
    assert [name for name, _ in replayed] == [SIG, F.SIGNATURE_IMAGE]
    assert replayed[0][1][IMG].tolist() == IMAGES
    servable = Servable.load(MODEL, 1, version_dir)
    assert warm_up(servable) == 2
    path.write_bytes(b"garbage")  # a model's own warm-up file that fails fails its load
    with pytest.raises(ValueError, match="no warm-up records"):
        warm_up(servable)
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(tf.errors.DataLossError):
        warm_up(servable)
