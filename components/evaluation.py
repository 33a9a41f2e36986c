"""The TFMA EvalConfig: identity metrics and the calibration of P(known), sliced by role.

- identity_probs vs `label`, weighted by `is_known` (unknown faces carry label -1, weight 0).
- known_prob vs `is_known`, unweighted: AUC, AUC-PR, calibration, accuracy, confusion matrix.
  On the test split the overall slice is known vs unknown-unknown faces: never-seen people.
- Value thresholds apply to the overall slice only: a one-class slice (role=known) has AUC 0
  and would block every blessing. Change thresholds compare with the last blessed model.
- Custom metrics (components/metrics.py): ECE, Brier score and FPR at 95% TPR of P(known), and
  OSCR over both outputs (a spec without output names, so it sees identity and P(known)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components import features as F

if TYPE_CHECKING:  # TFMA is heavy: imported only where a config is built
    import tensorflow_model_analysis as tfma

IDENTITY_ACCURACY = "identity_accuracy"
KNOWN_AUC = "auc"
KNOWN_ECE = "ece"  # components.metrics.ECE_NAME; not imported here: metrics imports Beam
METRICS_MODULE = "components.metrics"


@dataclass(frozen=True)
class BlessingThresholds:
    """What the candidate model must reach on the overall test slice to be pushed."""

    min_identity_accuracy: float = 0.5
    min_known_auc: float = 0.6
    max_accuracy_drop: float = 0.05
    """Candidate may be at most this much below the blessed baseline (absolute)."""
    max_auc_drop: float = 0.05
    max_known_ece: float = 0.15
    """ECE of P(known) on the test split at most this (loose: the quality target is 0.05)."""
    max_ece_rise: float = 0.05
    """Candidate's ECE may be at most this much above the blessed baseline's (absolute)."""


def _overall_only(
    bound: float, max_change: float, higher_is_better: bool = True
) -> list[tfma.PerSliceMetricThreshold]:
    """Value and change threshold on the overall slice; `bound` is a floor or a ceiling."""
    import tensorflow_model_analysis as tfma

    if higher_is_better:
        value = tfma.GenericValueThreshold(lower_bound={"value": bound})
        change = tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_change}
        )
    else:
        value = tfma.GenericValueThreshold(upper_bound={"value": bound})
        change = tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER, absolute={"value": max_change}
        )
    return [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec()],
            threshold=tfma.MetricThreshold(value_threshold=value, change_threshold=change),
        )
    ]


def _custom(class_name: str, **config) -> tfma.MetricConfig:
    import tensorflow_model_analysis as tfma

    return tfma.MetricConfig(
        class_name=class_name,
        module=METRICS_MODULE,
        config=json.dumps(config) if config else "",
    )


def make_eval_config(thresholds: BlessingThresholds = BlessingThresholds()) -> tfma.EvalConfig:
    import tensorflow_model_analysis as tfma

    identity_spec = tfma.MetricsSpec(
        output_names=[F.OUTPUT_IDENTITY_PROBS],
        metrics=[
            tfma.MetricConfig(
                class_name="SparseCategoricalAccuracy",
                config=json.dumps({"name": IDENTITY_ACCURACY}),
                per_slice_thresholds=_overall_only(
                    thresholds.min_identity_accuracy, thresholds.max_accuracy_drop
                ),
            ),
            tfma.MetricConfig(
                class_name="SparseTopKCategoricalAccuracy",
                config='{"name": "identity_top3_accuracy", "k": 3}',
            ),
            tfma.MetricConfig(class_name="WeightedExampleCount"),
        ],
    )
    known_spec = tfma.MetricsSpec(
        output_names=[F.OUTPUT_KNOWN_PROB],
        # is_known is a label here, not a weight: every face counts once.
        example_weights=tfma.ExampleWeightOptions(unweighted=True, weighted=False),
        metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(
                class_name="AUC",
                config=json.dumps({"name": KNOWN_AUC}),
                per_slice_thresholds=_overall_only(
                    thresholds.min_known_auc, thresholds.max_auc_drop
                ),
            ),
            tfma.MetricConfig(class_name="AUCPrecisionRecall"),
            tfma.MetricConfig(class_name="Calibration"),
            tfma.MetricConfig(class_name="CalibrationPlot"),
            tfma.MetricConfig(class_name="BinaryAccuracy"),
            tfma.MetricConfig(class_name="ConfusionMatrixPlot"),
            tfma.MetricConfig(class_name="MeanLabel"),
            tfma.MetricConfig(class_name="MeanPrediction"),
            tfma.MetricConfig(
                class_name="ExpectedCalibrationError",
                module=METRICS_MODULE,
                config=json.dumps({"name": KNOWN_ECE}),
                per_slice_thresholds=_overall_only(
                    thresholds.max_known_ece, thresholds.max_ece_rise, higher_is_better=False
                ),
            ),
            _custom("BrierScore"),
            _custom("FPRAtTPR"),
        ],
    )
    # Both outputs at once: which identity (correct or not) and whether it was accepted.
    open_set_spec = tfma.MetricsSpec(
        example_weights=tfma.ExampleWeightOptions(unweighted=True, weighted=False),
        metrics=[_custom("OpenSetClassificationRate")],
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=F.SIGNATURE_EXAMPLES,
                label_keys={
                    F.OUTPUT_IDENTITY_PROBS: F.LABEL_KEY,
                    F.OUTPUT_KNOWN_PROB: F.IS_KNOWN_KEY,
                },
                example_weight_keys={F.OUTPUT_IDENTITY_PROBS: F.IS_KNOWN_KEY},
            )
        ],
        metrics_specs=[identity_spec, known_spec, open_set_spec],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[F.ROLE_KEY])],
    )
