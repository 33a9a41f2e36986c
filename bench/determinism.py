"""What deterministic ops cost: phase-1 training time and run-to-run spread, side by side.

    .venv/bin/python -m bench.determinism --rounds 2 --update-docs docs/BENCHMARKS.md

Each round trains the same short phase 1 (ORL, default protocol, seed 0, 32x32, 3 epochs,
augmentation on) once with `TrainConfig(deterministic=True)` and once without, each in its own
process (op determinism is a process-wide switch), alternating so both modes see the same
machine load. Reported: the median wall time of each mode and the largest difference between
the calib-split logits of two runs of the same mode.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- determinism-benchmark:begin -->", "<!-- determinism-benchmark:end -->"


def train_once(data: Path, deterministic: bool, out: Path) -> None:
    """One short phase 1 in this process; saves the calib-split logits to `out`."""
    from components import model as M
    from components.report import load_split
    from components.training import TrainConfig, seed_everything, train_identity

    cfg = TrainConfig(input_size=32, epochs=3, seed=0, verbose=0, deterministic=deterministic)
    seed_everything(cfg)
    model = M.build_model(M.ModelSpec(num_classes=24, input_size=32, seed=0))
    train_identity(model, [str(data / "train" / "*")], None, cfg)
    faces = load_split(str(data / "calib" / "*"), 32)
    np.save(out, M.logits_model(model).predict(faces.images, verbose=0))


def run(faces: Path, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="facegate-determinism-") as tmp:
        return _run_in(faces, rounds, Path(tmp))


def _run_in(faces: Path, rounds: int, work: Path) -> dict:
    from pipeline.ingest import SplitSpec, ingest

    data = work / "data"
    ingest(faces, data, SplitSpec(num_known=24, num_known_unknown=8, seed=0), progress=False)
    seconds: dict[str, list[float]] = {"deterministic": [], "default": []}
    logits: dict[str, list[np.ndarray]] = {"deterministic": [], "default": []}
    for r in range(rounds):
        for mode in ("deterministic", "default"):
            out = work / f"{mode}{r}.npy"
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "bench.determinism", "--train-once", str(data),
                 "--deterministic", str(mode == "deterministic"), "--out", str(out)],
                check=True, cwd=REPO,
            )  # fmt: skip
            seconds[mode].append(time.perf_counter() - started)
            logits[mode].append(np.load(out))
            print(f"round {r + 1}/{rounds} {mode}: {seconds[mode][-1]:.1f} s", flush=True)
    result = {"rounds": rounds, "load_average": os.getloadavg()[0]}
    for mode in seconds:
        first = logits[mode][0]
        result[mode] = {
            "median_seconds": float(np.median(seconds[mode])),
            "seconds": [round(s, 1) for s in seconds[mode]],
            "max_logit_difference": float(max(np.abs(x - first).max() for x in logits[mode])),
        }
    result["time_ratio"] = (
        result["deterministic"]["median_seconds"] / result["default"]["median_seconds"]
    )
    return result


def markdown(result: dict, command: str) -> str:
    def row(mode: str) -> str:
        r = result[mode]
        each = ", ".join(map(str, r["seconds"]))
        return f"| {mode} | {r['median_seconds']:.1f} ({each}) | {r['max_logit_difference']:.3g} |"

    rows = "\n".join(row(mode) for mode in ("deterministic", "default"))
    return (
        f"{BEGIN}\n## Deterministic training\n\nCommand: `{command}`\n\n"
        "Short phase 1 on ORL (seed 0, 32x32, 3 epochs, augmentation on), each run in its own "
        "process, the two modes alternating; load average at the end "
        f"{result['load_average']:.1f}.\n\n"
        "| ops | median seconds (each run) | largest logit difference between runs |\n"
        f"|---|---|---:|\n{rows}\n\n"
        f"Deterministic / default time: **{result['time_ratio']:.2f}x**.\n{END}\n"
    )


def update_docs(doc: Path, block: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared/data/orl_faces")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--update-docs", type=Path, default=None)
    parser.add_argument("--train-once", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deterministic", default="True", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_once:
        train_once(args.train_once, args.deterministic == "True", args.out)
        return 0
    result = run(args.faces, args.rounds)
    print(json.dumps(result, indent=2))
    if args.update_docs:
        command = (
            f".venv/bin/python -m bench.determinism --rounds {args.rounds} "
            f"--update-docs {args.update_docs}"
        )
        update_docs(args.update_docs, markdown(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
