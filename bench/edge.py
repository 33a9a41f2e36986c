"""Edge benchmark: every TFLite variant against the SavedModel, all measured in one run.

    .venv/bin/python -m bench.edge --update-docs docs/BENCHMARKS.md

Per variant: size (and ratio to float32), p50/p99 latency at batch 1 with 1 and 2 threads,
top-1 agreement, max |P(known) difference|, AUROC and ECE of P(known) on the test split, and
whether it passes the default parity gate. The reference is the SavedModel's serving_image
signature called in-process (in a child process per thread count, since TensorFlow fixes its
thread pools once per process). Then the edge runtime's peak RSS in a fresh process that
imports only the runtime, loads the model and makes 100 predictions from image files, and the
same files through the edge runtime (Pillow) and the SavedModel (TF decoding).

Uses the demo's pushed model (out/demo/serving/facegate/<newest>) and its ingested data
(out/demo/data) when they exist; otherwise an untrained 64x64, 24-class stand-in of the same
architecture on the ORL ingest in out/exp/data (sizes and latencies hold, parity figures of an
untrained network do not), and says so in the output.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    sys.exit("run from the repository root as a module: .venv/bin/python -m bench.edge")

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_SERVING = REPO / "out" / "demo" / "serving" / "facegate"
DEMO_DATA = REPO / "out" / "demo" / "data"
FALLBACK_DATA = REPO / "out" / "exp" / "data"
BEGIN, END = "<!-- edge-benchmark:begin -->", "<!-- edge-benchmark:end -->"
THREADS = (1, 2)
TARGETS = {
    "int8 size / float32 size": 0.26,
    "int8 p50 / SavedModel p50": 0.35,
    "edge runtime peak RSS, int8 (MB)": 150.0,
}


def newest_version(base: Path) -> Path | None:
    if not base.is_dir():
        return None
    versions = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def stand_in_model(folder: Path, labels: list[str]) -> Path:
    from components.exporter import export_saved_model
    from components.model import ModelSpec, build_model

    model = build_model(ModelSpec(num_classes=len(labels), input_size=64, weights="none"))
    return export_saved_model(model, labels, folder / "stand_in")


def latency_child(saved_model: str, tflite_dir: str, threads: int, runs: int) -> None:
    """Child-process mode: time the SavedModel and every .tflite in tflite_dir at batch 1 with
    `threads` threads, round-robin (one call of each per round), so load from other jobs on a
    shared machine falls on all of them alike. Prints JSON {name: {p50, p99}}."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from components import features as F
    from components.exporter import read_model_info
    from export.metrics import percentile_ms
    from export.runtime import EdgeOptions, load

    size = int(read_model_info(saved_model)["input_size"])
    image = np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32)[None]
    fn = tf.saved_model.load(saved_model).signatures[F.SIGNATURE_IMAGE]
    batch = tf.constant(image)
    calls = {"saved_model": lambda: fn(**{F.INPUT_IMAGE: batch})[F.OUTPUT_KNOWN_PROB].numpy()}
    for path in sorted(Path(tflite_dir).glob("*.tflite")):
        model = load(path, EdgeOptions(num_threads=threads))
        variant = model.info.variant
        calls[variant] = lambda m=model: m.run(image)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(10):
        for call in calls.values():
            call()
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    out = {n: {"p50": percentile_ms(t, 50), "p99": percentile_ms(t, 99)} for n, t in times.items()}
    print(json.dumps(out))


def latencies(saved_model: Path, tflite_dir: Path, threads: int, runs: int) -> dict:
    cmd = [sys.executable, "-m", "bench.edge", "--latency-child", str(saved_model),
           str(tflite_dir), "--threads", str(threads), "--runs", str(runs)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


RSS_SCRIPT = """
import json, sys, time
def status_mb(field):
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
def rss_mb():
    return status_mb("VmRSS")
start = rss_mb()
from export.runtime import load
model = load(sys.argv[1])
loaded = rss_mb()
images = sys.argv[2:]
if not images:
    sys.exit("no image files given")
t0 = time.perf_counter()
done = 0
while done < 100:
    for p in model.predict(images[: 100 - done]):
        done += 1
seconds = time.perf_counter() - t0
print(json.dumps({
    "start_mb": start, "after_load_mb": loaded, "after_100_mb": rss_mb(),
    "peak_mb": status_mb("VmHWM"),
    "predictions": done, "seconds": seconds,
    "tensorflow_imported": "tensorflow" in sys.modules,
}))
"""


def edge_rss(tflite: Path, images: list[Path]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(tflite), *map(str, images)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_test_files(test_patterns: str, folder: Path, limit: int) -> list[Path]:
    """The test split's encoded images as files, as a device would receive them."""
    from components import features as F
    from components.data import read_examples

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ex in enumerate(read_examples(test_patterns).take(limit).as_numpy_iterator()):
        fmt = ex[F.IMAGE_KEY][:4] == b"\x89PNG" and "png" or "jpg"
        path = folder / f"test_{i:04d}.{fmt}"
        path.write_bytes(ex[F.IMAGE_KEY])
        paths.append(path)
    return paths


def files_parity(tflite: Path, saved_model: Path, files: list[Path]) -> dict:
    """Image files: edge runtime (Pillow decoding) vs the SavedModel's image-bytes signature."""
    import tensorflow as tf

    from components import features as F
    from export.runtime import load

    serve = tf.saved_model.load(str(saved_model)).signatures[F.SIGNATURE_IMAGE_BYTES]
    expected = serve(**{F.INPUT_IMAGE_BYTES: tf.constant([p.read_bytes() for p in files])})
    got = load(tflite).predict(files)
    ids = np.array([p.best_index for p in got])
    probs = np.array([p.known_prob for p in got])
    known = np.array([p.is_known for p in got])
    return {
        "images": len(files),
        "identity_agreement": float(np.mean(ids == expected[F.OUTPUT_IDENTITY].numpy())),
        "is_known_agreement": float(np.mean(known == expected[F.OUTPUT_IS_KNOWN].numpy())),
        "known_prob_max_diff": float(np.max(np.abs(probs - expected[F.OUTPUT_KNOWN_PROB]))),
    }


def run(args) -> dict:
    from components.exporter import read_model_info
    from export.builder import EdgeExportConfig, build_edge_models, tflite_name
    from export.parity import ParityGate, apply_gate

    work = Path(tempfile.mkdtemp(prefix="facegate-edge-bench-"))
    load_before = os.getloadavg()[0]
    try:
        saved_model = args.saved_model or newest_version(DEMO_SERVING)
        data = args.data or (DEMO_DATA if saved_model is not None else FALLBACK_DATA)
        stand_in = saved_model is None
        if stand_in:
            labels = (data / "labels.txt").read_text().split()
            saved_model = stand_in_model(work, labels)
        info = read_model_info(saved_model)
        train, test = str(data / "train" / "*"), str(data / "test" / "*")

        # Keep every variant (gate open), then judge each against the default gate.
        open_gate = {"min_agreement": 0.0, "max_auroc_diff": 1.0}
        config = EdgeExportConfig.from_dict({"gate": open_gate, "latency_runs": 0})
        t0 = time.perf_counter()
        report = build_edge_models(saved_model, train, test, work / "edge", "facegate", "", config)
        build_seconds = time.perf_counter() - t0
        gate = ParityGate()
        for v in report.variants:
            apply_gate(v, gate)

        size = int(info["input_size"])
        timed = {str(t): latencies(Path(saved_model), work / "edge", t, args.runs) for t in THREADS}
        reference = {t: by_name["saved_model"] for t, by_name in timed.items()}
        rows = []
        for v in report.variants:
            latency = {t: by_name[v.variant] for t, by_name in timed.items()}
            rows.append({**v.to_dict(), "latency": latency, "passes_default_gate": v.passed})

        files = write_test_files(test, work / "files", args.files)
        int8 = work / "edge" / tflite_name("facegate", "int8")
        f32 = work / "edge" / tflite_name("facegate", "float32")
        rss = {"int8": edge_rss(int8, files), "float32": edge_rss(f32, files)}
        from_files = {"int8": files_parity(int8, Path(saved_model), files),
                      "float32": files_parity(f32, Path(saved_model), files)}  # fmt: skip
        return {
            "saved_model": str(saved_model),
            "stand_in": stand_in,
            "data": str(data),
            "labels": len(info["labels"]),
            "input_size": size,
            "test_images": report.num_test_images,
            "test_known": report.num_test_known,
            "representative": report.representative,
            "errors": report.errors,
            "build_seconds": build_seconds,
            "runs": args.runs,
            "reference": reference,
            "variants": rows,
            "rss": rss,
            "rss_files": len(files),
            "from_files": from_files,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, 1-min load average {load_before:.1f} at start and "
            f"{os.getloadavg()[0]:.1f} at end",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(r: dict, command: str) -> str:
    rows = {v["variant"]: v for v in r["variants"]}
    ref = r["reference"]
    lines = [
        "## Edge (TFLite) export",
        "",
        f"Command: `{command}` (one run; {r['runs']} timed batch-1 calls per figure after 10 "
        f"warm-up calls, round-robin over the SavedModel and the variants in one process per "
        f"thread count; {r['machine']}, shared with other jobs).",
        "",
    ]
    if r["stand_in"]:
        lines += [
            "**Stand-in model**: no demo model was found, so this is an *untrained* "
            f"{r['input_size']}x{r['input_size']}, {r['labels']}-class model of the same "
            f"architecture on {r['data']}. Sizes, latencies and memory hold for the demo model; "
            "the parity figures of an untrained network (features nearly constant across "
            "faces) do not.",
            "",
        ]
    else:
        lines += [f"Model: `{r['saved_model']}` ({r['labels']} identities, "
                  f"{r['input_size']}x{r['input_size']}); data: `{r['data']}`.", ""]  # fmt: skip
    lines += [
        f"Parity on the test split: {r['test_images']} images ({r['test_known']} known, the rest "
        f"unknown-unknown). int8 calibration: {r['representative']} train images.",
        "",
        "| variant | size MB | x float32 | p50 / p99 ms, 1 thread | p50 / p99 ms, 2 threads "
        "| top-1 agreement | max \\|dP(known)\\| | AUROC (diff) | ECE | default gate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, v in rows.items():
        lat = v["latency"]
        lines.append(
            f"| {name} | {v['size_bytes'] / 1e6:.1f} | {_f(v['size_ratio'], 2)} "
            f"| {_f(lat['1']['p50'], 2)} / {_f(lat['1']['p99'], 2)} "
            f"| {_f(lat['2']['p50'], 2)} / {_f(lat['2']['p99'], 2)} "
            f"| {_f(v['agreement'], 4)} | {_f(v['known_prob_max_diff'], 4)} "
            f"| {_f(v['auroc'])} ({v['auroc_diff']:+.4f}) | {_f(v['ece'])} "
            f"| {'pass' if v['passes_default_gate'] else 'FAIL: ' + '; '.join(v['failures'])} |"
        )
    any_v = next(iter(rows.values()))
    lines.append(
        f"| SavedModel (reference) | | | {_f(ref['1']['p50'], 2)} / {_f(ref['1']['p99'], 2)} "
        f"| {_f(ref['2']['p50'], 2)} / {_f(ref['2']['p99'], 2)} | 1 | 0 "
        f"| {_f(any_v['auroc_reference'])} | {_f(any_v['ece_reference'])} | |"
    )
    for variant, error in r["errors"].items():
        lines.append(f"| {variant} | conversion failed: {error} |||||||||")
    rss = r["rss"]
    lines += [
        "",
        "Edge runtime memory (fresh process: import the runtime, load, 100 predictions from "
        f"{r['rss_files']} image files, cycled; TensorFlow "
        "imported: "
        f"{'yes' if any(x['tensorflow_imported'] for x in rss.values()) else 'no'}):",
        "",
        "| model | RSS at start MB | after load MB | peak MB | 100 predictions s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, x in rss.items():
        lines.append(
            f"| {name} | {x['start_mb']:.0f} | {x['after_load_mb']:.0f} | {x['peak_mb']:.0f} "
            f"| {x['seconds']:.2f} |"
        )
    lines += [
        "",
        "Image files end to end, edge runtime (Pillow decode + resize) vs SavedModel "
        "(`serving_image_bytes`, TF decode + resize):",
        "",
        "| model | images | identity agreement | is_known agreement | max \\|dP(known)\\| |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, x in r["from_files"].items():
        lines.append(
            f"| {name} | {x['images']} | {x['identity_agreement']:.4f} "
            f"| {x['is_known_agreement']:.4f} | {x['known_prob_max_diff']:.4f} |"
        )
    lines += ["", *NOTE.splitlines(), "", "Targets (issue 3):", ""]
    for name, ok, value, target in check_targets(r):
        lines.append(f"- {name}: {value} (target {target}): {'met' if ok else 'NOT met'}")
    lines.append("")
    return "\n".join(lines)


NOTE = """Reading the figures: latencies are batch 1 on contended cores, so compare rows (measured
round-robin, under the same load) rather than absolute values. int8 uses TFLite's legacy
calibration quantizer: with TF 2.16's default MLIR quantizer the int8 demo model agreed with the
SavedModel on 11% of test faces (its BGR swap changes scale without rescaling; docs/EDGE.md).
"""


def check_targets(r: dict) -> list[tuple[str, bool, str, str]]:
    rows = {v["variant"]: v for v in r["variants"]}
    out = []
    if "int8" in rows:
        int8 = rows["int8"]
        ratio = int8["size_ratio"]
        out.append(("int8 size / float32 size", ratio <= 0.26, f"{ratio:.3f}", "<= 0.26"))
        for t in THREADS:
            x = int8["latency"][str(t)]["p50"] / r["reference"][str(t)]["p50"]
            out.append((f"int8 p50 / SavedModel p50, {t} thread(s)", x <= 0.35, f"{x:.3f}",
                        "<= 0.35"))  # fmt: skip
        rss = r["rss"]["int8"]["peak_mb"]
        out.append(("edge runtime peak RSS, int8", rss <= 150, f"{rss:.0f} MB", "<= 150 MB"))
    for name, v in rows.items():
        out.append((f"{name} top-1 agreement", v["agreement"] >= 0.99, f"{v['agreement']:.4f}",
                    ">= 0.99"))  # fmt: skip
        d = abs(v["auroc_diff"]) if v["auroc_diff"] is not None else float("nan")
        out.append((f"{name} |AUROC diff|", d <= 0.01, f"{d:.4f}", "<= 0.01"))
    return out


def update_docs(path: Path, section: str) -> None:
    """Replace this benchmark's block in path, leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    block = f"{BEGIN}\n{section}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saved-model", type=Path, help="SavedModel dir (default: demo push)")
    parser.add_argument("--data", type=Path, help="Ingested TFRecords (train/, test/)")
    parser.add_argument("--runs", type=int, default=200, help="Timed calls per latency figure")
    parser.add_argument("--files", type=int, default=40, help="Test images written as files")
    parser.add_argument("--json", type=Path, help="Also write the raw figures here")
    parser.add_argument("--update-docs", type=Path, help="Replace the edge section of this file")
    parser.add_argument("--latency-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency_child:
        latency_child(*args.latency_child, args.threads, args.runs)
        return
    result = run(args)
    command = ".venv/bin/python -m bench.edge" + (
        f" --update-docs {args.update_docs}" if args.update_docs else ""
    )
    section = markdown(result, command)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.update_docs:
        update_docs(args.update_docs, section)


if __name__ == "__main__":
    main()
