"""The edge runtime: run a facegate .tflite with ai-edge-litert, numpy and Pillow only.

    from export.runtime import EdgeOptions, load
    model = load("facegate-int8.tflite", EdgeOptions(num_threads=2))
    for p in model.predict(["face.png"]):
        print(p.source, p.name, p.known_prob)

The model's labels, input size and P(known) threshold come from its JSON sidecar
(export/sidecar.py), checked against the .tflite by size and SHA-256 before loading.
Outputs are read by name through the `serving_image` signature (TFLite reorders outputs).
Quantized inputs/outputs are (de)quantized here, so callers always pass and get float pixels
and probabilities. Nothing in this module imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.image import DEFAULT_MAX_PIXELS, ImageSource, describe, load_image
from export.sidecar import EdgeModelInfo, read_sidecar, verify_sidecar

OUTPUT_LOGITS = "logits"
OUTPUT_IDENTITY_PROBS = "identity_probs"
OUTPUT_KNOWN_PROB = "known_prob"
REQUIRED_OUTPUTS = (OUTPUT_LOGITS, OUTPUT_KNOWN_PROB)
UNKNOWN = "unknown"
_TFLITE_IDENTIFIER = b"TFL3"


class EdgeModelError(ValueError):
    """A .tflite file cannot be used: unreadable, corrupt, or not what its sidecar says."""


@dataclass(frozen=True)
class EdgeOptions:
    """How to run the model."""

    num_threads: int = 1
    """CPU threads for the interpreter (XNNPACK)."""
    threshold: float | None = None
    """P(known) threshold; None uses the one shipped with the model (the SavedModel's)."""
    verify_checksum: bool = True
    """Check the .tflite's size and SHA-256 against the sidecar before loading."""
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    """Refuse images with more pixels than this (width x height) instead of decoding them."""
    batch_size: int = 16
    """Images per interpreter call in predict()."""


@dataclass(frozen=True)
class EdgePrediction:
    """One image's answer."""

    source: str
    """The file name (or a description) of the input image."""
    is_known: bool
    """P(known) >= threshold: the face belongs to one of the known people."""
    known_prob: float
    """P(known), the certainty neuron's output."""
    best_label: str
    """The most likely known identity, whether or not the face is judged known."""
    best_index: int
    identity_prob: float
    """Softmax probability of best_label among the known identities."""
    threshold: float

    @property
    def name(self) -> str:
        """The identity if the face is known, else "unknown"."""
        return self.best_label if self.is_known else UNKNOWN


def _check_tflite_file(path: Path) -> None:
    if not path.is_file():
        raise EdgeModelError(f"{path}: no such .tflite file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise EdgeModelError(f"{path}: cannot read ({err.strerror})") from err
    if len(head) < 8 or head[4:8] != _TFLITE_IDENTIFIER:
        raise EdgeModelError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier)")


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype == np.float32:
        return values.astype(np.float32, copy=False)
    if not scale:
        return values.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(values / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if scale and np.issubdtype(values.dtype, np.integer):
        return (values.astype(np.float32) - zero_point) * np.float32(scale)
    return values


class EdgeModel:
    """A loaded .tflite model with its sidecar. Use `load()` to make one."""

    def __init__(self, path: Path, info: EdgeModelInfo, interpreter, options: EdgeOptions):
        self.path = path
        self.info = info
        self.options = options
        self._runner = interpreter.get_signature_runner(info.signature)
        self._interpreter = interpreter
        inputs = self._runner.get_input_details()
        if info.input_name not in inputs:
            raise EdgeModelError(
                f"{path}: signature {info.signature!r} has inputs {sorted(inputs)}, "
                f"not {info.input_name!r}"
            )
        self._input = inputs[info.input_name]
        self._outputs = self._runner.get_output_details()
        self._check_against_sidecar()
        self.threshold = float(info.threshold if options.threshold is None else options.threshold)
        # The graph compares in float32 (known_prob >= threshold): do the same.
        self._threshold32 = np.float32(self.threshold)

    def _check_against_sidecar(self) -> None:
        shape = [int(d) for d in self._input["shape_signature"]]
        size = self.info.input_size
        if shape[1:] != [size, size, 3]:
            raise EdgeModelError(
                f"{self.path}: model input is {shape}, but the sidecar says {size}x{size} RGB"
            )
        missing = [self._output_name(r) for r in REQUIRED_OUTPUTS]
        missing = [n for n in missing if n not in self._outputs]
        if missing:
            raise EdgeModelError(
                f"{self.path}: signature {self.info.signature!r} lacks outputs {missing} "
                f"(has {sorted(self._outputs)})"
            )
        classes = int(self._outputs[self._output_name(OUTPUT_LOGITS)]["shape_signature"][-1])
        if classes != len(self.info.labels):
            raise EdgeModelError(
                f"{self.path}: model has {classes} identities, sidecar lists "
                f"{len(self.info.labels)} labels"
            )

    def _output_name(self, role: str) -> str:
        return self.info.outputs.get(role, role)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (batch, S, S, 3) RGB 0..255 -> every signature output by name, dequantized."""
        images = np.asarray(images, dtype=np.float32)
        size = self.info.input_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(
                f"expected images of shape (batch, {size}, {size}, 3), got {images.shape}"
            )
        feed = _quantize(images, self._input)
        try:
            raw = self._runner(**{self.info.input_name: feed})
        except (RuntimeError, ValueError) as err:
            raise EdgeModelError(f"{self.path}: inference failed ({err})") from err
        return {name: _dequantize(value, self._outputs[name]) for name, value in raw.items()}

    def decide(
        self, outputs: dict[str, np.ndarray], sources: Sequence[str]
    ) -> list[EdgePrediction]:
        """Raw outputs of run() -> one EdgePrediction per image, at this model's threshold."""
        logits = np.asarray(outputs[self._output_name(OUTPUT_LOGITS)], np.float32)
        known = np.asarray(outputs[self._output_name(OUTPUT_KNOWN_PROB)], np.float32).reshape(-1)
        probs_name = self._output_name(OUTPUT_IDENTITY_PROBS)
        if probs_name in outputs:
            probs = np.asarray(outputs[probs_name], np.float32)
        else:
            scaled = logits / np.float32(self.info.temperature)
            shifted = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
            probs = shifted / shifted.sum(axis=-1, keepdims=True)
        best = logits.argmax(axis=-1)
        return [
            EdgePrediction(
                source=src,
                is_known=bool(known[i] >= self._threshold32),
                known_prob=float(known[i]),
                best_label=self.info.labels[int(best[i])],
                best_index=int(best[i]),
                identity_prob=float(probs[i, best[i]]),
                threshold=self.threshold,
            )
            for i, src in enumerate(sources)
        ]

    def preprocess(self, image: ImageSource) -> np.ndarray:
        """One image (path, bytes, PIL image or array) -> float32 (S, S, 3), as the SavedModel."""
        return load_image(image, self.info.input_size, self.options.max_image_pixels)

    def predict(self, images: Iterable[ImageSource]) -> list[EdgePrediction]:
        """Images -> predictions, in order. Raises ImageError naming an unreadable image."""
        images = list(images)
        results: list[EdgePrediction] = []
        step = max(1, self.options.batch_size)
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch = np.stack([self.preprocess(im) for im in chunk])
            results.extend(self.decide(self.run(batch), [describe(im) for im in chunk]))
        return results


def load(path: str | Path, options: EdgeOptions | None = None) -> EdgeModel:
    """Load a .tflite and its sidecar; raises EdgeModelError / SidecarError naming the file."""
    from ai_edge_litert.interpreter import Interpreter

    options = options or EdgeOptions()
    path = Path(path)
    _check_tflite_file(path)
    info = read_sidecar(path)
    if options.verify_checksum:
        verify_sidecar(path, info)
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=max(1, options.num_threads))
        runners = interpreter.get_signature_list()
    except (ValueError, RuntimeError) as err:
        raise EdgeModelError(f"{path}: the TFLite runtime cannot load it ({err})") from err
    if info.signature not in runners:
        raise EdgeModelError(
            f"{path}: no signature {info.signature!r} (has {sorted(runners)}); "
            "was it converted from the SavedModel's serving_image signature?"
        )
    return EdgeModel(path, info, interpreter, options)


def predict(
    model: EdgeModel | str | Path,
    images: Iterable[ImageSource],
    options: EdgeOptions | None = None,
) -> list[EdgePrediction]:
    """Convenience: load (if given a path) and predict."""
    if not isinstance(model, EdgeModel):
        model = load(model, options)
    return model.predict(images)
