"""Calibration on the calib split only: a temperature for identity_probs and the P(known)
operating threshold for a target false-accept rate.

- Temperature: one scalar T, identity_probs = softmax(logits / T), fitted by minimising the
  negative log-likelihood of the known calib faces' identities (Guo et al. 2017).
- Threshold: the (1 - target FAR) quantile of P(known) over the known-unknown calib faces
  (people never trained as identities), interpolated between order statistics on the logit
  scale. A face is accepted when P(known) >= threshold, as the SavedModel decides.

The calib split never holds unknown-unknown faces (those are test-only); finding one here means
the data was ingested with another protocol, and fitting on it would leak the test people into
the operating point, so it is an error. `CalibrationResult.inputs` records what was read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from components import features as F
from components import open_set
from components.settings import settings_from_dict

log = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """The calib split cannot support a calibration (missing roles, too few faces)."""


@dataclass(frozen=True)
class CalibrationConfig:
    target_far: float = 0.05
    """False-accept rate on unknown people the threshold aims for."""
    min_known: int = 4
    """Known calib faces needed to fit the temperature."""
    min_known_unknown: int = 4
    """Known-unknown calib faces needed to place the threshold."""
    min_temperature: float = 0.05
    max_temperature: float = 20.0

    @classmethod
    def from_dict(cls, values: dict | None) -> CalibrationConfig:
        """Fill missing settings with defaults; unknown keys are an error."""
        cfg = settings_from_dict(cls, values, "calibration")
        if not 0.0 < cfg.target_far < 1.0:
            raise ValueError(f"target_far must be in (0, 1), got {cfg.target_far}")
        if not 0.0 < cfg.min_temperature < cfg.max_temperature:
            raise ValueError("need 0 < min_temperature < max_temperature")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CalibrationInputs:
    """What the calibration read: files, and the faces in them by split-role."""

    files: list[str] = field(default_factory=list)
    role_counts: dict[str, int] = field(default_factory=dict)
    identities: list[str] = field(default_factory=list)
    skipped_people: list[str] = field(default_factory=list)
    """People left out: phase 1 trained on them (outlier exposure)."""
    skipped_faces: int = 0


@dataclass
class CalibrationResult:
    temperature: float
    threshold: float
    target_far: float
    temperature_fitted: float
    """The NLL optimum; `temperature` falls back to 1 when no interior optimum exists."""
    calib_far: float
    """Known-unknown calib faces accepted at the threshold (resolution 1 / their number)."""
    calib_tar: float
    """Known calib faces accepted at the threshold."""
    nll_before: float
    nll_after: float
    identity_ece_before: float
    identity_ece_after: float
    num_known: int
    num_known_unknown: int
    inputs: CalibrationInputs = field(default_factory=CalibrationInputs)

    def to_dict(self) -> dict:
        return asdict(self)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    return float(np.mean(open_set.logsumexp(z) - z[np.arange(len(labels)), labels]))


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The T in [bounds] minimising the NLL of softmax(logits / T) (1-D, on log T)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(
        lambda log_t: _nll(logits, labels, math.exp(log_t)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(res.x))


def _on_bound(temperature: float, cfg: CalibrationConfig, rel: float = 0.01) -> bool:
    return temperature <= cfg.min_temperature * (1 + rel) or temperature >= cfg.max_temperature * (
        1 - rel
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def threshold_for_far(unknown_scores: np.ndarray, target_far: float) -> float:
    """P(known) threshold whose expected false-accept rate on unknown people is target_far.

    A new unknown face exceeds the k-th lowest of n unknown scores with probability
    (n + 1 - k) / (n + 1), so the unbiased order statistic is k = (1 - target) * (n + 1): the
    Weibull plotting position, interpolated between order statistics on the logit scale
    (P(known) saturates near 1, where probabilities bunch together). The "linear" quantile it
    replaces sits at k = 1 + (1 - target) * (n - 1): with 16 faces its expected false-accept
    rate is 10% for a 5% target. With n < 1 / target - 1 faces no order statistic is that
    strict and the highest score is taken (expected rate 1 / (n + 1)).
    """
    scores = np.asarray(unknown_scores, np.float64).reshape(-1)
    if len(scores) == 0:
        raise CalibrationError("no known-unknown calib faces to place the threshold on")
    q = float(np.quantile(_logit(scores), 1.0 - target_far, method="weibull"))
    return float(1.0 / (1.0 + math.exp(-q)))


def calibrate_arrays(
    logits: np.ndarray,
    labels: np.ndarray,
    known_prob: np.ndarray,
    is_known: np.ndarray,
    cfg: CalibrationConfig | None = None,
) -> CalibrationResult:
    """Fit both from model outputs on calib faces (labels are -1 for known-unknown faces)."""
    cfg = cfg or CalibrationConfig()
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    known_prob = np.asarray(known_prob, np.float64).reshape(-1)
    known = np.asarray(is_known).reshape(-1).astype(bool)
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    problems = []
    if n_known < cfg.min_known:
        problems.append(f"{n_known} known face(s), need at least {cfg.min_known}")
    if n_unknown < cfg.min_known_unknown:
        problems.append(f"{n_unknown} known-unknown face(s), need at least {cfg.min_known_unknown}")
    if problems:
        raise CalibrationError(
            "the calib split cannot be calibrated on: "
            + "; ".join(problems)
            + ". Ingest with --calib-per-person >= 1 and --num-known-unknown >= 1 so it holds "
            "faces of both known and known-unknown people."
        )
    if np.any(labels[known] < 0) or np.any(labels[known] >= logits.shape[1]):
        raise CalibrationError("known calib faces carry labels outside the model's classes")
    if 1.0 / (n_unknown + 1) > cfg.target_far:
        log.warning(
            "only %d known-unknown calib faces: even the highest of their scores lets through "
            "an expected %.3f of unknown people, more than the %.3f target; the threshold is "
            "that highest score",
            n_unknown,
            1.0 / (n_unknown + 1),
            cfg.target_far,
        )
    k_logits, k_labels = logits[known], labels[known]
    fitted = fit_temperature(k_logits, k_labels, (cfg.min_temperature, cfg.max_temperature))
    temperature = fitted
    all_right = bool(np.all(np.argmax(k_logits, axis=1) == k_labels))
    if all_right or _on_bound(fitted, cfg):
        # No interior optimum: when every known calib face is already right the NLL keeps
        # falling as T -> 0, and "sharpen without limit" would wreck the test NLL.
        log.warning(
            "temperature optimum %.3f has no interior minimum in [%g, %g] (calib identity accuracy "
            "%.3f): "
            "not identifiable from this calib split, keeping T = 1",
            fitted,
            cfg.min_temperature,
            cfg.max_temperature,
            float(np.mean(np.argmax(k_logits, axis=1) == k_labels)),
        )
        temperature = 1.0
    threshold = threshold_for_far(known_prob[~known], cfg.target_far)
    result = CalibrationResult(
        temperature=temperature,
        threshold=threshold,
        target_far=cfg.target_far,
        temperature_fitted=fitted,
        calib_far=open_set.false_accept_rate(known_prob[~known], threshold),
        calib_tar=open_set.true_accept_rate(known_prob[known], threshold),
        nll_before=_nll(k_logits, k_labels, 1.0),
        nll_after=_nll(k_logits, k_labels, temperature),
        identity_ece_before=open_set.top_label_ece(open_set.softmax(k_logits), k_labels),
        identity_ece_after=open_set.top_label_ece(
            open_set.softmax(k_logits, temperature), k_labels
        ),
        num_known=n_known,
        num_known_unknown=n_unknown,
    )
    log.info(
        "calibration: T=%.3f (NLL %.3f -> %.3f), threshold %.4f for FAR %.3f "
        "(calib FAR %.3f, TAR %.3f)",
        temperature,
        result.nll_before,
        result.nll_after,
        threshold,
        cfg.target_far,
        result.calib_far,
        result.calib_tar,
    )
    return result


def read_calib_split(
    calib_files: Sequence[str] | str, input_size: int, skip_people: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, CalibrationInputs]:
    """Decode the calib faces but those of `skip_people`: (images, labels, is_known, what was
    read)."""
    import tensorflow as tf

    from components import data
    from components.preprocessing import decode_and_resize

    spec = dict(data.FEATURE_SPEC)
    spec[F.IDENTITY_KEY] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    files = data.expand_patterns(calib_files)
    images, labels, is_known, roles, identities = [], [], [], {}, set()
    skip, skipped = set(skip_people), 0
    for path in files:
        # ImportExampleGen writes GZIP files, ingest writes plain ones.
        records = tf.data.TFRecordDataset(
            path, compression_type="GZIP" if path.endswith(".gz") else ""
        )
        for raw in records:
            ex = tf.io.parse_single_example(raw, spec)
            identity = ex[F.IDENTITY_KEY].numpy().decode()
            if identity in skip:
                skipped += 1
                continue
            role = ex[F.ROLE_KEY].numpy().decode()
            roles[role] = roles.get(role, 0) + 1
            identities.add(identity)
            images.append(decode_and_resize(ex[F.IMAGE_KEY], input_size).numpy())
            labels.append(int(ex[F.LABEL_KEY]))
            is_known.append(int(ex[F.IS_KNOWN_KEY]))
    inputs = CalibrationInputs(
        files=list(files),
        role_counts=roles,
        identities=sorted(identities),
        skipped_people=sorted(skip),
        skipped_faces=skipped,
    )
    if roles.get(F.ROLE_UNKNOWN_UNKNOWN):
        raise CalibrationError(
            f"the calib split holds {roles[F.ROLE_UNKNOWN_UNKNOWN]} unknown-unknown face(s); "
            "those people are for evaluation only and must not set the threshold "
            f"(files: {files})"
        )
    if not images:
        raise CalibrationError(f"the calib split is empty (files: {files})")
    return (
        np.stack(images).astype(np.float32),
        np.asarray(labels, np.int64),
        np.asarray(is_known, np.int64),
        inputs,
    )


def calibrate(
    model,
    calib_files: Sequence[str] | str,
    input_size: int,
    cfg: CalibrationConfig | None = None,
    batch_size: int = 32,
    skip_people: Sequence[str] = (),
) -> CalibrationResult:
    """Run the trained Keras model on the calib split and fit temperature and threshold,
    without the faces of `skip_people` (the outlier-exposure people phase 1 trained on)."""
    images, labels, is_known, inputs = read_calib_split(calib_files, input_size, skip_people)
    out = model.predict(images, batch_size=batch_size, verbose=0)
    result = calibrate_arrays(out[F.OUTPUT_LOGITS], labels, out[F.OUTPUT_KNOWN_PROB], is_known, cfg)
    result.inputs = inputs
    return result
