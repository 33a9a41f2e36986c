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
        self._saved_levels: list[tuple[logging.Handler | logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(FORWARDED_LOGGERS):
            self.console.print(f"  {record.getMessage()}", highlight=False)
            return
        if record.msg not in (_RUNNING, _FINISHED) or not record.args:
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
        # TFX logs every component's full configuration at INFO: keep the console handlers that
        # libraries installed at WARNING for the run, and take only the lines we want ourselves.
        for handler in logging.getLogger().handlers:
            self._saved_levels.append((handler, handler.level))
            handler.setLevel(max(handler.level, logging.WARNING))
        for name in ("absl", *FORWARDED_LOGGERS):
            logger = logging.getLogger(name)
            self._saved_levels.append((logger, logger.level))
            logger.setLevel(logging.INFO)
            logger.addHandler(self)
            logger.propagate = name == "absl"
        return self

    def __exit__(self, *exc) -> None:
        for name in ("absl", *FORWARDED_LOGGERS):
            logging.getLogger(name).removeHandler(self)
            logging.getLogger(name).propagate = True
        for obj, level in reversed(self._saved_levels):
            obj.setLevel(level)
        self._saved_levels.clear()
