"""Terminal rendering of a parity report (rich), for the run summary and the benchmark."""

from __future__ import annotations

from rich.table import Table


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def parity_table(report: dict) -> Table:
    """parity_report.json (as a dict) -> one row per variant, pass/fail and why."""
    gate = report.get("gate", {})
    title = (
        f"Edge export: TFLite vs SavedModel on {report.get('num_test_images', 0)} test images "
        f"(gate: agreement >= {gate.get('min_agreement')}, "
        f"|AUROC diff| <= {gate.get('max_auroc_diff')})"
    )
    table = Table(title=title)
    for name in ("variant", "MB", "x f32", "agree", "max|dP|", "AUROC", "dAUROC", "ECE", "p50 ms"):
        table.add_column(name, justify="left" if name == "variant" else "right")
    table.add_column("exported")
    for v in report.get("variants", []):
        table.add_row(
            v["variant"],
            _f(v["size_bytes"] / 1e6, 1),
            _f(v.get("size_ratio"), 2),
            _f(v.get("agreement"), 4),
            _f(v.get("known_prob_max_diff"), 4),
            _f(v.get("auroc")),
            _f(v.get("auroc_diff"), 4),
            _f(v.get("ece")),
            _f(v.get("latency_p50_ms"), 1),
            "yes" if v.get("passed") else "NO: " + "; ".join(v.get("failures", [])),
        )
    for variant, error in report.get("errors", {}).items():
        table.add_row(variant, *[""] * 8, f"NO: {error}")
    ref = report.get("reference_latency_p50_ms")
    passed = [v for v in report.get("variants", []) if v.get("passed")]
    if report.get("pushed_destination"):
        where = f"pushed to {report['pushed_destination']}"
    else:
        where = "not pushed" if passed else "no variant passed the gate: nothing pushed"
    table.caption = f"SavedModel p50 {_f(ref, 1)} ms (batch 1, in-process); {where}"
    if report.get("skipped_reason"):
        table.caption = f"skipped: {report['skipped_reason']}"
    return table
