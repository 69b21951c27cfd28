"""asyncio client of the Hebbian service: `HebbianClient`'s surface on `grpc.aio`.

Every method of `HebbianClient` exists here with the same arguments; the unary ones are
coroutines, `stream_full` and `stream` are async iterators (over an iterable or an async
iterable of batches). The same retry policy, `wait_for_ready` rule and stream resumption
apply. Create the client inside the event loop that uses it:

    async with AsyncHebbianClient("127.0.0.1:50051") as client:
        y = await client.learn_one(x)
        async for result in client.stream_full(batches):
            print(result.step)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from service.client import (
    ClientSurface,
    HebbianError,
    ServerUnavailableError,
    connect_failure,
    model_metadata,
    new_stream_prefix,
    request_model,
    stream_message,
)
from service.client_resume import Ledger, Message, Reconnect, StreamOutOfOrderError, resumable
from service.codec.answers import ProcessResult, process_result


class AsyncHebbianClient(ClientSurface):
    """A connection to one Hebbian server for asyncio; arguments as `HebbianClient`'s."""

    _channels = grpc.aio

    # -- connection -------------------------------------------------------------------

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncHebbianClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self, timeout: float | None = None) -> None:
        """Waits until the channel is connected; raises `ServerUnavailableError` if it fails
        (at once for a refused connection, after `timeout` seconds for no answer)."""
        timeout = self.connect_timeout if timeout is None else timeout
        failed = {grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN}
        state = self._channel.get_state(try_to_connect=True)
        try:
            async with asyncio.timeout(timeout):
                while state != grpc.ChannelConnectivity.READY and state not in failed:
                    await self._channel.wait_for_state_change(state)
                    state = self._channel.get_state(try_to_connect=True)
        except TimeoutError:
            raise ServerUnavailableError(self.target, connect_failure(False, timeout)) from None
        if state != grpc.ChannelConnectivity.READY:
            raise ServerUnavailableError(self.target, connect_failure(True, timeout))
        self._connected = True

    async def _ensure_connected(self) -> bool:
        if self.wait_for_ready is None and not self._connected:
            await self.connect()
        return self.wait_for_ready is not False

    def _unary(self, method: str, request: Any, extract: Callable[[Any], Any]) -> Any:
        async def call() -> Any:
            wait = await self._ensure_connected()
            try:
                response = await getattr(self._stub, method)(
                    request, timeout=self.timeout, wait_for_ready=wait,
                    metadata=model_metadata(self._metadata, request_model(request)),
                )
            except grpc.aio.AioRpcError as error:
                raise HebbianError.from_rpc_error(error, self.target) from None
            return extract(response)

        return call()

    # -- streams ----------------------------------------------------------------------

    async def stream_full(
        self,
        batches: Iterable[Any] | AsyncIterable[Any],
        *,
        model: str = "",
        learn: bool = True,
        window: int | None = None,
        id_prefix: str | None = None,
        resume: bool = True,
    ) -> AsyncIterator[ProcessResult]:
        """`HebbianClient.stream_full` for asyncio: the same ids, window and resumption."""
        await self._ensure_connected()
        prefix = id_prefix if id_prefix is not None else new_stream_prefix()
        messages = _messages(batches, model=model, learn=learn, prefix=prefix)
        ledger, changed = Ledger(window), asyncio.Condition()
        feeder = asyncio.create_task(_feed(messages, ledger, changed))
        reconnect = Reconnect(
            self.reconnect_timeout, lambda why: ServerUnavailableError(self.target, why)
        )
        try:
            while True:
                call = self._stub.StreamProcess(
                    metadata=model_metadata(self._metadata, model),
                    wait_for_ready=self.wait_for_ready is not False or reconnect.attempts > 0,
                )
                writer = asyncio.create_task(_write(call, ledger, changed, ledger.answered))
                try:
                    async for response in call:
                        async with changed:
                            message = ledger.answer(response.request_id)
                            changed.notify_all()
                        reconnect.progress()
                        yield process_result(response, single=message.single)
                    ledger.finish()
                    return
                except grpc.aio.AioRpcError as error:
                    if not (resume and resumable(error.code(), error.details())):
                        raise HebbianError.from_rpc_error(error, self.target) from None
                    reason = error.details() or "UNAVAILABLE"
                except StreamOutOfOrderError as error:
                    raise HebbianError(grpc.StatusCode.INTERNAL, str(error)) from None
                finally:
                    writer.cancel()
                    call.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await writer
                await asyncio.sleep(reconnect.backoff(reason))
                try:  # the new call waits for the server; this bounds how long
                    async with asyncio.timeout(reconnect.remaining()):
                        await self._channel.channel_ready()
                except TimeoutError:
                    raise reconnect.gave_up(reason) from None
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder

    async def stream(
        self, batches: Iterable[Any] | AsyncIterable[Any], model: str = "", learn: bool = True
    ) -> AsyncIterator[Any]:
        """Like `stream_full`, yielding only the activations of each batch."""
        async for result in self.stream_full(batches, model=model, learn=learn):
            yield result.activations


async def _messages(
    batches: Iterable[Any] | AsyncIterable[Any], *, model: str, learn: bool, prefix: str
) -> AsyncIterator[Message]:
    """The stream's messages from a plain or an async iterable of batches."""
    index = 0
    if isinstance(batches, AsyncIterable):
        async for batch in batches:
            yield stream_message(index, batch, model=model, learn=learn, prefix=prefix)
            index += 1
    else:
        for batch in batches:
            yield stream_message(index, batch, model=model, learn=learn, prefix=prefix)
            index += 1


async def _feed(
    messages: AsyncIterator[Message], ledger: Ledger, changed: asyncio.Condition
) -> None:
    """Reads the source into the ledger, keeping at most `window` messages unanswered.

    One task for the whole stream, so a call that breaks never interrupts a read."""
    error: BaseException | None = None
    try:
        while True:
            async with changed:
                await changed.wait_for(lambda: not ledger.window_full())
            try:
                message = await anext(messages)
            except StopAsyncIteration:
                break
            async with changed:
                ledger.add(message)
                changed.notify_all()
    except Exception as raised:  # re-raised by Ledger.finish() once the answers are in
        error = raised
    async with changed:
        ledger.end(error)
        changed.notify_all()


async def _write(call: Any, ledger: Ledger, changed: asyncio.Condition, start: int) -> None:
    """Sends message `start` onwards on one call (first the unanswered ones), then closes
    the call's sending side when the source has ended."""
    index = start
    try:
        while True:
            async with changed:
                while not (index < ledger.read or ledger.exhausted):
                    await changed.wait()
                request = ledger.at(index).request if index < ledger.read else None
            if request is None:
                await call.done_writing()
                return
            await call.write(request)
            index += 1
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return  # the call broke; its reader sees why
