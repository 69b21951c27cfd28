"""A Process or StreamProcess answer as the client reads it: a `ProcessResult`.

The server writes the answer from a `service.answer.Answer` (activations, skipped, step)
with the request's model and id (`service.server.rpc.sample_requests.answer_fields`, tensors
through `tensors.encode_tensor`).

`ProcessResult` stays its own type rather than being `Answer`: it is the public client type
(a frozen dataclass with `skipped` as a tuple of ints and 1-D activations for a 1-D sample,
constructed by keyword), while `Answer` is the model core's NamedTuple of arrays, unpacked
and compared as a tuple by the core and the exactly-once window. The three shared fields
have the same names and meaning in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.api import hebbian_pb2 as pb
from service.codec.tensors import decode_tensor

SampleAnswer = pb.ProcessResponse | pb.StreamProcessResponse


@dataclass(frozen=True)
class ProcessResult:
    """One answer of Process or of one StreamProcess message.

    `activations` has shape (n, output_width), or (output_width,) when the samples
    were sent as a single 1-D sample. `skipped` lists the learning samples whose
    update would have made a weight non-finite (not applied). `step`, `activations` and
    `skipped` mean what they mean in `service.answer.Answer`.
    """

    activations: np.ndarray
    step: int
    model: str
    request_id: str
    skipped: tuple[int, ...]


def process_result(response: SampleAnswer, *, single: bool) -> ProcessResult:
    """A Process or StreamProcess answer as a `ProcessResult` (1-D for a 1-D sample)."""
    activations = decode_tensor(response.activations)
    if single and activations.ndim == 2 and activations.shape[0] == 1:
        activations = activations[0]
    return ProcessResult(
        activations=activations,
        step=int(response.step),
        model=response.model,
        request_id=response.request_id,
        skipped=tuple(int(i) for i in response.skipped_samples),
    )
