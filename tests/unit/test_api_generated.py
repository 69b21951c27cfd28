"""The checked-in code under service/api is exactly what `make proto` generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.api import generate


def test_generated_api_code_matches_the_proto(tmp_path: Path):
    fresh = generate.generate(tmp_path)

    assert [p.name for p in fresh] == list(generate.GENERATED)
    for path in fresh:
        checked_in = generate.API_DIR / path.name
        assert checked_in.exists(), f"{checked_in} is missing: run `make proto`"
        if checked_in.read_bytes() != path.read_bytes():
            pytest.fail(f"{checked_in} drifted from {generate.PROTO}: run `make proto`")


def test_generated_modules_import_as_service_api_with_the_proto_file_name():
    from service.api import hebbian_pb2, hebbian_pb2_grpc

    assert hebbian_pb2.DESCRIPTOR.name == "hebbian/v1/hebbian.proto"
    assert hebbian_pb2.DESCRIPTOR.package == "hebbian.v1"
    assert hebbian_pb2.ProcessRequest.__module__ == "service.api.hebbian_pb2"
    assert hasattr(hebbian_pb2_grpc, "HebbianServiceStub")


def test_source_info_file_describes_exactly_the_generated_descriptor():
    from google.protobuf import descriptor_pb2

    from service.api import hebbian_pb2

    (documented,) = descriptor_pb2.FileDescriptorSet.FromString(
        (generate.API_DIR / generate.SOURCE_INFO).read_bytes()
    ).file
    assert documented.source_code_info.location  # the comments are there
    served = descriptor_pb2.FileDescriptorProto()
    hebbian_pb2.DESCRIPTOR.CopyToProto(served)
    documented.ClearField("source_code_info")
    for message in documented.message_type:  # protoc adds the default JSON names here
        for field in message.field:
            field.ClearField("json_name")
    assert documented == served
