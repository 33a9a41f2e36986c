"""Small deterministic fixtures for the edge tests: a 32x32 3-identity SavedModel, face-like
PNG images of known / known-unknown / unknown-unknown people, and TFRecord splits of them.

Built once per test session (cached by folder), since a VGG16 SavedModel export takes ~15 s.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from components import features as F

SIZE = 32
LABELS = ("ada", "ben", "cy")
THRESHOLD = 0.5
KNOWN_UNKNOWN = ("ku1", "ku2")
UNKNOWN_UNKNOWN = ("uu1", "uu2")

# Known people in strong distinct colours; strangers in muted mixtures of them, so their
# faces drive no identity's logit high (person seed -> RGB).
COLOURS = {
    0: (200, 70, 70), 1: (70, 200, 70), 2: (70, 70, 200),
    10: (130, 130, 125), 11: (120, 135, 130),
    20: (135, 125, 130), 21: (125, 130, 135),
}  # fmt: skip

_cache: dict[str, Path] = {}


def face_image(person_seed: int, image_seed: int, height: int = 40, width: int = 36) -> np.ndarray:
    """A per-person colour (COLOURS) and smooth pattern plus per-image noise: uint8 (H, W, 3)."""
    rng = np.random.default_rng(1000 + person_seed)
    colour = np.asarray(COLOURS[person_seed], np.float32)
    coarse = rng.uniform(-40, 40, (4, 3, 3)).astype(np.float32)
    pattern = np.stack(
        [
            np.asarray(Image.fromarray(coarse[..., c], "F").resize((width, height), Image.BILINEAR))
            for c in range(3)
        ],
        -1,
    )
    noise = np.random.default_rng(image_seed).normal(0, 6, pattern.shape)
    return np.clip(colour + pattern + noise, 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG")
    return buf.getvalue()


def _example(image: bytes, label: int, role: str, identity: str) -> bytes:
    def b(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                F.IMAGE_KEY: b(image),
                F.FORMAT_KEY: b(b"png"),
                F.IDENTITY_KEY: b(identity.encode()),
                F.LABEL_KEY: i(label),
                F.IS_KNOWN_KEY: i(1 if label >= 0 else 0),
                F.ROLE_KEY: b(role.encode()),
            }
        )
    ).SerializeToString()


def people() -> list[tuple[str, int, str, int]]:
    """(identity, label, role, person seed)."""
    out = [(name, i, F.ROLE_KNOWN, i) for i, name in enumerate(LABELS)]
    out += [(n, -1, F.ROLE_KNOWN_UNKNOWN, 10 + i) for i, n in enumerate(KNOWN_UNKNOWN)]
    out += [(n, -1, F.ROLE_UNKNOWN_UNKNOWN, 20 + i) for i, n in enumerate(UNKNOWN_UNKNOWN)]
    return out


def write_tfrecords(root: Path) -> Path:
    """root/{train,calib,test}/faces.tfrecord, split as the open-set protocol says."""
    plan = {F.SPLIT_TRAIN: {}, F.SPLIT_CALIB: {}, F.SPLIT_TEST: {}}
    counts = {
        F.ROLE_KNOWN: {F.SPLIT_TRAIN: 3, F.SPLIT_CALIB: 1, F.SPLIT_TEST: 2},
        F.ROLE_KNOWN_UNKNOWN: {F.SPLIT_TRAIN: 3, F.SPLIT_CALIB: 1, F.SPLIT_TEST: 0},
        F.ROLE_UNKNOWN_UNKNOWN: {F.SPLIT_TRAIN: 0, F.SPLIT_CALIB: 0, F.SPLIT_TEST: 3},
    }
    for identity, label, role, seed in people():
        k = 0
        for split, n in counts[role].items():
            for _ in range(n):
                image = png_bytes(face_image(seed, seed * 100 + k))
                plan[split].setdefault(identity, []).append(_example(image, label, role, identity))
                k += 1
    for split, by_person in plan.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(folder / "faces.tfrecord")) as w:
            for records in by_person.values():
                for r in records:
                    w.write(r)
    return root


def _resized(array: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((SIZE, SIZE), Image.BILINEAR), np.float32)


def _colour_extremes_backbone(backbone) -> None:
    """Conv 1 reads +/- each colour channel; every later conv passes its input through.

    The features are then the image-wide maximum and minimum of each colour (VGG16 pools
    everything down to 1x1): a tiny, well-conditioned embedding that int8 keeps. A random
    13-layer base maps all inputs to nearly the same features, which int8 cannot tell apart.
    No channel is all zero: a zero-range channel gets a zero int8 scale, which breaks int8.
    """
    import tf_keras as keras

    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    for n, layer in enumerate(convs):
        kh, kw, cin, cout = layer.kernel.shape
        kernel = np.zeros((kh, kw, cin, cout), np.float32)
        for j in range(cout):
            if n == 0:
                kernel[kh // 2, kw // 2, j % 3, j] = 0.05 if (j // 3) % 2 == 0 else -0.05
            else:
                kernel[kh // 2, kw // 2, j % cin, j] = 1.0
        layer.set_weights([kernel, np.zeros((cout,), np.float32)])


def build_keras_model():
    """A 32x32 model that tells the fixture people apart without training.

    Colour-extreme features (see _colour_extremes_backbone), a nearest-class-mean logits
    layer, and a certainty neuron centred between the max logits of known and known-unknown
    images. Deterministic, and int8 keeps it.
    """
    import tf_keras as keras

    from components import model as M

    model = M.build_model(M.ModelSpec(num_classes=len(LABELS), input_size=SIZE, seed=7))
    _colour_extremes_backbone(model.get_layer(M.BACKBONE_NAME))
    features = keras.Model(model.input, model.get_layer("flatten").output)
    by_role: dict[str, list[np.ndarray]] = {}
    class_means = []
    for _identity, label, role, seed in people():
        images = np.stack([_resized(face_image(seed, seed * 100 + k)) for k in range(3)])
        f = features.predict(images, verbose=0)
        by_role.setdefault(role, []).append(f)
        if label >= 0:
            class_means.append(f.mean(axis=0))
    means = np.stack(class_means)  # (N, D)
    centre = means.mean(axis=0)
    directions = means - centre
    scale = float(np.mean(np.sum(directions * directions, axis=1)))
    kernel = (directions.T / scale * 4.0).astype(np.float32)  # own class ~ +4
    bias = (-(centre @ directions.T) / scale * 4.0).astype(np.float32)
    model.get_layer(M.LOGITS_LAYER).set_weights([kernel, bias])
    logits = {
        role: (np.concatenate(fs) @ kernel + bias).max(axis=1) for role, fs in by_role.items()
    }
    hi = float(np.median(logits[F.ROLE_KNOWN]))
    lo = float(np.median(logits[F.ROLE_KNOWN_UNKNOWN]))
    spread = max(hi - lo, 1e-3)
    weight = np.array([[6.0 / spread]], np.float32)
    bias1 = np.array([-6.0 / spread * (hi + lo) / 2.0], np.float32)
    model.get_layer(M.CERTAINTY_LAYER).set_weights([weight, bias1])
    return model


def build_saved_model(export_dir: Path) -> Path:
    from components.exporter import export_saved_model

    return export_saved_model(build_keras_model(), LABELS, export_dir, threshold=THRESHOLD)


def cached(root: Path, name: str, build) -> Path:
    """Build once per session under root/name."""
    key = f"{root}/{name}"
    if key not in _cache:
        _cache[key] = build(root / name)
    return _cache[key]


# Looser than the default gate: on 12 test images one ambiguous stranger flipping its top-1
# identity is 8%. The default gate is checked on the demo model by bench/edge.py.
TEST_GATE = {"min_agreement": 0.8, "max_auroc_diff": 0.05}


def build_edge_models(root: Path) -> Path:
    """root/{data,saved_model,edge}: every variant converted, gated loosely, and written."""
    from export.builder import EdgeExportConfig
    from export.builder import build_edge_models as build

    data = write_tfrecords(root / "data")
    saved_model = build_saved_model(root / "saved_model")
    config = EdgeExportConfig.from_dict(
        {"gate": TEST_GATE, "num_calibration_samples": 16, "latency_runs": 3}
    )
    build(saved_model, str(data / "train" / "*"), str(data / "test" / "*"), root / "edge",
          "facegate", "1", config)  # fmt: skip
    return root


def edge_root(tmp_path_factory) -> Path:
    """The session's shared fixture folder (built on first use)."""
    return cached(tmp_path_factory.getbasetemp(), "edge_fixture", build_edge_models)
