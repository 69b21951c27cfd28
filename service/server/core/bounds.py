"""The documented bound of every field that crosses the API, checked before anything is
queued or logged, and the one way error messages quote what a caller sent.

Sizes that cost the server memory or compute (samples, a model's layers and per-sample
cost) are configurable limits (`service.server.config.Limits`) and answer
`LimitExceededError` (RESOURCE_EXHAUSTED); fields whose bound is part of the API
(request ids, seeds, setting names) are fixed here and are `InvalidInputError`
(INVALID_ARGUMENT). A message never echoes more than `QUOTE_CHARS` characters of an
input, so a huge field cannot make the status itself too big to send.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.errors import InvalidInputError, LimitExceededError

MAX_REQUEST_ID_BYTES = 256  # UTF-8 bytes of a request id
MAX_SEED = 2**32 - 1  # seeds are 0..MAX_SEED; Reset(seed) gives layer i the seed seed + i
MAX_SETTING_CHARS = 32  # a layer's string settings (rule, lateral, activation, ...)
QUOTE_CHARS = 40  # most characters of an input an error message repeats
DEFAULT_MAX_LAYERS = 16  # limits.max_layers
DEFAULT_MAX_MODEL_COST = 1 << 27  # limits.max_model_cost, multiply-adds per sample

# Multiply-adds per sample of the rules whose update has a y y^T W term (units^2 * input).
_SUBSPACE_RULES = ("oja_subspace", "sanger")


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr` of `value`, or of its first `limit` characters and how long it really was."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(value)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_request_id(request_id: str) -> None:
    """InvalidInputError for a request id over `MAX_REQUEST_ID_BYTES` bytes."""
    size = len(request_id.encode("utf-8", "surrogatepass"))
    if size > MAX_REQUEST_ID_BYTES:
        raise InvalidInputError(
            f"request_id {quote(request_id)} has {size} bytes; at most "
            f"{MAX_REQUEST_ID_BYTES} are allowed", "bad_request_id",
        )


def check_seed(seed: object, what: str = "seed") -> None:
    """InvalidInputError unless `seed` is an integer in 0..MAX_SEED."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"{what} must be an integer in 0..{MAX_SEED}; got {quote(seed)}",
                      "bad_seed")


def check_reset_seed(seed: int, layers: int) -> None:
    """A Reset seed gives layer i the seed `seed + i`: every one must be in range."""
    top = MAX_SEED - layers + 1
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= top:
        raise InvalidInputError(
            f"seed must be an integer in 0..{top} for a model of {layers} layer(s) "
            f"(layer i gets seed + i); got {quote(seed)}", "bad_seed",
        )


def check_stack(name: str, input_dim: object, layers: list[Mapping], *, max_layers: int,
                max_weights: int, max_cost: int) -> None:
    """Bounds of a model config, checked at CreateModel before anything is built.

    InvalidInputError for a bad seed or an over-long setting; LimitExceededError for more
    than `max_layers` layers, more than `max_weights` weights or a per-sample cost (see
    `stack_cost`) over `max_cost`. Widths that are not positive integers are left to
    the stack's own validation.
    """
    if len(layers) > max_layers:
        raise LimitExceededError(
            f"model {name!r} has {len(layers)} layers; the limit is {max_layers}",
        )
    for index, layer in enumerate(layers):
        for key, value in layer.items():
            if isinstance(value, str) and len(value) > MAX_SETTING_CHARS:
                raise InvalidInputError(
                    f"layer {index}: {quote(key)} is {quote(value)}; settings have at most "
                    f"{MAX_SETTING_CHARS} characters", "bad_config")
        if layer.get("seed") is not None:
            check_seed(layer["seed"], f"layer {index}: seed")
    weights, cost = stack_size(input_dim, layers)
    if weights > max_weights:
        raise LimitExceededError(
            f"model {name!r} would have {weights} weights; the limit is {max_weights}",
        )
    if cost > max_cost:
        raise LimitExceededError(
            f"model {name!r} would cost {cost} multiply-adds per sample; the limit is "
            f"{max_cost} (fewer or narrower layers)",
        )


def stack_size(input_dim: object, layers: list[Mapping]) -> tuple[int, int]:
    """(weights, multiply-adds per sample) of a config.

    Per layer of `units` units fed `width` inputs: `width * units` kernel weights, plus
    `units^2` lateral ones; per learning sample `2 * width * units` (activation and
    update), `2 * units^2` more with laterals, and `width * units^2` more for
    `oja_subspace` and `sanger` (their y y^T W term).
    """
    weights = cost = 0
    width = input_dim if _positive_int(input_dim) else 0
    for layer in layers:
        units = layer.get("units")
        if not _positive_int(units):
            continue
        lateral = layer.get("lateral") not in (None, "", "none")
        weights += width * units + units * units
        cost += 2 * width * units + (2 * units * units if lateral else 0)
        if layer.get("rule", "oja") in _SUBSPACE_RULES:
            cost += width * units * units
        width = units
    return weights, cost


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
