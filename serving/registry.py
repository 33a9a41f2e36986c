"""Model versions on disk -> versions in memory, swapped without dropping a request.

Layout, as TF Serving expects it: `<base_path>/<version>/saved_model.pb`, integer versions.
Policy (TF Serving's `latest` version policy with availability preserved):

- serve the newest `num_versions` versions that load; `model_spec.version` may pick any of them;
- a version is loaded only once its folder holds saved_model.pb and its files stopped changing
  between two polls (a folder still being copied is never served);
- a version that fails to load is recorded with its error and retried only when its files change;
  the versions already serving stay up;
- an old version is retired only after its replacement is AVAILABLE, and its memory is released
  only when the last request using it has finished (requests hold a lease).
"""

from __future__ import annotations

import enum
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving.errors import not_found
from serving.servable import Servable, has_saved_model

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


class State(enum.Enum):
    """ModelVersionStatus.State in tensorflow_serving/apis/get_model_status.proto."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: str = ""


def fingerprint(path: Path) -> Fingerprint:
    """(relative path, size, mtime) of every file: changes while a copy is in progress."""
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:  # removed between listing and stat: still changing
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


def list_versions(base_path: Path) -> dict[int, Path]:
    """Integer-named sub-folders; anything else (`.tmp-...`, `latest`, files) is ignored."""
    try:
        children = list(base_path.iterdir())
    except FileNotFoundError:
        return {}
    versions = {}
    for child in children:
        if child.name.isdigit() and child.is_dir():
            versions[int(child.name)] = child
    return versions


class _Entry:
    def __init__(self, servable: Servable):
        self.servable = servable
        self.leases = 0
        self.retiring = False


class ModelRegistry:
    """The versions of one model; `scan()` reconciles memory with disk."""

    def __init__(
        self,
        name: str,
        base_path: str | Path,
        *,
        num_versions: int = 1,
        loader: Callable[[str, int, Path], Servable] | None = None,
    ):
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        self.name = name
        self.base_path = Path(base_path)
        self.num_versions = num_versions
        self._loader = loader or _load_and_warm_up
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._entries: dict[int, _Entry] = {}
        self._status: dict[int, VersionStatus] = {}
        self._seen: dict[int, Fingerprint] = {}
        self._failed: dict[int, Fingerprint] = {}

    # ---- requests -------------------------------------------------------------------------

    @contextmanager
    def lease(self, version: int | None = None) -> Iterator[Servable]:
        """The requested (default: newest) version, kept in memory until the block exits."""
        entry = self._acquire(version)
        try:
            yield entry.servable
        finally:
            self._release(entry)

    def _acquire(self, version: int | None) -> _Entry:
        with self._lock:
            if version is None:
                if not self._entries:
                    raise not_found(
                        f"Servable not found for request: Latest({self.name}): no version of "
                        f"model {self.name!r} is loaded (looking under {self.base_path})"
                    )
                entry = self._entries[max(self._entries)]
            else:
                entry = self._entries.get(version)
                if entry is None:
                    loaded = ", ".join(str(v) for v in sorted(self._entries)) or "none"
                    raise not_found(
                        f"Servable not found for request: Specific({self.name}, {version}): "
                        f"version {version} of model {self.name!r} is not loaded "
                        f"(loaded: {loaded})"
                    )
            entry.leases += 1
            return entry

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.leases -= 1
            finish = entry.retiring and entry.leases == 0
        if finish:  # off the request's thread: freeing a model (gc) takes a while
            threading.Thread(
                target=self._finish_unload, args=(entry,), name="unload", daemon=True
            ).start()

    # ---- status ---------------------------------------------------------------------------

    def loaded_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._entries)

    def statuses(self, version: int | None = None) -> list[VersionStatus]:
        with self._lock:
            if version is not None:
                status = self._status.get(version)
                return [status] if status else []
            return [self._status[v] for v in sorted(self._status, reverse=True)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until predicate() (called under the registry lock) holds, or timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def wait_until_available(self, version: int | None = None, timeout: float = 60.0) -> bool:
        def ready() -> bool:
            return bool(self._entries) if version is None else version in self._entries

        return self.wait_for(ready, timeout)

    def wait_for_state(self, version: int, state: State, timeout: float = 60.0) -> bool:
        def reached() -> bool:
            status = self._status.get(version)
            return status is not None and status.state == state

        return self.wait_for(reached, timeout)

    def _set_status(self, version: int, state: State, error: str = "") -> None:
        with self._changed:
            self._status[version] = VersionStatus(version, state, error)
            self._changed.notify_all()

    # ---- reconciling with disk ------------------------------------------------------------

    def scan(self) -> None:
        """One poll: load the newest stable versions, then retire the ones they replace."""
        with self._scan_lock:
            on_disk = list_versions(self.base_path)
            candidates = self._stable_candidates(on_disk)
            keep: list[int] = []
            for version in sorted(candidates, reverse=True):
                if len(keep) == self.num_versions:
                    break
                with self._lock:
                    loaded = version in self._entries
                if loaded or self._load(version, on_disk[version], candidates[version]):
                    keep.append(version)
            with self._lock:
                # A loaded version survives until enough newer ones are AVAILABLE, unless its
                # folder is gone from disk (as TF Serving unloads deleted versions).
                stale = [
                    v
                    for v in self._entries
                    if v not in keep and (v not in on_disk or len(keep) >= self.num_versions)
                ]
            for version in stale:
                self._retire(version)

    def initial_load(self, settle_seconds: float = 0.3) -> None:
        """Two scans `settle_seconds` apart: a folder must look the same twice to be loaded."""
        self.scan()
        time.sleep(settle_seconds)
        self.scan()

    def _stable_candidates(self, on_disk: dict[int, Path]) -> dict[int, Fingerprint]:
        candidates = {}
        for version in list(self._seen):
            if version not in on_disk:
                del self._seen[version]
                self._failed.pop(version, None)
        with self._lock:
            loaded = set(self._entries)
        for version, path in on_disk.items():
            if version in loaded:
                candidates[version] = self._seen.get(version, ())
                continue  # serving already: later edits to its files do not unload it
            if not has_saved_model(path):
                continue  # still being copied, or not a model at all
            current = fingerprint(path)
            previous, self._seen[version] = self._seen.get(version), current
            if previous != current:
                continue  # new or still changing: look again at the next poll
            if self._failed.get(version) == current:
                continue  # failed to load and nothing changed since
            candidates[version] = current
        return candidates

    def _load(self, version: int, path: Path, expected: Fingerprint) -> bool:
        self._set_status(version, State.LOADING)
        log.info("loading %s version %d from %s", self.name, version, path)
        started = time.monotonic()
        try:
            servable = self._loader(self.name, version, path)
            if fingerprint(path) != expected:
                raise RuntimeError("the folder changed while it was being loaded")
        except Exception as err:  # any broken model must leave the server up: record, go on
            message = f"{type(err).__name__}: {err}"
            log.error("%s version %d failed to load: %s", self.name, version, message)
            self._failed[version] = fingerprint(path)
            self._set_status(version, State.END, message)
            return False
        with self._changed:
            self._entries[version] = _Entry(servable)
            self._status[version] = VersionStatus(version, State.AVAILABLE)
            self._changed.notify_all()
        log.info("%s version %d AVAILABLE (%.1fs)", self.name, version, time.monotonic() - started)
        return True

    def _retire(self, version: int) -> None:
        with self._changed:
            entry = self._entries.pop(version, None)
            if entry is None:
                return
            entry.retiring = True
            self._status[version] = VersionStatus(version, State.UNLOADING)
            self._changed.notify_all()
            finish = entry.leases == 0
        log.info("unloading %s version %d", self.name, version)
        if finish:
            self._finish_unload(entry)

    def _finish_unload(self, entry: _Entry) -> None:
        servable = entry.servable
        servable.release()
        gc.collect()  # loaded SavedModels hold reference cycles: free the weights now
        self._set_status(servable.version, State.END)
        log.info("%s version %d unloaded", self.name, servable.version)

    def close(self) -> None:
        with self._lock:
            versions = list(self._entries)
        for version in versions:
            self._retire(version)


def _load_and_warm_up(name: str, version: int, path: Path) -> Servable:
    from serving.warmup import warm_up

    servable = Servable.load(name, version, path)
    warm_up(servable)
    return servable


class VersionWatcher:
    """Polls the registries every `poll_seconds` in a daemon thread; a failed poll is logged."""

    def __init__(self, registries: list[ModelRegistry], poll_seconds: float = 1.0):
        self._registries = registries
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="version-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            for registry in self._registries:
                try:
                    registry.scan()
                except Exception:  # a poll must never kill the watcher
                    log.exception("polling %s failed", registry.base_path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
