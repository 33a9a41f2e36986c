"""tf.data input: TFRecord files of face Examples -> (image, label) batches."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from components import features as F
from components.preprocessing import decode_and_resize

FEATURE_SPEC = {
    F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    F.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    F.IS_KNOWN_KEY: tf.io.FixedLenFeature([], tf.int64),
    F.ROLE_KEY: tf.io.FixedLenFeature([], tf.string),
    F.IDENTITY_KEY: tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


def expand_patterns(patterns: Sequence[str] | str) -> list[str]:
    """Glob patterns (as TFX passes them in fn_args) -> sorted file list; error if none match."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(patterns)}")
    return files


def read_examples(patterns: Sequence[str] | str) -> tf.data.Dataset:
    """Parsed examples; ImportExampleGen writes GZIP files, ingest writes plain ones."""
    files = expand_patterns(patterns)
    gz = [f for f in files if f.endswith(".gz")]
    plain = [f for f in files if not f.endswith(".gz")]
    parts = []
    if gz:
        parts.append(tf.data.TFRecordDataset(gz, compression_type="GZIP"))
    if plain:
        parts.append(tf.data.TFRecordDataset(plain))
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds.map(
        lambda s: tf.io.parse_single_example(s, FEATURE_SPEC), num_parallel_calls=tf.data.AUTOTUNE
    )


def image_dataset(
    patterns: Sequence[str] | str,
    input_size: int,
    roles: Sequence[str] | None = None,
    label_key: str = F.LABEL_KEY,
    exclude_identities: Sequence[str] = (),
) -> tf.data.Dataset:
    """Unbatched (image float32 0..255, label int64) pairs, optionally only the given roles
    and without the faces of the given people."""
    ds = read_examples(patterns)
    if roles is not None:
        wanted = tf.constant(list(roles))
        ds = ds.filter(lambda ex: tf.reduce_any(tf.equal(ex[F.ROLE_KEY], wanted)))
    if exclude_identities:
        excluded = tf.constant(list(exclude_identities))
        ds = ds.filter(lambda ex: ~tf.reduce_any(tf.equal(ex[F.IDENTITY_KEY], excluded)))
    return ds.map(
        lambda ex: (decode_and_resize(ex[F.IMAGE_KEY], input_size), ex[label_key]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def identities(patterns: Sequence[str] | str, role: str) -> list[str]:
    """Sorted distinct identities of one role in the given files."""
    found = {
        ex[F.IDENTITY_KEY].numpy().decode()
        for ex in read_examples(patterns)
        if ex[F.ROLE_KEY].numpy().decode() == role
    }
    return sorted(found)


def augment(image: tf.Tensor) -> tf.Tensor:
    """Small random flips, shifts and brightness changes: ORL has only a few images per person.

    Stateful random ops (seeded by tf.random.set_seed) so every epoch sees new variations.
    """
    size = tf.shape(image)[0]
    image = tf.image.random_flip_left_right(image)
    pad = tf.cast(tf.cast(size, tf.float32) * 0.1, tf.int32)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    image = tf.image.random_crop(padded, tf.shape(image))
    image = tf.image.random_brightness(image, 20.0)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    return tf.clip_by_value(image, 0.0, 255.0)


def add_mixed_outliers(
    images: tf.Tensor, labels: tf.Tensor, share: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Append blends of two different known people's faces to a batch, labelled -1 (outlier).

    A half-and-half blend of two aligned faces is a face of neither person: phase 1 learns to
    keep every logit low on it, as outlier exposure does with real strangers, without spending
    any known-unknown person (they stay unseen for the certainty neuron and the threshold).
    Up to ceil(share * batch) blends; pairs of the same person or with an outlier are dropped.
    """
    n = tf.shape(images)[0]
    partner = tf.random.shuffle(tf.range(n))
    mix = tf.random.uniform([n, 1, 1, 1], 0.4, 0.6)
    blended = mix * images + (1.0 - mix) * tf.gather(images, partner)
    other = tf.gather(labels, partner)
    keep = (labels != other) & (labels >= 0) & (other >= 0)
    limit = tf.cast(tf.math.ceil(share * tf.cast(n, tf.float32)), tf.int32)
    blended = tf.boolean_mask(blended, keep)[:limit]
    outliers = tf.fill([tf.shape(blended)[0]], tf.constant(-1, labels.dtype))
    return tf.concat([images, blended], 0), tf.concat([labels, outliers], 0)


def training_batches(
    ds: tf.data.Dataset,
    batch_size: int,
    seed: int,
    with_augmentation: bool = True,
    mixed_outlier_share: float = 0.0,
) -> tf.data.Dataset:
    """Cache decoded images, then shuffle, augment and batch each epoch (with mixed-identity
    outliers appended to each batch when `mixed_outlier_share` > 0)."""
    ds = ds.cache().shuffle(2048, seed=seed, reshuffle_each_iteration=True)
    if with_augmentation:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    if mixed_outlier_share > 0:
        ds = ds.map(lambda x, y: add_mixed_outliers(x, y, mixed_outlier_share))
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return ds.cache().batch(batch_size).prefetch(tf.data.AUTOTUNE)
