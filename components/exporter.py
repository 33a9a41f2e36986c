"""Export the trained model as a SavedModel with named serving signatures.

Signatures (DESIGN.md, "Model signatures"):
  serving_default      examples: serialized tf.Example  -> outputs below
  serving_image_bytes  image_bytes: JPEG/PNG bytes      -> outputs below
  serving_image        image: float32 (batch, S, S, 3) 0..255 RGB -> outputs below (for TFLite)
Outputs: identity_probs, logits, known_prob, identity, is_known, threshold.
identity_probs = softmax(logits / temperature): the temperature and the threshold are fitted on
the calib split (components/calibration.py) and are constants of the graph.
Preprocessing (decode, gray->RGB, resize, VGG16 normalisation) is inside the graph.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from components import features as F
from components.preprocessing import decode_batch

# Written next to saved_model.pb (in assets.extra/, which TF Serving ignores) for clients.
MODEL_INFO_FILE = "facegate.json"


class FaceModelModule(tf.Module):
    """The Keras model plus everything a consumer needs to decide: labels, temperature and
    threshold."""

    def __init__(
        self,
        model: keras.Model,
        labels: Sequence[str],
        threshold: float = 0.5,
        temperature: float = 1.0,
    ):
        super().__init__(name="facegate")
        self.model = model
        self.input_size = int(model.input.shape[1])
        self.labels = tf.constant(list(labels))
        self.threshold_value = float(threshold)  # exact, for the JSON sidecar
        self.threshold = tf.constant(self.threshold_value, tf.float32)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature_value = float(temperature)
        self.temperature = tf.constant(self.temperature_value, tf.float32)
        size = self.input_size
        self.serve_examples = tf.function(
            self._serve_examples, input_signature=[tf.TensorSpec([None], tf.string)]
        )
        self.serve_image_bytes = tf.function(
            self._serve_image_bytes, input_signature=[tf.TensorSpec([None], tf.string)]
        )
        self.serve_image = tf.function(
            self._serve_image, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)]
        )

    def _predict(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self.model(images, training=False)
        known_prob = tf.reshape(out[F.OUTPUT_KNOWN_PROB], [-1])
        batch = tf.shape(known_prob)[0]
        return {
            F.OUTPUT_LOGITS: out[F.OUTPUT_LOGITS],
            # Temperature-scaled; argmax (identity) and the certainty input are unchanged by it.
            F.OUTPUT_IDENTITY_PROBS: tf.nn.softmax(out[F.OUTPUT_LOGITS] / self.temperature),
            F.OUTPUT_KNOWN_PROB: known_prob,
            F.OUTPUT_IDENTITY: tf.argmax(out[F.OUTPUT_LOGITS], axis=-1, output_type=tf.int64),
            F.OUTPUT_IS_KNOWN: known_prob >= self.threshold,
            F.OUTPUT_THRESHOLD: tf.fill([batch], self.threshold),
        }

    def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, {F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return self._predict(decode_batch(parsed[F.IMAGE_KEY], self.input_size))

    def _serve_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict(decode_batch(image_bytes, self.input_size))

    def _serve_image(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict(image)


def signatures(module: FaceModelModule) -> dict[str, tf.types.experimental.ConcreteFunction]:
    # Input names come from the argument names: examples, image_bytes, image.
    return {
        F.SIGNATURE_EXAMPLES: module.serve_examples.get_concrete_function(),
        F.SIGNATURE_IMAGE_BYTES: module.serve_image_bytes.get_concrete_function(),
        F.SIGNATURE_IMAGE: module.serve_image.get_concrete_function(),
    }


def model_info(module: FaceModelModule, extra: dict | None = None) -> dict:
    """What clients (server, edge runtime, reports) need to interpret the outputs."""
    info = {
        "labels": [b.decode() for b in module.labels.numpy().tolist()],
        "input_size": module.input_size,
        "input_range": [0.0, 255.0],
        "color": "RGB",
        "normalization": "vgg16 (BGR minus ImageNet mean), inside the graph",
        "threshold": module.threshold_value,
        "temperature": module.temperature_value,
        "signatures": {
            F.SIGNATURE_EXAMPLES: F.INPUT_EXAMPLES,
            F.SIGNATURE_IMAGE_BYTES: F.INPUT_IMAGE_BYTES,
            F.SIGNATURE_IMAGE: F.INPUT_IMAGE,
        },
    }
    info.update(extra or {})
    return info


def export_saved_model(
    model: keras.Model,
    labels: Sequence[str],
    export_dir: str | Path,
    threshold: float = 0.5,
    extra_info: dict | None = None,
    temperature: float = 1.0,
) -> Path:
    """Write the SavedModel to a temporary folder beside export_dir and rename it into place."""
    export_dir = Path(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    if export_dir.exists() and any(export_dir.iterdir()):
        raise FileExistsError(f"{export_dir}: already exists and is not empty")
    module = FaceModelModule(model, labels, threshold, temperature)
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.tmp-", dir=export_dir.parent))
    try:
        tf.saved_model.save(module, str(tmp), signatures=signatures(module))
        extra_dir = tmp / "assets.extra"
        extra_dir.mkdir(exist_ok=True)
        info = model_info(module, extra_info)
        (extra_dir / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2))
        (extra_dir / F.LABELS_FILE).write_text("".join(f"{name}\n" for name in info["labels"]))
        if export_dir.exists():
            export_dir.rmdir()
        tmp.rename(export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_dir


def read_model_info(saved_model_dir: str | Path) -> dict:
    path = Path(saved_model_dir) / "assets.extra" / MODEL_INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; not a facegate SavedModel?")
    return json.loads(path.read_text())
