"""`SnapshotTimer`: the one background thread of the model core.

Models are driven by the threads of their requests, so a model that stops receiving
requests has nobody to take its time-based snapshot (`snapshot_every_seconds`). This
thread wakes when the earliest such snapshot is due (at least every `POLL_S` seconds,
to notice models created meanwhile) and takes it in the model's turn.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.thread_names import name_this_thread

log = logging.getLogger(__name__)

POLL_S = 1.0  # longest sleep, seconds


class SnapshotTimer:
    """Takes due time-based snapshots of the models `models()` returns.

    Args:
      models: the current models (each has `seconds_to_snapshot` and `snapshot_if_due`).
    """

    def __init__(self, models: Callable[[], list]):
        self._models = models
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="snapshot-timer",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """End the thread (it finishes a snapshot it is taking)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        name_this_thread("snapshot-timer")
        while not self._stop.is_set():
            sleep = POLL_S
            for model in self._models():
                if self._stop.is_set():
                    return
                due_in = model.seconds_to_snapshot()
                if due_in is None:
                    continue
                if due_in <= 0:
                    try:
                        model.snapshot_if_due()
                    except Exception:  # e.g. the model is being deleted
                        log.debug("model %r: no scheduled snapshot", model.name, exc_info=True)
                else:
                    sleep = min(sleep, due_in)
            self._stop.wait(sleep)
