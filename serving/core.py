"""What a request means, independent of gRPC or REST: resolve, validate, batch, run.

Both front ends turn their wire format into arrays, call `ServingCore`, and turn a
`ServingError` into their own status; the core never sees a proto or a JSON document.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from serving.batching import BatchScheduler
from serving.errors import ServingError, invalid_argument, not_found
from serving.registry import ModelRegistry, VersionStatus
from serving.servable import Servable, Signature
from serving.validation import validate_content, validate_structure

log = logging.getLogger(__name__)


class RequestInputs(Protocol):
    """A request's input tensors in its wire format (TensorProtos, JSON values)."""

    def declared(self, sig: Signature) -> dict[str, tuple[tf.DType, Sequence[int]]]:
        """dtype and shape by input name, as the request states them (checked before decoding)."""

    def arrays(self, sig: Signature) -> dict[str, np.ndarray]:
        """The decoded values; raise ServingError(INVALID_ARGUMENT) if they do not decode."""


@dataclass(frozen=True)
class PredictResult:
    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelMetadata:
    model_name: str
    version: int
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    info: dict | None
    """assets.extra/facegate.json (labels, input size, threshold), when the model has it."""


class ServingCore:
    def __init__(
        self, registries: Mapping[str, ModelRegistry], batcher: BatchScheduler | None = None
    ):
        self.registries = dict(registries)
        self.batcher = batcher
        self._counts: Counter[tuple[str, str]] = Counter()
        self._counts_lock = threading.Lock()

    def registry(self, model_name: str) -> ModelRegistry:
        try:
            return self.registries[model_name]
        except KeyError:
            served = ", ".join(repr(n) for n in sorted(self.registries))
            raise not_found(
                f"Servable not found for request: model {model_name!r} is not served here "
                f"(serving: {served})"
            ) from None

    def predict(
        self,
        model_name: str,
        version: int | None,
        signature_name: str,
        inputs: RequestInputs,
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> PredictResult:
        """Resolve the version, check the request against its signature, run, filter."""
        code = "OK"
        try:
            return self._predict(model_name, version, signature_name, inputs, output_filter,
                                 deadline)  # fmt: skip
        except ServingError as err:
            code = err.code.name
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL.name
            raise
        finally:
            with self._counts_lock:
                self._counts[(model_name, code)] += 1

    def _predict(
        self,
        model_name: str,
        version: int | None,
        signature_name: str,
        inputs: RequestInputs,
        output_filter: Sequence[str],
        deadline: float | None,
    ) -> PredictResult:
        with self.registry(model_name).lease(version) as servable:
            sig = servable.signature(signature_name)
            size = validate_structure(sig, inputs.declared(sig))
            unknown = [name for name in output_filter if name not in sig.outputs]
            if unknown:
                raise invalid_argument(
                    f"output_filter names {', '.join(unknown)}, not outputs of signature "
                    f"{sig.name!r} (outputs: {', '.join(sorted(sig.outputs))})"
                )
            arrays = inputs.arrays(sig)
            validate_content(sig, arrays)
            outputs = self._run(servable, sig, arrays, size, deadline)
            if output_filter:
                outputs = {name: outputs[name] for name in output_filter}
            return PredictResult(model_name, servable.version, sig.name, outputs)

    def _run(
        self,
        servable: Servable,
        sig: Signature,
        inputs: dict[str, np.ndarray],
        size: int | None,
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        def runner(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return servable.run(sig.name, batch)

        try:
            if self.batcher is None or size is None or not sig.batchable:
                return runner(inputs)
            key = (servable.name, servable.version, id(servable), sig.name)
            return self.batcher.run(key, runner, inputs, size, deadline)
        except ServingError:
            raise
        except Exception as err:
            log.exception("predict on %s v%d failed", servable.name, servable.version)
            raise ServingError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}") from err

    def metadata(self, model_name: str, version: int | None) -> ModelMetadata:
        with self.registry(model_name).lease(version) as servable:
            return ModelMetadata(
                model_name, servable.version, dict(servable.signature_defs), servable.info
            )

    def status(self, model_name: str, version: int | None) -> list[VersionStatus]:
        statuses = self.registry(model_name).statuses(version)
        if not statuses:
            if version is None:
                raise not_found(f"Could not find any versions of model {model_name}")
            raise not_found(f"Could not find version {version} of model {model_name}")
        return statuses

    def metrics_text(self) -> str:
        """Prometheus text format, served at TF Serving's /monitoring/prometheus/metrics."""
        lines = ["# TYPE facegate_predict_requests_total counter"]
        with self._counts_lock:
            counts = sorted(self._counts.items())
        for (model, code), n in counts:
            lines.append(f'facegate_predict_requests_total{{model="{model}",code="{code}"}} {n}')
        if self.batcher is not None:
            lines += [
                "# TYPE facegate_batches_total counter",
                f"facegate_batches_total {self.batcher.batches_run}",
                "# TYPE facegate_batch_rows_total counter",
                f"facegate_batch_rows_total {self.batcher.rows_run}",
            ]
        lines.append("# TYPE facegate_model_version_available gauge")
        for name, registry in sorted(self.registries.items()):
            for version in registry.loaded_versions():
                lines.append(
                    f'facegate_model_version_available{{model="{name}",version="{version}"}} 1'
                )
        return "\n".join(lines) + "\n"


def deadline_from(timeout_seconds: float | None) -> float | None:
    return None if timeout_seconds is None else time.monotonic() + timeout_seconds
