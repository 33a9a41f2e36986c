"""Image decoding and resizing shared by training input and every exported signature.

One function, used on both paths, so serving and training can never disagree.
VGG16 normalisation is the model's first layer (see components/model.py), so a decoded
image of raw 0..255 RGB pixels is the model's input on every path, TFLite included.
"""

from __future__ import annotations

import tensorflow as tf

# ImageNet channel means in BGR order, as keras.applications.vgg16.preprocess_input uses them.
VGG16_BGR_MEAN = (103.939, 116.779, 123.68)
RESIZE_METHOD = "bilinear"
RESIZE_ANTIALIAS = True


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG (or GIF/BMP) bytes -> uint8 RGB (H, W, 3); gray and RGBA become RGB."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8/float RGB (H, W, 3) -> float32 (size, size, 3) in 0..255."""
    resized = tf.image.resize(
        tf.cast(image, tf.float32), [size, size], method=RESIZE_METHOD, antialias=RESIZE_ANTIALIAS
    )
    return tf.clip_by_value(resized, 0.0, 255.0)


def decode_and_resize(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    return resize_image(decode_image(image_bytes), size)


def decode_batch(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """A 1-D batch of encoded images -> float32 (batch, size, size, 3)."""
    return tf.map_fn(
        lambda b: decode_and_resize(b, size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
    )


def vgg16_normalize(image: tf.Tensor) -> tf.Tensor:
    """RGB 0..255 -> BGR minus the ImageNet mean (keras.applications.vgg16.preprocess_input)."""
    bgr = tf.reverse(image, axis=[-1])
    return bgr - tf.constant(VGG16_BGR_MEAN, dtype=image.dtype)
