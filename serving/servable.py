"""One loaded version of a SavedModel: its signatures and a call per signature.

Signatures are read from saved_model.pb as SignatureDef protos, the same source TF Serving
reads: they answer GetModelMetadata and drive request validation, so a request is checked
against exactly what the model declares, before the model runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import ServingError, failed_precondition, status_code_from_int

log = logging.getLogger(__name__)

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output of a signature, as its SignatureDef declares it."""

    alias: str
    dtype: tf.DType
    shape: tuple[int | None, ...] | None
    """None when the rank is unknown; None entries are unknown dimensions."""

    @property
    def batched(self) -> bool:
        """True when the first dimension is the (unknown) batch dimension."""
        return self.shape is not None and len(self.shape) >= 1 and self.shape[0] is None

    def describe_shape(self) -> str:
        if self.shape is None:
            return "[unknown rank]"
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"

    @classmethod
    def from_proto(cls, alias: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        shape_proto = info.tensor_shape
        shape = (
            None
            if shape_proto.unknown_rank
            else tuple(None if d.size < 0 else int(d.size) for d in shape_proto.dim)
        )
        return cls(alias=alias, dtype=tf.dtypes.as_dtype(info.dtype), shape=shape)


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    @property
    def batchable(self) -> bool:
        """Every input and output has a leading batch dimension: requests can be merged."""
        return all(t.batched for t in (*self.inputs.values(), *self.outputs.values()))

    @classmethod
    def from_proto(cls, name: str, sig: meta_graph_pb2.SignatureDef) -> Signature:
        return cls(
            name=name,
            method_name=sig.method_name,
            inputs={k: TensorSpec.from_proto(k, v) for k, v in sorted(sig.inputs.items())},
            outputs={k: TensorSpec.from_proto(k, v) for k, v in sorted(sig.outputs.items())},
        )


def has_saved_model(path: Path) -> bool:
    return (path / SAVED_MODEL_PB).is_file() or (path / SAVED_MODEL_PBTXT).is_file()


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The serving meta graph's SignatureDefs, without internal ones (`__saved_model_init_op`)."""
    saved_model = saved_model_pb2.SavedModel()
    try:
        if (path / SAVED_MODEL_PB).is_file():
            saved_model.ParseFromString((path / SAVED_MODEL_PB).read_bytes())
        else:
            text_format.Parse((path / SAVED_MODEL_PBTXT).read_text(), saved_model)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: saved_model.pb is not a SavedModel proto ({err})") from err
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
    raise ValueError(f"{path}: no meta graph tagged {SERVE_TAG!r}")


def _read_model_info(path: Path) -> dict | None:
    # Imported here: the exporter pulls in tf_keras, which only this optional read needs.
    from components.exporter import read_model_info

    try:
        return read_model_info(path)
    except FileNotFoundError:
        return None


def _op_error_message(err: tf.errors.OpError) -> str:
    # Drop the graph-node trailer ("\n\t [[{{node ...}}]] [Op:...]") TensorFlow appends.
    return str(err.message).split("\n\t [[")[0].split(" [Op:")[0].strip()


class Servable:
    """A SavedModel version in memory. Thread-safe: signature functions may run concurrently."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        loaded: object,
        signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
        info: dict | None,
    ):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = dict(signature_defs)
        self.signatures = {k: Signature.from_proto(k, v) for k, v in self.signature_defs.items()}
        self.info = info
        self._loaded = loaded
        self._functions = {k: loaded.signatures[k] for k in self.signatures}

    @classmethod
    def load(cls, name: str, version: int, path: Path) -> Servable:
        signature_defs = read_signature_defs(path)
        loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        missing = set(signature_defs) - set(loaded.signatures.keys())
        if missing:
            raise ValueError(f"{path}: signatures {sorted(missing)} declared but not loadable")
        return cls(name, version, path, loaded, signature_defs, _read_model_info(path))

    def signature(self, name: str) -> Signature:
        name = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[name]
        except KeyError:
            raise failed_precondition(
                f'Serving signature key "{name}" not found in model {self.name!r} version '
                f"{self.version} (signatures: {', '.join(sorted(self.signatures))})"
            ) from None

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one signature on validated inputs; TensorFlow errors become ServingErrors."""
        sig = self.signature(signature_name)
        fn = self._functions[sig.name]
        try:
            tensors = {
                k: tf.convert_to_tensor(v, dtype=sig.inputs[k].dtype) for k, v in inputs.items()
            }
            outputs = fn(**tensors)
        except tf.errors.OpError as err:
            code = status_code_from_int(err.error_code)
            raise ServingError(code, _op_error_message(err)) from err
        return {k: v.numpy() for k, v in outputs.items()}

    def release(self) -> None:
        """Drop the references that keep the model's variables and functions alive."""
        self._functions = {}
        self._loaded = None
