"""The calibration and open-set report of one exported model on the test split.

    build_report(saved_model_dir, data_patterns, out_dir) -> Report
    out_dir/report.json, report.html and the PNGs next to it (components/report_render.py)

Figures come from running the exported SavedModel itself (so the threshold is the one every
consumer applies) on the test split: known test faces vs unknown-unknown faces (people never
seen in any role). The baselines run on the same logits; eigenfaces are fitted on the known
train faces. The calib figures are the ones the Trainer recorded when it fitted them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components import baselines as B
from components import features as F
from components import open_set

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
# The TFX artifact type (components/report_component.py); KFP v2 wants "<namespace>.<Name>".
REPORT_TYPE = "facegate.CertaintyReport"
CERTAINTY = "certainty_neuron"
SCORERS = (CERTAINTY, B.MSP, B.MAX_LOGIT, B.ENERGY, B.EIGENFACES)


@dataclass
class SplitFaces:
    """Decoded faces of one split, with their labels and roles."""

    images: np.ndarray
    encoded: list[bytes]
    labels: np.ndarray
    is_known: np.ndarray
    roles: np.ndarray


def load_split(patterns: Sequence[str] | str, input_size: int, roles: Sequence[str] | None = None):
    from components import data
    from components.preprocessing import decode_and_resize

    images, encoded, labels, is_known, role_list = [], [], [], [], []
    for ex in data.read_examples(patterns):
        role = ex[F.ROLE_KEY].numpy().decode()
        if roles is not None and role not in roles:
            continue
        encoded.append(ex[F.IMAGE_KEY].numpy())
        images.append(decode_and_resize(ex[F.IMAGE_KEY], input_size).numpy())
        labels.append(int(ex[F.LABEL_KEY]))
        is_known.append(int(ex[F.IS_KNOWN_KEY]))
        role_list.append(role)
    if not images:
        raise ValueError(f"no faces in {patterns} (roles {roles})")
    return SplitFaces(
        np.stack(images).astype(np.float32),
        encoded,
        np.asarray(labels, np.int64),
        np.asarray(is_known, np.int64),
        np.asarray(role_list),
    )


def run_saved_model(saved_model_dir: str | Path, encoded: list[bytes], batch_size: int = 64):
    """serving_image_bytes outputs for every image, as numpy arrays."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model_dir)).signatures[F.SIGNATURE_IMAGE_BYTES]
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(encoded), batch_size):
        out = fn(image_bytes=tf.constant(encoded[start : start + batch_size]))
        for name, value in out.items():
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


@dataclass
class ScoreFigures:
    auroc: float
    fpr_at_95_tpr: float
    oscr: float


@dataclass
class Report:
    """Headline figures (test split unless named calib_*), JSON-serialisable."""

    model_dir: str
    num_known_test: int
    num_unknown_test: int
    identity_top1: float
    threshold: float
    temperature: float
    target_far: float
    test_far: float
    """Unknown-unknown test faces accepted at the threshold."""
    test_tar: float
    """Known test faces accepted at the threshold."""
    known_ece: float
    """ECE of P(known), 15 bins, known vs unknown-unknown test faces."""
    known_brier: float
    known_ece_best_sigmoid: float
    """Diagnostic: ECE of the sigmoid of the max logit fitted (max likelihood) to these test faces
    themselves: about the best the one-neuron certainty head can do on this split. Not a strict
    floor: the fit minimises NLL, not ECE, and ECE is noisy (`known_ece_if_calibrated`)."""
    known_ece_if_calibrated: float
    """Diagnostic: expected ECE of these P(known) values were they perfectly calibrated (labels
    drawn from them): the estimator's sampling noise on this many faces."""
    identity_ece_before: float
    """Top-label ECE of identity_probs on known test faces at temperature 1."""
    identity_ece_after: float
    """... and at the calibrated temperature (what the model outputs)."""
    identity_nll_before: float
    identity_nll_after: float
    scorers: dict[str, ScoreFigures] = field(default_factory=dict)
    eigenfaces_top1: float = math.nan
    per_identity_accuracy: dict[str, float] = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    """What the Trainer recorded: calib FAR / TAR, NLL and ECE before and after, inputs read."""
    tfma: dict = field(default_factory=dict)
    """TFMA's figures for the same model (overall slice), when the report runs after it."""
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))))


def best_sigmoid_ece(max_logits: np.ndarray, is_known: np.ndarray) -> float:
    """ECE of sigmoid(a * x + b) with a, b fitted by max likelihood to (x, is_known) itself.

    The certainty neuron is such a sigmoid of the max logit; the best one for the test faces
    bounds the ECE any calibration on other faces can reach there. Uses the test labels:
    reported as a diagnostic only, never used to choose anything.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(max_logits, np.float64).reshape(-1, 1)
    y = np.asarray(is_known).reshape(-1).astype(int)
    scale = float(x.std()) or 1.0
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(x / scale, y)
    return open_set.ece(fit.predict_proba(x / scale)[:, 1], y)


def compute_report(
    saved_model_dir: str | Path,
    data_patterns: Mapping[str, Sequence[str] | str],
    tfma_metrics: dict | None = None,
) -> tuple[Report, dict]:
    """All figures; also returns the arrays the plots need."""
    from components.exporter import read_model_info

    info = read_model_info(saved_model_dir)
    size = int(info["input_size"])
    labels_names = list(info["labels"])
    test = load_split(data_patterns[F.SPLIT_TEST], size)
    out = run_saved_model(saved_model_dir, test.encoded)
    logits = out[F.OUTPUT_LOGITS].astype(np.float64)
    known_prob = out[F.OUTPUT_KNOWN_PROB].astype(np.float64).reshape(-1)
    threshold = float(out[F.OUTPUT_THRESHOLD][0])  # what the graph applies
    temperature = float(info.get("temperature", 1.0))
    known = test.is_known == 1
    if known.all() or not known.any():
        raise ValueError("the test split needs faces of known and unknown-unknown people")
    pred = out[F.OUTPUT_IDENTITY].astype(np.int64)
    correct = known & (pred == test.labels)

    train = load_split(data_patterns[F.SPLIT_TRAIN], size, roles=[F.ROLE_KNOWN])
    eig = B.Eigenfaces.fit(train.images, train.labels)
    eig_pred, eig_score = eig.predict(test.images)
    scores = {CERTAINTY: known_prob, **B.logit_scores(logits), B.EIGENFACES: eig_score}
    correct_by = {name: correct for name in scores}
    correct_by[B.EIGENFACES] = known & (eig_pred == test.labels)

    k_logits, k_labels = logits[known], test.labels[known]
    before, after = open_set.softmax(k_logits), open_set.softmax(k_logits, temperature)
    per_identity = {}
    for idx, name in enumerate(labels_names):
        members = known & (test.labels == idx)
        if members.any():
            per_identity[name] = float(np.mean(pred[members] == idx))
    cal = info.get("calibration", {})
    report = Report(
        model_dir=str(saved_model_dir),
        num_known_test=int(known.sum()),
        num_unknown_test=int((~known).sum()),
        identity_top1=float(np.mean(pred[known] == test.labels[known])),
        threshold=threshold,
        temperature=temperature,
        target_far=float(cal.get("target_far", math.nan)),
        test_far=open_set.false_accept_rate(known_prob[~known], np.float32(threshold)),
        test_tar=open_set.true_accept_rate(known_prob[known], np.float32(threshold)),
        known_ece=open_set.ece(known_prob, known),
        known_brier=open_set.brier(known_prob, known),
        known_ece_best_sigmoid=best_sigmoid_ece(logits.max(axis=1), known),
        known_ece_if_calibrated=open_set.ece_if_calibrated(known_prob),
        identity_ece_before=open_set.top_label_ece(before, k_labels),
        identity_ece_after=open_set.top_label_ece(after, k_labels),
        identity_nll_before=_nll(before, k_labels),
        identity_nll_after=_nll(after, k_labels),
        scorers={
            name: ScoreFigures(
                auroc=open_set.auroc(s, known),
                fpr_at_95_tpr=open_set.fpr_at_tpr(s, known),
                oscr=open_set.oscr(s, correct_by[name], known),
            )
            for name, s in scores.items()
        },
        eigenfaces_top1=float(np.mean(eig_pred[known] == test.labels[known])),
        per_identity_accuracy=per_identity,
        calibration=cal,
        tfma=dict(tfma_metrics or {}),
    )
    arrays = {
        "known": known,
        "known_prob": known_prob,
        "scores": scores,
        "identity_before": before,
        "identity_after": after,
        "identity_labels": k_labels,
    }
    return report, arrays


def build_report(
    saved_model_dir: str | Path,
    data_patterns: Mapping[str, Sequence[str] | str],
    out_dir: str | Path,
    tfma_metrics: dict | None = None,
) -> Report:
    """Compute the figures, draw the plots and write report.json + report.html to out_dir."""
    from components import report_render

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report, arrays = compute_report(saved_model_dir, data_patterns, tfma_metrics)
    report.files = report_render.write_plots(report, arrays, out_dir)
    report.files["html"] = str(report_render.write_html(report, out_dir))
    report.files["json"] = str(out_dir / REPORT_JSON)
    (out_dir / REPORT_JSON).write_text(json.dumps(report.to_dict(), indent=2, default=float))
    return report


def load_report(path: str | Path) -> dict:
    """report.json (or the folder holding it) -> dict."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    return json.loads(path.read_text())
