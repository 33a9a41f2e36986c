"""The facegate model graph: VGG16 identities plus the max-logit certainty neuron.

    image (0..255 RGB) -> VGG16 normalisation -> VGG16 conv base -> Flatten -> Dropout
      -> Dense(N, name="predictions")  = logits
          -> Softmax                    = identity_probs
          -> expand to (batch, N, 1) -> GlobalMaxPool1D -> Dense(1, sigmoid) = known_prob

Keras 2 (tf_keras) throughout: TFX 1.16 and TFMA 0.47 do not understand Keras 3 models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from components import features as F
from components.preprocessing import vgg16_normalize

BACKBONE_NAME = "vgg16"
LOGITS_LAYER = "predictions"
SOFTMAX_LAYER = "identity_probs"
EXPAND_LAYER = "expand_logits"
MAXPOOL_LAYER = "max_logit"
CERTAINTY_LAYER = "certainty"
INPUT_PIXEL_STD = 60.0


@dataclass(frozen=True)
class ModelSpec:
    num_classes: int
    input_size: int = 64
    weights: str = "none"
    """'imagenet', 'none' (train from scratch) or a path to a VGG16 notop weights file."""
    dropout: float = 0.3
    seed: int = 0
    head: str = "linear"
    """'linear': Dense(N) on the features. 'cosine': Dense(N) without bias on L2-normalised
    features with unit-norm class vectors, times `logit_scale`: logits are scaled cosine
    similarities, so a stranger cannot raise the max logit just by a large feature norm."""
    logit_scale: float = 16.0
    """Scale of the cosine logits (only with head='cosine')."""


def _expand_logits(logits: tf.Tensor) -> tf.Tensor:
    # A Lambda layer: a raw backend op on a Keras tensor fails in tf.keras 2 with
    # "'Tensor' object has no attribute '_keras_history'".
    return tf.expand_dims(logits, axis=-1)


def _backbone_weights(weights: str) -> str | None:
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise FileNotFoundError(f"VGG16 weights file not found: {weights}")
    return weights


def he_normal_reinit(backbone: keras.Model, seed: int) -> None:
    """Re-initialise conv kernels He-normal: with Keras' Glorot default, VGG16 trained from
    scratch sits at chance for several epochs."""
    first = True
    for i, layer in enumerate(backbone.layers):
        if isinstance(layer, keras.layers.Conv2D):
            kernel = keras.initializers.HeNormal(seed=seed + i)(layer.kernel.shape)
            if first:
                # VGG16 normalisation leaves pixels at a std of ~60, not 1: scale the first
                # kernel so activations start near unit scale instead of blowing up the logits.
                kernel = kernel / INPUT_PIXEL_STD
                first = False
            layer.kernel.assign(kernel)
            layer.bias.assign(tf.zeros_like(layer.bias))


def _l2_normalize(x: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(x, axis=-1)


def _logits_head(features: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    if spec.head == "linear":
        return keras.layers.Dense(spec.num_classes, activation=None, name=LOGITS_LAYER)(features)
    if spec.head != "cosine":
        raise ValueError(f"unknown head {spec.head!r}: use 'linear' or 'cosine'")
    if spec.logit_scale <= 0:
        raise ValueError(f"logit_scale must be > 0, got {spec.logit_scale}")
    unit = keras.layers.Lambda(_l2_normalize, name="normalize_features")(features)
    # UnitNorm(axis=0) renormalises each class vector (a kernel column) after every step.
    cosine = keras.layers.Dense(
        spec.num_classes,
        activation=None,
        use_bias=False,
        kernel_constraint=keras.constraints.UnitNorm(axis=0),
        name="cosine",
    )(unit)
    return keras.layers.Rescaling(spec.logit_scale, name=LOGITS_LAYER)(cosine)


def build_model(spec: ModelSpec) -> keras.Model:
    """Full model: image -> {logits, identity_probs, known_prob}."""
    if spec.num_classes < 2:
        raise ValueError(f"need at least 2 known identities, got {spec.num_classes}")
    if spec.input_size < 32:
        raise ValueError(f"VGG16 needs an input of at least 32x32, got {spec.input_size}")
    keras.utils.set_random_seed(spec.seed)
    size = spec.input_size
    image = keras.Input(shape=(size, size, 3), dtype="float32", name=F.INPUT_IMAGE)
    x = keras.layers.Lambda(vgg16_normalize, name="vgg16_normalize")(image)
    backbone = keras.applications.VGG16(
        include_top=False,
        weights=_backbone_weights(spec.weights),
        input_shape=(size, size, 3),
    )
    backbone._name = BACKBONE_NAME  # stable name whatever Keras' global name counter says
    if spec.weights == "none":
        he_normal_reinit(backbone, spec.seed)
    x = backbone(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(spec.dropout, name="dropout")(x)
    logits = _logits_head(x, spec)
    probs = keras.layers.Softmax(name=SOFTMAX_LAYER)(logits)
    expanded = keras.layers.Lambda(_expand_logits, name=EXPAND_LAYER)(logits)
    max_logit = keras.layers.GlobalMaxPool1D(name=MAXPOOL_LAYER)(expanded)
    known_prob = keras.layers.Dense(1, activation="sigmoid", name=CERTAINTY_LAYER)(max_logit)
    return keras.Model(
        inputs=image,
        outputs={
            F.OUTPUT_LOGITS: logits,
            F.OUTPUT_IDENTITY_PROBS: probs,
            F.OUTPUT_KNOWN_PROB: known_prob,
        },
        name="facegate",
    )


def logits_model(model: keras.Model) -> keras.Model:
    """Phase-1 view: image -> logits, sharing the full model's layers."""
    return keras.Model(model.input, model.output[F.OUTPUT_LOGITS], name="facegate_logits")


def max_logit_model(model: keras.Model) -> keras.Model:
    """image -> max logit (the certainty neuron's input), sharing the full model's layers."""
    return keras.Model(model.input, model.get_layer(MAXPOOL_LAYER).output, name="max_logit")


def certainty_model(model: keras.Model) -> keras.Model:
    """Phase-2 view: max logit (batch, 1) -> P(known), sharing the certainty neuron's weights."""
    max_logit = keras.Input(shape=(1,), name="max_logit")
    return keras.Model(max_logit, model.get_layer(CERTAINTY_LAYER)(max_logit), name="certainty")


def set_phase1_trainable(model: keras.Model, weights: str) -> None:
    """Backbone frozen on imagenet weights (as in the original), trainable from scratch."""
    for layer in model.layers:
        layer.trainable = layer.name != CERTAINTY_LAYER
    model.get_layer(BACKBONE_NAME).trainable = weights == "none"


def set_phase2_trainable(model: keras.Model) -> None:
    """Everything frozen but the last neuron."""
    for layer in model.layers:
        layer.trainable = layer.name == CERTAINTY_LAYER
