"""What the certainty neuron is measured against, on the same splits.

- Scores on the same logits: maximum softmax probability (Hendrycks & Gimpel 2017), maximum
  logit (Hendrycks et al. 2022) and energy, logsumexp of the logits (Liu et al. 2020).
- A classical reference a user might pick instead: eigenfaces (Turk & Pentland 1991), PCA with
  whitened components fitted on the known train faces, 1-nearest-neighbour identity, and the
  negated nearest-neighbour distance as the open-set score.
Every score is "higher = more likely a known person".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components import open_set

MSP = "max_softmax"
MAX_LOGIT = "max_logit"
ENERGY = "energy"
EIGENFACES = "eigenfaces"
EIGENFACES_COMPONENTS = 40


def logit_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Open-set scores computed from the classifier's logits alone (temperature 1)."""
    logits = np.asarray(logits, np.float64)
    return {
        MSP: open_set.softmax(logits).max(axis=-1),
        MAX_LOGIT: logits.max(axis=-1),
        ENERGY: open_set.logsumexp(logits),  # negative free energy
    }


def to_gray_vectors(images: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) 0..255 RGB -> (n, S*S) grayscale in 0..1 (ITU-R 601 luma)."""
    images = np.asarray(images, np.float64)
    gray = images @ np.array([0.299, 0.587, 0.114])
    return gray.reshape(len(images), -1) / 255.0


@dataclass
class Eigenfaces:
    """Fitted PCA + the projected train faces: predict() gives identity and open-set score."""

    mean: np.ndarray
    components: np.ndarray
    """(k, d), rows scaled by 1/sqrt(variance): projecting whitens."""
    gallery: np.ndarray
    gallery_labels: np.ndarray

    @classmethod
    def fit(
        cls, images: np.ndarray, labels: np.ndarray, n_components: int = EIGENFACES_COMPONENTS
    ) -> Eigenfaces:
        from sklearn.decomposition import PCA

        x = to_gray_vectors(images)
        labels = np.asarray(labels, np.int64).reshape(-1)
        k = int(min(n_components, len(x) - 1, x.shape[1]))
        if k < 1:
            raise ValueError(f"eigenfaces need at least 2 train faces, got {len(x)}")
        pca = PCA(n_components=k, whiten=True, svd_solver="full", random_state=0).fit(x)
        scale = 1.0 / np.sqrt(pca.explained_variance_)
        model = cls(pca.mean_, pca.components_ * scale[:, None], np.empty((0, k)), labels)
        model.gallery = model.project(images)
        return model

    def project(self, images: np.ndarray) -> np.ndarray:
        return (to_gray_vectors(images) - self.mean) @ self.components.T

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(identity of the nearest train face, -distance to it) per image."""
        q = self.project(images)
        d2 = (
            np.sum(q**2, axis=1)[:, None]
            - 2.0 * q @ self.gallery.T
            + np.sum(self.gallery**2, axis=1)[None, :]
        )
        nearest = np.argmin(d2, axis=1)
        dist = np.sqrt(np.maximum(d2[np.arange(len(q)), nearest], 0.0))
        return self.gallery_labels[nearest], -dist
