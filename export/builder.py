"""Build the edge models: convert each variant, check it against the SavedModel, keep the passing.

A plain function of folders and file patterns, so the TFX component (components/edge_export.py),
the benchmark and a shell can all call it:

    report = build_edge_models(saved_model_dir, train_files, test_files, out_dir, "facegate")

out_dir ends up holding `<model>-<variant>.tflite` + `<model>-<variant>.json` for every variant
that passed the gate, and parity_report.json for all of them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from components.exporter import read_model_info
from export import convert as conv
from export import samples
from export.metrics import percentile_ms
from export.parity import ParityGate, ParityReport, VariantParity, compare
from export.reference import SavedModelReference
from export.runtime import EdgeOptions, load
from export.sidecar import TFLITE_SUFFIX, EdgeModelInfo, file_sha256, write_sidecar
from export.timing import edge_latencies

STAGING_DIR = ".candidates"


@dataclass(frozen=True)
class EdgeExportConfig:
    """Settings of the edge export, with their defaults in one place."""

    variants: tuple[str, ...] = conv.ALL_VARIANTS
    gate: ParityGate = field(default_factory=ParityGate)
    num_calibration_samples: int = 200
    """int8 representative images, split evenly over known and known-unknown train faces."""
    int8_input_type: str = "uint8"
    """Image input of the int8 variant: uint8 (pixels as they are) or int8."""
    int8_quantizer: str = "legacy"
    """"legacy" or "mlir" (see export/convert.py: the MLIR one breaks the BGR swap in int8)."""
    max_test_images: int | None = None
    """Cap on parity test images (None: the whole test split)."""
    latency_runs: int = 30
    """Batch-1 timed calls per variant in the report (the benchmark does the real timing)."""
    seed: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["variants"] = list(self.variants)
        return data

    @classmethod
    def from_dict(cls, data: dict | None) -> EdgeExportConfig:
        """Missing keys take their defaults; unknown keys are an error."""
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown edge export settings: {sorted(unknown)}")
        if "gate" in data:
            data["gate"] = ParityGate.from_dict(data["gate"])
        if "variants" in data:
            data["variants"] = tuple(conv.Variant(v).value for v in data["variants"])
        return cls(**data)


def tflite_name(model_name: str, variant: str) -> str:
    return f"{model_name}-{variant}{TFLITE_SUFFIX}"


def _edge_outputs(path: Path, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    model = load(path, EdgeOptions(num_threads=1))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        for name, value in model.run(images[start : start + batch_size]).items():
            parts.setdefault(name, []).append(np.array(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _sidecar_info(
    model_info: dict, variant: str, path: Path, model_name: str, version: str
) -> EdgeModelInfo:
    return EdgeModelInfo(
        labels=tuple(model_info["labels"]),
        input_size=int(model_info["input_size"]),
        threshold=float(model_info["threshold"]),
        temperature=float(model_info.get("temperature", 1.0)),
        variant=variant,
        tflite_sha256=file_sha256(path),
        tflite_bytes=path.stat().st_size,
        outputs={
            "logits": "logits",
            "identity_probs": "identity_probs",
            "known_prob": "known_prob",
        },
        color=str(model_info.get("color", "RGB")),
        input_range=tuple(model_info.get("input_range", (0.0, 255.0))),
        normalization=str(model_info.get("normalization", EdgeModelInfo.normalization)),
        model_name=model_name,
        model_version=version,
    )


def build_edge_models(
    saved_model_dir: str | Path,
    train_patterns: Sequence[str] | str,
    test_patterns: Sequence[str] | str,
    out_dir: str | Path,
    model_name: str = "facegate",
    model_version: str = "",
    config: EdgeExportConfig | None = None,
) -> ParityReport:
    """Convert, gate and write the passing variants (+ sidecars, + report) into out_dir."""
    config = config or EdgeExportConfig()
    out_dir = Path(out_dir)
    staging = out_dir / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    model_info = read_model_info(saved_model_dir)
    size = int(model_info["input_size"])

    test = samples.load_images(test_patterns, size, config.max_test_images)
    if len(test) == 0:
        raise ValueError(f"no test images in {test_patterns}: nothing to check parity on")
    report = ParityReport(
        model_name=model_name,
        gate=config.gate,
        num_test_images=len(test),
        num_test_known=int(test.is_known.sum()),
        saved_model_dir=str(saved_model_dir),
    )
    representative = None
    variants = list(config.variants)
    if conv.Variant.INT8.value in variants:
        try:
            rep = samples.representative_images(
                train_patterns, size, config.num_calibration_samples, config.seed
            )
        except ValueError as err:  # no strangers to calibrate on: int8 cannot be trusted
            report.errors[conv.Variant.INT8.value] = str(err)
            variants.remove(conv.Variant.INT8.value)
        else:
            representative = rep.images
            report.representative = rep.role_counts()

    reference = SavedModelReference(saved_model_dir)
    expected = reference.run(test.images)
    if config.latency_runs > 0:
        report.reference_latency_p50_ms = percentile_ms(
            reference.latencies(test.images[0], config.latency_runs), 50
        )
    del reference

    for variant in variants:
        try:
            result = _build_variant(
                variant, saved_model_dir, representative, test, expected, staging, config,
                model_info, model_name, model_version,
            )  # fmt: skip
        except Exception as err:  # one variant failing must not stop the others; it is reported
            logging.exception("edge export: %s failed", variant)
            report.errors[variant] = f"{type(err).__name__}: {err}"
            continue
        report.variants.append(result)

    float32 = next((v for v in report.variants if v.variant == conv.Variant.FLOAT32.value), None)
    for v in report.variants:
        if float32 is not None and float32.size_bytes:
            v.size_ratio = v.size_bytes / float32.size_bytes
        staged = staging / tflite_name(model_name, v.variant)
        if v.passed:
            # The sidecar carries the variant's parity figures: they are versioned together.
            info = _sidecar_info(model_info, v.variant, staged, model_name, model_version)
            write_sidecar(out_dir / staged.name, replace(info, parity=_parity_summary(v)))
            staged.rename(out_dir / staged.name)
            v.file = staged.name
    shutil.rmtree(staging, ignore_errors=True)
    report.write(out_dir)
    return report


def _parity_summary(v: VariantParity) -> dict:
    keys = ("agreement", "known_prob_max_diff", "auroc", "auroc_diff", "ece", "num_images")
    return {k: v.to_dict()[k] for k in keys}


def _build_variant(
    variant: str,
    saved_model_dir: str | Path,
    representative: np.ndarray | None,
    test: samples.ImageSet,
    expected: dict[str, np.ndarray],
    staging: Path,
    config: EdgeExportConfig,
    model_info: dict,
    model_name: str,
    model_version: str,
) -> VariantParity:
    logging.info("edge export: converting %s", variant)
    flatbuffer = conv.convert(
        saved_model_dir,
        variant,
        representative if variant == conv.Variant.INT8.value else None,
        config.int8_input_type,
        config.int8_quantizer,
    )
    path = staging / tflite_name(model_name, variant)
    path.write_bytes(flatbuffer)
    write_sidecar(path, _sidecar_info(model_info, variant, path, model_name, model_version))
    actual = _edge_outputs(path, test.images)
    result = compare(variant, expected, actual, test.is_known, config.gate, len(flatbuffer))
    if config.latency_runs > 0:
        times = edge_latencies(load(path), test.images[0], config.latency_runs)
        result.latency_p50_ms = percentile_ms(times, 50)
        result.latency_p99_ms = percentile_ms(times, 99)
    logging.info(
        "edge export: %s agreement=%.4f auroc_diff=%.4f passed=%s %s",
        variant, result.agreement, result.auroc_diff, result.passed, result.failures,
    )  # fmt: skip
    return result
