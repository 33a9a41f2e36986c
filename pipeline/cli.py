"""The `facegate` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

import click

from components.calibration import CalibrationConfig
from components.evaluation import BlessingThresholds


def _quiet_tensorflow() -> None:
    # Before TensorFlow is imported: Keras 2 for TFX/TFMA, and no C++ info chatter.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TFMA divides by zero for one-class slices (e.g. role=known) and says so per metric;
    # TF logs deprecation notices from inside TFMA. Neither is actionable by a user.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="tensorflow_model_analysis")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


_quiet_tensorflow()  # this module is the entry point: nothing has imported TensorFlow yet


def _split_spec(num_known, known, num_known_unknown, calib, test, seed):
    from pipeline.ingest import SplitSpec

    return SplitSpec(
        num_known=num_known,
        known=tuple(k.strip() for k in known.split(",") if k.strip()) if known else None,
        num_known_unknown=num_known_unknown,
        calib_per_person=calib,
        test_per_person=test,
        seed=seed,
    )


_split_options = [
    click.option("--num-known", type=int, default=None, help="Known identities (default 60%)."),
    click.option("--known", default=None, help="Comma-separated known identities (overrides)."),
    click.option(
        "--num-known-unknown", type=int, default=None, help="Negatives for P(known) (default 20%)."
    ),
    click.option("--calib-per-person", "calib", type=int, default=2, show_default=True),
    click.option("--test-per-person", "test", type=int, default=2, show_default=True),
    click.option("--seed", type=int, default=0, show_default=True, help="Split and training seed."),
]

_train_options = [
    click.option("--input-size", type=int, default=64, show_default=True),
    click.option(
        "--weights",
        default="none",
        show_default=True,
        help="VGG16 weights: 'imagenet' (needs a network), 'none' (from scratch) or a file.",
    ),
    click.option("--epochs", type=int, default=None, help="Phase-1 epochs (default from config)."),
    click.option("--batch-size", type=int, default=None),
    click.option("--learning-rate", type=float, default=None),
    click.option(
        "--head",
        type=click.Choice(["linear", "cosine"]),
        default=None,
        help="Logits: Dense on the features, or scaled cosines to unit class vectors.",
    ),
    click.option(
        "--outlier-exposure",
        is_flag=True,
        help="Phase 1 also pushes known-unknown train faces toward a uniform softmax.",
    ),
    click.option(
        "--mixed-outliers",
        type=click.FloatRange(0.0, 1.0),
        default=None,
        help="Phase 1 adds blends of two known people's faces as outliers, up to this share of "
        "each batch (default 0.5; 0 = off).",
    ),
    click.option(
        "--target-far",
        type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
        default=CalibrationConfig().target_far,
        show_default=True,
        help="False-accept rate on unknown people the P(known) threshold aims for (calib split).",
    ),
    click.option("--no-cache", is_flag=True, help="Re-run every component."),
    click.option(
        "--min-identity-accuracy",
        type=float,
        default=BlessingThresholds().min_identity_accuracy,
        show_default=True,
        help="Blessing: identity top-1 on known test faces at least this.",
    ),
    click.option(
        "--min-auc",
        type=float,
        default=BlessingThresholds().min_known_auc,
        show_default=True,
        help="Blessing: AUROC of P(known) on the test split at least this.",
    ),
    click.option(
        "--max-ece",
        type=click.FloatRange(0.0, 1.0),
        default=BlessingThresholds().max_known_ece,
        show_default=True,
        help="Blessing: ECE of P(known) on the test split at most this.",
    ),
    click.option(
        "--beam-arg", "beam_args", multiple=True, help="Extra Beam pipeline arg (repeatable)."
    ),
]


def _apply(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


def _train_config(opts: dict, seed: int):
    from components.training import TrainConfig

    values = {"input_size": opts["input_size"], "weights": opts["weights"], "seed": seed}
    for key in ("epochs", "batch_size", "learning_rate", "head", "mixed_outliers"):
        if opts[key] is not None:
            values[key] = opts[key]
    if opts["outlier_exposure"]:
        values["outlier_exposure"] = True
    return TrainConfig.from_dict(values)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """facegate: open-set face recognition as a TFX pipeline."""


@cli.command()
@click.option("--images", required=True, type=click.Path(path_type=Path), help="Folder per person.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="TFRecord output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@_apply(_split_options)
def ingest(images, out, overwrite, num_known, known, num_known_unknown, calib, test, seed) -> None:
    """Read a folder-per-person image tree and write TFRecord splits."""
    _quiet_tensorflow()
    from pipeline.ingest import IngestError
    from pipeline.ingest import ingest as run_ingest

    spec = _split_spec(num_known, known, num_known_unknown, calib, test, seed)
    try:
        result = run_ingest(images, out, spec, overwrite=overwrite)
    except IngestError as err:
        raise click.ClickException(str(err)) from err
    _print_ingest(result)


def _print_ingest(result) -> None:
    for item in result.skipped:
        click.echo(f"skipped {item['path']}: {item['reason']}", err=True)
    click.echo(f"wrote {result.out_dir}")
    for split, counts in result.split_counts.items():
        parts = ", ".join(f"{role} {n}" for role, n in counts.items() if n)
        click.echo(f"  {split:5s}: {parts}")
    roles = ", ".join(f"{len(v)} {k}" for k, v in result.roles.items())
    click.echo(f"  people: {roles}; skipped files: {len(result.skipped)}")


@cli.command()
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Ingested TFRecords.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run output folder.")
@click.option("--model-name", default="facegate", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_apply(_train_options)
def run(data: Path, out: Path, model_name: str, seed: int, **opts) -> None:
    """Run the TFX pipeline (LocalDagRunner) on ingested TFRecords."""
    _quiet_tensorflow()
    _run_and_report(data, out, model_name, seed, opts)


def _run_and_report(data: Path, out: Path, model_name: str, seed: int, opts: dict) -> None:
    from components.evaluation import BlessingThresholds
    from pipeline.local_runner import DEFAULT_BEAM_ARGS, run_local
    from pipeline.report_table import print_run_summary

    cfg = _train_config(opts, seed)
    calibration = CalibrationConfig.from_dict({"target_far": opts["target_far"]})
    thresholds = BlessingThresholds(
        min_identity_accuracy=opts["min_identity_accuracy"],
        min_known_auc=opts["min_auc"],
        max_known_ece=opts["max_ece"],
    )
    summary = run_local(
        data,
        out,
        train_config=cfg,
        thresholds=thresholds,
        calibration_config=calibration.to_dict(),
        model_name=model_name,
        beam_pipeline_args=list(DEFAULT_BEAM_ARGS) + list(opts["beam_args"]),
        enable_cache=not opts["no_cache"],
    )
    (Path(out) / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    print_run_summary(summary)
    if not summary.pushed:
        click.echo("the model was not blessed, so nothing was pushed (see the Evaluator output)")


@cli.command()
@click.option(
    "--faces",
    default="",
    help="Folder per person (FACES=...). Empty: the Olivetti faces, if a network is reachable.",
)
@click.option("--out", default="out/demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--model-name", default="facegate", show_default=True)
@_apply(_split_options)
@_apply(_train_options)
def demo(faces: str, out: Path, model_name: str, seed: int, **opts) -> None:
    """Ingest a face folder and run the whole pipeline, ending with a summary."""
    _quiet_tensorflow()
    from pipeline.ingest import IngestError, ingest_if_changed
    from pipeline.olivetti import OlivettiUnavailable, fetch_olivetti_folder

    if not faces:
        try:
            faces = str(fetch_olivetti_folder(Path(out) / "olivetti"))
        except OlivettiUnavailable as err:
            raise click.ClickException(
                "no FACES given and the Olivetti faces could not be downloaded "
                f"({err}). Point FACES at a folder with one sub-folder of images per person, "
                "e.g. `make demo FACES=../shared/data/orl_faces`."
            ) from err
    spec = _split_spec(
        opts["num_known"], opts["known"], opts["num_known_unknown"], opts["calib"], opts["test"],
        seed,
    )  # fmt: skip
    try:
        result, reused = ingest_if_changed(faces, Path(out) / "data", spec)
    except IngestError as err:
        raise click.ClickException(str(err)) from err
    if reused:
        click.echo(f"reusing {result.out_dir} (same faces and split settings)")
    else:
        _print_ingest(result)
    _run_and_report(Path(out) / "data", out, model_name, seed, opts)


from serving.cli import query, serve  # noqa: E402

cli.add_command(serve)
cli.add_command(query)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Print the certainty report of RUN_DIR (a run or report folder) and its HTML path."""
    _quiet_tensorflow()
    from pipeline.report_view import ReportNotFound, find_report, print_report

    try:
        print_report(find_report(run_dir))
    except ReportNotFound as err:
        raise click.ClickException(str(err)) from err


def main() -> None:
    cli(prog_name="facegate")


if __name__ == "__main__":
    sys.exit(main())
