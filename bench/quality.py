"""Quality figures of the certainty neuron on ORL, over several seeds -> docs/QUALITY.md.

    .venv/bin/python -m bench.quality --faces ../shared/data/orl_faces --seeds 0 1 2
    .venv/bin/python -m bench.quality --faces ../shared/data/orl_faces --seeds 0 1 2 \
        --variant no_mixed_outliers
    .venv/bin/python -m bench.quality --write-only     # rebuild the doc from finished runs
    .venv/bin/python -m bench.quality --rereport       # ... after recomputing their reports

Each seed: ingest with the default protocol (24 known, 8 known-unknown, 8 unknown-unknown
people; 6 train / 2 calib / 2 test images per person), the Trainer's run_fn with default
settings (phase 1, phase 2, calibration on the calib split, export), then the report on the
test split. The same code paths as the TFX pipeline, without the TFX components around them.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

CERTAINTY = "certainty_neuron"
REPO = Path(__file__).resolve().parents[1]
# TrainConfig overrides of each variant; "default" is TrainConfig() as it stands.
VARIANTS = {
    "default": {},
    "no_mixed_outliers": {"mixed_outliers": 0.0},
    "outlier_exposure": {"outlier_exposure": True},
}


def run_seed(faces: Path, out: Path, seed: int, variant: str) -> dict:
    from components import trainer
    from components.training import TrainConfig
    from pipeline.ingest import SplitSpec, ingest

    run_dir = out / variant / f"seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    data = run_dir / "data"
    result = ingest(
        faces, data, SplitSpec(num_known=24, num_known_unknown=8, seed=seed), progress=False
    )
    cfg = TrainConfig(seed=seed, verbose=0, **VARIANTS[variant])
    started = time.time()
    trainer.run_fn(
        SimpleNamespace(
            custom_config={"labels": result.labels, "train_config": cfg.to_dict()},
            train_files=[str(data / "train" / "*")],
            eval_files=[str(data / "calib" / "*")],
            serving_model_dir=str(run_dir / "model"),
            model_run_dir=str(run_dir / "model_run"),
        )
    )
    seconds = time.time() - started
    return write_report(run_dir, seconds)


def write_report(run_dir: Path, train_seconds: float) -> dict:
    """Report of one seed's model on its test split, with the training time beside it."""
    from components.report import build_report

    data = run_dir / "data"
    patterns = {split: str(data / split / "*") for split in ("train", "calib", "test")}
    report = build_report(run_dir / "model", patterns, run_dir / "report").to_dict()
    report["train_seconds"] = train_seconds
    (run_dir / "report" / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def rereport(out: Path) -> None:
    """Rebuild every finished seed's report from its saved model (after the report changed)."""
    for path in sorted(out.glob("*/seed*/report/report.json")):
        seconds = json.loads(path.read_text())["train_seconds"]
        write_report(path.parents[1], seconds)
        print(f"rebuilt {path}", flush=True)


def _ms(values: list[float], digits: int = 3) -> str:
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _rows(reports: list[dict]) -> list[tuple[str, str]]:
    get = lambda key: [r[key] for r in reports]  # noqa: E731
    rows = [("identity top-1 (known test faces)", _ms(get("identity_top1")))]
    for name in reports[0]["scorers"]:
        rows.append(
            (
                f"AUROC / FPR@95TPR: {name}",
                f"{_ms([r['scorers'][name]['auroc'] for r in reports])} / "
                f"{_ms([r['scorers'][name]['fpr_at_95_tpr'] for r in reports])}",
            )
        )
    rows += [
        ("OSCR: certainty neuron", _ms([r["scorers"][CERTAINTY]["oscr"] for r in reports])),
        ("eigenfaces top-1", _ms(get("eigenfaces_top1"))),
        ("ECE of P(known) (test, 15 bins)", _ms(get("known_ece"))),
        ("ECE of the best sigmoid of the max logit, fitted on test (diagnostic)",
         _ms([r.get("known_ece_best_sigmoid", float("nan")) for r in reports])),
        ("ECE expected from sampling noise alone (P(known) perfectly calibrated)",
         _ms([r.get("known_ece_if_calibrated", float("nan")) for r in reports])),
        ("Brier score of P(known)", _ms(get("known_brier"))),
        ("ECE of identity_probs before calibration (T = 1)", _ms(get("identity_ece_before"))),
        ("ECE of identity_probs after calibration", _ms(get("identity_ece_after"))),
        ("fitted temperature", _ms(get("temperature"), 2)),
        ("threshold on P(known)", _ms(get("threshold"), 4)),
        ("false-accept rate reached on test (target)",
         f"{_ms(get('test_far'))} (target {reports[0]['target_far']:.3f})"),
        ("false-accept rate on calib", _ms([r["calibration"]["calib_far"] for r in reports])),
        ("true-accept rate at the threshold (test)", _ms(get("test_tar"))),
        ("training + calibration + export, seconds", _ms(get("train_seconds"), 0)),
    ]  # fmt: skip
    return rows


def write_doc(out: Path, doc: Path, command: str) -> None:
    sections = []
    for variant in VARIANTS:
        paths = sorted((out / variant).glob("seed*/report/report.json"))
        if not paths:
            continue
        reports = [json.loads(p.read_text()) for p in paths]
        seeds = ", ".join(p.parts[-3].removeprefix("seed") for p in paths)
        table = "\n".join(f"| {k} | {v} |" for k, v in _rows(reports))
        per_seed = "\n".join(
            f"| {p.parts[-3]} | {r['identity_top1']:.3f} | "
            f"{r['scorers']['certainty_neuron']['auroc']:.3f} | "
            f"{r['scorers']['eigenfaces']['auroc']:.3f} | {r['known_ece']:.3f} | "
            f"{r.get('known_ece_best_sigmoid', float('nan')):.3f} | "
            f"{r.get('known_ece_if_calibrated', float('nan')):.3f} | "
            f"{r['threshold']:.3f} | {r['calibration']['calib_far']:.3f} | {r['test_far']:.3f} |"
            for p, r in zip(paths, reports, strict=True)
        )
        sections.append(
            f"## {variant} (seeds {seeds}; mean ± sample std)\n\n| figure | value |\n|---|---|\n"
            f"{table}\n\n| seed | top-1 | AUROC neuron | AUROC eigenfaces | ECE P(known) | "
            f"ECE best sigmoid | ECE noise | threshold | calib FAR | test FAR |\n"
            f"|---|---|---|---|---|---|---|---|---|---|\n{per_seed}\n"
        )
    doc.parent.mkdir(parents=True, exist_ok=True)
    existing = doc.read_text() if doc.exists() else ""
    marker = "<!-- bench/quality.py output -->"
    intro = existing.split(marker)[0] if marker in existing else _INTRO.format(command=command)
    doc.write_text(intro + marker + "\n\n" + "\n".join(sections))


_INTRO = """# Quality figures on ORL

Produced by `bench/quality.py` (command below), 64x64, default TrainConfig and calibration
settings, ORL faces split by the default protocol: 24 known, 8 known-unknown and
8 unknown-unknown people; per known / known-unknown person 6 train, 2 calib, 2 test images;
all 10 images of each unknown-unknown person in the test split. Test split: 48 known faces,
80 faces of people never seen in any role.

    {command}

"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared/data/orl_faces")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "quality")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "QUALITY.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    parser.add_argument("--write-only", action="store_true", help="Only rebuild the doc.")
    parser.add_argument(
        "--rereport", action="store_true", help="Rebuild finished seeds' reports, then the doc."
    )
    args = parser.parse_args(argv)
    command = (
        ".venv/bin/python -m bench.quality --faces ../shared/data/orl_faces --seeds 0 1 2"
        " [--variant NAME]"
    )
    if args.rereport:
        rereport(args.out)
    elif not args.write_only:
        variant = args.variant
        for seed in args.seeds:
            report = run_seed(args.faces, args.out, seed, variant)
            neuron = report["scorers"]["certainty_neuron"]
            print(
                f"[{variant} seed {seed}] top-1 {report['identity_top1']:.3f} "
                f"AUROC {neuron['auroc']:.3f} ECE {report['known_ece']:.3f} "
                f"FAR {report['test_far']:.3f} ({report['train_seconds']:.0f}s)",
                flush=True,
            )
            write_doc(args.out, args.doc, command)
    write_doc(args.out, args.doc, command)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
