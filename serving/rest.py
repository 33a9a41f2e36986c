"""The REST front end, in TF Serving's JSON API.

    GET  /v1/models/NAME[/versions/N]            -> {"model_version_status": [...]}
    GET  /monitoring/prometheus/metrics          -> request, batch and version counters
    GET  /v1/models/NAME[/versions/N]/metadata   -> {"model_spec": ..., "metadata": ...}
    POST /v1/models/NAME[/versions/N]:predict    <- {"signature_name"?, "instances"|"inputs"}

Row format ("instances") answers {"predictions": [...]}, column format ("inputs") answers
{"outputs": ...}; bytes travel as {"b64": "..."}. Errors are {"error": "..."} with the HTTP
status TF Serving uses for the same gRPC code.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import sys
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.core import ServingCore
from serving.errors import ServingError, invalid_argument, not_found, unimplemented
from serving.registry import VersionStatus
from serving.servable import Signature
from serving.validation import check_names, dtype_name

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?$"
)
_B64 = "b64"
METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's path for the same purpose
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
# An oversized body is read and dropped up to this many times the limit before the 413, so
# the client can read the answer; past that the connection is simply closed after it.
DRAIN_FACTOR = 16


# ---- JSON <-> arrays ----------------------------------------------------------------------


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and _B64 in value


def _regular_shape(value: Any, alias: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = [_regular_shape(item, alias) for item in value]
    if any(shape != inner[0] for shape in inner):
        raise invalid_argument(f"input {alias!r} is ragged: all rows must have the same shape")
    return (len(value), *inner[0])


def _leaves(value: Any) -> list:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _string_leaf(value: Any, alias: str) -> bytes:
    if _is_b64(value):
        try:
            return base64.b64decode(value[_B64], validate=True)
        except (binascii.Error, TypeError, ValueError):
            message = f'input {alias!r} has invalid base64 in {{"b64": ...}}'
            raise invalid_argument(message) from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid_argument(
        f'input {alias!r} expects strings or {{"b64": ...}} objects, got {type(value).__name__}'
    )


_JSON_KINDS = {"U": "strings", "S": "strings", "O": "null or mixed values", "b": "booleans",
               "f": "floats", "i": "integers"}  # fmt: skip


def json_to_array(value: Any, dtype: tf.DType, alias: str) -> np.ndarray:
    """A JSON value (nested lists) -> ndarray of `dtype`; INVALID_ARGUMENT if it is not one."""
    if dtype == tf.string:
        shape = _regular_shape(value, alias)
        leaves = [_string_leaf(leaf, alias) for leaf in _leaves(value)]
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    if any(isinstance(leaf, dict) for leaf in _leaves(value)):
        raise invalid_argument(f"input {alias!r} is {dtype_name(dtype)}: objects are not numbers")
    try:
        raw = np.asarray(value)
    except ValueError as err:
        raise invalid_argument(f"input {alias!r} is ragged or malformed ({err})") from None
    kind = raw.dtype.kind
    want = np.dtype(dtype.as_numpy_dtype)
    accepted = {"f": "biuf", "c": "biuf", "i": "biu", "u": "biu", "b": "b"}.get(want.kind, "")
    ok = kind in accepted
    if not ok and raw.size:
        raise invalid_argument(
            f"input {alias!r} must hold {dtype_name(dtype)} values, got "
            f"{_JSON_KINDS.get(kind, 'other values')} (send numbers for numeric inputs, "
            "true/false for booleans)"
        )
    return raw.astype(want)


def _output_to_json(alias: str, value: np.ndarray) -> Any:
    if value.dtype == object:
        as_b64 = alias.endswith("_bytes")
        flat = [
            {_B64: base64.b64encode(v).decode("ascii")} if as_b64 else v.decode("utf-8", "replace")
            for v in value.reshape(-1)
        ]
        return np.array(flat, dtype=object).reshape(value.shape).tolist() if flat else []
    return value.tolist()


class JsonInputs:
    """A predict body's "instances" (rows) or "inputs" (columns), decoded per the signature."""

    def __init__(self, body: dict):
        has_rows, has_cols = "instances" in body, "inputs" in body
        if has_rows == has_cols:
            raise invalid_argument(
                'the request body must have exactly one of "instances" (row format) or '
                '"inputs" (columnar format)'
            )
        self.row_format = has_rows
        self._value = body["instances" if has_rows else "inputs"]
        self._arrays: dict[str, np.ndarray] | None = None

    def _columns(self, sig: Signature) -> dict[str, Any]:
        names = sorted(sig.inputs)
        value = self._value
        if not self.row_format:
            if isinstance(value, dict) and not _is_b64(value):
                return value
            if len(names) != 1:
                raise invalid_argument(
                    f"signature {sig.name!r} has inputs {', '.join(names)}: name them in "
                    '"inputs": {"name": value, ...}'
                )
            return {names[0]: value}
        if not isinstance(value, list):
            raise invalid_argument('"instances" must be a list, one element per example')
        named = [isinstance(row, dict) and not _is_b64(row) for row in value]
        if any(named) and not all(named):
            raise invalid_argument('"instances" mixes named ({...}) and bare values')
        if not value or not named[0]:
            if len(names) != 1:
                raise invalid_argument(
                    f"signature {sig.name!r} has inputs {', '.join(names)}: each instance must "
                    'be an object {"name": value, ...}'
                )
            return {names[0]: value}
        keys = set(value[0])
        for index, row in enumerate(value):
            if set(row) != keys:
                raise invalid_argument(
                    f"instance {index} has inputs {sorted(row)}, instance 0 has {sorted(keys)}"
                )
        return {key: [row[key] for row in value] for key in keys}

    def declared(self, sig: Signature) -> dict[str, tuple[tf.DType, Sequence[int]]]:
        columns = self._columns(sig)
        check_names(sig, columns)
        self._arrays = {
            alias: json_to_array(column, sig.inputs[alias].dtype, alias)
            for alias, column in columns.items()
        }
        return {alias: (sig.inputs[alias].dtype, a.shape) for alias, a in self._arrays.items()}

    def arrays(self, sig: Signature) -> dict[str, np.ndarray]:
        assert self._arrays is not None, "declared() decodes; call it first"
        return self._arrays


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    values = {alias: _output_to_json(alias, v) for alias, v in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {alias: (v.shape[0] if v.ndim else None) for alias, v in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise invalid_argument(
            f"outputs have no common batch size for the row format ({sizes}); "
            'use the columnar format ("inputs")'
        )
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    batch = next(iter(sizes.values()))
    return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(batch)]}


def status_json(statuses: list[VersionStatus]) -> dict:
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state.name,
                "status": {
                    "error_code": "UNKNOWN" if s.error else "OK",
                    "error_message": s.error,
                },
            }
            for s in statuses
        ]
    }


def metadata_json(model_name: str, version: int, signature_defs: dict) -> dict:
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in signature_defs.items():
        sig_map.signature_def[name].CopyFrom(sig)
    return {
        "model_spec": {"name": model_name, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": json_format.MessageToDict(sig_map, preserving_proto_field_name=True)
        },
    }


# ---- HTTP -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on small responses
    timeout = 120  # seconds a keep-alive connection may sit idle before its thread is freed
    server_version = "facegate-serving"
    core: ServingCore
    max_body_bytes: int

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload, separators=(",", ":")).encode("utf-8"))

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, err: ServingError) -> None:
        self._send_json(err.http_status, {"error": err.message})

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise invalid_argument("a POST body needs a Content-Length header")
        try:
            length = int(raw)
        except ValueError:
            raise invalid_argument(f"bad Content-Length {raw!r}") from None
        if length < 0:
            raise invalid_argument(f"bad Content-Length {raw!r}")
        return length

    def _too_large(self, length: int, body_sent: bool = True) -> bool:
        if length <= self.max_body_bytes:
            return False
        self.close_connection = True  # whatever stays unread: this connection is done
        if body_sent:
            # Read (and drop) a bounded amount first: answering while the client is still
            # writing makes its send fail with a broken pipe before it can read the 413.
            self._discard(min(length, DRAIN_FACTOR * self.max_body_bytes))
        self._send_json(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            {"error": f"request body of {length} bytes exceeds the {self.max_body_bytes} limit"},
        )
        return True

    def _discard(self, length: int) -> None:
        remaining = length
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(1 << 16, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
        except OSError:  # the client gave up or timed out: the 413 is still worth trying
            return

    def handle_expect_100(self) -> bool:
        try:
            # Expect: 100-continue: the client waits for our answer before sending the body.
            if self._too_large(self._content_length(), body_sent=False):
                return False
        except ServingError as err:
            self.close_connection = True
            self._send_error(err)
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            body = None
            if method == "POST":
                length = self._content_length()
                if self._too_large(length):
                    return
                body = self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            if method == "GET" and path == METRICS_PATH:
                self._send(200, self.core.metrics_text().encode(), PROMETHEUS_CONTENT_TYPE)
                return
            status, payload = self._route(method, path, body)
            self._send_json(status, payload)
        except ServingError as err:
            self._send_error(err)
        except Exception as err:  # answer 500 and keep the connection handler alive
            log.exception("%s %s failed", method, self.path)
            self._send_json(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    def _route(self, method: str, path: str, body: bytes | None) -> tuple[int, dict]:
        match = _ROUTE.match(path)
        verb = match["verb"] if match else None
        expected = "POST" if verb and verb.startswith(":") else "GET"
        if not match or method != expected:
            raise not_found(f"Malformed request: {method} {path}")
        if match["label"] is not None:
            raise invalid_argument(
                f"version labels are not configured on this server (got {match['label']!r})"
            )
        version = None
        if match["version"] is not None:
            if not match["version"].isdigit():
                raise invalid_argument(f"version must be an integer, got {match['version']!r}")
            version = int(match["version"])
        name = match["name"]
        if verb is None:
            return 200, status_json(self.core.status(name, version))
        if verb == "/metadata":
            meta = self.core.metadata(name, version)
            return 200, metadata_json(meta.model_name, meta.version, meta.signature_defs)
        if verb != ":predict":
            raise unimplemented(
                f"{verb[1:]} is not implemented: facegate models export Predict signatures only"
            )
        return 200, self._predict(name, version, body or b"")

    def _predict(self, name: str, version: int | None, body: bytes) -> dict:
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise invalid_argument(f"JSON Parse error: {err}") from None
        if not isinstance(request, dict):
            raise invalid_argument("the request body must be a JSON object")
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument('"signature_name" must be a string')
        inputs = JsonInputs(request)
        result = self.core.predict(name, version, signature_name, inputs)
        return predict_response(result.outputs, inputs.row_format)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: the default 5 drops bursts of new clients

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up or timed out is routine; anything else is logged in full."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("connection from %s ended: %s", client_address, sys.exc_info()[1])
            return
        log.exception("error while serving %s", client_address)


class RestServer:
    """A threaded HTTP server (one thread per connection) around a ServingCore."""

    def __init__(self, core: ServingCore, host: str, port: int, max_body_bytes: int):
        handler = type("Handler", (_Handler,), {"core": core, "max_body_bytes": max_body_bytes})
        self._httpd = _HTTPServer((host, port), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="rest", kwargs={"poll_interval": 0.2}
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
