"""Draw the report's PNGs (matplotlib, no display) and write its HTML page."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from components import open_set

PLOTS = {
    "reliability": "reliability.png",
    "roc": "roc.png",
    "det": "det.png",
    "known_prob_hist": "known_prob_hist.png",
    "per_identity": "per_identity_accuracy.png",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display, in Beam workers too
    import matplotlib.pyplot as plt

    return plt


def _reliability(ax, probs, labels, title):
    weight, sum_p, sum_y = open_set.reliability_bins(probs, labels)
    edges = np.linspace(0, 1, open_set.ECE_BINS + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    filled = weight > 0
    acc = np.divide(sum_y, weight, out=np.zeros_like(sum_y), where=filled)
    conf = np.divide(sum_p, weight, out=np.zeros_like(sum_p), where=filled)
    width = 1 / open_set.ECE_BINS
    ax.bar(centers[filled], acc[filled], width=width, edgecolor="k", alpha=0.7, label="observed")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.scatter(conf[filled], acc[filled], s=12, c="C3", zorder=3, label="mean confidence")
    ece = open_set.ece_from_bins(weight, sum_p, sum_y)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="frequency correct / known")
    ax.set_title(f"{title}\nECE {ece:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def write_plots(report, arrays: dict, out_dir: Path) -> dict[str, str]:
    """All PNGs into out_dir; returns {plot name: path}."""
    from scipy.stats import norm

    plt = _plt()
    files = {}
    known = arrays["known"]
    labels = arrays["identity_labels"]

    def save(fig, key):
        path = out_dir / PLOTS[key]
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files[key] = str(path)

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, probs, title in (
        (axes[0], arrays["identity_before"], "identity, before calibration (T = 1)"),
        (axes[1], arrays["identity_after"], f"identity, after (T = {report.temperature:.2f})"),
    ):
        correct = (np.argmax(probs, axis=1) == labels).astype(float)
        _reliability(ax, probs.max(axis=1), correct, title)
    _reliability(axes[2], arrays["known_prob"], known.astype(float), "P(known) vs is known")
    save(fig, "reliability")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    fig_det, ax_det = plt.subplots(figsize=(5.5, 5))
    eps = 1e-3
    for name, s in arrays["scores"].items():
        fpr, tpr, _ = open_set.roc_curve(s, known)
        auc = report.scorers[name].auroc
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
        fnr = 1 - tpr
        ax_det.plot(
            norm.ppf(np.clip(fpr, eps, 1 - eps)), norm.ppf(np.clip(fnr, eps, 1 - eps)), label=name
        )
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false-accept rate (unknown-unknown)", ylabel="true-accept rate (known)")
    ax.set_title("ROC: known vs never-seen people", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, "roc")
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95]
    ax_det.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks], fontsize=7)
    ax_det.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks], fontsize=7)
    ax_det.set(xlabel="false-accept rate", ylabel="false-reject rate")
    ax_det.set_title("DET (normal-deviate axes)", fontsize=10)
    ax_det.legend(fontsize=7)
    ax_det.grid(alpha=0.3)
    save(fig_det, "det")

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 31)
    kp = arrays["known_prob"]
    ax.hist(kp[known], bins=bins, alpha=0.6, label=f"known ({known.sum()})")
    ax.hist(kp[~known], bins=bins, alpha=0.6, label=f"unknown-unknown ({(~known).sum()})")
    ax.axvline(report.threshold, color="k", ls="--", label=f"threshold {report.threshold:.3f}")
    ax.set(xlabel="P(known)", ylabel="test faces")
    ax.set_title(
        f"P(known) on the test split: FAR {report.test_far:.3f} "
        f"(target {report.target_far:.3f}), TAR {report.test_tar:.3f}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    save(fig, "known_prob_hist")

    names = list(report.per_identity_accuracy)
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names) + 2), 4))
    ax.bar(range(len(names)), [report.per_identity_accuracy[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set(ylim=(0, 1.05), ylabel="top-1 accuracy")
    ax.set_title(f"per-identity accuracy (overall {report.identity_top1:.3f})", fontsize=10)
    save(fig, "per_identity")
    return files


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def headline_rows(report) -> list[tuple[str, str]]:
    """(figure, value) rows: the same table in the HTML page and the terminal."""
    r = report if isinstance(report, dict) else report.to_dict()
    neuron = r["scorers"]["certainty_neuron"]
    cal = r.get("calibration") or {}
    return [
        ("identity top-1 (known test faces)", _f(r["identity_top1"])),
        ("AUROC of P(known), known vs unknown-unknown", _f(neuron["auroc"])),
        ("FPR at 95% TPR of P(known)", _f(neuron["fpr_at_95_tpr"])),
        ("OSCR (area)", _f(neuron["oscr"])),
        ("ECE of P(known), 15 bins", _f(r["known_ece"])),
        (
            "ECE of the best sigmoid of the max logit (fitted on test, diagnostic)",
            _f(r.get("known_ece_best_sigmoid")),
        ),
        (
            "ECE expected from sampling noise alone (P(known) perfectly calibrated)",
            _f(r.get("known_ece_if_calibrated")),
        ),
        ("Brier score of P(known)", _f(r["known_brier"])),
        (
            "ECE of identity_probs, before -> after temperature",
            f"{_f(r['identity_ece_before'])} -> {_f(r['identity_ece_after'])}",
        ),
        ("temperature (fitted on calib)", _f(r["temperature"])),
        ("threshold on P(known) (fitted on calib)", _f(r["threshold"], 4)),
        (
            "false-accept rate: test reached / calib / target",
            f"{_f(r['test_far'])} / {_f(cal.get('calib_far'))} / {_f(r['target_far'])}",
        ),
        ("true-accept rate at the threshold (test)", _f(r["test_tar"])),
        (
            "eigenfaces top-1 / AUROC",
            f"{_f(r['eigenfaces_top1'])} / " f"{_f(r['scorers']['eigenfaces']['auroc'])}",
        ),  # fmt: skip
    ]


def write_html(report, out_dir: Path) -> Path:
    r = report.to_dict()
    esc = html.escape
    head = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in headline_rows(r))
    scorer_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{_f(s['auroc'])}</td><td>{_f(s['fpr_at_95_tpr'])}</td>"
        f"<td>{_f(s['oscr'])}</td></tr>"
        for name, s in r["scorers"].items()
    )
    tfma_rows = "".join(
        f"<tr><td>{esc(str(k))}</td><td>{_f(v, 4) if isinstance(v, float) else esc(str(v))}</td>"
        "</tr>"
        for k, v in sorted(r.get("tfma", {}).items())
    )
    images = "".join(
        f'<figure><img src="{esc(Path(p).name)}" alt="{esc(k)}"><figcaption>{esc(k)}'
        "</figcaption></figure>"
        for k, p in r["files"].items()
        if p.endswith(".png")
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facegate report</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>facegate: certainty report</h1>
<p>Model: <code>{esc(r["model_dir"])}</code>. Test split: {r["num_known_test"]} known faces,
{r["num_unknown_test"]} faces of unknown-unknown people (never seen in any role). Temperature
and threshold were fitted on the calib split only.</p>
<h2>Headline</h2><table>{head}</table>
<h2>Open-set scores (same test faces)</h2>
<table><tr><th>score</th><th>AUROC</th><th>FPR at 95% TPR</th><th>OSCR</th></tr>
{scorer_rows}</table>
{"<h2>TFMA (overall slice)</h2><table>" + tfma_rows + "</table>" if tfma_rows else ""}
<h2>Plots</h2>{images}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
