"""The EvalConfig's custom metrics in a real TFMA run on an exported model (Beam, in-process)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components import data, open_set
from components import features as F
from components.evaluation import make_eval_config


def test_tfma_run_matches_numpy_on_the_models_outputs(tiny_run, tmp_path):
    import tensorflow_model_analysis as tfma

    test_files = str(tiny_run.data_dir / "test" / "*")
    config = make_eval_config()
    for spec in config.metrics_specs:  # no baseline here: thresholds are the Evaluator's job
        for m in spec.metrics:
            m.ClearField("per_slice_thresholds")
    result = tfma.run_model_analysis(
        eval_shared_model=tfma.default_eval_shared_model(
            str(tiny_run.model_dir), eval_config=config
        ),
        eval_config=config,
        data_location=test_files,
        output_path=str(tmp_path / "eval"),
    )
    overall = dict(result.slicing_metrics)[()]

    def metric(output: str, name: str) -> float:
        return overall[output][""][name]["doubleValue"]

    ex = list(data.read_examples(test_files))
    fn = tf.saved_model.load(str(tiny_run.model_dir)).signatures[F.SIGNATURE_IMAGE_BYTES]
    out = fn(image_bytes=tf.constant([e[F.IMAGE_KEY].numpy() for e in ex]))
    labels = np.array([int(e[F.LABEL_KEY]) for e in ex])
    known = labels >= 0
    kp = out[F.OUTPUT_KNOWN_PROB].numpy()
    correct = known & (out[F.OUTPUT_IDENTITY].numpy() == labels)
    assert metric(F.OUTPUT_KNOWN_PROB, "ece") == pytest.approx(open_set.ece(kp, known), abs=1e-6)
    assert metric(F.OUTPUT_KNOWN_PROB, "brier_score") == pytest.approx(
        open_set.brier(kp, known), abs=1e-6
    )
    assert metric(F.OUTPUT_KNOWN_PROB, "fpr_at_95_tpr") == pytest.approx(
        open_set.fpr_at_tpr(kp, known), abs=1e-9
    )
    assert metric("", "oscr") == pytest.approx(open_set.oscr(kp, correct, known), abs=1e-6)
