"""Warm-up requests: run each signature once before a version takes traffic.

The first call of a freshly loaded function pays for graph optimisation (hundreds of ms);
warming up keeps that off the first real request after a hot swap. As TF Serving does, a
SavedModel may carry its own warm-up requests in `assets.extra/tf_serving_warmup_requests`
(a TFRecord of PredictionLog); `write_warmup_requests` writes that file, so TensorFlow Serving
in production warms up the same way. Without the file, facegate signatures are warmed up with a
synthetic image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from components import features as F
from serving.servable import Servable, Signature

log = logging.getLogger(__name__)

WARMUP_FILE = "tf_serving_warmup_requests"
WarmupRequest = tuple[str, dict[str, np.ndarray]]


def warmup_path(saved_model_dir: Path) -> Path:
    return Path(saved_model_dir) / "assets.extra" / WARMUP_FILE


def synthetic_image_png(size: int) -> bytes:
    """A mid-grey PNG: decodes like a real face image and costs nothing to build."""
    return tf.io.encode_png(tf.fill([size, size, 3], tf.constant(128, tf.uint8))).numpy()


def synthetic_example(size: int) -> bytes:
    feature = {
        F.IMAGE_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[synthetic_image_png(size)])
        ),
        F.FORMAT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _synthetic_input(sig: Signature, size: int) -> dict[str, np.ndarray] | None:
    inputs = {}
    for alias, spec in sig.inputs.items():
        if spec.dtype == tf.string:
            if alias == F.INPUT_IMAGE_BYTES:
                inputs[alias] = np.array([synthetic_image_png(size)], dtype=object)
            elif alias == F.INPUT_EXAMPLES:
                inputs[alias] = np.array([synthetic_example(size)], dtype=object)
            else:
                return None  # a string input we know nothing about: no safe guess
        elif spec.shape is not None and spec.batched:
            dims = [1] + [d if d is not None else 1 for d in spec.shape[1:]]
            inputs[alias] = np.zeros(dims, dtype=spec.dtype.as_numpy_dtype)
        else:
            return None
    return inputs


def synthetic_requests(servable: Servable) -> list[WarmupRequest]:
    size = int((servable.info or {}).get("input_size", 32))
    requests = []
    for name, sig in servable.signatures.items():
        inputs = _synthetic_input(sig, size)
        if inputs is not None:
            requests.append((name, inputs))
    return requests


def read_warmup_requests(path: Path) -> list[WarmupRequest]:
    requests = []
    for record in tf.data.TFRecordDataset(str(path)):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            log.warning("%s: skipping a %s warm-up record", path, entry.WhichOneof("log_type"))
            continue
        request = entry.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        requests.append((request.model_spec.signature_name, inputs))
    if not requests:
        raise ValueError(f"{path}: no warm-up records (an empty or truncated file)")
    return requests


def write_warmup_requests(
    saved_model_dir: str | Path, model_name: str, requests: Sequence[WarmupRequest]
) -> Path:
    """Write `requests` as TF Serving's warm-up file inside the SavedModel folder."""
    path = warmup_path(Path(saved_model_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature_name, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            for alias, value in inputs.items():
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
            entry = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(entry.SerializeToString())
    return path


def warm_up(servable: Servable) -> int:
    """Run the warm-up requests; raise if a request from the model's own file fails."""
    path = warmup_path(servable.path)
    if path.is_file():
        requests = read_warmup_requests(path)
        for signature_name, inputs in requests:
            servable.run(signature_name, inputs)
        return len(requests)
    done = 0
    for signature_name, inputs in synthetic_requests(servable):
        try:
            servable.run(signature_name, inputs)
            done += 1
        except Exception as err:  # a guessed input: a failure here says nothing about the model
            log.warning("warm-up of %s v%d %s failed: %s", servable.name, servable.version,
                        signature_name, err)  # fmt: skip
    return done
