"""The parity gate: is a TFLite variant close enough to the SavedModel to ship?

Both models see the same decoded test images; `compare()` turns their outputs into figures
(top-1 agreement, max/mean |P(known) difference|, AUROC and ECE of P(known) for both) and
checks them against a ParityGate. Pure numpy; the report is JSON and travels as an artifact.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from export import metrics

REPORT_FILE = "parity_report.json"


@dataclass(frozen=True)
class ParityGate:
    """What a variant must reach against the SavedModel on the test split to be exported."""

    min_agreement: float = 0.99
    """Top-1 identity agreement (argmax of logits), over all test images."""
    max_auroc_diff: float = 0.01
    """|AUROC of P(known), variant - SavedModel|, known vs unknown test faces."""
    max_known_prob_diff: float | None = None
    """Optional bound on max |P(known) difference|; None: not gated, only reported."""

    @classmethod
    def from_dict(cls, data: dict | None) -> ParityGate:
        return cls(**(data or {}))


@dataclass
class VariantParity:
    variant: str
    size_bytes: int
    num_images: int
    agreement: float
    known_prob_max_diff: float
    known_prob_mean_diff: float
    auroc: float
    auroc_reference: float
    auroc_diff: float
    ece: float
    ece_reference: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    size_ratio: float | None = None
    """size_bytes / float32 variant's size_bytes."""
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    file: str | None = None
    """File name of the exported variant (only when it passed)."""

    def to_dict(self) -> dict:
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


def compare(
    variant: str,
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    is_known: np.ndarray,
    gate: ParityGate,
    size_bytes: int = 0,
) -> VariantParity:
    """Figures for one variant from reference and candidate `logits` and `known_prob` outputs."""
    ref_top = np.asarray(reference["logits"]).argmax(axis=-1)
    cand_top = np.asarray(candidate["logits"]).argmax(axis=-1)
    ref_p = np.asarray(reference["known_prob"], np.float64).reshape(-1)
    cand_p = np.asarray(candidate["known_prob"], np.float64).reshape(-1)
    if ref_p.shape != cand_p.shape:
        raise ValueError(f"{variant}: {cand_p.shape[0]} outputs for {ref_p.shape[0]} images")
    max_diff, mean_diff = metrics.abs_diff_stats(ref_p, cand_p)
    auroc_ref = metrics.auroc(ref_p, is_known)
    auroc = metrics.auroc(cand_p, is_known)
    result = VariantParity(
        variant=variant,
        size_bytes=int(size_bytes),
        num_images=int(ref_p.size),
        agreement=metrics.agreement(ref_top, cand_top),
        known_prob_max_diff=max_diff,
        known_prob_mean_diff=mean_diff,
        auroc=auroc,
        auroc_reference=auroc_ref,
        auroc_diff=auroc - auroc_ref,
        ece=metrics.ece(cand_p, is_known),
        ece_reference=metrics.ece(ref_p, is_known),
    )
    apply_gate(result, gate)
    return result


def apply_gate(result: VariantParity, gate: ParityGate) -> VariantParity:
    """Set result.passed and result.failures. NaN AUROC (one-class test set) is not gated."""
    failures = []
    if not result.agreement >= gate.min_agreement:
        failures.append(f"agreement {result.agreement:.4f} < {gate.min_agreement}")
    auroc_diff = _nan(result.auroc_diff)
    if not math.isnan(auroc_diff) and abs(auroc_diff) > gate.max_auroc_diff:
        failures.append(f"|AUROC diff| {abs(auroc_diff):.4f} > {gate.max_auroc_diff}")
    if math.isnan(_nan(result.auroc)) != math.isnan(_nan(result.auroc_reference)):
        failures.append("AUROC defined for only one of variant and SavedModel")
    if gate.max_known_prob_diff is not None and not (
        result.known_prob_max_diff <= gate.max_known_prob_diff
    ):
        failures.append(
            f"max |P(known) diff| {result.known_prob_max_diff:.4f} > {gate.max_known_prob_diff}"
        )
    result.failures = failures
    result.passed = not failures
    return result


@dataclass
class ParityReport:
    model_name: str
    gate: ParityGate
    variants: list[VariantParity] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Variants that failed to convert or run: variant -> message."""
    num_test_images: int = 0
    num_test_known: int = 0
    representative: dict[str, int] = field(default_factory=dict)
    """Calibration images per role, for the int8 variant."""
    reference_latency_p50_ms: float | None = None
    saved_model_dir: str = ""
    blessed: bool = True
    skipped_reason: str | None = None
    pushed_destination: str | None = None

    @property
    def passed(self) -> list[VariantParity]:
        return [v for v in self.variants if v.passed]

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("variants", "gate")}
        data["gate"] = asdict(self.gate)
        data["variants"] = [v.to_dict() for v in self.variants]
        return data

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> ParityReport:
        data = dict(data)
        variants = [
            VariantParity(**{k: (_nan(v) if v is None and k in _FLOAT_FIELDS else v)
                             for k, v in item.items()})
            for item in data.pop("variants", [])
        ]  # fmt: skip
        gate = ParityGate.from_dict(data.pop("gate", None))
        return cls(gate=gate, variants=variants, **data)

    @classmethod
    def read(cls, path: str | Path) -> ParityReport:
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_FILE
        return cls.from_dict(json.loads(path.read_text()))


_FLOAT_FIELDS = {
    "agreement",
    "known_prob_max_diff",
    "known_prob_mean_diff",
    "auroc",
    "auroc_reference",
    "auroc_diff",
    "ece",
    "ece_reference",
}
