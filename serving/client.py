"""Clients for a TF Serving endpoint: gRPC with the official stubs, and a small REST client.

`PredictionClient` speaks to `facegate serve` and to tensorflow_model_server alike. Every call
carries a timeout (a hung server must not hang the caller).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components import features as F

DEFAULT_TIMEOUT = 10.0
MiB = 1024 * 1024
_STATE_NAMES = {
    v.number: v.name
    for v in get_model_status_pb2.ModelVersionStatus.State.DESCRIPTOR.values  # type: ignore[attr-defined]
}


@dataclass(frozen=True)
class PredictOutput:
    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class FacePrediction:
    """One face image's answer, read by output name."""

    identity: int
    """Index of the most likely known identity."""
    label: str | None
    """Its name, when the labels are known (facegate server or --labels)."""
    identity_prob: float
    """Softmax probability of that identity (relative certainty)."""
    known_prob: float
    """P(known): calibrated probability that the face is a known person at all."""
    is_known: bool
    """known_prob >= threshold, decided in the model graph."""
    threshold: float
    version: int

    @property
    def name(self) -> str:
        return self.label if self.label is not None else f"#{self.identity}"

    @property
    def decision(self) -> str:
        return f"known: {self.name}" if self.is_known else "unknown"


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str
    error_message: str = ""


def _input_proto(value: Any) -> Any:
    if isinstance(value, tensor_pb2.TensorProto):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], bytes):
        return tf.make_tensor_proto(list(value), dtype=tf.string, shape=[len(value)])
    return tf.make_tensor_proto(value)


class PredictionClient:
    """gRPC client for PredictionService and ModelService at `target` (host:port)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = 64 * MiB,
    ):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._labels: dict[tuple[str, int], list[str] | None] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _spec(spec: Any, model_name: str, version: int | None, signature: str = "") -> None:
        spec.name = model_name
        if version is not None:
            spec.version.value = version
        if signature:
            spec.signature_name = signature

    def predict_request(
        self,
        inputs: Mapping[str, Any],
        *,
        model_name: str = "facegate",
        signature_name: str = F.SIGNATURE_EXAMPLES,
        version: int | None = None,
        output_filter: Sequence[str] = (),
    ) -> predict_pb2.PredictRequest:
        """inputs by name: arrays (any dtype), lists of bytes, or ready TensorProtos."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model_name, version, signature_name)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(_input_proto(value))
        request.output_filter.extend(output_filter)
        return request

    def predict(
        self,
        inputs: Mapping[str, Any],
        *,
        model_name: str = "facegate",
        signature_name: str = F.SIGNATURE_EXAMPLES,
        version: int | None = None,
        output_filter: Sequence[str] = (),
        timeout: float | None = None,
    ) -> PredictOutput:
        request = self.predict_request(
            inputs,
            model_name=model_name,
            signature_name=signature_name,
            version=version,
            output_filter=output_filter,
        )
        response = self.prediction.Predict(request, timeout=timeout or self.timeout)
        return PredictOutput(
            response.model_spec.name,
            response.model_spec.version.value,
            response.model_spec.signature_name,
            {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()},
        )

    def predict_images(
        self,
        images: Sequence[bytes],
        *,
        model_name: str = "facegate",
        version: int | None = None,
        labels: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[FacePrediction]:
        """JPEG/PNG bytes -> one FacePrediction per image (signature serving_image_bytes)."""
        out = self.predict(
            {F.INPUT_IMAGE_BYTES: list(images)},
            model_name=model_name,
            signature_name=F.SIGNATURE_IMAGE_BYTES,
            version=version,
            timeout=timeout,
        )
        if labels is None:
            labels = self.labels(model_name, out.version)
        o = out.outputs
        results = []
        for i in range(len(images)):
            identity = int(o[F.OUTPUT_IDENTITY][i])
            label = labels[identity] if labels and 0 <= identity < len(labels) else None
            results.append(
                FacePrediction(
                    identity=identity,
                    label=label,
                    identity_prob=float(o[F.OUTPUT_IDENTITY_PROBS][i][identity]),
                    known_prob=float(o[F.OUTPUT_KNOWN_PROB][i]),
                    is_known=bool(o[F.OUTPUT_IS_KNOWN][i]),
                    threshold=float(o[F.OUTPUT_THRESHOLD][i]),
                    version=out.version,
                )
            )
        return results

    def metadata(
        self,
        model_name: str = "facegate",
        version: int | None = None,
        fields: Sequence[str] = ("signature_def",),
        timeout: float | None = None,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
        self._spec(request.model_spec, model_name, version)
        return self.prediction.GetModelMetadata(request, timeout=timeout or self.timeout)

    def signature_defs(self, model_name: str = "facegate", version: int | None = None) -> dict:
        response = self.metadata(model_name, version)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return dict(sig_map.signature_def)

    def model_info(self, model_name: str = "facegate", version: int | None = None) -> dict | None:
        """facegate.json from a facegate server; None from servers without that extension."""
        try:
            response = self.metadata(model_name, version, fields=("facegate",))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return None
            raise
        value = wrappers_pb2.StringValue()
        response.metadata["facegate"].Unpack(value)
        return json.loads(value.value)

    def labels(self, model_name: str, version: int) -> list[str] | None:
        key = (model_name, version)
        if key not in self._labels:
            info = self.model_info(model_name, version)
            self._labels[key] = list(info["labels"]) if info and "labels" in info else None
        return self._labels[key]

    def status(
        self, model_name: str = "facegate", version: int | None = None, timeout: float | None = None
    ) -> list[VersionState]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model_name, version)
        response = self.models.GetModelStatus(request, timeout=timeout or self.timeout)
        return [
            VersionState(s.version, _STATE_NAMES.get(s.state, str(s.state)), s.status.error_message)
            for s in response.model_version_status
        ]

    def wait_until_available(
        self, model_name: str = "facegate", version: int | None = None, timeout: float = 60.0
    ) -> int:
        """Readiness probe: poll GetModelStatus until a (the) version is AVAILABLE."""
        deadline = time.monotonic() + timeout
        last: Exception | str = "no answer yet"
        while time.monotonic() < deadline:
            try:
                for state in self.status(model_name, version, timeout=2.0):
                    if state.state == "AVAILABLE":
                        return state.version
                last = "no AVAILABLE version"
            except grpc.RpcError as err:
                last = err
            time.sleep(0.1)
        raise TimeoutError(f"{model_name} not AVAILABLE at {self.target} after {timeout}s: {last}")


class RestClient:
    """TF Serving's REST API over one keep-alive connection (one client per thread)."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT):
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 8501
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: bytes | dict | None = None) -> tuple[int, dict]:
        """Send one request; return (HTTP status, parsed JSON body)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                payload = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, json.loads(payload) if payload else {}
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a keep-alive connection the server closed: retry once
                if attempt:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def model_path(model_name: str, version: int | None = None) -> str:
        path = f"/v1/models/{model_name}"
        return path if version is None else f"{path}/versions/{version}"

    def predict(self, model_name: str, body: dict, version: int | None = None) -> tuple[int, dict]:
        return self.request("POST", self.model_path(model_name, version) + ":predict", body)

    def predict_images(
        self, model_name: str, images: Sequence[bytes], version: int | None = None
    ) -> tuple[int, dict]:
        body = {
            "signature_name": F.SIGNATURE_IMAGE_BYTES,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
        }
        return self.predict(model_name, body, version)

    def status(self, model_name: str, version: int | None = None) -> tuple[int, dict]:
        return self.request("GET", self.model_path(model_name, version))

    def metadata(self, model_name: str, version: int | None = None) -> tuple[int, dict]:
        return self.request("GET", self.model_path(model_name, version) + "/metadata")
