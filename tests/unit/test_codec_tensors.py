"""Decoding and validating samples from `hebbian.v1.Tensor`, encoding activations."""

from __future__ import annotations

import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.codec.tensors import decode_samples, encode_tensor
from service.errors import DomainError, InvalidInputError, LimitExceededError

WIDTH = 4
rng = np.random.default_rng(0)
X = rng.normal(size=(3, WIDTH)).astype(np.float32)


def refusal(tensor: pb.Tensor, max_samples: int = 100) -> DomainError:
    with pytest.raises(DomainError) as info:
        decode_samples(tensor, WIDTH, max_samples)
    return info.value


@pytest.mark.parametrize(
    "tensor",
    [
        pb.Tensor(values=X.ravel()),
        pb.Tensor(shape=[3, WIDTH], values=X.ravel()),
        pb.Tensor(raw=X.astype("<f4").tobytes()),
        pb.Tensor(shape=[3, WIDTH], raw=X.astype("<f4").tobytes()),
    ],
    ids=["values", "values+shape", "raw", "raw+shape"],
)
def test_values_and_raw_decode_to_the_same_float32_rows(tensor):
    samples = decode_samples(tensor, WIDTH, 100)

    assert samples.dtype == np.float32 and samples.shape == (3, WIDTH)
    np.testing.assert_array_equal(samples, X)


def test_a_one_dimensional_shape_is_one_sample():
    samples = decode_samples(pb.Tensor(shape=[WIDTH], values=X[0]), WIDTH, 100)

    np.testing.assert_array_equal(samples, X[:1])


def test_raw_is_decoded_without_copying_the_bytes():
    tensor = pb.Tensor(raw=X.tobytes())
    samples = decode_samples(tensor, WIDTH, 100)

    assert not samples.flags.owndata and not samples.flags.writeable


@pytest.mark.parametrize(
    ("tensor", "reason", "words"),
    [
        (pb.Tensor(), "empty", "no samples"),
        (pb.Tensor(shape=[0, WIDTH]), "empty", "no samples"),
        (pb.Tensor(values=[1.0] * 5), "wrong_width", "input width 4"),
        (pb.Tensor(shape=[2, 3], values=[1.0] * 6), "wrong_width", "has width 3"),
        (pb.Tensor(shape=[5], values=[1.0] * 5), "wrong_width", "input width is 4"),
        (pb.Tensor(shape=[3, WIDTH], values=[1.0] * 8), "ragged", "needs 12 values; got 8"),
        (pb.Tensor(shape=[2, 2, 1], values=[1.0] * 4), "bad_shape", "[n, 4] or [4]"),
        (pb.Tensor(shape=[-1, WIDTH], values=[1.0] * 4), "bad_shape", "positive"),
        (pb.Tensor(values=[1.0, float("nan"), 0, 0]), "non_finite", "sample 0"),
        (pb.Tensor(values=[0.0] * 4 + [float("inf")] * 4), "non_finite", "sample 1"),
        (pb.Tensor(values=[1.0] * 4, raw=b"\0" * 16), "bad_encoding", "not both"),
        (pb.Tensor(raw=b"\0" * 17), "bad_encoding", "not a multiple of 4"),
    ],
)
def test_bad_samples_are_invalid_argument_with_a_clear_message(tensor, reason, words):
    error = refusal(tensor)

    assert isinstance(error, InvalidInputError)
    assert error.reason == reason
    assert words in error.message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("raw", [True, False])
def test_every_non_finite_value_is_found_among_huge_finite_ones(bad, raw):
    x = np.full((3, WIDTH), np.finfo(np.float32).max, np.float32)
    x[::2] *= -1
    tensor = (pb.Tensor(shape=x.shape, raw=x.tobytes()) if raw
              else pb.Tensor(shape=x.shape, values=x.ravel()))
    np.testing.assert_array_equal(decode_samples(tensor, WIDTH, 100), x)
    for row in range(3):
        for column in range(WIDTH):
            y = x.copy()
            y[row, column] = bad
            tensor = (pb.Tensor(shape=y.shape, raw=y.tobytes()) if raw
                      else pb.Tensor(shape=y.shape, values=y.ravel()))
            error = refusal(tensor)
            assert error.reason == "non_finite" and f"sample {row} " in error.message


def test_tiny_and_zero_values_are_finite():
    x = np.array([[0.0, -0.0, np.finfo(np.float32).tiny, 1e-45]], np.float32)
    np.testing.assert_array_equal(decode_samples(pb.Tensor(raw=x.tobytes()), WIDTH, 100), x)


def test_more_samples_than_the_limit_are_resource_exhausted():
    error = refusal(pb.Tensor(values=np.zeros(11 * WIDTH)), max_samples=10)

    assert isinstance(error, LimitExceededError)
    assert error.reason == "too_many" and error.samples == 11
    assert "11 > 10" in error.message


@pytest.mark.parametrize("raw", [True, False])
def test_encode_keeps_shape_and_values_in_the_requested_encoding(raw):
    tensor = encode_tensor(X, raw=raw)

    assert list(tensor.shape) == [3, WIDTH]
    assert bool(tensor.raw) is raw and bool(tensor.values) is not raw
    np.testing.assert_array_equal(decode_samples(tensor, WIDTH, 100), X)
