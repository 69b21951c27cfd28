"""The model core (`service.server.core`) runs without gRPC: nothing it imports loads it."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import service.server.core as core

CORE = Path(core.__file__).parent
MODULES = sorted(f"{core.__name__}.{m.name}" for m in pkgutil.iter_modules([str(CORE)]))


def test_importing_every_core_module_loads_neither_grpc_nor_the_api_layer():
    code = (
        "import sys\n"
        f"for name in {MODULES!r}: __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'\n"
        "             or m.startswith(('service.server.rpc', 'service.server.transport',\n"
        "                              'service.api', 'google.protobuf'))))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=120)

    assert "service.server.core.session" in MODULES and len(MODULES) >= 8
    assert found.stdout.strip() == "[]"


def test_no_core_module_names_grpc_or_the_server_outside_the_core_in_its_imports():
    outside = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                grpc = name.split(".")[0] == "grpc" or name.startswith("service.api")
                server = name.startswith("service.server") and not name.startswith(
                    "service.server.core")
                if grpc or server:
                    outside.append(f"{path.name}: {name}")

    assert outside == []
