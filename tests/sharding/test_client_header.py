"""The clients name the model of every call in the `x-hebbian-model` header."""

from __future__ import annotations

from service.api import hebbian_pb2 as pb
from service.client import MODEL_HEADER, model_metadata, request_model
from service.sharding.slots import MODEL_HEADER as ROUTED_HEADER


def test_header_is_the_one_the_router_routes_by():
    assert MODEL_HEADER == ROUTED_HEADER == "x-hebbian-model"


def test_every_request_kind_names_its_model():
    assert request_model(pb.ProcessRequest(model="a")) == "a"
    assert request_model(pb.CreateModelRequest(name="b")) == "b"
    assert request_model(pb.RestoreRequest(name="c", snapshot_id="s")) == "c"
    assert request_model(pb.ListModelsRequest()) == ""


def test_header_added_for_a_named_model_only():
    auth = (("authorization", "Bearer t"),)
    assert model_metadata(auth, "m") == (*auth, ("x-hebbian-model", "m"))
    assert model_metadata(auth, "") == auth  # the default model: the router knows its owner
    assert model_metadata((), "bad\nname") == ()  # no header could carry it
