"""Outlier exposure keeps some known-unknown people away from phase 1 for calibration.

The people phase 1 flattens cannot set the threshold (it would be far too low for people never
seen); with outlier exposure on, the known-unknown people are split by identity, and phase 2
and the calibration only see the held-out ones.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from components import data, training
from components import features as F


@pytest.fixture(scope="module")
def oe_run(tmp_path_factory):
    from calib_testlib import TINY, build

    cfg = dataclasses.replace(TINY, outlier_exposure=True)
    return build(tmp_path_factory.mktemp("oe_run"), train_config=cfg)


def _count(ds) -> int:
    return sum(1 for _ in ds)


def test_split_is_seeded_disjoint_and_leaves_someone_on_each_side(tiny_run):
    train = [str(tiny_run.data_dir / "train" / "*")]
    everyone = tiny_run.roles[F.ROLE_KNOWN_UNKNOWN]
    cfg = training.TrainConfig(outlier_exposure=True, seed=3)
    first = training.split_outlier_people(train, cfg)
    assert first == training.split_outlier_people(train, cfg)  # seeded
    assert len(first) == len(everyone) // 2 and set(first) < set(everyone)
    for share in (0.01, 0.99):
        some = training.split_outlier_people(
            train, dataclasses.replace(cfg, outlier_exposure_share=share)
        )
        assert 1 <= len(some) <= len(everyone) - 1
    assert training.split_outlier_people(train, training.TrainConfig()) == []  # OE off


def test_outlier_exposure_needs_two_known_unknown_people(tiny_run, tmp_path):
    import tensorflow as tf

    # A train split with a single known-unknown person.
    keep = tiny_run.roles[F.ROLE_KNOWN_UNKNOWN][0]
    path = tmp_path / "train.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for raw in tf.data.TFRecordDataset(
            sorted(str(p) for p in (tiny_run.data_dir / "train").iterdir())
        ):
            ex = tf.io.parse_single_example(raw, data.FEATURE_SPEC)
            if ex[F.ROLE_KEY] != F.ROLE_KNOWN_UNKNOWN or ex[F.IDENTITY_KEY] == keep:
                w.write(raw.numpy())
    cfg = training.TrainConfig(outlier_exposure=True)
    with pytest.raises(ValueError, match="at least 2 known-unknown people"):
        training.split_outlier_people([str(path)], cfg)


def test_image_dataset_leaves_out_the_excluded_people(tiny_run):
    train = str(tiny_run.data_dir / "train" / "*")
    ku = tiny_run.roles[F.ROLE_KNOWN_UNKNOWN]
    per_person = {
        person: sum(1 for ex in data.read_examples(train) if ex[F.IDENTITY_KEY] == person.encode())
        for person in ku
    }
    everyone = _count(data.image_dataset(train, 32, roles=[F.ROLE_KNOWN_UNKNOWN]))
    without = _count(
        data.image_dataset(train, 32, roles=[F.ROLE_KNOWN_UNKNOWN], exclude_identities=ku[:2])
    )
    assert everyone == sum(per_person.values())
    assert without == everyone - per_person[ku[0]] - per_person[ku[1]]


def test_calibration_skips_the_people_phase_1_trained_on(oe_run):
    report = json.loads((oe_run.run_dir / "training_report.json").read_text())
    oe_people = report["outlier_exposure_people"]
    ku = oe_run.roles[F.ROLE_KNOWN_UNKNOWN]
    assert len(oe_people) == len(ku) // 2 and set(oe_people) < set(ku)
    inputs = report["calibration"]["inputs"]
    assert inputs["skipped_people"] == oe_people
    assert not set(inputs["identities"]) & set(oe_people)
    calib = str(oe_run.data_dir / "calib" / "*")
    skipped = sum(
        1 for ex in data.read_examples(calib) if ex[F.IDENTITY_KEY].numpy().decode() in oe_people
    )
    assert skipped > 0 and inputs["skipped_faces"] == skipped
    held_out = len(ku) - len(oe_people)
    assert inputs["role_counts"][F.ROLE_KNOWN_UNKNOWN] == held_out * 2  # 2 calib faces each
    assert report["calibration"]["num_known_unknown"] == held_out * 2
