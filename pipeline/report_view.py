"""`facegate report RUN_DIR`: find a run's certainty report and print its headline table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from components.report import REPORT_HTML, REPORT_JSON, REPORT_TYPE, load_report
from components.report_render import headline_rows


class ReportNotFound(FileNotFoundError):
    """RUN_DIR holds no certainty report (and no run to build one from)."""


def find_report(run_dir: str | Path) -> Path:
    """The folder with report.json: RUN_DIR itself, RUN_DIR/report, or the latest
    CertaintyReport artifact in RUN_DIR/metadata.sqlite (a `facegate run` output folder)."""
    run_dir = Path(run_dir)
    for candidate in (run_dir, run_dir / "report"):
        if (candidate / REPORT_JSON).is_file():
            return candidate
    metadata_path = run_dir / "metadata.sqlite"
    if metadata_path.is_file():
        from pipeline.summary import latest_artifact, metadata_store

        artifact = latest_artifact(metadata_store(metadata_path), REPORT_TYPE)
        if artifact is not None and (Path(artifact.uri) / REPORT_JSON).is_file():
            return Path(artifact.uri)
        raise ReportNotFound(
            f"{run_dir}: the run has no {REPORT_TYPE} artifact yet (did the pipeline reach the "
            "CertaintyReport component? re-run `facegate run` with this version)"
        )
    raise ReportNotFound(
        f"{run_dir}: neither a report folder ({REPORT_JSON}) nor a run folder (metadata.sqlite)"
    )


def print_report(report_dir: str | Path, console: Console | None = None) -> dict:
    """Headline table, the scores side by side, then the HTML path; returns the report dict."""
    console = console or Console()
    report = load_report(report_dir)
    head = Table(title="Certainty report (test split)")
    head.add_column("figure")
    head.add_column("value", justify="right")
    for name, value in headline_rows(report):
        head.add_row(name, value)
    console.print(head)
    scores = Table(title="Open-set scores, known vs unknown-unknown faces")
    for col in ("score", "AUROC", "FPR@95TPR", "OSCR"):
        scores.add_column(col, justify="left" if col == "score" else "right")
    for name, s in report["scorers"].items():
        scores.add_row(name, f"{s['auroc']:.3f}", f"{s['fpr_at_95_tpr']:.3f}", f"{s['oscr']:.3f}")
    console.print(scores)
    console.print(f"HTML report: {Path(report_dir).resolve() / REPORT_HTML}", soft_wrap=True)
    return report
