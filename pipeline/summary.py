"""What a pipeline run produced, read back from ML Metadata and the TFMA output."""

from __future__ import annotations

import math
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components import evaluation
from components import features as F


@dataclass
class RunSummary:
    output_dir: str
    component_seconds: dict[str, float] = field(default_factory=dict)
    identity_top1: float | None = None
    known_auroc: float | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """output name -> metric name -> value, overall slice of the test split."""
    by_role: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    blessed: bool | None = None
    pushed: bool | None = None
    pushed_model_dir: str | None = None
    model_uri: str | None = None
    evaluation_uri: str | None = None
    peak_rss_mb: float | None = None
    edge_parity_report: dict | None = None
    """parity_report.json of the latest EdgeExport run (None: no edge export in this run)."""
    edge_pushed_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def metadata_store(metadata_path: str | Path):
    import ml_metadata as mlmd
    from tfx.orchestration import metadata

    if not Path(metadata_path).is_file():
        raise FileNotFoundError(f"{metadata_path}: no ML Metadata database (has the run started?)")
    return mlmd.metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(str(metadata_path))
    )


def latest_artifact(store, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _custom_int(artifact, key: str) -> int | None:
    if artifact is None or key not in artifact.custom_properties:
        return None
    return artifact.custom_properties[key].int_value


def _as_float(value) -> float | None:
    if isinstance(value, dict):
        value = value.get("doubleValue", value.get("value"))
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def read_eval_metrics(evaluation_uri: str) -> dict[tuple, dict[str, dict[str, float]]]:
    """TFMA output -> {slice key tuple: {output name: {metric: value}}} for the candidate."""
    import tensorflow_model_analysis as tfma

    out: dict[tuple, dict[str, dict[str, float]]] = {}
    for record in tfma.load_metrics(evaluation_uri):
        key = tuple(
            (sk.column, sk.bytes_value.decode() if sk.bytes_value else sk.int64_value)
            for sk in record.slice_key.single_slice_keys
        )
        for kv in record.metric_keys_and_values:
            mk = kv.key
            if mk.model_name not in ("", "candidate") or mk.HasField("sub_key"):
                continue
            if mk.is_diff:
                continue
            v = kv.value
            if v.HasField("double_value"):
                value = v.double_value.value
            else:
                continue
            out.setdefault(key, {}).setdefault(mk.output_name, {})[mk.name] = value
    return out


def summarize(
    output_dir: str | Path,
    metadata_path: str | Path,
    component_seconds: dict[str, float] | None = None,
) -> RunSummary:
    store = metadata_store(metadata_path)
    summary = RunSummary(output_dir=str(output_dir), component_seconds=component_seconds or {})
    model = latest_artifact(store, "Model")
    summary.model_uri = model.uri if model else None
    evaluation_artifact = latest_artifact(store, "ModelEvaluation")
    if evaluation_artifact is not None:
        summary.evaluation_uri = evaluation_artifact.uri
        metrics = read_eval_metrics(evaluation_artifact.uri)
        summary.metrics = metrics.get((), {})
        summary.by_role = {
            str(dict(k)[F.ROLE_KEY]): v for k, v in metrics.items() if k and k[0][0] == F.ROLE_KEY
        }
        ident = summary.metrics.get(F.OUTPUT_IDENTITY_PROBS, {})
        known = summary.metrics.get(F.OUTPUT_KNOWN_PROB, {})
        summary.identity_top1 = _as_float(ident.get(evaluation.IDENTITY_ACCURACY))
        summary.known_auroc = _as_float(known.get(evaluation.KNOWN_AUC))
    blessing = latest_artifact(store, "ModelBlessing")
    if blessing is not None:
        summary.blessed = _custom_int(blessing, "blessed") == 1
    pushed = latest_artifact(store, "PushedModel")
    if pushed is not None:
        summary.pushed = _custom_int(pushed, "pushed") == 1
        if "pushed_destination" in pushed.custom_properties:
            summary.pushed_model_dir = pushed.custom_properties["pushed_destination"].string_value
    summary.edge_parity_report, summary.edge_pushed_dir = read_edge_export(store)
    summary.peak_rss_mb = peak_rss_mb()
    return summary


def read_edge_export(store) -> tuple[dict | None, str | None]:
    """(parity report, pushed folder) of the latest EdgeExport artifacts, if any."""
    import json

    from components.edge_export import EDGE_MODELS_TYPE, PARITY_REPORT_TYPE, PUSHED_DESTINATION

    report_artifact = latest_artifact(store, PARITY_REPORT_TYPE)
    path = Path(report_artifact.uri) / "parity_report.json" if report_artifact else None
    report = json.loads(path.read_text()) if path is not None and path.is_file() else None
    edge = latest_artifact(store, EDGE_MODELS_TYPE)
    pushed = None
    if edge is not None and PUSHED_DESTINATION in edge.custom_properties:
        pushed = edge.custom_properties[PUSHED_DESTINATION].string_value
    return report, pushed


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB (Linux: KiB)."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kb, child_kb) / 1024.0
