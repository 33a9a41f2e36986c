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
        self._saved_level: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
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
        root = logging.getLogger()
        self._saved_level = root.level
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        root.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        if self._saved_level is not None:
            root.setLevel(self._saved_level)
