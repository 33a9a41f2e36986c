"""`facegate serve`: one model's versions over gRPC (:8500) and REST (:8501).

The flags mirror tensorflow_model_server's (--port, --rest_api_port, --model_name,
--model_base_path, --enable_batching, --file_system_poll_wait_seconds), so moving to
TensorFlow Serving in production changes the binary, not the folder or the clients.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from serving.batching import BatchingParameters, BatchScheduler
from serving.core import ServingCore
from serving.grpc_service import add_services
from serving.registry import ModelRegistry, VersionWatcher, list_versions
from serving.rest import RestServer

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    model_base_path: Path
    """Folder of integer version sub-folders, each a SavedModel (TF Serving's layout)."""
    model_name: str = "facegate"
    host: str = "127.0.0.1"
    """Interface to bind; loopback unless you mean to expose the server."""
    grpc_port: int = 8500
    rest_port: int = 8501
    """0 disables REST, as --rest_api_port=0 does for tensorflow_model_server."""
    enable_batching: bool = True
    batching: BatchingParameters = field(default_factory=BatchingParameters)
    num_versions: int = 1
    """Serve the newest N versions (TF Serving's `latest` version policy)."""
    poll_seconds: float = 1.0
    """How often the base path is checked for new versions."""
    max_message_bytes: int = 64 * MiB
    """Largest gRPC message or REST body accepted; larger ones are refused, not read."""
    grpc_max_workers: int = 64
    """Concurrent gRPC calls; queued calls beyond this wait for a worker."""


class ModelServer:
    """Start with start() (or `with ModelServer(options) as server:`), stop with stop()."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.registry = ModelRegistry(
            options.model_name, options.model_base_path, num_versions=options.num_versions
        )
        self.batcher = BatchScheduler(options.batching) if options.enable_batching else None
        self.core = ServingCore({options.model_name: self.registry}, self.batcher)
        self._watcher = VersionWatcher([self.registry], options.poll_seconds)
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._stopped = threading.Event()

    def start(self) -> ModelServer:
        """Bind both ports (failing fast if taken), load the newest version, then serve."""
        self._check_base_path()
        try:
            self._bind()
            self.registry.initial_load(settle_seconds=min(0.3, self.options.poll_seconds))
            if not self.registry.loaded_versions():
                log.warning(
                    "no loadable version of %s under %s yet; answering NOT_FOUND until one "
                    "appears",
                    self.options.model_name,
                    self.options.model_base_path,
                )
            self._watcher.start()
            self._grpc.start()
            if self._rest is not None:
                self._rest.start()
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def _bind(self) -> None:
        self._grpc, self.grpc_port = self._bind_grpc()
        if self.options.rest_port:
            self._rest = RestServer(
                self.core, self.options.host, self.options.rest_port, self.options.max_message_bytes
            )
            self.rest_port = self._rest.port

    def _check_base_path(self) -> None:
        base = Path(self.options.model_base_path)
        if not base.is_dir():
            raise FileNotFoundError(
                f"model base path {base} does not exist; point --model-base-path at the folder "
                f"holding the version sub-folders (e.g. out/demo/serving/{self.options.model_name})"
            )
        nested = base / self.options.model_name
        if not list_versions(base) and list_versions(nested):
            raise FileNotFoundError(
                f"{base} has no version folders but {nested} does: use --model-base-path {nested}"
            )

    def _bind_grpc(self) -> tuple[grpc.Server, int]:
        limit = self.options.max_message_bytes
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.options.grpc_max_workers, thread_name_prefix="grpc"
            ),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared port
            ],
        )
        add_services(server, self.core)
        address = f"{self.options.host}:{self.options.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as err:
            raise OSError(f"cannot bind gRPC to {address}: {err}") from err
        if port == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        return server, port

    @property
    def grpc_address(self) -> str:
        return f"{self.options.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str | None:
        return f"http://{self.options.host}:{self.rest_port}" if self.rest_port else None

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, let running ones finish (up to `grace` s), free the models."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._watcher.stop()
        if self._rest is not None:
            self._rest.stop()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self.batcher is not None:
            self.batcher.close()
        self.registry.close()

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_signalled(server: ModelServer) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully (in-flight requests finish)."""
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        done.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
