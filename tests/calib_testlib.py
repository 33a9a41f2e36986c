"""A tiny trained facegate run on synthetic faces, shared by the calibration and report tests.

16 people with 6 images each (8 known, 4 known-unknown, 4 unknown-unknown), ingested with the
real protocol, trained at 32x32 for a few epochs through the Trainer's run_fn, so the
calibration, the export and the report all see what a pipeline run would give them.
Built once per session (~1 minute on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from components import training

NUM_PEOPLE = 16
IMAGES_PER_PERSON = 6
NUM_KNOWN = 8
NUM_KNOWN_UNKNOWN = 4
TINY = training.TrainConfig(
    input_size=32, epochs=4, batch_size=8, certainty_epochs=30, augment=False, verbose=0
)


def write_faces(root: Path) -> Path:
    """Folder per person: a per-person smooth colour pattern plus per-image noise (PNG)."""
    for person in range(NUM_PEOPLE):
        rng = np.random.default_rng(100 + person)
        base = rng.uniform(30, 225, (4, 4, 3))
        base = np.kron(base, np.ones((10, 10, 1)))  # 40x40 blocks: easy to tell apart
        folder = root / f"p{person:02d}"
        folder.mkdir(parents=True)
        for i in range(IMAGES_PER_PERSON):
            noise = np.random.default_rng(1000 * person + i).normal(0, 8, base.shape)
            img = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i}.png")
    return root


@dataclass
class TinyRun:
    root: Path
    data_dir: Path
    model_dir: Path
    run_dir: Path
    roles: dict[str, list[str]]
    labels: list[str]
    calib_reads: list  # patterns the calibration was asked to read


def build(
    root: Path,
    monkeypatch_calls: list | None = None,
    train_config: training.TrainConfig = TINY,
) -> TinyRun:
    """Ingest synthetic faces and run the Trainer's run_fn on them."""
    from components import calibration, trainer
    from pipeline.ingest import SplitSpec, ingest

    faces = write_faces(root / "faces")
    data_dir = root / "data"
    result = ingest(
        faces,
        data_dir,
        SplitSpec(num_known=NUM_KNOWN, num_known_unknown=NUM_KNOWN_UNKNOWN),
        progress=False,
    )
    calls: list = [] if monkeypatch_calls is None else monkeypatch_calls
    original = calibration.read_calib_split

    def spy(patterns, input_size, skip_people=()):
        calls.append(list(patterns) if not isinstance(patterns, str) else [patterns])
        return original(patterns, input_size, skip_people)

    calibration.read_calib_split = spy
    try:
        fn_args = SimpleNamespace(
            custom_config={"labels": result.labels, "train_config": train_config.to_dict()},
            train_files=[str(data_dir / "train" / "*")],
            eval_files=[str(data_dir / "calib" / "*")],
            serving_model_dir=str(root / "model" / "Format-Serving"),
            model_run_dir=str(root / "model_run"),
        )
        trainer.run_fn(fn_args)
    finally:
        calibration.read_calib_split = original
    return TinyRun(
        root=root,
        data_dir=data_dir,
        model_dir=Path(fn_args.serving_model_dir),
        run_dir=Path(fn_args.model_run_dir),
        roles=result.roles,
        labels=result.labels,
        calib_reads=calls,
    )
