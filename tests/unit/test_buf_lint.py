"""The proto is clean under `buf lint` (STANDARD rules, `buf.yaml`) and `buf format`.

buf comes from the npm package @bufbuild/buf, installed into .tools/ by `make test`
(the Makefile's pinned BUF_VERSION); without it (no npm) the tests are skipped.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"

pytestmark = pytest.mark.skipif(
    not BUF.exists(), reason="buf not installed: run `make test` (needs npm) to install it"
)


def run_buf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BUF), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_proto_passes_buf_lint_standard_rules():
    result = run_buf("lint")
    assert result.returncode == 0, f"buf lint:\n{result.stdout}{result.stderr}"


def test_proto_is_formatted_as_buf_format_writes_it():
    result = run_buf("format", "--diff", "--exit-code")
    assert result.returncode == 0, f"buf format --diff:\n{result.stdout}{result.stderr}"
