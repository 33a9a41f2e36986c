"""Screen phase-1 variants on one seed: test AUROC of the logit scores, no calibration.

    .venv/bin/python -m bench.screen --seed 0 --name cosine --set head=cosine
    .venv/bin/python -m bench.screen --seed 0 --name cosine_margin \\
        --set head=cosine --set cosine_margin=0.2

Ingests ORL with the default protocol (as bench/quality.py does), runs phase 1 only with the
given TrainConfig overrides, and prints one JSON line: identity top-1 on known test faces and
the AUROC (known vs unknown-unknown test faces) of max softmax, max logit (= the certainty
neuron's ranking) and energy, beside eigenfaces on the same split. About 10 minutes a variant
on 2 cores: a cheap filter before the full 3-seed run of bench/quality.py. The logits of every
split are kept in `<out>/seed<N>/<name>.npz` for offline calibration studies.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_overrides(pairs: list[str]) -> dict:
    """key=value strings -> TrainConfig fields, each value parsed as its field's type."""
    from components.training import TrainConfig

    types = {f.name: type(getattr(TrainConfig(), f.name)) for f in dataclasses.fields(TrainConfig)}
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with a TrainConfig field")
        kind = types[key]
        values[key] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
    return values


def screen(faces: Path, out: Path, seed: int, name: str, overrides: dict) -> dict:
    from components import baselines as B
    from components import features as F
    from components import model as M
    from components import open_set
    from components.report import load_split
    from components.training import TrainConfig, seed_everything, train_identity
    from pipeline.ingest import SplitSpec, ingest_if_changed

    root = out / f"seed{seed}"
    spec = SplitSpec(num_known=24, num_known_unknown=8, seed=seed)
    result, _ = ingest_if_changed(faces, root / "data", spec)
    cfg = TrainConfig(seed=seed, verbose=0, **overrides)
    seed_everything(cfg)
    model = M.build_model(
        M.ModelSpec(
            num_classes=len(result.labels),
            input_size=cfg.input_size,
            weights=cfg.weights,
            dropout=cfg.dropout,
            seed=seed,
            head=cfg.head,
            logit_scale=cfg.logit_scale,
        )
    )
    started = time.time()
    history = train_identity(model, [str(root / "data" / "train" / "*")], None, cfg)
    figures = {
        "name": name,
        "seed": seed,
        "overrides": overrides,
        "phase1_seconds": round(time.time() - started, 1),
        "final_train_accuracy": float(history["accuracy"][-1]),
    }
    logits_of = M.logits_model(model)
    arrays = {}
    for split in F.SPLITS:
        faces_ = load_split(str(root / "data" / split / "*"), cfg.input_size)
        logits = logits_of.predict(faces_.images, batch_size=64, verbose=0)
        arrays |= {f"{split}_logits": logits, f"{split}_labels": faces_.labels}
        arrays |= {f"{split}_roles": faces_.roles}
        if split == F.SPLIT_TRAIN:
            known = faces_.is_known == 1
            eigen = B.Eigenfaces.fit(faces_.images[known], faces_.labels[known])
        if split == F.SPLIT_TEST:
            sel = np.isin(faces_.roles, [F.ROLE_KNOWN, F.ROLE_UNKNOWN_UNKNOWN])
            lg, labels, is_known = logits[sel], faces_.labels[sel], faces_.is_known[sel]
            figures["identity_top1"] = float(
                np.mean(lg[is_known == 1].argmax(1) == labels[is_known == 1])
            )
            for scorer, scores in B.logit_scores(lg).items():
                figures[f"auroc_{scorer}"] = open_set.auroc(scores, is_known)
            _, eigen_scores = eigen.predict(faces_.images[sel])
            figures["auroc_eigenfaces"] = open_set.auroc(eigen_scores, is_known)
    np.savez(root / f"{name}.npz", **arrays)
    with open(root / "screen.jsonl", "a") as f:
        f.write(json.dumps(figures) + "\n")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared/data/orl_faces")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "screen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", required=True, help="Label of the variant in the results.")
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    print(
        json.dumps(screen(args.faces, args.out, args.seed, args.name, parse_overrides(args.pairs)))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
