"""The gRPC front end: tensorflow.serving.PredictionService and ModelService.

Generated from the protos shipped in tensorflow-serving-api, so any TF Serving client works.
Predict and GetModelMetadata are served; Classify, Regress and MultiInference answer
UNIMPLEMENTED (facegate exports Predict signatures only). GetModelMetadata also accepts the
metadata field "facegate", answering with the model's facegate.json (labels, input size,
threshold) as a StringValue; TensorFlow Serving rejects that field, and facegate's client then
falls back to identity indices.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2, wrappers_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.core import ServingCore, deadline_from
from serving.errors import ServingError, invalid_argument, unimplemented
from serving.registry import VersionStatus
from serving.servable import Signature

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
FACEGATE_FIELD = "facegate"


def _guard(method: Callable) -> Callable:
    """ServingError -> its gRPC status; anything else -> INTERNAL. The server keeps serving."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ServingError as err:
            context.abort(err.code, err.message)
        except Exception as err:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")

    return wrapper


def requested_version(model_spec: Any) -> int | None:
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise invalid_argument(
            f"version labels are not configured on this server (got label "
            f"{model_spec.version_label!r}); ask for a version number or none for the latest"
        )
    return model_spec.version.value if model_spec.HasField("version") else None


def _declared(alias: str, proto: Any) -> tuple[tf.DType, list[int]]:
    if proto.dtype == 0:
        raise invalid_argument(f"input {alias!r} has no dtype (DT_INVALID)")
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise invalid_argument(f"input {alias!r} has an unknown dtype {proto.dtype}") from None
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(size < 0 for size in shape):
        raise invalid_argument(f"input {alias!r} must have a known shape, got {shape}")
    return dtype, shape


class ProtoInputs:
    """PredictRequest.inputs: dtype and shape are read from the protos before any decoding."""

    def __init__(self, protos: Any):
        self._protos = protos

    def declared(self, sig: Signature) -> dict[str, tuple[tf.DType, list[int]]]:
        return {alias: _declared(alias, proto) for alias, proto in self._protos.items()}

    def arrays(self, sig: Signature) -> dict[str, np.ndarray]:
        arrays = {}
        for alias, proto in self._protos.items():
            try:
                arrays[alias] = tf.make_ndarray(proto)
            except (ValueError, TypeError) as err:
                raise invalid_argument(
                    f"input {alias!r}: the tensor's values do not fill its declared shape ({err})"
                ) from None
        return arrays


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    @_guard
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        spec = request.model_spec
        result = self.core.predict(
            spec.name,
            requested_version(spec),
            spec.signature_name,
            ProtoInputs(request.inputs),
            output_filter=list(request.output_filter),
            deadline=deadline_from(context.time_remaining()),
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = result.model_name
        response.model_spec.version.value = result.version
        response.model_spec.signature_name = result.signature_name
        for alias, value in result.outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    @_guard
    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field "
                f"(supported: {SIGNATURE_DEF_FIELD!r})"
            )
        for field in fields:
            if field not in (SIGNATURE_DEF_FIELD, FACEGATE_FIELD):
                raise invalid_argument(f"Metadata field {field} is not supported")
        spec = request.model_spec
        meta = self.core.metadata(spec.name, requested_version(spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = meta.model_name
        response.model_spec.version.value = meta.version
        if SIGNATURE_DEF_FIELD in fields:
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in meta.signature_defs.items():
                sig_map.signature_def[name].CopyFrom(sig)
            packed = any_pb2.Any()
            packed.Pack(sig_map)
            response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
        if FACEGATE_FIELD in fields:
            if meta.info is None:
                raise invalid_argument(f"model {meta.model_name!r} has no facegate.json")
            packed = any_pb2.Any()
            packed.Pack(wrappers_pb2.StringValue(value=json.dumps(meta.info)))
            response.metadata[FACEGATE_FIELD].CopyFrom(packed)
        return response

    @_guard
    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        raise unimplemented(_NOT_PREDICT.format(method="Classify"))

    @_guard
    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        raise unimplemented(_NOT_PREDICT.format(method="Regress"))

    @_guard
    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        raise unimplemented(_NOT_PREDICT.format(method="MultiInference"))


_NOT_PREDICT = (
    "{method} is not implemented by the facegate server: facegate models export Predict "
    "signatures only; call Predict (e.g. signature 'serving_image_bytes' with 'image_bytes')"
)


def status_proto(status: VersionStatus) -> get_model_status_pb2.ModelVersionStatus:
    proto = get_model_status_pb2.ModelVersionStatus(version=status.version)
    proto.state = status.state.value
    if status.error:
        proto.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
        proto.status.error_message = status.error
    return proto


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    @_guard
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        spec = request.model_spec
        statuses = self.core.status(spec.name, requested_version(spec))
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.extend(status_proto(s) for s in statuses)
        return response

    @_guard
    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        raise unimplemented(
            "model config reload is not supported: the server watches its model base path "
            "and loads new versions by itself"
        )


def add_services(server: grpc.Server, core: ServingCore) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
