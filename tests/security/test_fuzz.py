"""Property-based fuzzing of requests over the real server (hypothesis).

Random requests go to `limited_server` over one plaintext channel: random shapes
(ragged, negative, too many dimensions), NaN/Inf/huge values, `raw` bytes of the wrong
length or random bytes, both encodings at once, random model names (path-like, unicode
look-alikes, zero-width and combining characters), random flags and ids, oversized
messages. An independent reading of the documented rules says which status each
request must get; then

- a refused request has exactly that status and changed nothing: the model's step and
  an inference-only probe of its weights are bitwise the same as before;
- an accepted one answered (n, units) activations, advanced the step by its learning
  samples that were not skipped (learn=false: by nothing, weights bitwise unchanged);
- the server still answers SERVING.

The examples per CI run add up to 5,200 (`EXAMPLES`).
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.server.core.names import DEFAULT_MODEL
from tests.security.conftest import MAX_MESSAGE_BYTES, MAX_SAMPLES, health, raw, rows

OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED, NOT_FOUND = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND
FUZZ_MODEL = "fuzz"
WIDTHS = {DEFAULT_MODEL: 16, FUZZ_MODEL: 3}  # input width of each model under test
UNITS = {DEFAULT_MODEL: 4, FUZZ_MODEL: 2}
EXAMPLES = {"process": 3400, "stream": 600, "names": 1200}
# Huge inputs overflow the server's running quality estimates (they become inf or NaN,
# which is what they are); numpy warns about it in the server's threads.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}
_ids = itertools.count()

# Names an attacker would try: paths, look-alikes, invisible and combining characters.
TRICKY_NAMES = [
    "../x", "..", ".", "/etc", "/etc/passwd", "a/b", "a\\b", "..\\x", "~root", "a/../b",
    "default/", "/default", "default\n", "default\x00", " default", "default ",
    "DEFAULT", "Default", "ｄｅｆａｕｌｔ", "fuzz\u200b", "\u200bfuzz", "fu\u200dzz",
    "fuzz\u0301", "e\u0301", "é", "ﬁle", "fuzz\ufeff", "\u202edefault", "a" * 64, "-a", "_a",
    "a.b", "a b", "%2e%2e%2fx", "a:b", "CON", "NUL", "\u0430dmin",  # Cyrillic a
]


def name_is_valid(name: str) -> bool:
    """The documented rule, written independently: 1-63 of [a-z0-9_-], first [a-z0-9]."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    return 1 <= len(name) <= 63 and set(name) <= allowed and name[0] not in "_-"


def resolve(name: str) -> tuple[str | None, grpc.StatusCode]:
    """(model the request goes to, OK) or (None, the status a bad name gets)."""
    name = name or DEFAULT_MODEL
    if not name_is_valid(name):
        return None, INVALID
    return (name, OK) if name in WIDTHS else (None, NOT_FOUND)


names = st.one_of(
    st.sampled_from(["", DEFAULT_MODEL, FUZZ_MODEL, FUZZ_MODEL, FUZZ_MODEL]),
    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True),
    st.sampled_from(TRICKY_NAMES),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=70),
)
SPECIALS = np.array([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -0.0], np.float32)


@dataclass(frozen=True)
class Expect:
    """What a request must get: status, and (if accepted) its model and sample count."""

    code: grpc.StatusCode
    model: str | None = None
    samples: int = 0


@st.composite
def tensors(draw, width: int) -> tuple[pb.Tensor, int | None, bool]:
    """(tensor, rows if its shape and values agree else None, all values finite)."""
    n = draw(st.integers(1, MAX_SAMPLES + 8) | st.integers(0, 3))
    layout = draw(st.sampled_from(
        ["exact", "exact", "exact", "single", "omitted", "wrong_width", "ragged", "random"]
    ))
    if layout == "exact":
        shape, count = [n, width], n * width
    elif layout == "single":
        shape, count = [width], width
    elif layout == "omitted":
        shape, count = [], n * width
    elif layout == "wrong_width":
        other = draw(st.integers(0, 40).filter(lambda w: w != width))
        shape, count = [n, other], n * other
    elif layout == "ragged":
        delta = draw(st.integers(-width, width).filter(lambda d: d != 0))
        shape, count = [n, width], max(0, n * width + delta)
    else:
        shape = draw(st.lists(st.integers(-3, MAX_SAMPLES + 8), max_size=3))
        count = draw(st.integers(0, (MAX_SAMPLES + 8) * width))
    seed, scale = draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from([1.0, 1e3, 1e18]))
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=count) * scale).astype(np.float32)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 3]))):
        if count:
            values[rng.integers(count)] = SPECIALS[rng.integers(len(SPECIALS))]
    encoding = draw(st.sampled_from(["raw", "raw", "values", "both", "random_raw", "cut_raw"]))
    tensor = pb.Tensor(shape=shape)
    data = values.astype("<f4").tobytes()
    if encoding == "raw":
        tensor.raw = data
    elif encoding == "values":
        tensor.values.extend(values.tolist())
    elif encoding == "both":
        tensor.raw, _ = data, tensor.values.extend(values.tolist())
    elif encoding == "cut_raw":
        tensor.raw = data + draw(st.binary(min_size=1, max_size=3))
    else:
        tensor.raw = draw(st.binary(max_size=8 * width))
    agreed = _rows(tensor, width)
    finite = bool(np.isfinite(_floats(tensor)).all()) if agreed is not None else False
    return tensor, agreed, finite


def _floats(tensor: pb.Tensor) -> np.ndarray:
    if tensor.raw:
        return np.frombuffer(tensor.raw, "<f4")
    return np.array(tensor.values, np.float32)


def _rows(tensor: pb.Tensor, width: int) -> int | None:
    """Samples described by a well-formed tensor for `width`; None if it is malformed."""
    if tensor.raw and tensor.values:
        return None
    if len(tensor.raw) % 4:
        return None
    count = len(tensor.raw) // 4 if tensor.raw else len(tensor.values)
    shape = list(tensor.shape)
    if count == 0 or len(shape) > 2 or any(d <= 0 for d in shape):
        return None
    if not shape:
        return count // width if count % width == 0 else None
    if shape[-1] != width:
        return None
    n = shape[0] if len(shape) == 2 else 1
    return n if n * width == count else None


@st.composite
def process_requests(draw, cls=pb.ProcessRequest, names=names):
    """(request, Expect) with the status the documented rules give it."""
    name = draw(names)
    model, code = resolve(name)
    width = WIDTHS.get(model, draw(st.sampled_from([3, 16])))
    tensor, agreed, finite = draw(tensors(width))
    request = cls(model=name, samples=tensor)
    learn = draw(st.sampled_from([None, True, False]))
    if learn is not None:
        request.learn = learn
    if draw(st.booleans()):
        suffix = draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=30))
        request.request_id = f"{next(_ids)}-{suffix}"  # unique: repeats get the first answer
    if request.ByteSize() > MAX_MESSAGE_BYTES:
        return request, Expect(EXHAUSTED)
    if code != OK:
        return request, Expect(code)
    if agreed is None:
        return request, Expect(INVALID)
    if agreed > MAX_SAMPLES:
        return request, Expect(EXHAUSTED)
    if not finite:
        return request, Expect(INVALID)
    return request, Expect(OK, model, agreed)


@st.composite
def oversized(draw):
    """A message over the server's size limit, with otherwise valid samples or not."""
    count = MAX_MESSAGE_BYTES // 4 + draw(st.integers(1, 4096))
    return pb.ProcessRequest(model=FUZZ_MODEL, samples=pb.Tensor(raw=bytes(4 * count)))


class Models:
    """The known state of each model: step and an inference-only probe of its weights."""

    def __init__(self, stub: pb_grpc.HebbianServiceStub):
        self.stub = stub
        self.known = {name: self.read(name) for name in WIDTHS}

    def read(self, name: str) -> tuple[int, bytes]:
        step = self.stub.GetModel(pb.GetModelRequest(name=name), timeout=10).model.step
        probe = raw(np.eye(WIDTHS[name], dtype=np.float32))
        answer = self.stub.Process(
            pb.ProcessRequest(model=name, samples=probe, learn=False), timeout=10
        )
        assert answer.step == step
        return step, answer.activations.raw

    def assert_unchanged(self, name: str) -> None:
        assert self.read(name) == self.known[name], f"model {name!r} changed"

    def assert_advanced(self, name: str, learned: int) -> None:
        step, probe = self.read(name)
        before_step, before_probe = self.known[name]
        assert step == before_step + learned
        if learned == 0:
            assert probe == before_probe
        self.known[name] = (step, probe)


@pytest.fixture(scope="module")
def stub(limited_channel) -> pb_grpc.HebbianServiceStub:
    return pb_grpc.HebbianServiceStub(limited_channel)


@pytest.fixture(scope="module")
def models(stub) -> Iterator[Models]:
    """The fuzz model (3 inputs -> 2 units, oja) beside the default one, and their state."""
    config = pb.ModelConfig(
        input_dim=3, layers=[pb.LayerConfig(units=2, rule="oja", learning_rate=0.01, seed=3)]
    )
    stub.CreateModel(pb.CreateModelRequest(name=FUZZ_MODEL, config=config), timeout=120)
    yield Models(stub)
    stub.DeleteModel(pb.DeleteModelRequest(name=FUZZ_MODEL), timeout=60)


def learned_samples(request, expect: Expect, response) -> int:
    learning = not request.HasField("learn") or request.learn
    return expect.samples - len(response.skipped_samples) if learning else 0


def check_answer(request, expect: Expect, response) -> None:
    out = rows(response.activations)
    assert out.shape == (expect.samples, UNITS[expect.model])
    assert response.request_id == request.request_id
    assert response.model == expect.model
    assert bool(response.activations.raw) == bool(request.samples.raw)


@settings(max_examples=EXAMPLES["process"], **SETTINGS)
@given(case=st.integers(0, 49).flatmap(  # 1 in 50: a message over the size limit
    lambda i: st.tuples(oversized(), st.just(Expect(EXHAUSTED))) if i == 0 else process_requests()
))
def test_process_answers_every_request_as_documented_and_refusals_change_nothing(
    stub, models, case
):
    request, expect = case
    try:
        response = stub.Process(request, timeout=10)
        code = OK
    except grpc.RpcError as err:
        code, response = err.code(), None
    assert code == expect.code, (code, expect, request.samples.shape)
    if code == OK:
        check_answer(request, expect, response)
        models.assert_advanced(expect.model, learned_samples(request, expect, response))
    else:
        model, _ = resolve(request.model)
        models.assert_unchanged(model or FUZZ_MODEL)


@settings(max_examples=EXAMPLES["stream"], **SETTINGS)
@given(case=st.lists(process_requests(pb.StreamProcessRequest), min_size=1, max_size=4))
def test_a_stream_answers_messages_until_the_first_refused_one_which_ends_it(
    stub, models, case
):
    case = [(r, e) for r, e in case if e.code != EXHAUSTED or r.ByteSize() <= MAX_MESSAGE_BYTES]
    if not case:
        return
    refused = next((i for i, (_, e) in enumerate(case) if e.code != OK), None)
    answers, code = [], OK
    try:
        answers.extend(stub.StreamProcess(iter([r for r, _ in case]), timeout=10))
    except grpc.RpcError as err:
        code = err.code()
    expected_code = OK if refused is None else case[refused][1].code
    assert code == expected_code
    accepted = case if refused is None else case[:refused]
    assert len(answers) == len(accepted)
    learned = dict.fromkeys(WIDTHS, 0)
    for (request, expect), response in zip(accepted, answers, strict=True):
        check_answer(request, expect, response)
        learned[expect.model] += learned_samples(request, expect, response)
    touched = {e.model for _, e in accepted} | {resolve(r.model)[0] for r, _ in case}
    for name in touched & set(WIDTHS):
        models.assert_advanced(name, learned[name])


@st.composite
def model_calls(draw):
    """(method, request, expected status) for the model-management methods."""
    method = draw(st.sampled_from(
        ["GetModel", "DeleteModel", "Reset", "Snapshot", "ListSnapshots", "Restore",
         "CreateModel"]
    ))
    name = draw(names)
    model, code = resolve(name)
    if method == "CreateModel":
        config = pb.ModelConfig(input_dim=0, layers=[pb.LayerConfig(units=1)])  # never valid
        request = pb.CreateModelRequest(name=name, config=config)
        if not name_is_valid(name):
            return method, request, INVALID
        return method, request, grpc.StatusCode.ALREADY_EXISTS if model else INVALID
    if method in ("DeleteModel", "Reset", "Restore") and (model or not name):
        name, model, code = "no-such-model", None, NOT_FOUND  # never touch the live models
    if method == "DeleteModel":
        return method, pb.DeleteModelRequest(name=name), INVALID if not name else code
    if method == "Restore":
        snapshot_id = draw(st.sampled_from(["", "../x", "/etc/passwd", "0" * 16, "１２"])
                           | st.text(max_size=20))
        return method, pb.RestoreRequest(name=name, snapshot_id=snapshot_id), code
    request_type = {"GetModel": pb.GetModelRequest, "Reset": pb.ResetRequest,
                    "Snapshot": pb.SnapshotRequest, "ListSnapshots": pb.ListSnapshotsRequest}
    return method, request_type[method](name=name), code


@settings(max_examples=EXAMPLES["names"], **SETTINGS)
@given(case=model_calls())
def test_model_names_outside_the_safe_pattern_are_invalid_for_every_method(
    limited_server, stub, models, case
):
    method, request, expected_code = case
    before = limited_server.registry.names()
    try:
        getattr(stub, method)(request, timeout=10)
        code = OK
    except grpc.RpcError as err:
        code = err.code()
    if method == "Snapshot" and expected_code == OK:  # a server without a data directory
        expected_code = grpc.StatusCode.FAILED_PRECONDITION
    assert code == expected_code, (method, request)
    assert limited_server.registry.names() == before


def test_the_server_is_still_serving_and_the_models_unharmed(limited_channel, models):
    assert health(limited_channel, "readiness") == "SERVING"
    assert health(limited_channel, "liveness") == "SERVING"
    for name in WIDTHS:
        models.assert_unchanged(name)


def test_the_tricky_names_really_are_tricky():
    """The look-alike list holds what it claims (guards against an editor normalising it)."""
    assert not any(name_is_valid(n) for n in TRICKY_NAMES)
    assert unicodedata.normalize("NFKC", "ｄｅｆａｕｌｔ") == "default"
    assert "\u200b" in "fuzz\u200b"
