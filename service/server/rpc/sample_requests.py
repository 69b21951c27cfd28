"""Turn a Process or StreamProcess message into a model's request, and an answer back.

Parsing checks everything about the message before anything is queued: the model
exists, the request id and the samples are valid, and the activations will fit in a
response. A refused message is counted in the model's rejected-samples metric.
"""

from __future__ import annotations

from service.answer import Answer
from service.api import hebbian_pb2 as pb
from service.codec.tensors import decode_samples, encode_tensor
from service.errors import DomainError, LimitExceededError
from service.server.core import bounds
from service.server.core.live_model import LiveModel
from service.server.core.registry import ModelRegistry
from service.server.core.session import SampleRequest

# Bytes of a response besides activations, skipped indices and id (model, shape, framing).
_RESPONSE_OVERHEAD = 1024

SampleMessage = pb.ProcessRequest | pb.StreamProcessRequest


class RequestParser:
    """Parses sample messages for the models of a registry.

    Args:
      registry: the server's models.
      max_samples_per_request: more samples in one message are LimitExceededError.
      max_message_bytes: the server's message size limit; a request whose activations
        would not fit in a response is LimitExceededError before it runs.
    """

    def __init__(self, registry: ModelRegistry, max_samples_per_request: int,
                 max_message_bytes: int):
        self._registry = registry
        self._max_samples = max_samples_per_request
        self._max_message_bytes = max_message_bytes

    def parse(self, message: SampleMessage) -> tuple[LiveModel, SampleRequest]:
        """The model a message is for and its request, ready to apply (`apply_if_idle`) or
        to queue (`pending`).

        Raises:
          ModelNotFoundError, InvalidInputError, LimitExceededError: the message is refused.
        """
        model = self._registry.get(message.model)
        try:
            if message.request_id:
                bounds.check_request_id(message.request_id)
            samples = decode_samples(message.samples, model.input_dim, self._max_samples)
        except DomainError as err:
            model.reject(err.reason or "invalid", err.samples)
            raise
        # worst case: 4 bytes per activation, a 5-byte skipped index per sample, the id
        largest = len(samples) * (4 * model.output_dim + 5) + len(message.request_id)
        if largest + _RESPONSE_OVERHEAD > self._max_message_bytes:
            model.reject("too_large_response", len(samples))
            raise LimitExceededError(
                f"the activations of {len(samples)} samples ({model.output_dim} per sample) "
                "would exceed the message size limit; send fewer samples per request"
            )
        learn = message.learn if message.HasField("learn") else True
        return model, SampleRequest(samples, bool(learn), message.request_id)


def answer_fields(message: SampleMessage, model: LiveModel, answer: Answer) -> dict:
    """Fields of a Process/StreamProcess response, activations encoded like the samples."""
    return {
        # `values` is a view; reading `raw` would copy the request's sample bytes again
        "activations": encode_tensor(answer.activations, raw=not message.samples.values),
        "step": answer.step,
        "request_id": message.request_id,
        "model": model.name,
        "skipped_samples": answer.skipped.tolist(),
    }
