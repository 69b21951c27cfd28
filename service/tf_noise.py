"""Keeps TensorFlow's, absl's and CUDA's start-up noise out of stderr on a CPU-only machine.

`import tensorflow` writes lines like ``WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR``, ``I0000 ... cudart_stub.cc] Could
not find cuda drivers on your machine`` and, at the first XLA compilation, ``E0000 ...
failed call to cuInit`` straight to file descriptor 2, from C++, before any Python logging
setting applies. Every `hebbian serve` and `hebbian export` log would start with them.

`install()` (run when the `service` package is imported, before anything in it can import
TensorFlow) does three things, none of which imports TensorFlow:

- sets ``TF_CPP_MIN_LOG_LEVEL`` unless the environment already does: 3 (fatal only) on a
  machine without an NVIDIA device, where TensorFlow's C++ errors are the failed CUDA
  probes; 2 (errors and fatal) where there is one;
- wraps the loading of the top-level `tensorflow` module, whenever it happens, so that what
  it writes to stderr meanwhile is captured and written back without the known noise
  lines (`NOISE`): anything else, a real error included, still reaches stderr;
- sets the Python loggers ``absl`` and ``tensorflow`` to ERROR.

An operator's own ``TF_CPP_MIN_LOG_LEVEL`` (e.g. 0, to debug TensorFlow) wins, and the
filter then drops only the start-up lines listed in `NOISE`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType

# Lines TensorFlow and its libraries print on every start of a CPU-only machine.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags"
)


def has_nvidia_device(dev: Path = Path("/dev"), proc: Path = Path("/proc")) -> bool:
    """Whether this machine shows an NVIDIA GPU (a /dev/nvidiaN node or the driver in /proc)."""
    return (proc / "driver" / "nvidia").exists() or any(dev.glob("nvidia[0-9]*"))


def default_log_level(environ: Mapping[str, str], gpu: bool) -> str:
    """TensorFlow's C++ log level to use: the environment's, else 3 without a GPU, else 2."""
    return environ.get("TF_CPP_MIN_LOG_LEVEL") or ("2" if gpu else "3")


def drop_noise(text: str) -> str:
    """`text` without the lines that match `NOISE`."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.search(line))


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture file descriptor 2 for the block, then write back what is not noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = drop_noise(capture.read().decode("utf-8", errors="replace"))
            if kept:
                os.write(2, kept.encode("utf-8"))


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` inside `filtered_stderr`."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # TensorFlow sees its own loader, as without this wrapper
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders and wraps its loader, once."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install(environ: MutableMapping[str, str] = os.environ) -> None:
    """Quiet TensorFlow's start-up for this process (see the module docstring); idempotent."""
    environ["TF_CPP_MIN_LOG_LEVEL"] = default_log_level(environ, has_nvidia_device())
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
