"""Images for the edge export from TFRecords: int8 calibration and the parity test set.

Decoded with components/preprocessing.py through components/data.py, exactly as training
and the SavedModel's own signatures decode them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from components import features as F
from components.data import read_examples
from components.preprocessing import decode_and_resize

CALIBRATION_ROLES = (F.ROLE_KNOWN, F.ROLE_KNOWN_UNKNOWN)


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray
    """float32 (N, S, S, 3), RGB 0..255."""
    is_known: np.ndarray
    """int64 (N,): 1 for known people."""
    labels: np.ndarray
    """int64 (N,): class index, -1 for unknown people."""
    roles: np.ndarray
    """str (N,)."""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def role_counts(self) -> dict[str, int]:
        names, counts = np.unique(self.roles, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def _decoded(patterns: Sequence[str] | str, input_size: int, role: str | None) -> tf.data.Dataset:
    ds = read_examples(patterns)
    if role is not None:
        ds = ds.filter(lambda ex: tf.equal(ex[F.ROLE_KEY], role))
    return ds.map(
        lambda ex: {
            "image": decode_and_resize(ex[F.IMAGE_KEY], input_size),
            "is_known": ex[F.IS_KNOWN_KEY],
            "label": ex[F.LABEL_KEY],
            "role": ex[F.ROLE_KEY],
        }
    )


def _collect(ds: tf.data.Dataset, input_size: int) -> ImageSet:
    images, known, labels, roles = [], [], [], []
    for ex in ds.as_numpy_iterator():
        images.append(ex["image"])
        known.append(ex["is_known"])
        labels.append(ex["label"])
        roles.append(ex["role"].decode())
    if not images:
        return ImageSet(
            np.zeros((0, input_size, input_size, 3), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.int64),
            np.zeros((0,), str),
        )
    return ImageSet(
        np.stack(images).astype(np.float32),
        np.asarray(known, np.int64),
        np.asarray(labels, np.int64),
        np.asarray(roles),
    )


def load_images(
    patterns: Sequence[str] | str, input_size: int, limit: int | None = None
) -> ImageSet:
    """Every image (or the first `limit`) of the given TFRecord files, in file order."""
    ds = _decoded(patterns, input_size, None)
    if limit is not None:
        ds = ds.take(limit)
    return _collect(ds, input_size)


def representative_images(
    patterns: Sequence[str] | str,
    input_size: int,
    num_samples: int = 200,
    seed: int = 0,
    roles: Sequence[str] = CALIBRATION_ROLES,
    max_scan: int = 5000,
) -> ImageSet:
    """Up to num_samples train images, split evenly over `roles`, drawn with a fixed seed
    from the first max_scan images of each role.

    A role with too few images leaves its share to the others. Raises ValueError if any role
    has no image at all: calibrating int8 without strangers breaks P(known) for strangers.
    """
    rng = np.random.default_rng(seed)
    per_role = {}
    for role in roles:
        # Shuffled with numpy, not tf.data: a tf.data shuffle order also depends on the
        # global TF seed, so the calibration set would change with whatever ran before.
        found = _collect(_decoded(patterns, input_size, role).take(max_scan), input_size)
        pick = rng.permutation(len(found))[:num_samples]
        per_role[role] = ImageSet(*(a[pick] for a in (found.images, found.is_known,
                                                      found.labels, found.roles)))  # fmt: skip
    empty = [r for r, s in per_role.items() if len(s) == 0]
    if empty:
        raise ValueError(
            f"no training images of role(s) {empty} in {patterns}: the int8 calibration needs "
            f"images of every role in {list(roles)}"
        )
    quota = _quotas({r: len(s) for r, s in per_role.items()}, num_samples)
    parts = [
        (s.images[: quota[r]], s.is_known[: quota[r]], s.labels[: quota[r]], s.roles[: quota[r]])
        for r, s in per_role.items()
    ]
    order = rng.permutation(sum(quota.values()))
    return ImageSet(*(np.concatenate([p[i] for p in parts])[order] for i in range(4)))


def _quotas(available: dict[str, int], total: int) -> dict[str, int]:
    """Share `total` evenly, handing what a small group cannot use to the others."""
    quota = dict.fromkeys(available, 0)
    left = min(total, sum(available.values()))
    while left > 0:
        open_groups = [r for r in available if quota[r] < available[r]]
        share = max(1, left // len(open_groups))
        for r in open_groups:
            take = min(share, available[r] - quota[r], left)
            quota[r] += take
            left -= take
            if left == 0:
                break
    return quota
