"""Exactly-once delivery: a bounded window of recently acknowledged request ids.

A sensor that did not see its answer (a dropped connection, a server restart) sends
the same request again with the same id; if the id is still in the window, the
original answer is returned and nothing is applied twice. The window is part of the
durable state: saved in snapshots and rebuilt by log replay (batch records carry the
request ids they answered).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from service.answer import Answer

# Bytes an entry costs besides its id and arrays (the dict slot, the Answer, array headers).
ENTRY_OVERHEAD = 256


def entry_bytes(request_id: str, ack: Answer) -> int:
    """What one remembered request costs in memory and in a snapshot, in bytes."""
    return (len(request_id.encode("utf-8", "surrogatepass")) + ack.activations.nbytes
            + ack.skipped.nbytes + ENTRY_OVERHEAD)


class RequestWindow:
    """The newest acknowledged request ids with their answers, bounded in count and bytes
    (ids, activations and skipped indices all count, see `entry_bytes`).

    Only the model's writer (the thread holding its lock) touches it.
    """

    def __init__(self, max_requests: int = 4096, max_bytes: int = 16 << 20):
        self.max_requests = int(max_requests)
        self.max_bytes = int(max_bytes)
        self._acks: OrderedDict[str, Answer] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._acks)

    @property
    def nbytes(self) -> int:
        """Bytes the remembered requests cost (`entry_bytes` summed)."""
        return self._bytes

    def get(self, request_id: str) -> Answer | None:
        """The stored answer for `request_id`, if it is still in the window."""
        return self._acks.get(request_id) if request_id else None

    def add(self, request_id: str, ack: Answer) -> None:
        """Remember an acknowledged request (ids that are empty are never remembered)."""
        if not request_id or request_id in self._acks:
            return
        self._acks[request_id] = ack
        self._bytes += entry_bytes(request_id, ack)
        while self._acks and (len(self._acks) > self.max_requests or self._bytes > self.max_bytes):
            old_id, old = self._acks.popitem(last=False)
            self._bytes -= entry_bytes(old_id, old)

    def clear(self) -> None:
        """Forget everything (a Reset or Restore starts a new history)."""
        self._acks.clear()
        self._bytes = 0

    def to_arrays(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """(ids, arrays) for a snapshot: ids in order, answers packed into flat arrays."""
        ids = list(self._acks)
        acks = list(self._acks.values())
        width = acks[0].activations.shape[1] if acks else 0
        return ids, {
            "window.rows": np.array([len(a.activations) for a in acks], np.int64),
            "window.activations": (
                np.concatenate([a.activations for a in acks]) if acks
                else np.zeros((0, width), np.float32)
            ),
            "window.skipped_counts": np.array([len(a.skipped) for a in acks], np.int64),
            "window.skipped": (
                np.concatenate([a.skipped for a in acks]).astype(np.int32) if acks
                else np.zeros(0, np.int32)
            ),
            "window.steps": np.array([a.step for a in acks], np.int64),
        }

    def load_arrays(self, ids: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Replace the window with one saved by `to_arrays`."""
        self.clear()
        rows = np.cumsum(np.concatenate([[0], arrays["window.rows"]]))
        skips = np.cumsum(np.concatenate([[0], arrays["window.skipped_counts"]]))
        for i, request_id in enumerate(ids):
            self.add(request_id, Answer(
                arrays["window.activations"][rows[i] : rows[i + 1]],
                arrays["window.skipped"][skips[i] : skips[i + 1]],
                int(arrays["window.steps"][i]),
            ))
