"""Regenerates the protobuf/gRPC code of `protos/` into this package (`make proto`).

`grpc_tools.protoc` writes modules named after the proto path (``hebbian/v1/...``) that
import each other as ``hebbian.v1``; they are placed flat in `service/api` with that
import rewritten to ``service.api``, so ``from service.api import hebbian_pb2`` works
while the descriptors keep their proto path ``hebbian/v1/hebbian.proto`` (reflection and
grpcurl see the real file name and package).

The generated Python code carries no comments of the proto, so protoc also writes
``hebbian.binpb``: a `FileDescriptorSet` of the same file *with* its ``source_code_info``,
which server reflection serves so that ``grpcurl describe`` shows the documentation
(`service.server.reflection`).

Usage: ``python -m service.api.generate [OUT_DIR]`` (default: this package's folder).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
PROTO = "hebbian/v1/hebbian.proto"
API_DIR = Path(__file__).resolve().parent
SOURCE_INFO = "hebbian.binpb"  # FileDescriptorSet with source_code_info (the comments)
GENERATED = ("hebbian_pb2.py", "hebbian_pb2.pyi", "hebbian_pb2_grpc.py", SOURCE_INFO)


def generate(out_dir: Path = API_DIR) -> list[Path]:
    """Run protoc on `PROTO` and write the generated files into `out_dir`; returns their paths."""
    import grpc_tools  # build-time dependency (the `test` extra)

    include = resources.files(grpc_tools) / "_proto"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # a child process: protoc's C++ protobuf must not share a process with TensorFlow's
        command = [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            "--include_source_info",
            f"--descriptor_set_out={Path(tmp) / SOURCE_INFO}",
            str(PROTO_ROOT / PROTO),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed on {PROTO}: {result.stderr.strip()}")
        written = []
        target = out_dir / SOURCE_INFO
        target.write_bytes((Path(tmp) / SOURCE_INFO).read_bytes())
        for name in GENERATED[:-1]:
            text = (Path(tmp) / Path(PROTO).parent / name).read_text()
            text = text.replace("from hebbian.v1 import", "from service.api import")
            text = text.replace("'hebbian.v1.hebbian_pb2'", "'service.api.hebbian_pb2'")
            target = out_dir / name
            target.write_text(text)
            written.append(target)
        written.append(out_dir / SOURCE_INFO)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: generate into the optional output folder."""
    argv = sys.argv[1:] if argv is None else argv
    for path in generate(Path(argv[0]) if argv else API_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
