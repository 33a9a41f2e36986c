"""Terminal rendering of a run summary (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pipeline.summary import RunSummary

# Further TFMA figures of the overall slice, when the EvalConfig computed them.
SHOWN_METRICS = (
    "ece",
    "brier_score",
    "fpr_at_95_tpr",
    "binary_accuracy",
    "auc_precision_recall",
    "calibration",
    "example_count",
)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_console() -> Console:
    """At least 120 columns: piped output (CI logs, `| tee`) would otherwise wrap at 80."""
    probe = Console()
    return Console(width=max(probe.width, 120)) if not probe.is_terminal else probe


def print_run_summary(summary: RunSummary, console: Console | None = None) -> None:
    console = console or summary_console()
    times = Table(title="Components", show_footer=True)
    times.add_column("component", footer="total")
    total = sum(summary.component_seconds.values())
    times.add_column("seconds", justify="right", footer=f"{total:.1f}")
    for name, secs in summary.component_seconds.items():
        times.add_row(name, f"{secs:.1f}")
    console.print(times)

    results = Table(title="Test split (TFMA, overall slice)")
    results.add_column("figure")
    results.add_column("value", justify="right")
    results.add_row("identity top-1, known test faces", _fmt(summary.identity_top1))
    results.add_row("AUROC of P(known), known vs unknown-unknown", _fmt(summary.known_auroc))
    for output, metrics in summary.metrics.items():
        for name in SHOWN_METRICS:
            if name in metrics:
                results.add_row(f"{output}: {name}", _fmt(metrics[name]))
    results.add_row("blessed", str(summary.blessed))
    results.add_row("peak RSS of the run (MB)", _fmt(summary.peak_rss_mb, 0))
    console.print(results)
    print_edge_parity(summary, console)
    # Last and unwrapped, so it can be copied: where TF Serving should look.
    console.print(f"pushed model: {summary.pushed_model_dir or 'not pushed'}", soft_wrap=True)


def print_edge_parity(summary: RunSummary, console: Console) -> None:
    """The EdgeExport parity report, last: which TFLite variants shipped, and why not."""
    if summary.edge_parity_report is None:
        return
    from export.report import parity_table

    console.print(parity_table(summary.edge_parity_report))
