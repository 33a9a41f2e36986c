"""Per-component progress for LocalDagRunner runs.

LocalDagRunner logs "Component %s is running." / "is finished." through absl; this handler turns
those records into one line each on the console and keeps the wall time of every component.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from rich.console import Console

_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."
# Our own loggers whose INFO lines (e.g. the certainty neuron's fit) are worth showing.
FORWARDED_LOGGERS = ("components",)
ABSL_LOGGER = "absl"
# Warnings TFX 1.16 logs for every component of a local run; they say nothing about this run.
_KNOWN_NOISE = frozenset(
    {
        "ArtifactQuery.property_predicate is not supported.",
        "ContextQuery.property_predicate is not supported.",
    }
)


@dataclass
class ComponentTimes:
    started: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


class ComponentProgress(logging.Handler):
    """Context manager: attach to the root logger for the duration of a pipeline run."""

    def __init__(self, console: Console | None = None):
        super().__init__(level=logging.INFO)
        self.console = console or Console(stderr=True)
        self.times = ComponentTimes()
        self._saved: list[tuple[logging.Logger, int, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(FORWARDED_LOGGERS):
            self.console.print(f"  {record.getMessage()}", highlight=False)
            return
        if record.msg not in (_RUNNING, _FINISHED) or not record.args:
            if record.levelno >= logging.WARNING and record.msg not in _KNOWN_NOISE:
                self.console.print(f"  [yellow]{record.getMessage()}[/]", highlight=False)
            return
        node = str(record.args[0])
        now = time.monotonic()
        stamp = time.strftime("%H:%M:%S")
        if record.msg == _RUNNING:
            self.times.started[node] = now
            self.times.order.append(node)
            self.console.print(f"[bold cyan]{stamp} > {node}[/] started")
        else:
            secs = now - self.times.started.get(node, now)
            self.times.seconds[node] = secs
            self.console.print(f"[bold green]{stamp} < {node}[/] finished in {secs:.1f}s")

    def __enter__(self) -> ComponentProgress:
        # TFX logs each component's whole configuration at INFO through absl: this handler takes
        # the absl records itself (no propagation to console handlers) and prints only the
        # start / finish lines and warnings. tf.saved_model.save resets the absl logger to
        # WARNING mid-run, so its level is pinned at INFO until the run ends.
        for name in (ABSL_LOGGER, *FORWARDED_LOGGERS):
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level, logger.propagate))
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.addHandler(self)
        logging.getLogger(ABSL_LOGGER).setLevel = _ignore_level  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc) -> None:
        absl_logger = logging.getLogger(ABSL_LOGGER)
        if "setLevel" in vars(absl_logger):
            del absl_logger.setLevel  # back to Logger.setLevel
        for logger, level, propagate in reversed(self._saved):
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate
        self._saved.clear()


def _ignore_level(level: int | str) -> None:
    """Stand-in for the absl logger's setLevel while a run is being followed."""
