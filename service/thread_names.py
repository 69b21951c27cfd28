"""Name the server's threads for the operating system too, so that `top -H`, `ps -L` and
/proc/PID/task/*/comm show what each thread does (Python names threads for itself only).

Linux keeps at most 15 characters of a thread's name; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        _libc = None


def name_this_thread(name: str | None = None) -> None:
    """Give the calling thread the OS name `name` (default: its Python name, cut to 15)."""
    if _libc is None:
        return
    text = (name or threading.current_thread().name)[:15].encode("ascii", "replace")
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)


def named_target(name: str, target, *args) -> None:
    """Run `target(*args)` on the calling thread, named `name` for the OS first."""
    name_this_thread(name)
    target(*args)
