"""Serving benchmark: in-process SavedModel call vs gRPC Predict vs REST predict, throughput
under concurrency with and without server-side batching, and the server's memory in a swap.

    .venv/bin/python -m bench.serving --update-docs docs/BENCHMARKS.md

(As a module from the repository root: run as a file, this script's own name would shadow the
`serving` package it measures.)

Uses the demo's pushed model (out/demo/serving/facegate/<newest>) when it exists, otherwise an
untrained 64x64, 24-class stand-in of the same architecture (the cost of serving does not depend
on the weights). The server runs as its own process (`facegate serve`), as a user runs it;
clients run in this process, one connection per client thread.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    sys.exit("run from the repository root as a module: .venv/bin/python -m bench.serving")

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402

from components import features as F  # noqa: E402
from serving.client import PredictionClient, RestClient  # noqa: E402
from serving.registry import list_versions  # noqa: E402
from serving.testing import export_untrained, face_image, free_port, push_version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_MODELS = REPO / "out" / "demo" / "serving" / "facegate"
MODEL = "facegate"
BEGIN, END = "<!-- serving-benchmark:begin -->", "<!-- serving-benchmark:end -->"
TARGETS = {"grpc_p50_ratio": 1.15, "batched_throughput_ratio": 0.9, "swap_rss_ratio": 2.2}


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    n: int


def _latency(times_ms: list[float]) -> Latency:
    return Latency(float(np.percentile(times_ms, 50)), float(np.percentile(times_ms, 99)),
                   len(times_ms))  # fmt: skip


def interleaved_latency(calls: dict[str, Callable[[], object]], n: int, warmup: int = 10) -> dict:
    """Time the paths in turn, request by request: each sees the same background load, which
    on a shared machine matters more than any difference between the paths."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: _latency(t) for name, t in times.items()}


def cpu_seconds(pid: int | None = None) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def closed_loop(
    make_client: Callable, clients: int, seconds: float, server_pid: int
) -> tuple[float, int, float]:
    """`clients` threads, each sending its next request when the last one returns.

    Returns requests/s, failed requests, and requests per CPU-second of the server process:
    on a machine shared with other jobs, the CPU share a process gets varies with how many
    threads it runs, so work per CPU-second is the fairer measure of efficiency.
    """
    start_gate, stop = threading.Barrier(clients + 1), threading.Event()
    counts, errors = [0] * clients, [0] * clients
    measuring = threading.Event()

    def worker(i: int) -> None:
        call = make_client()
        call()  # connect and warm up outside the window
        start_gate.wait()
        while not stop.is_set():
            try:
                call()
            except Exception:  # counted and reported; a benchmark must not hide failures
                errors[i] += 1
                continue
            if measuring.is_set():
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    time.sleep(min(2.0, seconds / 4))  # let batches settle into their steady size
    cpu_before = cpu_seconds(server_pid)
    measuring.set()
    begin = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - begin
    cpu_used = cpu_seconds(server_pid) - cpu_before
    stop.set()
    for t in threads:
        t.join(60)
    return sum(counts) / elapsed, sum(errors), sum(counts) / max(cpu_used, 1e-9)


class ServerProcess:
    """`python -m pipeline.cli serve ...` on free ports; stop() returns its log."""

    def __init__(self, base_path: Path, *extra: str):
        self.grpc_port, self.rest_port = free_port(), free_port()
        command = [sys.executable, "-m", "pipeline.cli", "serve", "--model-base-path",
                   str(base_path), "--grpc-port", str(self.grpc_port), "--rest-port",
                   str(self.rest_port), "--poll-seconds", "0.5", *extra]  # fmt: skip
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, text=True
        )
        with PredictionClient(self.grpc_address) as client:
            client.wait_until_available(MODEL, timeout=300)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def rss_bytes(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self._log.seek(0)
        return self._log.read()


def pick_model(work: Path) -> tuple[Path, str]:
    versions = list_versions(DEMO_MODELS)
    if versions:
        newest = max(versions)
        return versions[newest], f"the demo's pushed model ({DEMO_MODELS}/{newest})"
    path = export_untrained(work / "standin", num_classes=24, input_size=64, seed=0)
    return path, "an untrained 64x64, 24-class stand-in (no demo model was pushed yet)"


class InProcess:
    """The SavedModel loaded in this process: the reference every served figure is held to."""

    def __init__(self, model_dir: Path, image: bytes, batch: int):
        self._fn = tf.saved_model.load(str(model_dir)).signatures[F.SIGNATURE_IMAGE_BYTES]
        self._one = tf.constant([image])
        self._batch = tf.constant([image] * batch)
        self.batch = batch
        self.batched()

    def single(self) -> dict:
        return {k: v.numpy() for k, v in self._fn(image_bytes=self._one).items()}

    def batched(self) -> dict:
        return {k: v.numpy() for k, v in self._fn(image_bytes=self._batch).items()}

    def batched_throughput(self, iterations: int) -> tuple[float, float]:
        """(images/s, images per CPU-second of this process)."""
        cpu, start = cpu_seconds(), time.perf_counter()
        for _ in range(iterations):
            self.batched()
        images = self.batch * iterations
        return images / (time.perf_counter() - start), images / (cpu_seconds() - cpu)


def grpc_caller(address: str, image: bytes) -> Callable[[], Callable[[], object]]:
    def make() -> Callable[[], object]:
        client = PredictionClient(address, timeout=60)
        request = client.predict_request(
            {F.INPUT_IMAGE_BYTES: [image]}, signature_name=F.SIGNATURE_IMAGE_BYTES
        )
        return lambda: client.prediction.Predict(request, timeout=60)

    return make


def scrape(server: ServerProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def measure_server(
    server: ServerProcess, local: InProcess, image: bytes, args: argparse.Namespace
) -> dict:
    grpc_client = PredictionClient(server.grpc_address, timeout=60)
    rest = RestClient(f"127.0.0.1:{server.rest_port}", timeout=60)
    try:
        latencies = interleaved_latency(
            {
                "in_process": local.single,
                "grpc": lambda: grpc_client.predict_images([image]),
                "rest": lambda: rest.predict_images(MODEL, [image]),
            },
            args.requests,
        )
    finally:
        grpc_client.close()
        rest.close()
    throughput = {}
    for clients in (1, 8, 32):
        rounds = args.rounds if clients == 32 else 1
        rates, per_cpu, references, ref_per_cpu = [], [], [], []
        errors, batches, rows = 0, 0.0, 0.0
        for _ in range(rounds):
            if clients == 32:  # bracket the served figure with the in-process one
                rate, rate_cpu = local.batched_throughput(args.iterations)
                references.append(rate)
                ref_per_cpu.append(rate_cpu)
            before = scrape(server)
            rate, failed, rate_cpu = closed_loop(
                grpc_caller(server.grpc_address, image), clients, args.seconds, server.proc.pid
            )
            after = scrape(server)
            rates.append(rate)
            per_cpu.append(rate_cpu)
            errors += failed
            batches += after.get("facegate_batches_total", 0) - before.get(
                "facegate_batches_total", 0
            )
            rows += after.get("facegate_batch_rows_total", 0) - before.get(
                "facegate_batch_rows_total", 0
            )
        throughput[clients] = {
            "requests_per_s": float(np.median(rates)),
            "rounds": rates,
            "per_cpu_second": float(np.median(per_cpu)),
            "in_process_batched": float(np.median(references)) if references else None,
            "in_process_batched_per_cpu_second": (
                float(np.median(ref_per_cpu)) if ref_per_cpu else None
            ),
            "errors": errors,
            "mean_batch": rows / batches if batches else None,
        }
    return {**latencies, "throughput": throughput}


def _swap_to(server: ServerProcess, base: Path, model_dir: Path, version: int) -> float:
    """Push `version` (atomically) and wait until it is the only version loaded: seconds."""
    started = time.perf_counter()
    push_version(model_dir, base, version)
    with PredictionClient(server.grpc_address, timeout=60) as client:
        while True:
            states = {s.version: s.state for s in client.status(MODEL)}
            loaded = {v for v, state in states.items() if state != "END"}
            if loaded == {version} and states[version] == "AVAILABLE":
                return time.perf_counter() - started
            time.sleep(0.02)


def measure_swap(
    server: ServerProcess, base: Path, model_dir: Path, image: bytes, more_swaps: int
) -> dict:
    """RSS with one version, its peak while version 2 is swapped in under a client loop, then
    the RSS after each of `more_swaps` further swaps (does unloading give memory back?)."""
    time.sleep(1.0)
    one_version = server.rss_bytes()
    samples, stop, failures, done = [one_version], threading.Event(), [], [0]

    def sample() -> None:
        while not stop.is_set():
            samples.append(server.rss_bytes())
            time.sleep(0.005)

    def load() -> None:
        with PredictionClient(server.grpc_address, timeout=60) as client:
            while not stop.is_set():
                try:
                    client.predict_images([image])
                    done[0] += 1
                except Exception as err:  # reported in the results
                    failures.append(repr(err))

    threads = [threading.Thread(target=sample), threading.Thread(target=load)]
    for t in threads:
        t.start()
    swap_seconds = _swap_to(server, base, model_dir, 2)
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(60)
    after = [server.rss_bytes()]
    for version in range(3, 3 + more_swaps):
        _swap_to(server, base, model_dir, version)
        shutil.rmtree(base / str(version - 2))
        time.sleep(1.0)
        after.append(server.rss_bytes())
    return {
        "one_version_rss_mb": one_version / 2**20,
        "peak_rss_mb": max(samples) / 2**20,
        "after_swaps_rss_mb": [a / 2**20 for a in after],
        "swap_seconds": swap_seconds,
        "requests_during_swap": done[0],
        "failed_during_swap": len(failures),
    }


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    try:
        model_dir, model_note = pick_model(work)
        info = json.loads((model_dir / "assets.extra" / "facegate.json").read_text())
        image = face_image(7, (112, 92), "jpeg")  # ORL-sized face image
        base = work / "models" / MODEL
        base.mkdir(parents=True)
        shutil.copytree(model_dir, base / "1")

        print("in-process reference ...", flush=True)
        local = InProcess(model_dir, image, args.batch)
        print("server with batching ...", flush=True)
        server = ServerProcess(base, "--max-batch-size", str(args.batch))
        try:
            started_rss = server.rss_bytes()
            batching = measure_server(server, local, image, args)
            print("hot swap ...", flush=True)
            swap = measure_swap(server, base, model_dir, image, args.more_swaps)
            swap["started_rss_mb"] = started_rss / 2**20
        finally:
            server.stop()
        for stale in list_versions(base).values():
            shutil.rmtree(stale)
        shutil.copytree(model_dir, base / "1")
        print("server without batching ...", flush=True)
        server = ServerProcess(base, "--no-batching")
        try:
            unbatched = measure_server(server, local, image, args)
        finally:
            server.stop()
        return {
            "model": model_note,
            "input_size": info["input_size"],
            "classes": len(info["labels"]),
            "image": "112x92 JPEG, bytes to signature serving_image_bytes",
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "batching": batching,
            "no_batching": unbatched,
            "swap": swap,
            "args": vars(args),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ratio_line(name: str, value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"| {name} | {value:.2f} | {sign} {target} | {'met' if ok else 'NOT met'} |"


def markdown(r: dict, command: str) -> str:
    batch, plain, swap = r["batching"], r["no_batching"], r["swap"]
    t32 = batch["throughput"][32]
    lines = [
        "## Serving",
        "",
        f"Command: `{command}`",
        "",
        f"Model: {r['model']}; input {r['input_size']}x{r['input_size']}, {r['classes']} "
        f"classes. Request: one {r['image']}. Machine: {r['cpus']} CPU cores shared with "
        f"other jobs (load average {r['load_average'][0]:.1f} at the end of the run); the "
        "server and the clients share those cores, so the figures are noisy. Latency samples "
        "are interleaved (in-process, gRPC, REST, in turn) so that each path sees the same load.",
        "",
        f"Latency at batch 1, {batch['in_process'].n} sequential requests per path after warm-up:",
        "",
        "| server | path | p50 ms | p99 ms | p50 vs in-process |",
        "|---|---|---:|---:|---:|",
    ]
    for label, run in (("batching (default)", batch), ("--no-batching", plain)):
        base = run["in_process"].p50_ms
        for name, key in (("in-process SavedModel call", "in_process"),
                          ("gRPC Predict", "grpc"), ("REST :predict", "rest")):  # fmt: skip
            lat = run[key]
            lines.append(
                f"| {label} | {name} | {lat.p50_ms:.1f} | {lat.p99_ms:.1f} | "
                f"{lat.p50_ms / base:.2f}x |"
            )
    lines += [
        "",
        "Throughput: each client sends its next batch-1 gRPC request when the last returns, "
        f"{r['args']['seconds']:.0f} s per level after a settling period (32 clients: median of "
        f"{r['args']['rounds']} rounds, each right after an in-process run at batch "
        f"{r['args']['batch']}). Mean batch = rows / model calls, from the server's metrics.",
        "",
        "| clients | no batching, req/s | batching, req/s | no batching, req per server "
        "CPU-s | batching, req per server CPU-s | mean batch formed |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in (1, 8, 32):
        a, b = plain["throughput"][clients], batch["throughput"][clients]
        mean = f"{b['mean_batch']:.1f}" if b["mean_batch"] else "-"
        lines.append(
            f"| {clients} | {a['requests_per_s']:.1f} | {b['requests_per_s']:.1f} | "
            f"{a['per_cpu_second']:.1f} | {b['per_cpu_second']:.1f} | {mean} |"
        )
    errors = sum(t["errors"] for s in (batch, plain) for t in s["throughput"].values())
    lines += [
        "",
        f"In-process batched throughput (batch {r['args']['batch']}, median of the rounds): "
        f"{t32['in_process_batched']:.1f} images/s, "
        f"{t32['in_process_batched_per_cpu_second']:.1f} images per CPU-second. 32-client rounds "
        "(req/s), batching: "
        + ", ".join(f"{x:.1f}" for x in t32["rounds"])
        + "; no batching: "
        + ", ".join(f"{x:.1f}" for x in plain["throughput"][32]["rounds"])
        + f". Failed requests under load: {errors}.",
        "",
        "Server memory (RSS of the `facegate serve` process):",
        "",
        "| moment | MB |",
        "|---|---:|",
        f"| one version loaded, idle after start-up | {swap['started_rss_mb']:.0f} |",
        f"| one version loaded, after the load tests | {swap['one_version_rss_mb']:.0f} |",
        f"| peak while version 2 is pushed and swapped in | {swap['peak_rss_mb']:.0f} |",
        f"| 2 s after version 1 was unloaded | {swap['after_swaps_rss_mb'][0]:.0f} |",
        f"| after each of {len(swap['after_swaps_rss_mb']) - 1} more swaps | "
        + ", ".join(f"{mb:.0f}" for mb in swap["after_swaps_rss_mb"][1:])
        + " |",
        "",
        f"Swap: version 2 AVAILABLE and version 1 unloaded {swap['swap_seconds']:.1f} s after "
        f"the push; {swap['requests_during_swap']} requests during the swap, "
        f"{swap['failed_during_swap']} failed. The ratio below uses the after-load figure (the "
        "steady state a swap happens in). TensorFlow's allocator keeps freed memory for reuse, "
        "so RSS does not fall back after an unload; the further swaps show whether it grows.",
        "",
        "Reading the figures: req/s is wall-clock time on contended cores, where the CPU share "
        "a process gets grows with its runnable threads (32 unbatched requests in flight run "
        "32 threads; the batching server runs one model call at a time), so requests per server "
        "CPU-second is the measure of efficiency: compare those columns where batches form "
        "(8 and 32 clients). The p99s mostly show the machine's other jobs.",
        "",
        "| target (issue 4) | measured | target | |",
        "|---|---:|---:|---|",
        _ratio_line(
            "gRPC p50 / in-process p50",
            batch["grpc"].p50_ms / batch["in_process"].p50_ms,
            TARGETS["grpc_p50_ratio"],
            False,
        ),
        _ratio_line(
            "32-client throughput with batching / in-process batched",
            t32["requests_per_s"] / t32["in_process_batched"],
            TARGETS["batched_throughput_ratio"],
            True,
        ),
        _ratio_line(
            "same, per CPU-second: server vs in-process (supplementary)",
            t32["per_cpu_second"] / t32["in_process_batched_per_cpu_second"],
            TARGETS["batched_throughput_ratio"],
            True,
        ),
        _ratio_line(
            "RSS at the swap peak / one-version RSS",
            swap["peak_rss_mb"] / swap["one_version_rss_mb"],
            TARGETS["swap_rss_ratio"],
            False,
        ),
        "",
    ]
    return "\n".join(lines)


def update_docs(path: Path, section: str) -> None:
    """Replace only this benchmark's marked section; append it if it is not there yet."""
    block = f"{BEGIN}\n{section}{END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def load_results(path: Path) -> dict:
    """A --json file back into the shapes markdown() reads (Latency objects, int client keys)."""
    results = json.loads(path.read_text())
    for run_name in ("batching", "no_batching"):
        measured = results[run_name]
        for key in ("in_process", "grpc", "rest"):
            measured[key] = Latency(**measured[key])
        measured["throughput"] = {int(k): v for k, v in measured["throughput"].items()}
    return results


def _jsonable(value: object) -> object:
    return asdict(value) if isinstance(value, Latency) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="Latency samples per path.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Per throughput level.")
    parser.add_argument("--batch", type=int, default=32, help="Max batch size / reference.")
    parser.add_argument("--iterations", type=int, default=8, help="Batched reference calls.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds at 32 clients.")
    parser.add_argument("--more-swaps", type=int, default=3, help="Swaps after the measured one.")
    parser.add_argument("--json", type=Path, default=None, help="Also write raw results here.")
    parser.add_argument("--update-docs", type=Path, default=None, help="BENCHMARKS.md to update.")
    parser.add_argument(
        "--render", type=Path, default=None, help="Re-render the section from a --json file."
    )
    args = parser.parse_args()
    if args.render:
        results = load_results(args.render)
    else:
        results = run(args)
        results["command"] = (".venv/bin/python -m bench.serving " + " ".join(sys.argv[1:])).strip()
    section = markdown(results, results["command"])
    print(section)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        serializable = json.loads(json.dumps(results, default=_jsonable))
        args.json.write_text(json.dumps(serializable, indent=2))
    if args.update_docs:
        update_docs(args.update_docs, section)


if __name__ == "__main__":
    main()
