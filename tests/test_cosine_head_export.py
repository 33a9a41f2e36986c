"""A cosine-head model survives the SavedModel export and the TFLite conversions."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components import exporter
from components import features as F
from components import model as M
from export.convert import convert

SIZE = 32
SCALE = 10.0
LABELS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    spec = M.ModelSpec(len(LABELS), input_size=SIZE, seed=5, head="cosine", logit_scale=SCALE)
    model = M.build_model(spec)
    return exporter.export_saved_model(
        model, LABELS, tmp_path_factory.mktemp("cosine") / "model", threshold=0.5
    )


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(9).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _tflite_logits(model: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner(F.SIGNATURE_IMAGE)
    detail = runner.get_input_details()[F.INPUT_IMAGE]
    if detail["dtype"] == np.uint8:
        images = np.round(images).astype(np.uint8)
    out = [runner(**{F.INPUT_IMAGE: image[None]})[F.OUTPUT_LOGITS] for image in images]
    logits = np.concatenate(out).astype(np.float64)
    scale, zero = runner.get_output_details()[F.OUTPUT_LOGITS]["quantization"]
    return (logits - zero) * scale if scale else logits


def test_saved_model_and_float32_tflite_give_the_same_bounded_logits(saved_model_dir):
    images = _images(4)
    fn = tf.saved_model.load(str(saved_model_dir)).signatures[F.SIGNATURE_IMAGE]
    want = fn(**{F.INPUT_IMAGE: tf.constant(images)})[F.OUTPUT_LOGITS].numpy()
    assert np.all(np.abs(want) <= SCALE + 1e-4)
    got = _tflite_logits(convert(saved_model_dir, "float32"), images)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_int8_conversion_keeps_the_logits_within_the_cosine_bound(saved_model_dir):
    images = _images(8)
    got = _tflite_logits(convert(saved_model_dir, "int8", representative_images=images), images)
    assert np.all(np.isfinite(got)) and np.all(np.abs(got) <= SCALE * 1.05)
