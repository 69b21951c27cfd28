"""Both clients' streams survive a server killed with SIGKILL in the middle and restarted.

A real `hebbian serve` (fsync always) on its own data directory is frozen (SIGSTOP) in
the middle of a stream, so the messages sent after that stay unanswered, then killed
(SIGKILL) and started again on the same directory and port. The stream
helper resends the unanswered messages with their request ids on a new call; the server
answers those it had already logged with their first answers. Evidence of exactly once:
every batch is answered once, in order, and batch i's step is exactly (i + 1) * size, so
no batch was applied twice or skipped; the final step equals the number of samples sent.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import numpy as np
import pytest

from service.client import HebbianClient
from service.client_aio import AsyncHebbianClient
from tests.server_process import ServerProcess

BATCHES = 300
SIZE = 4  # samples per batch
KILL_AT = 100  # the source pauses after this batch until the server has been killed
WINDOW = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("resume"), "--fsync", "always")
    server.start()
    yield server
    server.stop()


class Killer:
    """Freezes the server, SIGKILLs it a second later, then restarts it on the same port
    and data directory (in a thread, while the stream goes on sending into the frozen
    server as far as its window lets it)."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.frozen = threading.Event()
        self.killed = threading.Event()
        self.restarted = threading.Event()
        self.old_pid = server.process.pid
        self.error: BaseException | None = None

    def trigger(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self.server.process.send_signal(signal.SIGSTOP)
            self.frozen.set()
            time.sleep(1.0)  # how many messages get sent meanwhile does not matter
            self.server.process.send_signal(signal.SIGKILL)
            self.server.process.wait()
            self.killed.set()
            self.server.start()
            self.restarted.set()
        except BaseException as error:  # reported by the test
            self.error = error
            self.killed.set()


def batches(killer: Killer, width: int = 16):
    """BATCHES batches of SIZE samples; the server is frozen before batch KILL_AT is
    read, so batches from there on are in flight (sent, not answered) when it dies."""
    rng = np.random.default_rng(0)
    for index in range(BATCHES):
        if index == KILL_AT:
            killer.trigger()
            assert killer.frozen.wait(60), "the server was not frozen"
        yield rng.normal(size=(SIZE, width)).astype(np.float32)


def check_exactly_once(results, prefix: str, model_step: int, start: int) -> None:
    assert [r.request_id for r in results] == [f"{prefix}:{i}" for i in range(BATCHES)]
    assert [r.step - start for r in results] == [SIZE * (i + 1) for i in range(BATCHES)]
    assert model_step - start == BATCHES * SIZE


def test_a_stream_resumes_after_sigkill_and_applies_every_batch_exactly_once(server):
    with HebbianClient(server.target, timeout=60, reconnect_timeout=240) as client:
        start = client.get_model().step
        killer = Killer(server)

        results = list(client.stream_full(batches(killer), window=WINDOW, id_prefix="sync"))

        assert killer.error is None, killer.error
        assert killer.restarted.is_set() and server.process.pid != killer.old_pid
        check_exactly_once(results, "sync", client.get_model().step, start)


def test_an_asyncio_stream_resumes_after_sigkill_exactly_once(server):
    async def run():
        async with AsyncHebbianClient(server.target, timeout=60, reconnect_timeout=240) as client:
            start = (await client.get_model()).step
            killer = Killer(server)
            results = [r async for r in client.stream_full(
                batches(killer), window=WINDOW, id_prefix="aio")]
            return killer, results, (await client.get_model()).step, start

    killer, results, step, start = asyncio.run(run())

    assert killer.error is None, killer.error
    assert killer.restarted.is_set() and server.process.pid != killer.old_pid
    check_exactly_once(results, "aio", step, start)


def test_a_unary_call_waits_for_a_restarting_server_once_connected(server):
    with HebbianClient(server.target, timeout=240) as client:
        before = client.get_model().step
        killer = Killer(server)
        killer.trigger()
        assert killer.killed.wait(60)

        answer = client.learn_one(np.ones(16, np.float32))  # waits for the new server

        assert killer.error is None, killer.error
        assert killer.restarted.wait(1)
        assert answer.shape == (4,)
        assert client.get_model().step == before + 1
