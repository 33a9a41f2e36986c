"""Server-side batching: merge concurrent requests for the same model version and signature.

The parameters are TF Serving's (`--enable_batching` with a batching parameters file):

- `max_batch_size`: most rows in one model call;
- `batch_timeout_micros`: how long the oldest request may wait for company. TF Serving's guide
  starts CPU servers at 0: a batch is whatever queued up while the model was busy, so a lone
  request never waits, and under load batches fill up by themselves;
- `num_batch_threads`: model calls running at once (one call already uses every core);
- `max_enqueued_batches`: queue bound; beyond it requests fail fast with UNAVAILABLE.

If a merged call fails (one request carries an undecodable image, say), each request in it is
re-run on its own, so a bad request fails alone and its neighbours still get their answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import grpc
import numpy as np

from serving.errors import ServingError, unavailable

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Runner = Callable[[Mapping[str, np.ndarray]], Arrays]


@dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = 32
    """Most rows merged into one model call; a request larger than this runs on its own."""
    batch_timeout_micros: int = 0
    """Longest wait of the oldest queued request for others to join its batch."""
    num_batch_threads: int = 1
    """Model calls in flight at once."""
    max_enqueued_batches: int = 16
    """Queue bound, in batches of max_batch_size rows; past it requests get UNAVAILABLE."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
            raise ValueError(f"batching parameters must be positive: {self}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0: {self}")


@dataclass
class _Task:
    key: Hashable
    runner: Runner
    inputs: Mapping[str, np.ndarray]
    size: int
    deadline: float | None
    future: Future


class BatchScheduler:
    """A queue of requests and the threads that run them in merged batches."""

    def __init__(self, params: BatchingParameters | None = None):
        self.params = params or BatchingParameters()
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self.rows_run = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(self.params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        key: Hashable,
        runner: Runner,
        inputs: Mapping[str, np.ndarray],
        size: int,
        deadline: float | None = None,
    ) -> Future:
        """Queue `inputs` (`size` rows); requests with equal keys may share a runner call."""
        task = _Task(key, runner, inputs, size, deadline, Future())
        limit = self.params.max_batch_size * self.params.max_enqueued_batches
        with self._cond:
            if self._closed:
                raise unavailable("the server is shutting down")
            if self._queued_rows + size > limit and self._queue:
                raise unavailable(
                    f"the batch queue is full ({self._queued_rows} rows waiting, limit {limit})"
                )
            self._queue.append(task)
            self._queued_rows += size
            self._cond.notify()
        return task.future

    def run(self, key: Hashable, runner: Runner, inputs: Mapping[str, np.ndarray], size: int,
            deadline: float | None = None) -> Arrays:  # fmt: skip
        """submit() and wait for the result (re-raising the request's own error)."""
        return self.submit(key, runner, inputs, size, deadline).result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        if self.batches_run:
            log.info(
                "batching: %d model calls for %d rows (mean batch %.1f)",
                self.batches_run,
                self.rows_run,
                self.rows_run / self.batches_run,
            )

    # ---- worker side ----------------------------------------------------------------------

    def _take(self, first: _Task, batch: list[_Task], rows: int) -> int:
        """Move queued tasks with first's key into batch while they fit. Lock held."""
        max_rows = self.params.max_batch_size
        kept: deque[_Task] = deque()
        while self._queue:
            task = self._queue.popleft()
            if task.key == first.key and rows + task.size <= max_rows:
                batch.append(task)
                rows += task.size
                self._queued_rows -= task.size
            else:
                kept.append(task)
        self._queue = kept
        return rows

    def _next_batch(self) -> list[_Task] | None:
        timeout = self.params.batch_timeout_micros / 1e6
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            self._queued_rows -= first.size
            batch = [first]
            rows = first.size
            if rows >= self.params.max_batch_size:
                return batch
            deadline = time.monotonic() + timeout
            while True:
                rows = self._take(first, batch, rows)
                remaining = deadline - time.monotonic()
                if rows >= self.params.max_batch_size or remaining <= 0 or self._closed:
                    return batch
                self._cond.wait(remaining)

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for task in batch:
                if task.deadline is not None and task.deadline < now:
                    expired = ServingError(
                        grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed in the batch queue"
                    )
                    task.future.set_exception(expired)
                else:
                    live.append(task)
            if live:
                self._run_batch(live)

    def _run_batch(self, batch: list[_Task]) -> None:
        with self._cond:
            self.batches_run += 1
            self.rows_run += sum(task.size for task in batch)
        if len(batch) == 1:
            _run_one(batch[0])
            return
        try:
            merged = {
                name: np.concatenate([task.inputs[name] for task in batch], axis=0)
                for name in batch[0].inputs
            }
            outputs = batch[0].runner(merged)
            results = _split(outputs, [task.size for task in batch])
        except Exception as err:  # isolate the failing request: run each on its own
            log.debug("merged batch of %d failed (%s); running requests one by one",
                      len(batch), err)  # fmt: skip
            for task in batch:
                _run_one(task)
            return
        for task, result in zip(batch, results, strict=True):
            task.future.set_result(result)


def _run_one(task: _Task) -> None:
    try:
        task.future.set_result(task.runner(task.inputs))
    except BaseException as err:  # handed to the waiting request, which re-raises it
        task.future.set_exception(err)


def _split(outputs: Arrays, sizes: list[int]) -> list[Arrays]:
    total = sum(sizes)
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise ValueError(f"output {name!r} has no batch dimension of {total}: {value.shape}")
    offsets = np.cumsum(sizes)[:-1]
    parts = {name: np.split(value, offsets, axis=0) for name, value in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(sizes))]
