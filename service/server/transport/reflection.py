"""Server reflection that serves the proto's comments, so `grpcurl describe` shows them.

grpc_reflection answers with `FileDescriptorProto`s made by `FileDescriptor.CopyToProto`,
which never includes ``source_code_info`` (the comments and their positions): the
generated Python code does not carry it. `DocumentedPool` stands in for the descriptor
pool and adds, to every file that `service/api/hebbian.binpb` documents (written by
`make proto` from the same proto as the generated code, a test checks they agree), its
``source_code_info``. Every other file (health, reflection, well-known types) is served as
before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection

SERVICE_NAME = reflection.SERVICE_NAME


def load_source_info(
    package: str = "service.api", name: str = "hebbian.binpb"
) -> dict[str, descriptor_pb2.SourceCodeInfo]:
    """file name -> source_code_info, from a serialized `FileDescriptorSet`."""
    data = (resources.files(package) / name).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {file.name: file.source_code_info for file in files if file.HasField("source_code_info")}


class DocumentedFile:
    """A `FileDescriptor` whose `CopyToProto` adds the file's source_code_info."""

    def __init__(self, descriptor: FileDescriptor, pool: DocumentedPool):
        self._descriptor = descriptor
        self._pool = pool

    @property
    def name(self) -> str:
        """The proto file name, e.g. ``hebbian/v1/hebbian.proto``."""
        return self._descriptor.name

    @property
    def dependencies(self) -> list[DocumentedFile]:
        """The imported files, documented the same way."""
        return [self._pool.document(dependency) for dependency in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802
        """Fill `proto` like `FileDescriptor.CopyToProto`, plus the comments if known."""
        self._descriptor.CopyToProto(proto)
        info = self._pool.source_info.get(self.name)
        if info is not None:
            proto.source_code_info.CopyFrom(info)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._descriptor, attribute)


class DocumentedPool:
    """The lookups grpc_reflection makes, on `pool`, with files wrapped in `DocumentedFile`."""

    def __init__(
        self,
        source_info: Mapping[str, descriptor_pb2.SourceCodeInfo],
        pool: descriptor_pool.DescriptorPool | None = None,
    ):
        self.source_info = dict(source_info)
        self._pool = pool if pool is not None else descriptor_pool.Default()

    def document(self, descriptor: FileDescriptor) -> DocumentedFile:
        """`descriptor` with its comments."""
        return DocumentedFile(descriptor, self)

    def FindFileByName(self, name: str) -> DocumentedFile:  # noqa: N802
        """The file called `name` (KeyError if unknown)."""
        return self.document(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> DocumentedFile:  # noqa: N802
        """The file that defines `symbol` (KeyError if unknown)."""
        return self.document(self._pool.FindFileContainingSymbol(symbol))

    def FindMessageTypeByName(self, name: str) -> Any:  # noqa: N802
        """As `DescriptorPool.FindMessageTypeByName`."""
        return self._pool.FindMessageTypeByName(name)

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:  # noqa: N802
        """As `DescriptorPool.FindExtensionByNumber`."""
        return self._pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: Any) -> Any:  # noqa: N802
        """As `DescriptorPool.FindAllExtensions`."""
        return self._pool.FindAllExtensions(message)


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection for `service_names` (plus reflection itself) with the proto comments."""
    reflection.enable_server_reflection(
        tuple(service_names), server, pool=DocumentedPool(load_source_info())
    )
