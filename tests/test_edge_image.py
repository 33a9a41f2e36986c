"""The edge runtime's Pillow preprocessing against the SavedModel's TF preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.preprocessing import decode_and_resize
from export.image import ImageError, load_image

SIZE = 32
PNG_TOLERANCE = 0.01  # of 255; measured max ~0.0006
JPEG_TOLERANCE = 4.0  # TF decodes JPEG with the fast integer DCT, Pillow with the accurate one


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def tf_reference(data: bytes, size: int = SIZE) -> np.ndarray:
    return decode_and_resize(tf.constant(data), size).numpy()


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "shape",
    [(112, 92), (40, 36), (32, 32), (7, 5), (1, 1), (1000, 3), (1600, 1200)],
    ids=lambda s: f"{s[0]}x{s[1]}",
)
def test_png_resize_matches_tf(shape):
    data = encode(Image.fromarray(rgb(*shape)))
    got = load_image(data, SIZE)
    assert got.dtype == np.float32 and got.shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(got, tf_reference(data), atol=PNG_TOLERANCE)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "I;16"])
def test_other_modes_convert_as_decode_image_does(mode):
    base = Image.fromarray(rgb(50, 40, seed=1))
    if mode == "I;16":
        wide = np.random.default_rng(2).integers(0, 65536, (50, 40)).astype(np.uint16)
        image = Image.fromarray(wide)
        assert image.mode == "I;16"
    elif mode == "RGBA":
        alpha = np.random.default_rng(3).integers(0, 256, (50, 40, 1), dtype=np.uint8)
        image = Image.fromarray(np.concatenate([rgb(50, 40, seed=1), alpha], -1), "RGBA")
    else:
        image = base.convert(mode)
    data = encode(image)
    np.testing.assert_allclose(load_image(data, SIZE), tf_reference(data), atol=PNG_TOLERANCE)


def test_jpeg_within_decoder_tolerance(tmp_path):
    path = tmp_path / "face.jpg"
    smooth = Image.fromarray(rgb(12, 10)).resize((90, 110), Image.BILINEAR)
    smooth.save(path, "JPEG", quality=90)
    diff = np.abs(load_image(path, SIZE) - tf_reference(path.read_bytes()))
    assert diff.max() <= JPEG_TOLERANCE and diff.mean() < 1.0


def test_arrays_and_pil_images_are_accepted():
    array = rgb(20, 30)
    data = encode(Image.fromarray(array))
    ref = tf_reference(data)
    np.testing.assert_allclose(load_image(array, SIZE), ref, atol=PNG_TOLERANCE)
    np.testing.assert_allclose(load_image(Image.fromarray(array), SIZE), ref, atol=PNG_TOLERANCE)
    gray = array[..., 0]
    expected = tf_reference(encode(Image.fromarray(gray)))
    np.testing.assert_allclose(load_image(gray, SIZE), expected, atol=PNG_TOLERANCE)


def test_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="nope.png"):
        load_image(missing, SIZE)


def test_not_an_image_names_it(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match="notes.png.*not an image"):
        load_image(path, SIZE)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_names_it(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    data = encode(Image.fromarray(rgb(200, 200)), fmt)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=f"cut.{fmt.lower()}.*truncated"):
        load_image(path, SIZE)


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("RGB", (400, 300)).save(path)
    with pytest.raises(ImageError, match="huge.png.*400x300"):
        load_image(path, SIZE, max_pixels=100_000)
    assert load_image(path, SIZE, max_pixels=120_000).shape == (SIZE, SIZE, 3)


def test_bad_array_shape():
    with pytest.raises(ImageError, match="expected"):
        load_image(np.zeros((4, 4, 2), np.uint8), SIZE)
