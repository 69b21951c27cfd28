"""One codec for the client and the server: configs, model states and answers on the wire."""

from __future__ import annotations

import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.codec.answers import process_result
from service.codec.configs import config_from_proto, config_to_proto
from service.codec.model_state import layer_states_to_proto, model_state
from service.errors import InvalidInputError
from service.model import StackConfig
from service.model.layer_state import initial_state, stack_arrays, state_key


def test_a_float32_setting_reads_back_as_the_decimal_that_was_written():
    proto = config_to_proto({"input_dim": 4, "layers": [{"units": 2, "learning_rate": 0.001}]})

    assert proto.layers[0].learning_rate != 0.001  # float32 on the wire
    assert config_from_proto(proto)["layers"][0]["learning_rate"] == 0.001


def test_a_key_the_api_does_not_carry_is_refused_by_name_for_every_caller():
    config = StackConfig(4, ({"units": 2, "learning": True},))

    with pytest.raises(InvalidInputError, match="layer 0: setting 'learning'"):
        config_to_proto(config)
    with pytest.raises(ValueError, match="setting 'colour'"):  # what client callers catch
        config_to_proto({"input_dim": 4, "layers": [{"units": 2, "colour": "red"}]})


def test_decoding_gives_units_and_only_the_settings_the_message_sets():
    proto = pb.ModelConfig(input_dim=3, layers=[pb.LayerConfig(units=2, rule="bcm", seed=5)])

    assert config_from_proto(proto) == {
        "input_dim": 3, "layers": [{"units": 2, "rule": "bcm", "seed": 5}]}
    assert config_from_proto(pb.ModelConfig(input_dim=3, engine="xla",
                                            layers=[pb.LayerConfig()]))["engine"] == "xla"


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "values"])
def test_a_state_round_trips_through_layer_states_in_the_one_layout(raw):
    stack = StackConfig(5, ({"units": 3}, {"units": 2})).layer_params()
    arrays = stack_arrays([initial_state(params, 7) for params, _ in stack])
    response = pb.GetModelStateResponse(
        name="m", step=0, config=config_to_proto({"input_dim": 5, "layers": [{"units": 3}]}),
        layers=layer_states_to_proto(arrays, raw=raw))

    state = model_state(response)

    assert state.arrays.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(state.arrays[key], value)
    with pytest.raises(InvalidInputError, match=state_key(1, "theta")):
        layer_states_to_proto({k: v for k, v in arrays.items() if k != state_key(1, "theta")})


def test_a_one_sample_answer_is_one_dimensional_and_carries_the_answer_fields():
    response = pb.ProcessResponse(
        activations=pb.Tensor(shape=[1, 2], values=[0.5, -1.0]), step=9, model="m",
        request_id="r", skipped_samples=[0])

    result = process_result(response, single=True)

    assert result.activations.tolist() == [0.5, -1.0]
    assert (result.step, result.skipped, result.model, result.request_id) == (9, (0,), "m", "r")
