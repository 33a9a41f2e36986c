"""SavedModel -> TFLite flatbuffers: float32, float16, dynamic-range and full-integer int8.

Converted from the `serving_image` signature (decoded float32 RGB 0..255 images), because
JPEG/PNG decoding is not a TFLite builtin; decoding and resizing happen on the device
(export/image.py). The int8 variant quantizes every op to int8 with a uint8 (or int8) image
input; its outputs stay float32, so every variant answers in the same units.

The representative dataset must hold faces of known AND known-unknown people: calibrated on
known faces alone, the max-logit range misses the low values strangers produce and their
P(known) comes out near 0.5 instead of near 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import features as F


class Variant(str, Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC_RANGE = "dynamic_range"
    INT8 = "int8"


ALL_VARIANTS = tuple(v.value for v in Variant)
INT8_INPUT_TYPES = {"uint8": tf.uint8, "int8": tf.int8}
# "legacy" is TFLite's older calibration quantizer. The default MLIR quantizer of TF 2.16 gives
# the REVERSE_V2 of the VGG16 normalisation (RGB -> BGR) an output scale other than its input's
# (0.90 -> 1.36 on the demo model) and the int8 kernel copies bytes without rescaling, so every
# pixel after it is off by up to ~100 levels: demo top-1 agreement 0.11. The legacy quantizer
# keeps the scales equal: agreement 0.99, max |dP(known)| 0.02.
INT8_QUANTIZERS = ("legacy", "mlir")


class ConversionError(RuntimeError):
    """The TFLite converter refused the model for a variant."""


def _representative(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    for image in images:
        yield [np.asarray(image, np.float32)[None]]


def convert(
    saved_model_dir: str | Path,
    variant: str | Variant,
    representative_images: np.ndarray | None = None,
    int8_input_type: str = "uint8",
    int8_quantizer: str = "legacy",
) -> bytes:
    """One variant's .tflite bytes. int8 needs representative_images (N, S, S, 3) float32."""
    variant = Variant(variant)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[F.SIGNATURE_IMAGE]
    )
    if variant is not Variant.FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant is Variant.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if variant is Variant.INT8:
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("the int8 variant needs representative images")
        if int8_input_type not in INT8_INPUT_TYPES:
            raise ValueError(f"int8_input_type must be one of {sorted(INT8_INPUT_TYPES)}")
        images = np.asarray(representative_images, np.float32)
        converter.representative_dataset = lambda: _representative(images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = INT8_INPUT_TYPES[int8_input_type]
        if int8_quantizer not in INT8_QUANTIZERS:
            raise ValueError(f"int8_quantizer must be one of {INT8_QUANTIZERS}")
        converter.experimental_new_quantizer = int8_quantizer == "mlir"
    try:
        return converter.convert()
    except Exception as err:  # the converter raises a zoo of types (ConverterError, ...)
        raise ConversionError(
            f"{saved_model_dir}: {variant.value} conversion failed: {err}"
        ) from err
