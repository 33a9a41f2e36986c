"""Request validation against a signature, before anything reaches the model.

Structure first (input names, dtype, shape, batch size), from the tensor's declared dtype and
shape; then content for the inputs whose meaning facegate knows (image bytes and tf.Examples),
so a request with a text file instead of a JPEG is refused by name, and never joins a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2

from components import features as F
from serving.errors import invalid_argument
from serving.servable import Signature

# Magic numbers of the formats tf.io.decode_image reads (it sniffs the same bytes).
IMAGE_MAGIC = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
}


def dtype_name(dtype: tf.DType) -> str:
    """TF Serving spells dtypes as the proto enum: DT_FLOAT, DT_STRING."""
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(dtype.as_datatype_enum)


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_names(sig: Signature, sent_names: Iterable[str]) -> None:
    sent, expected = set(sent_names), set(sig.inputs)
    if sent != expected:
        parts = [f"input names do not match signature {sig.name!r}"]
        if sent - expected:
            parts.append(f"unexpected: {', '.join(sorted(sent - expected))}")
        if expected - sent:
            parts.append(f"missing: {', '.join(sorted(expected - sent))}")
        parts.append(f"expected inputs: {', '.join(sorted(expected))}")
        raise invalid_argument("; ".join(parts))


def validate_structure(
    sig: Signature, tensors: Mapping[str, tuple[tf.DType, Sequence[int]]]
) -> int | None:
    """Check names, dtypes and shapes; return the batch size (None if the signature has none)."""
    check_names(sig, tensors)
    batch_sizes = {}
    for alias, (dtype, shape) in sorted(tensors.items()):
        spec = sig.inputs[alias]
        if dtype != spec.dtype:
            raise invalid_argument(
                f"input {alias!r} of signature {sig.name!r} must be {dtype_name(spec.dtype)}, "
                f"got {dtype_name(dtype)}"
            )
        if spec.shape is not None:
            fits = len(shape) == len(spec.shape) and all(
                want is None or want == got for want, got in zip(spec.shape, shape, strict=True)
            )
            if not fits:
                raise invalid_argument(
                    f"input {alias!r} of signature {sig.name!r} must have shape "
                    f"{spec.describe_shape()} (? = any size), got {_shape_str(shape)}"
                )
        if spec.batched:
            batch_sizes[alias] = int(shape[0])
    if not batch_sizes:
        return None
    sizes = set(batch_sizes.values())
    if len(sizes) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(batch_sizes.items()))
        raise invalid_argument(f"inputs disagree on the batch size ({detail})")
    size = sizes.pop()
    if size == 0:
        raise invalid_argument(
            f"empty batch: input {', '.join(sorted(batch_sizes))} has 0 rows; send at least one"
        )
    return size


def image_format(data: bytes) -> str | None:
    for name, prefixes in IMAGE_MAGIC.items():
        if data.startswith(prefixes):
            return name
    return None


def _check_image(data: object, where: str) -> None:
    if not isinstance(data, bytes):
        raise invalid_argument(f"{where} must be bytes, got {type(data).__name__}")
    if not data:
        raise invalid_argument(f"{where} is empty; expected the bytes of a JPEG or PNG image")
    if image_format(data) is None:
        raise invalid_argument(
            f"{where} is not a JPEG, PNG, GIF or BMP image (it starts with {data[:8]!r}); "
            'send the image file\'s bytes (base64 in JSON: {"b64": ...})'
        )


def _check_example(data: object, where: str) -> None:
    if not isinstance(data, bytes):
        raise invalid_argument(f"{where} must be bytes, got {type(data).__name__}")
    try:
        example = example_pb2.Example.FromString(data)
    except DecodeError as err:
        raise invalid_argument(f"{where} is not a serialized tf.Example ({err})") from None
    feature = example.features.feature.get(F.IMAGE_KEY)
    values = feature.bytes_list.value if feature is not None else []
    if len(values) != 1:
        raise invalid_argument(f"{where} needs exactly one {F.IMAGE_KEY!r} bytes value")
    _check_image(values[0], f"{where}[{F.IMAGE_KEY!r}]")


_CONTENT_CHECKS = {F.INPUT_IMAGE_BYTES: _check_image, F.INPUT_EXAMPLES: _check_example}


def validate_content(sig: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """Per-element checks for the inputs facegate signatures define (by input name)."""
    for alias, value in inputs.items():
        check = _CONTENT_CHECKS.get(alias)
        if check is None or sig.inputs[alias].dtype != tf.string:
            continue
        for index, item in enumerate(value.reshape(-1)):
            check(item, f"{alias}[{index}]")
