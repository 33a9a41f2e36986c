"""The model graph, its phases and the exported signatures, on synthetic tensors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from components import exporter
from components import features as F
from components import model as M
from components.training import TrainConfig

SIZE = 32
N = 5


@pytest.fixture(scope="module")
def model() -> keras.Model:
    m = M.build_model(M.ModelSpec(num_classes=N, input_size=SIZE, weights="none", seed=3))
    m.get_layer(M.CERTAINTY_LAYER).set_weights([np.array([[0.7]], "f"), np.array([-1.5], "f")])
    return m


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def test_layer_structure(model):
    names = [layer.name for layer in model.layers]
    assert names == [
        F.INPUT_IMAGE, "vgg16_normalize", M.BACKBONE_NAME, "flatten", "dropout",
        M.LOGITS_LAYER, M.EXPAND_LAYER, M.MAXPOOL_LAYER, M.SOFTMAX_LAYER, M.CERTAINTY_LAYER,
    ]  # fmt: skip
    logits = model.get_layer(M.LOGITS_LAYER)
    assert logits.units == N and logits.activation is keras.activations.linear
    assert isinstance(model.get_layer(M.SOFTMAX_LAYER), keras.layers.Softmax)
    assert isinstance(model.get_layer(M.EXPAND_LAYER), keras.layers.Lambda)
    assert isinstance(model.get_layer(M.MAXPOOL_LAYER), keras.layers.GlobalMaxPool1D)
    certainty = model.get_layer(M.CERTAINTY_LAYER)
    assert certainty.units == 1 and certainty.activation is keras.activations.sigmoid
    assert model.get_layer(M.EXPAND_LAYER).output.shape.as_list() == [None, N, 1]
    assert certainty.input.shape.as_list() == [None, 1]
    backbone = model.get_layer(M.BACKBONE_NAME)
    assert len([lyr for lyr in backbone.layers if isinstance(lyr, keras.layers.Conv2D)]) == 13


def test_certainty_input_is_max_logit(model):
    out = model(_images(4), training=False)
    logits = out[F.OUTPUT_LOGITS].numpy()
    assert logits.shape == (4, N)
    assert out[F.OUTPUT_IDENTITY_PROBS].shape == (4, N)
    assert out[F.OUTPUT_KNOWN_PROB].shape == (4, 1)
    expected = 1.0 / (1.0 + np.exp(-(0.7 * logits.max(axis=1) - 1.5)))
    np.testing.assert_allclose(out[F.OUTPUT_KNOWN_PROB].numpy()[:, 0], expected, rtol=1e-5)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        out[F.OUTPUT_IDENTITY_PROBS].numpy(), exp / exp.sum(1, keepdims=True), rtol=1e-5
    )
    max_logit = M.max_logit_model(model).predict(_images(4), verbose=0)
    np.testing.assert_allclose(max_logit[:, 0], logits.max(axis=1), rtol=1e-6)


def test_vgg16_normalisation_matches_keras_preprocess_input():
    images = _images(2, seed=1)
    ours = M.vgg16_normalize(tf.constant(images)).numpy()
    reference = images[..., ::-1] - np.array([103.939, 116.779, 123.68], "f")
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    keras_ref = keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(ours, keras_ref, rtol=1e-5, atol=1e-4)


def test_he_normal_reinit_scales():
    m = M.build_model(M.ModelSpec(num_classes=2, input_size=SIZE, weights="none", seed=0))
    convs = [
        lyr for lyr in m.get_layer(M.BACKBONE_NAME).layers if isinstance(lyr, keras.layers.Conv2D)
    ]
    for i, conv in enumerate(convs):
        k = conv.kernel.numpy()
        fan_in = np.prod(k.shape[:3])
        expected = np.sqrt(2.0 / fan_in) / (M.INPUT_PIXEL_STD if i == 0 else 1.0)
        assert 0.9 * expected < k.std() < 1.1 * expected, (conv.name, k.std(), expected)
        assert np.all(conv.bias.numpy() == 0)


def test_phase_trainability(model):
    M.set_phase1_trainable(model, "none")
    assert model.get_layer(M.BACKBONE_NAME).trainable
    assert not model.get_layer(M.CERTAINTY_LAYER).trainable
    M.set_phase1_trainable(model, "imagenet")
    assert not model.get_layer(M.BACKBONE_NAME).trainable
    assert model.get_layer(M.LOGITS_LAYER).trainable
    M.set_phase2_trainable(model)
    trainable = [w.name for w in model.trainable_weights]
    assert len(trainable) == 2 and all(M.CERTAINTY_LAYER in n for n in trainable)


def test_bad_model_specs():
    with pytest.raises(ValueError, match="at least 2"):
        M.build_model(M.ModelSpec(num_classes=1))
    with pytest.raises(ValueError, match="32x32"):
        M.build_model(M.ModelSpec(num_classes=3, input_size=16))
    with pytest.raises(FileNotFoundError, match="no/such/weights.h5"):
        M.build_model(M.ModelSpec(num_classes=3, input_size=SIZE, weights="no/such/weights.h5"))


def test_train_config_defaults_and_unknown_keys():
    cfg = TrainConfig.from_dict({"epochs": 3})
    assert cfg.epochs == 3 and cfg.input_size == TrainConfig().input_size
    assert TrainConfig.from_dict(None) == TrainConfig()
    with pytest.raises(ValueError, match="epoch"):
        TrainConfig.from_dict({"epoch": 3})


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_signatures_agree(model, tmp_path):
    labels = [f"p{i}" for i in range(N)]
    export_dir = exporter.export_saved_model(model, labels, tmp_path / "1", threshold=0.4)
    assert (export_dir / "saved_model.pb").is_file()
    info = json.loads((export_dir / "assets.extra" / exporter.MODEL_INFO_FILE).read_text())
    assert info["labels"] == labels and info["input_size"] == SIZE and info["threshold"] == 0.4

    loaded = tf.saved_model.load(str(export_dir))
    assert set(loaded.signatures) == {
        F.SIGNATURE_EXAMPLES, F.SIGNATURE_IMAGE_BYTES, F.SIGNATURE_IMAGE
    }  # fmt: skip
    rng = np.random.default_rng(5)
    rgb = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
    gray = rng.integers(0, 256, (40, 30), dtype=np.uint8)  # other size, one channel
    encoded = [_png(x) for x in rgb] + [_png(gray)]
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={F.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))}
            )
        ).SerializeToString()
        for b in encoded
    ]
    by_example = loaded.signatures[F.SIGNATURE_EXAMPLES](examples=tf.constant(examples))
    by_bytes = loaded.signatures[F.SIGNATURE_IMAGE_BYTES](image_bytes=tf.constant(encoded))
    pixels = np.stack([x.astype("float32") for x in rgb])  # already SIZE x SIZE: resize is a no-op
    by_image = loaded.signatures[F.SIGNATURE_IMAGE](image=tf.constant(pixels))
    keras_out = model(pixels, training=False)

    assert set(by_example) == {
        F.OUTPUT_LOGITS, F.OUTPUT_IDENTITY_PROBS, F.OUTPUT_KNOWN_PROB,
        F.OUTPUT_IDENTITY, F.OUTPUT_IS_KNOWN, F.OUTPUT_THRESHOLD,
    }  # fmt: skip
    for key in by_example:
        np.testing.assert_allclose(by_example[key].numpy(), by_bytes[key].numpy(), rtol=1e-5)
        np.testing.assert_allclose(by_example[key].numpy()[:3], by_image[key].numpy(), rtol=1e-4)
    np.testing.assert_allclose(
        by_image[F.OUTPUT_LOGITS].numpy(), keras_out[F.OUTPUT_LOGITS].numpy(), rtol=1e-4, atol=1e-5
    )
    kp = by_example[F.OUTPUT_KNOWN_PROB].numpy()
    assert kp.shape == (4,)
    np.testing.assert_array_equal(by_example[F.OUTPUT_IS_KNOWN].numpy(), kp >= 0.4)
    np.testing.assert_array_equal(
        by_example[F.OUTPUT_IDENTITY].numpy(), by_example[F.OUTPUT_LOGITS].numpy().argmax(1)
    )
    np.testing.assert_allclose(by_example[F.OUTPUT_THRESHOLD].numpy(), [0.4] * 4)

    with pytest.raises(FileExistsError):
        exporter.export_saved_model(model, labels, export_dir)


def test_cosine_head_gives_scaled_cosines_to_unit_class_vectors():
    scale = 8.0
    m = M.build_model(
        M.ModelSpec(num_classes=N, input_size=SIZE, seed=1, head="cosine", logit_scale=scale)
    )
    clf = M.logits_model(m)
    images = _images(6, seed=2)
    # One training step: the UnitNorm constraint renormalises the class vectors after it.
    clf.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(True))
    clf.fit(images, np.arange(6) % N, epochs=1, verbose=0)
    kernel = m.get_layer("cosine").get_weights()[0]
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), np.ones(N), rtol=1e-5)
    features = keras.Model(m.input, m.get_layer("dropout").output).predict(images, verbose=0)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    logits = m(images, training=False)[F.OUTPUT_LOGITS].numpy()
    np.testing.assert_allclose(logits, scale * unit @ kernel, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(logits) <= scale + 1e-4)


def test_unknown_head_is_an_error():
    with pytest.raises(ValueError, match="unknown head 'mlp'"):
        M.build_model(M.ModelSpec(num_classes=3, input_size=SIZE, head="mlp"))
