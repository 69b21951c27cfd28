"""The model core and the domain errors import no gRPC: they can be used and tested
without a transport (issue 12's "transport-free model core")."""

from __future__ import annotations

import subprocess
import sys

CORE = ("service.errors", "service.answer", "service.server.core.session",
        "service.server.core.combining", "service.server.core.live_model",
        "service.server.core.registry", "service.server.core.snapshot_timer")


def test_the_model_core_imports_no_grpc():
    code = "; ".join([*(f"import {name}" for name in CORE),
                      "import sys",
                      "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'grpc')",
                      "print(','.join(loaded))"])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the core loaded {result.stdout.strip()}"
