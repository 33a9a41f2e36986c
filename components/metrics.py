"""Custom TFMA metrics for the certainty output, named in the EvalConfig by class and module:

    tfma.MetricConfig(class_name="ExpectedCalibrationError", module="components.metrics")

- ExpectedCalibrationError: ECE of P(known) against is_known, 15 equal-width bins.
- BrierScore: mean squared error of P(known) against is_known.
- FPRAtTPR: false-positive rate (unknown faces accepted) at 95% true-positive rate.
- OpenSetClassificationRate: area under the OSCR curve. It needs both outputs (identity for
  "correct", P(known) for the threshold), so it goes in a MetricsSpec without output_names.

The combiners accumulate plain sums (ECE, Brier) or the scores themselves (FPR@TPR, OSCR: exact,
O(examples) memory, fine for face evaluation sets) and call components.open_set for the figure,
so TFMA, the report and the benchmark share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util

from components import features as F
from components import open_set

ECE_NAME = "ece"
BRIER_NAME = "brier_score"
FPR_AT_TPR_NAME = "fpr_at_95_tpr"
OSCR_NAME = "oscr"
MODULE = __name__


def _per_key(make_combiner):
    """A computations function TFMA calls once per (model, output, sub key)."""

    def computations(
        name: str,
        eval_config=None,
        model_name: str = "",
        output_name: str = "",
        sub_key=None,
        example_weighted: bool = False,
        **options,
    ) -> metric_types.MetricComputations:
        key = metric_types.MetricKey(
            name=name,
            model_name=model_name,
            output_name=output_name,
            sub_key=sub_key,
            example_weighted=example_weighted,
        )
        return [
            metric_types.MetricComputation(
                keys=[key],
                preprocessors=None,
                combiner=make_combiner(key, eval_config, example_weighted, **options),
            )
        ]

    return metric_util.merge_per_key_computations(computations)


class _BinaryCombiner(beam.CombineFn):
    """Base: (P(known), is_known, weight) triples of one output, via TFMA's own lookup."""

    def __init__(self, key: metric_types.MetricKey, eval_config, example_weighted: bool):
        self._key = key
        self._eval_config = eval_config
        self._example_weighted = example_weighted

    def _triples(self, element: metric_types.StandardMetricInputs):
        for label, prediction, weight in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            sub_key=self._key.sub_key,
            example_weighted=self._example_weighted,
            flatten=True,
            require_single_example_weight=True,
        ):
            yield (
                float(metric_util.safe_to_scalar(label)),
                float(metric_util.safe_to_scalar(prediction)),
                float(metric_util.safe_to_scalar(weight)),
            )


class _EceCombiner(_BinaryCombiner):
    def __init__(self, key, eval_config, example_weighted, num_bins: int = open_set.ECE_BINS):
        super().__init__(key, eval_config, example_weighted)
        self._num_bins = int(num_bins)

    def create_accumulator(self) -> np.ndarray:
        return np.zeros((3, self._num_bins))  # weight, sum w*p, sum w*y per bin

    def add_input(self, acc: np.ndarray, element) -> np.ndarray:
        for y, p, w in self._triples(element):
            acc += np.stack(open_set.reliability_bins([p], [y], [w], self._num_bins))
        return acc

    def merge_accumulators(self, accs: Iterable[np.ndarray]) -> np.ndarray:
        return np.sum(list(accs), axis=0)

    def extract_output(self, acc: np.ndarray) -> dict:
        return {self._key: open_set.ece_from_bins(*acc)}


class _BrierCombiner(_BinaryCombiner):
    def create_accumulator(self) -> list[float]:
        return [0.0, 0.0]  # sum w*(p-y)^2, sum w

    def add_input(self, acc: list[float], element) -> list[float]:
        for y, p, w in self._triples(element):
            acc[0] += w * (p - y) ** 2
            acc[1] += w
        return acc

    def merge_accumulators(self, accs: Iterable[list[float]]) -> list[float]:
        accs = list(accs)
        return [sum(a[0] for a in accs), sum(a[1] for a in accs)]

    def extract_output(self, acc: list[float]) -> dict:
        return {self._key: acc[0] / acc[1] if acc[1] > 0 else math.nan}


class _FprAtTprCombiner(_BinaryCombiner):
    """Keeps every (score, is_known): the threshold is an order statistic of the known scores."""

    def __init__(self, key, eval_config, example_weighted, tpr: float = open_set.TARGET_TPR):
        super().__init__(key, eval_config, example_weighted)
        self._tpr = float(tpr)

    def create_accumulator(self) -> list[tuple[float, float]]:
        return []

    def add_input(self, acc, element):
        acc.extend((p, y) for y, p, w in self._triples(element) if w > 0)
        return acc

    def merge_accumulators(self, accs):
        return [pair for acc in accs for pair in acc]

    def extract_output(self, acc) -> dict:
        if not acc:
            return {self._key: math.nan}
        scores, labels = np.asarray(acc).T
        return {self._key: open_set.fpr_at_tpr(scores, labels >= 0.5, self._tpr)}


def _lookup(value: Any, model_name: str, output_name: str) -> np.ndarray:
    """One output out of TFMA's (maybe per-model, per-output) dict of labels or predictions."""
    if isinstance(value, Mapping) and model_name and model_name in value:
        value = value[model_name]
    if isinstance(value, Mapping):
        if output_name not in value:
            raise ValueError(f"output {output_name!r} not found among {sorted(value)}")
        value = value[output_name]
    return np.asarray(value)


class _OscrCombiner(beam.CombineFn):
    """Both outputs of one model: identity (argmax of identity_probs) and P(known)."""

    def __init__(self, key, eval_config, example_weighted, identity_output: str,
                 known_output: str):  # fmt: skip
        self._key = key
        self._identity_output = identity_output
        self._known_output = known_output

    def create_accumulator(self) -> list[tuple[float, bool, bool]]:
        return []  # (P(known), correct identity, is known)

    def add_input(self, acc, element: metric_types.StandardMetricInputs):
        model = self._key.model_name
        probs = _lookup(element.predictions, model, self._identity_output)
        known_prob = _lookup(element.predictions, model, self._known_output)
        label = _lookup(element.labels, model, self._identity_output).reshape(-1)
        # One example per element (TFMA unbatches before metric combiners).
        label = int(label[0])
        is_known = label >= 0
        correct = is_known and int(np.argmax(probs.reshape(-1))) == label
        acc.append((float(known_prob.reshape(-1)[0]), correct, is_known))
        return acc

    def merge_accumulators(self, accs):
        return [row for acc in accs for row in acc]

    def extract_output(self, acc) -> dict:
        if not acc:
            return {self._key: math.nan}
        scores, correct, known = (np.asarray(col) for col in zip(*acc, strict=True))
        return {self._key: open_set.oscr(scores, correct, known)}


class ExpectedCalibrationError(metric_types.Metric):
    """ECE of a binary probability output against its 0/1 label, equal-width bins."""

    def __init__(self, name: str = ECE_NAME, num_bins: int = open_set.ECE_BINS):
        super().__init__(_per_key(_EceCombiner), name=name, num_bins=num_bins)


class BrierScore(metric_types.Metric):
    """Mean of (probability - 0/1 label)^2; lower is better."""

    def __init__(self, name: str = BRIER_NAME):
        super().__init__(_per_key(_BrierCombiner), name=name)


class FPRAtTPR(metric_types.Metric):
    """False-positive rate at the highest threshold reaching `tpr` true-positive rate."""

    def __init__(self, name: str = FPR_AT_TPR_NAME, tpr: float = open_set.TARGET_TPR):
        super().__init__(_per_key(_FprAtTprCombiner), name=name, tpr=tpr)


class OpenSetClassificationRate(metric_types.Metric):
    """Area under correct-classification rate vs false-accept rate (Dhamija et al. 2018).

    Labels come from the identity output's label key (-1 for faces of unknown people).
    """

    def __init__(
        self,
        name: str = OSCR_NAME,
        identity_output: str = F.OUTPUT_IDENTITY_PROBS,
        known_output: str = F.OUTPUT_KNOWN_PROB,
    ):
        super().__init__(
            _per_key(_OscrCombiner),
            name=name,
            identity_output=identity_output,
            known_output=known_output,
        )
