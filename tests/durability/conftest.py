"""Helpers for durability tests: real `hebbian serve` processes, SIGKILL, offline replay."""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path

import grpc
import numpy as np

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import encode_samples
from service.model import HebbianStack, StackConfig
from service.state.records import BatchRecord, ResetRecord, UpdateRecord
from service.state.wal import WriteAheadLog
from tests.server_process import ServerProcess

WIDTH = 16  # the embedded default model: 16 -> 4, sanger


def kill(server: ServerProcess) -> None:
    """SIGKILL: no shutdown code runs, as in an OOM kill or a power cut of the process."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()


def live_kernel(stub: pb_grpc.HebbianServiceStub, model: str = "") -> np.ndarray:
    """The first layer's kernel, read without changing anything: an inference-only pass of
    the identity matrix gives I @ K = K exactly (for a linear layer without laterals)."""
    response = stub.Process(pb.ProcessRequest(
        model=model, samples=encode_samples(np.eye(WIDTH, dtype=np.float32)), learn=False
    ))
    return np.frombuffer(response.activations.raw, "<f4").reshape(WIDTH, -1)


def step_of(stub: pb_grpc.HebbianServiceStub, model: str = "") -> int:
    return stub.GetModel(pb.GetModelRequest(name=model)).model.step


class Replayer:
    """Replays a model's log offline on a fresh engine, incrementally: each `catch_up`
    applies the records logged since the previous one (the log is append-only while no
    snapshot compacts it). Works on a copy of the files, never on the server's own."""

    def __init__(self, data_dir: Path, scratch: Path, model: str = "default"):
        self.source = Path(data_dir) / "models" / model
        self.copy = Path(scratch) / model
        self.stack: HebbianStack | None = None
        self.last_seq = 0

    def catch_up(self) -> tuple[np.ndarray, int]:
        """(kernel of layer 0, step) after every record logged so far."""
        shutil.rmtree(self.copy, ignore_errors=True)
        shutil.copytree(self.source, self.copy)
        if self.stack is None:
            document = json.loads((self.copy / "config.json").read_text())
            document.pop("create_time", None)
            self.stack = HebbianStack(StackConfig.from_dict(document))
        wal = WriteAheadLog(self.copy / "wal")
        for record in wal.recover():
            if record.seq <= self.last_seq:
                continue
            if isinstance(record, BatchRecord):
                self.stack.engine.process(record.samples, record.learn)
            elif isinstance(record, ResetRecord):
                self.stack.reset(record.seed)
            elif isinstance(record, UpdateRecord):
                self.stack.update(record.layers)
            else:
                raise AssertionError(f"unexpected record {record}")
            self.last_seq = record.seq
        wal.close()
        return self.stack.layer_states()[0].kernel, self.stack.engine.step


class Sensor(threading.Thread):
    """A stream client that sends batches until the server dies, counting what was
    acknowledged (an answer received means: logged and applied)."""

    def __init__(self, target: str, name: str, seed: int):
        super().__init__(daemon=True, name=name)
        self.target, self.rng = target, np.random.default_rng(seed)
        self.acknowledged = 0
        self.sent = 0
        self.error: grpc.RpcError | None = None

    def messages(self):
        index = 0
        while True:
            samples = self.rng.normal(size=(int(self.rng.integers(1, 17)), WIDTH))
            self.sent += len(samples)
            index += 1
            yield pb.StreamProcessRequest(
                samples=encode_samples(samples.astype(np.float32)),
                request_id=f"{self.name}:{index}",
            )

    def run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.HebbianServiceStub(channel)
            try:
                for response in stub.StreamProcess(self.messages()):
                    self.acknowledged += response.activations.shape[0]
            except grpc.RpcError as err:
                self.error = err
