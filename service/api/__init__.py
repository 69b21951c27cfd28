"""Generated protobuf and gRPC code for `protos/hebbian/v1/hebbian.proto`.

Do not edit `hebbian_pb2*.py(i)` by hand: change the proto and run `make proto`
(`service/api/generate.py`); a unit test fails when these files drift from the proto.
"""
