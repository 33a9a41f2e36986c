"""Two-phase training of the facegate model, callable with or without TFX.

Phase 1: the identity classifier on known train faces (softmax cross-entropy on the logits).
Phase 2: everything frozen but the certainty neuron, trained on the max logit of known train
faces (1) versus known-unknown train faces (0). The frozen network is run once per image and the
neuron is fitted on those scalars, instead of pushing VGG16 through every phase-2 epoch.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components import data, outlier_exposure
from components import features as F
from components import model as M
from components.settings import settings_from_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; every field has a default (see `from_dict`)."""

    input_size: int = 64
    weights: str = "none"
    """'imagenet', 'none' (from scratch) or a path to VGG16 notop weights."""
    epochs: int = 60
    """Phase-1 epochs (identity classifier)."""
    batch_size: int = 16
    learning_rate: float = 3e-4
    """Peak Adam learning rate, decayed to zero over the epochs (cosine)."""
    clipnorm: float = 1.0
    """Gradient-norm clipping: VGG16 without batch norm diverges early from scratch without it."""
    dropout: float = 0.3
    augment: bool = True
    head: str = "linear"
    """'linear' or 'cosine' logits (see components.model.ModelSpec)."""
    logit_scale: float = 16.0
    """Scale of the cosine logits (head='cosine' only)."""
    cosine_margin: float = 0.0
    """CosFace margin: phase 1 subtracts logit_scale * margin from the true class's logit, so
    known faces must beat the other classes by a margin (head='cosine' only)."""
    certainty_epochs: int = 300
    """Phase-2 epochs over the cached max logits (cheap: one scalar per image)."""
    certainty_learning_rate: float = 0.05
    seed: int = 0
    outlier_exposure: bool = False
    """Phase 1 also sees known-unknown train faces, their logits pushed toward uniform."""
    outlier_exposure_weight: float = 0.5
    """Weight of the outlier-exposure loss (real or mixed outliers) against the identity
    cross-entropy."""
    mixed_outliers: float = 0.5
    """Phase 1 appends to each batch up to this share of its size in blends of two different
    known people's faces, as outliers (uniform target): outlier exposure that spends no
    known-unknown person (components.data.add_mixed_outliers). 0 turns it off. On ORL it
    lifts the max-logit AUROC on never-seen people from ~0.8 to ~0.9 (docs/QUALITY.md)."""
    outlier_exposure_share: float = 0.5
    """Share of the known-unknown people phase 1 sees as outliers. The others stay unseen by
    phase 1: their faces train the certainty neuron and set the threshold, which would not
    transfer to never-seen people if phase 1 had flattened them (docs/QUALITY.md)."""
    deterministic: bool = True
    """Deterministic TensorFlow ops (tf.config.experimental.enable_op_determinism): the same
    seed and data give the same model bit for bit on the same machine. Without it, oneDNN's
    threaded reductions and tf.data's parallel maps make two runs of one seed differ (logits
    apart by 0.09 after 3 short epochs). Costs about 1.16x the phase-1 time on 2 CPU cores
    (docs/BENCHMARKS.md)."""
    verbose: int = 2

    @classmethod
    def from_dict(cls, values: dict | None) -> TrainConfig:
        """Fill missing settings with defaults; unknown keys are an error, not silently ignored."""
        return settings_from_dict(cls, values, "training")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: keras.Model
    phase1_history: dict
    phase2_history: dict
    certainty_weights: tuple[float, float]
    outlier_people: list[str] = field(default_factory=list)
    """Known-unknown people phase 1 trained on (outlier exposure); calibration skips them."""


def seed_everything(cfg: TrainConfig) -> None:
    """Seed TensorFlow's global generator and, if asked, make its ops deterministic.

    Op determinism is a process-wide switch that stays on once set (TensorFlow has no public
    way to turn it off); everything after training in the same process runs deterministic ops
    too, which only costs determinism-less GPU kernels, not used here.
    """
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(cfg.seed)


def split_outlier_people(train_files: Sequence[str], cfg: TrainConfig) -> list[str]:
    """The known-unknown people phase 1 uses for outlier exposure (seeded, by identity).

    At least one person goes to each side: outlier exposure needs someone to flatten, the
    certainty neuron and the threshold need someone phase 1 never saw.
    """
    if not cfg.outlier_exposure:
        return []
    people = data.identities(train_files, F.ROLE_KNOWN_UNKNOWN)
    if len(people) < 2:
        raise ValueError(
            f"outlier exposure needs at least 2 known-unknown people in the train split (one "
            f"for phase 1, one held out for the certainty neuron and threshold), got {people}"
        )
    if not 0.0 < cfg.outlier_exposure_share < 1.0:
        raise ValueError(
            f"outlier_exposure_share must be in (0, 1), got {cfg.outlier_exposure_share}"
        )
    n = min(len(people) - 1, max(1, round(cfg.outlier_exposure_share * len(people))))
    shuffled = people[:]
    random.Random(cfg.seed).shuffle(shuffled)
    return sorted(shuffled[:n])


def train_identity(
    model: keras.Model,
    train_files: Sequence[str],
    val_files: Sequence[str] | None,
    cfg: TrainConfig,
    outlier_people: Sequence[str] | None = None,
) -> dict:
    """Phase 1: fit the logits on known faces (and the outlier people's faces, if any);
    returns the Keras history. `outlier_people` defaults to `split_outlier_people`."""
    M.set_phase1_trainable(model, cfg.weights)
    clf = M.logits_model(model)
    # Outlier exposure: known-unknown faces (label -1) join phase 1 with their own loss.
    phase1_roles = [F.ROLE_KNOWN, F.ROLE_KNOWN_UNKNOWN] if cfg.outlier_exposure else [F.ROLE_KNOWN]
    margin = cfg.logit_scale * cfg.cosine_margin if cfg.head == "cosine" else 0.0
    uses_outliers = cfg.outlier_exposure or cfg.mixed_outliers > 0
    oe_weight = cfg.outlier_exposure_weight if uses_outliers else 0.0
    loss = outlier_exposure.open_set_loss(oe_weight, margin=margin)
    accuracy = outlier_exposure.KnownAccuracy(name="accuracy")
    if outlier_people is None:
        outlier_people = split_outlier_people(train_files, cfg)
    held_out = (
        sorted(set(data.identities(train_files, F.ROLE_KNOWN_UNKNOWN)) - set(outlier_people))
        if cfg.outlier_exposure
        else []
    )
    known = data.image_dataset(
        train_files, cfg.input_size, roles=phase1_roles, exclude_identities=held_out
    )
    steps_per_epoch = max(1, math.ceil(count_examples(known) / cfg.batch_size))
    # Cosine decay to zero: the last epochs settle instead of bouncing between minima.
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=steps_per_epoch * cfg.epochs
    )
    clf.compile(
        optimizer=keras.optimizers.Adam(schedule, clipnorm=cfg.clipnorm),
        loss=loss,
        metrics=[accuracy],
    )
    train = data.training_batches(
        known,
        cfg.batch_size,
        cfg.seed,
        with_augmentation=cfg.augment,
        mixed_outlier_share=cfg.mixed_outliers,
    )
    val = None
    if val_files:
        val = data.eval_batches(
            data.image_dataset(val_files, cfg.input_size, roles=[F.ROLE_KNOWN]), cfg.batch_size
        )
    history = clf.fit(train, validation_data=val, epochs=cfg.epochs, verbose=cfg.verbose)
    return history.history


def count_examples(ds: tf.data.Dataset) -> int:
    """Size of a filtered dataset (its cardinality is unknown until iterated)."""
    return int(ds.map(lambda image, label: label).reduce(np.int64(0), lambda n, _: n + 1))


def max_logits(model: keras.Model, ds: tf.data.Dataset, batch_size: int) -> np.ndarray:
    """Run the frozen network once per image; returns max logits as a (n,) array."""
    feats = M.max_logit_model(model).predict(ds.batch(batch_size), verbose=0)
    return np.asarray(feats, dtype=np.float32).reshape(-1)


def train_certainty(
    model: keras.Model,
    train_files: Sequence[str],
    cfg: TrainConfig,
    outlier_people: Sequence[str] | None = None,
) -> tuple[dict, tuple[float, float]]:
    """Phase 2: fit Dense(1, sigmoid) on max logits, known (1) vs known-unknown (0), leaving
    out the people phase 1 used for outlier exposure."""
    M.set_phase2_trainable(model)
    if outlier_people is None:
        outlier_people = split_outlier_people(train_files, cfg)
    images = data.image_dataset(
        train_files,
        cfg.input_size,
        roles=[F.ROLE_KNOWN, F.ROLE_KNOWN_UNKNOWN],
        label_key=F.IS_KNOWN_KEY,
        exclude_identities=outlier_people,
    ).cache()
    x = max_logits(model, images.map(lambda img, _: img), cfg.batch_size)
    y = np.fromiter((int(v) for _, v in images.as_numpy_iterator()), dtype=np.float32)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"the certainty neuron needs known and known-unknown train faces; got {n_pos} known "
            f"and {n_neg} known-unknown (ingest with --num-known-unknown >= 1)"
        )
    # Start from a standardised logistic fit so a few hundred full-batch steps converge whatever
    # the scale of the logits; balanced weights so 0.5 separates the classes, not their counts.
    std = float(x.std()) or 1.0
    layer = model.get_layer(M.CERTAINTY_LAYER)
    layer.set_weights(
        [np.array([[1.0 / std]], np.float32), np.array([-x.mean() / std], np.float32)]
    )
    weights = np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * n_neg)).astype(np.float32)
    head = M.certainty_model(model)
    head.compile(
        optimizer=keras.optimizers.Adam(cfg.certainty_learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )
    history = head.fit(
        x[:, None],
        y,
        sample_weight=weights,
        batch_size=len(y),
        epochs=cfg.certainty_epochs,
        verbose=0,
    )
    w, b = layer.get_weights()
    hist = history.history
    log.info(
        "certainty neuron: P(known) = sigmoid(%.4f * max_logit + %.4f); train loss %.4f, acc %.3f",
        float(w.reshape(-1)[0]),
        float(b.reshape(-1)[0]),
        hist["loss"][-1],
        hist["accuracy"][-1],
    )
    return hist, (float(w.reshape(-1)[0]), float(b.reshape(-1)[0]))


def train(
    num_classes: int,
    train_files: Sequence[str],
    val_files: Sequence[str] | None,
    cfg: TrainConfig,
) -> TrainResult:
    """Build the model and run both phases."""
    seed_everything(cfg)
    model = M.build_model(
        M.ModelSpec(
            num_classes=num_classes,
            input_size=cfg.input_size,
            weights=cfg.weights,
            dropout=cfg.dropout,
            seed=cfg.seed,
            head=cfg.head,
            logit_scale=cfg.logit_scale,
        )
    )
    outlier_people = split_outlier_people(train_files, cfg)
    if outlier_people:
        log.info("outlier exposure on the train faces of %s", ", ".join(outlier_people))
    h1 = train_identity(model, train_files, val_files, cfg, outlier_people)
    h2, wb = train_certainty(model, train_files, cfg, outlier_people)
    return TrainResult(
        model=model,
        phase1_history=h1,
        phase2_history=h2,
        certainty_weights=wb,
        outlier_people=outlier_people,
    )
