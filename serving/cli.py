"""`facegate serve` and `facegate query` (registered on the `facegate` group in pipeline/cli.py).

TensorFlow is imported inside the commands, after the environment is set, so `facegate --help`
stays fast and Keras 2 is selected before TensorFlow loads.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click

MiB = 1024 * 1024


def _prepare_tensorflow() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.command()
@click.option(
    "--model-base-path",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of version sub-folders, e.g. out/demo/serving/facegate.",
)
@click.option("--model-name", default="facegate", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--grpc-port", type=int, default=8500, show_default=True)
@click.option("--rest-port", type=int, default=8501, show_default=True, help="0 disables REST.")
@click.option(
    "--batching/--no-batching", default=True, show_default=True, help="Server-side batching."
)
@click.option("--max-batch-size", type=int, default=32, show_default=True)
@click.option(
    "--batch-timeout-micros",
    type=int,
    default=0,
    show_default=True,
    help="Wait for a batch to fill; 0 batches what queued while the model was busy.",
)
@click.option("--num-batch-threads", type=int, default=1, show_default=True)
@click.option("--max-enqueued-batches", type=int, default=16, show_default=True)
@click.option(
    "--num-versions", type=int, default=1, show_default=True, help="Serve the newest N versions."
)
@click.option(
    "--poll-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="How often to look for new versions.",
)
@click.option("--max-message-mb", type=int, default=64, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(model_base_path, model_name, host, grpc_port, rest_port, batching, max_batch_size,
          batch_timeout_micros, num_batch_threads, max_enqueued_batches, num_versions,
          poll_seconds, max_message_mb, log_level) -> None:  # fmt: skip
    """Serve a model folder over TF Serving's gRPC and REST APIs, swapping in new versions."""
    _prepare_tensorflow()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from serving.batching import BatchingParameters
    from serving.server import ModelServer, ServerOptions, serve_until_signalled

    try:
        options = ServerOptions(
            model_base_path=model_base_path,
            model_name=model_name,
            host=host,
            grpc_port=grpc_port,
            rest_port=rest_port,
            enable_batching=batching,
            batching=BatchingParameters(
                max_batch_size=max_batch_size,
                batch_timeout_micros=batch_timeout_micros,
                num_batch_threads=num_batch_threads,
                max_enqueued_batches=max_enqueued_batches,
            ),
            num_versions=num_versions,
            poll_seconds=poll_seconds,
            max_message_bytes=max_message_mb * MiB,
        )
        server = ModelServer(options).start()
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    versions = ", ".join(str(v) for v in server.registry.loaded_versions()) or "none yet"
    click.echo(f"serving {model_name} (versions: {versions}) from {model_base_path}")
    click.echo(f"  gRPC  {server.grpc_address}")
    if server.rest_url:
        click.echo(f"  REST  {server.rest_url}/v1/models/{model_name}")
    click.echo("Ctrl-C to stop", nl=True)
    serve_until_signalled(server)


@click.command()
@click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--server", default="127.0.0.1:8500", show_default=True, help="gRPC HOST:PORT.")
@click.option("--model-name", default="facegate", show_default=True)
@click.option("--version", type=int, default=None, help="Model version (default: the newest).")
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="labels.txt (index -> name); default: ask the server (facegate serve knows them).",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per call.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def query(images, server, model_name, version, labels, timeout, as_json) -> None:
    """Ask a TF Serving endpoint (facegate serve or tensorflow_model_server) about face images.

    JPEG and PNG files are sent as they are; other formats Pillow reads (PGM, BMP, TIFF, ...)
    are converted to PNG first, exactly as `facegate ingest` converts them.
    """
    _prepare_tensorflow()
    import grpc

    from pipeline.ingest import IngestError, read_image
    from serving.client import PredictionClient

    label_list = labels.read_text().splitlines() if labels else None
    try:  # as ingest does: JPEG/PNG as they are, other formats (PGM, TIFF...) as PNG
        data = [read_image(path)[0] for path in images]
    except IngestError as err:
        raise click.ClickException(str(err)) from err
    try:
        with PredictionClient(server, timeout=timeout) as client:
            results = client.predict_images(
                data, model_name=model_name, version=version, labels=label_list
            )
    except grpc.RpcError as err:
        raise click.ClickException(f"{server}: {err.code().name}: {err.details()}") from err
    if as_json:
        for path, r in zip(images, results, strict=True):
            record = {
                "image": str(path),
                "identity": r.identity,
                "label": r.label,
                "identity_prob": r.identity_prob,
                "known_prob": r.known_prob,
                "is_known": r.is_known,
                "threshold": r.threshold,
                "decision": r.decision,
                "model_version": r.version,
            }
            click.echo(json.dumps(record))
        return
    _print_table(images, results, model_name)


def _print_table(images, results, model_name) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model_name} v{results[0].version}" if results else model_name)
    for column in ("image", "identity", "P(identity)", "P(known)", "threshold", "decision"):
        table.add_column(column, justify="right" if column.startswith(("P", "t")) else "left")
    for path, r in zip(images, results, strict=True):
        table.add_row(
            path.name,
            r.name,
            f"{r.identity_prob:.3f}",
            f"{r.known_prob:.3f}",
            f"{r.threshold:.3f}",
            r.decision,
        )
    Console().print(table)
