"""`facegate-edge`: run an exported .tflite on face images, without TensorFlow.

facegate-edge predict --model out/demo/edge/facegate/<version>/facegate-int8.tflite face.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from export.image import ImageError
from export.runtime import EdgeModelError, EdgeOptions, load
from export.sidecar import SidecarError


@click.group()
def cli() -> None:
    """facegate on devices: TFLite models with ai-edge-litert, numpy and Pillow only."""


@cli.command()
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The .tflite file; its .json sidecar must sit beside it.",
)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--threads", type=int, default=1, show_default=True, help="Interpreter threads.")
@click.option(
    "--threshold", type=float, default=None, help="P(known) threshold (default: the model's)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def predict(model_path: Path, images: tuple[Path, ...], threads: int, threshold: float | None,
            as_json: bool) -> None:  # fmt: skip
    """Name the person in each IMAGE, or say "unknown"."""
    options = EdgeOptions(num_threads=threads, threshold=threshold)
    try:
        model = load(model_path, options)
    except (EdgeModelError, SidecarError) as err:
        raise click.ClickException(str(err)) from err
    failed = 0
    for image in images:
        try:
            (p,) = model.predict([image])
        except ImageError as err:
            click.echo(f"error: {err}", err=True)
            failed += 1
            continue
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "image": p.source,
                        "name": p.name,
                        "is_known": p.is_known,
                        "known_prob": round(p.known_prob, 6),
                        "threshold": p.threshold,
                        "best_label": p.best_label,
                        "identity_prob": round(p.identity_prob, 6),
                    }
                )
            )
        else:
            closest = "" if p.is_known else f" (closest: {p.best_label})"
            click.echo(
                f"{p.source}\t{p.name}\tP(known)={p.known_prob:.3f} "
                f"threshold={p.threshold:.3f}{closest}"
            )
    if failed:
        raise SystemExit(1)


@cli.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path))
def info(model_path: Path) -> None:
    """Show what the model's sidecar says (labels, size, threshold, parity)."""
    try:
        model = load(model_path)
    except (EdgeModelError, SidecarError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(model.info.to_json())


def main() -> None:
    cli(prog_name="facegate-edge")


if __name__ == "__main__":
    sys.exit(main())
