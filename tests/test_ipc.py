"""Listeners, connections and channels over real unix and tcp sockets."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import pytest
import trio
import trio.testing

from dapper_trio._errors import TransportError
from dapper_trio._ipc import (
    Address,
    Channel,
    ConnectionLost,
    HandshakeError,
    IPCError,
    Listener,
    Peer,
    RemoteCommandError,
    RequestHandler,
    UnknownMethod,
    connect,
    new_token,
    open_listener,
)
from dapper_trio._wire import FrameDecoder, FrameKind, LocalProtocolError, encode_frame

TIMEOUT = 10.0
TRANSPORTS = ["unix", "tcp"]

Transport = Literal["unix", "tcp"]


@pytest.fixture(name="token")
def _token() -> str:
    return new_token()


@pytest.fixture(name="runtime_dir")
def _runtime_dir() -> str:
    return os.environ["DAPPER_TRIO_RUNTIME_DIR"]


@pytest.fixture(name="ipc_log")
def _ipc_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="dapper_trio.ipc")
    return caplog


async def echo(method: str, params: Any) -> Any:
    """A request handler: echoes, fails, sleeps or rejects, by method name."""
    if method == "echo":
        return params
    if method == "fail":
        raise ValueError(f"failing as asked: {params}")
    if method == "sleep":
        await trio.sleep(params)
        return params
    if method == "unserialisable":
        return object()
    raise UnknownMethod(method)


def sync_echo(method: str, params: Any) -> Any:
    """``echo`` as a plain function, which the reader runs inline.

    For "sleep" it returns a coroutine, which the channel awaits in a task.
    """
    if method == "echo":
        return params
    if method == "fail":
        raise ValueError(f"failing as asked: {params}")
    if method == "sleep":
        return sleep_then_return(params)
    if method == "unserialisable":
        return object()
    raise UnknownMethod(method)


async def sleep_then_return(seconds: float) -> float:
    await trio.sleep(seconds)
    return seconds


@pytest.fixture(name="handler", params=["async", "sync"])
def _handler(request: pytest.FixtureRequest) -> RequestHandler:
    """The echo request handler, as an ``async def`` and as a plain function."""
    return echo if request.param == "async" else sync_echo


@asynccontextmanager
async def serving(
    token: str,
    *,
    transport: Transport = "unix",
    on_channel: Callable[[Channel], Awaitable[object]] | None = None,
    request_handler: RequestHandler | None = echo,
    event_handler: Callable[[str, Any], Awaitable[None]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[Listener, trio.MemoryReceiveChannel[Channel]]]:
    """Run a listener's serve() for the block; yield it and its accepted channels."""
    send, receive = trio.open_memory_channel[Channel](100)

    async def default_on_channel(channel: Channel) -> None:
        send.send_nowait(channel)
        await channel.wait_closed()

    async with (
        open_listener(
            token=token, transport=transport, name="server", **kwargs
        ) as listener,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(
            partial(
                listener.serve,
                on_channel or default_on_channel,
                request_handler=request_handler,
                event_handler=event_handler,
            )
        )
        yield listener, receive
        nursery.cancel_scope.cancel()


async def raw_connect(address: Address) -> trio.SocketStream:
    if address.transport == "unix":
        return await trio.open_unix_socket(address.path)
    return await trio.open_tcp_stream(address.host, address.port)


def hello(token: str, name: str = "raw") -> bytes:
    return encode_frame(
        FrameKind.HANDSHAKE,
        {"protocol": 1, "token": token, "name": name, "pid": os.getpid()},
    )


async def read_until_eof(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside *exc*, with exception groups flattened."""
    inner = getattr(exc, "exceptions", None)
    if inner is None:
        return [exc]
    return [leaf for child in inner for leaf in leaves(child)]


def decode_frames(data: bytes) -> list[Any]:
    decoder = FrameDecoder(peer="test")
    decoder.feed(data)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


# -- requests, responses, events -----------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_requests_both_directions(
    token: str, transport: Transport, handler: RequestHandler
) -> None:
    """Either side can request; each gets the other's handler's result."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, transport=transport, request_handler=handler) as (
                listener,
                accepted,
            ),
            connect(
                listener.address, token=token, name="client", request_handler=handler
            ) as client,
        ):
            server = await accepted.receive()
            assert client.peer == Peer("server", os.getpid())
            assert server.peer == Peer("client", os.getpid())
            assert await client.request("echo", {"x": [1, "é"]}) == {"x": [1, "é"]}
            assert await server.request("echo", "back") == "back"
            assert await client.request("echo") is None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_large_payloads(
    token: str, transport: Transport, handler: RequestHandler
) -> None:
    """A 4 MiB request and its response cross intact."""
    payload = "é" * (2 * 1024 * 1024)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, transport=transport, request_handler=handler) as (
                listener,
                _,
            ),
            connect(listener.address, token=token, name="client") as client,
        ):
            assert await client.request("echo", payload) == payload


async def test_concurrent_requests_answered_out_of_order(token: str) -> None:
    """Responses are matched to requests by id, whatever order they come in."""
    release = {n: trio.Event() for n in range(3)}
    answered = {n: trio.Event() for n in range(3)}
    finished: list[int] = []

    async def handler(method: str, params: Any) -> Any:
        await release[params].wait()
        return params * 10

    async def ask(client: Channel, n: int) -> None:
        assert await client.request("wait", n) == n * 10
        finished.append(n)
        answered[n].set()

    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
            trio.open_nursery() as nursery,
        ):
            for n in range(3):
                nursery.start_soon(ask, client, n)
            await trio.testing.wait_all_tasks_blocked()
            for n in (2, 0, 1):
                release[n].set()
                await answered[n].wait()
    assert finished == [2, 0, 1]


async def test_slow_request_does_not_block_others(
    token: str, handler: RequestHandler
) -> None:
    """A request whose handler sleeps forever does not delay the next one.

    With the plain-function handler, "sleep" returns a coroutine: awaitable
    results are awaited in a task of their own, like ``async def`` handlers.
    """
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(client.request, "sleep", 3600)
            await trio.testing.wait_all_tasks_blocked()
            assert await client.request("echo", 1) == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_events_arrive_in_order(token: str, transport: Transport) -> None:
    """Events are handled one at a time, in the order they were sent, both ways."""
    at_server: list[Any] = []
    at_client: list[Any] = []

    async def server_events(event: str, body: Any) -> None:
        at_server.append((event, body))

    async def client_events(event: str, body: Any) -> None:
        at_client.append((event, body))

    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, transport=transport, event_handler=server_events) as (
                listener,
                accepted,
            ),
            connect(
                listener.address,
                token=token,
                name="client",
                request_handler=echo,
                event_handler=client_events,
            ) as client,
        ):
            server = await accepted.receive()
            for n in range(200):
                await client.send_event("tick", n)
                await server.send_event("tock", {"n": n})
            await client.send_event("no-body")
            # A request after the events is dispatched after they were handled.
            await client.request("echo")
            await server.request("echo")
    assert at_server == [("tick", n) for n in range(200)] + [("no-body", None)]
    assert at_client == [("tock", {"n": n}) for n in range(200)]


async def test_send_events_sends_a_batch_in_order(token: str) -> None:
    """send_events: every event of the batch arrives, in order; none is nothing."""
    received: list[Any] = []

    async def events(event: str, body: Any) -> None:
        received.append((event, body))

    batch = [("a", 1), ("b", {"x": [2]}), ("c", None)] * 50
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, event_handler=events) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
        ):
            await client.send_events([])
            await client.send_events(batch)
            await client.send_event("after")
            await client.request("echo")  # dispatched after the events
    assert received == [*batch, ("after", None)]


async def test_events_without_handler_are_dropped(token: str) -> None:
    """With no event handler, events are dropped and the channel carries on."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, event_handler=None) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
        ):
            await client.send_event("ignored", [1])
            assert await client.request("echo", 2) == 2


async def test_failing_event_handler_is_logged(
    token: str, ipc_log: pytest.LogCaptureFixture
) -> None:
    """An event handler that raises is logged; the connection stays up."""

    async def broken(event: str, body: Any) -> None:
        raise KeyError(body)

    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, event_handler=broken) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
        ):
            await client.send_event("bad", "missing-key")
            assert await client.request("echo", 3) == 3
    assert "the handler for event 'bad' from 'client pid" in ipc_log.text
    assert "missing-key" in ipc_log.text


async def test_handler_error_becomes_remote_command_error(
    token: str, handler: RequestHandler
) -> None:
    """A handler's exception reaches the requester with type, message, traceback.

    For a plain-function handler too, whose exception is raised in the reader
    task: the reader answers with the error and goes on.
    """
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
        ):
            with pytest.raises(RemoteCommandError) as info:
                await client.request("fail", 42)
            error = info.value
            assert error.error_type == "ValueError"
            assert error.message == "failing as asked: 42"
            assert "Traceback (most recent call last)" in error.remote_traceback
            assert f"in {handler.__name__}" in error.remote_traceback
            assert error.method == "fail"
            assert "peer 'server pid" in str(error)
            assert not isinstance(error, TransportError)
            # The command failed, not the connection.
            assert not client.closed
            assert await client.request("echo", "still fine") == "still fine"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.error_type, copy.message, copy.remote_traceback) == (
        error.error_type,
        error.message,
        error.remote_traceback,
    )


async def test_unknown_method_and_missing_handler(
    token: str, handler: RequestHandler
) -> None:
    """UnknownMethod from a handler, or no handler at all, answer 'UnknownMethod'."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler) as (listener, accepted),
            connect(listener.address, token=token, name="client") as client,
        ):
            server = await accepted.receive()
            with pytest.raises(RemoteCommandError) as info:
                await client.request("no-such-method")
            assert info.value.error_type == "UnknownMethod"
            with pytest.raises(RemoteCommandError) as info:
                await server.request("anything")  # the client has no handler
            assert info.value.error_type == "UnknownMethod"
            assert "no request handler" in info.value.message


async def test_unserialisable_values(token: str, handler: RequestHandler) -> None:
    """Bad params fail locally, sending nothing; a bad result fails remotely."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
        ):
            with pytest.raises(LocalProtocolError):
                await client.request("echo", {1, 2})
            with pytest.raises(LocalProtocolError):
                await client.send_event("x", object())
            with pytest.raises(RemoteCommandError) as info:
                await client.request("unserialisable")
            assert info.value.error_type == "LocalProtocolError"
            assert await client.request("echo", 5) == 5


async def test_late_response_is_discarded(token: str, handler: RequestHandler) -> None:
    """A request cancelled while waiting never confuses the next request."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
        ):
            with trio.move_on_after(0.01):
                await client.request("sleep", 0.05)
            await trio.sleep(0.1)  # the late response arrives and is dropped
            assert await client.request("echo", "next") == "next"
            assert not client.closed


async def test_sync_handler_runs_in_the_reader_in_order(token: str) -> None:
    """A plain-function handler is called by the reader, in frame order with events."""
    seen: list[tuple[str, Any]] = []
    tasks: set[str] = set()

    def handler(method: str, params: Any) -> Any:
        seen.append((method, params))
        tasks.add(trio.lowlevel.current_task().name)
        return params

    async def on_event(event: str, body: Any) -> None:
        seen.append((event, body))

    frames = []
    for n in range(50):
        if n % 3 == 0:
            frames.append(encode_frame(FrameKind.EVENT, {"event": "tick", "body": n}))
        else:
            request = {"id": n, "method": "ask", "params": n}
            frames.append(encode_frame(FrameKind.REQUEST, request))
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler, event_handler=on_event) as (
                listener,
                _,
            ),
            await raw_connect(listener.address) as stream,
        ):
            await stream.send_all(hello(token))
            await stream.send_all(b"".join(frames))  # all at once
            decoder = FrameDecoder(peer="server")
            responses = []
            while len(responses) < 50 - 17:
                frame = decoder.next_frame()
                if frame is None:
                    decoder.feed(await stream.receive_some())
                elif frame.kind is FrameKind.RESPONSE:
                    responses.append(frame.payload)
    assert seen == [("tick" if n % 3 == 0 else "ask", n) for n in range(50)]
    assert len(tasks) == 1
    assert tasks.pop().startswith("dapper_trio.ipc reader for raw pid")
    assert sorted(r["id"] for r in responses) == [n for n in range(50) if n % 3]
    assert all(r["result"] == r["id"] for r in responses)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sync_handlers_flooding_each_other_do_not_deadlock(
    token: str, transport: Transport
) -> None:
    """Peers whose inline answers fill each other's sockets never deadlock.

    Both sides flood the other with requests whose answers are far larger
    than the socket buffers, at once.  If each reader waited for its socket to
    drain while answering, neither would read again; the reader must hand a
    write that does not fit to a task and go on reading.
    """
    big = "z" * (512 * 1024)
    requests = 24  # 12 MiB of answers each way, more than any socket buffers

    def handler(method: str, params: Any) -> Any:
        return [params, big]

    results: dict[tuple[str, int], Any] = {}

    async def ask(channel: Channel, side: str, n: int) -> None:
        results[side, n] = await channel.request("big", n)

    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, transport=transport, request_handler=handler) as (
                listener,
                accepted,
            ),
            connect(
                listener.address, token=token, name="client", request_handler=handler
            ) as client,
        ):
            server = await accepted.receive()
            async with trio.open_nursery() as nursery:
                for n in range(requests):
                    nursery.start_soon(ask, client, "client", n)
                    nursery.start_soon(ask, server, "server", n)
            assert not client.closed
            assert not server.closed
    assert results == {
        (side, n): [n, big] for side in ("client", "server") for n in range(requests)
    }


async def test_large_inline_answer_keeps_the_send_lock(token: str) -> None:
    """An inline answer too big for the socket is finished without interleaving.

    The reader writes what fits and a task writes the rest, holding the send
    lock the reader took, while other tasks of the same side wait to send.
    """
    big = "y" * (4 * 1024 * 1024)
    answering = trio.Event()
    ticks: list[Any] = []
    all_ticks = trio.Event()

    def handler(method: str, params: Any) -> Any:
        answering.set()
        return big

    async def on_channel(channel: Channel) -> None:
        await answering.wait()  # the answer is half-written now
        for n in range(100):
            await channel.send_event("tick", n)
        await channel.wait_closed()

    async def on_event(event: str, body: Any) -> None:
        ticks.append(body)
        if body == 99:
            all_ticks.set()

    with trio.fail_after(TIMEOUT):
        async with (
            serving(token, request_handler=handler, on_channel=on_channel) as (
                listener,
                _,
            ),
            connect(
                listener.address, token=token, name="client", event_handler=on_event
            ) as client,
        ):
            assert await client.request("big") == big
            await all_ticks.wait()
            assert not client.closed
    assert ticks == list(range(100))


# -- authentication ------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_token_refused_then_good_peer_served(
    token: str, transport: Transport, ipc_log: pytest.LogCaptureFixture
) -> None:
    """A wrong token is refused with a reason; the listener keeps serving."""
    with trio.fail_after(TIMEOUT):
        async with serving(token, transport=transport) as (listener, _):
            with pytest.raises(HandshakeError, match="wrong token"):
                async with connect(
                    listener.address, token=new_token(), name="intruder"
                ):
                    pytest.fail("a wrong token was let in")  # pragma: no cover
            async with connect(listener.address, token=token, name="good") as client:
                assert await client.request("echo", "ok") == "ok"
    assert "refused unauthenticated connection" in ipc_log.text
    assert "wrong token" in ipc_log.text


async def test_accept_skips_refused_peers(token: str) -> None:
    """Listener.accept() waits past a refused peer for one that authenticates."""
    with trio.fail_after(TIMEOUT):
        async with open_listener(token=token) as listener:

            async def good_client() -> None:
                with pytest.raises(HandshakeError):
                    async with connect(listener.address, token="nope", name="bad"):
                        pass  # pragma: no cover
                async with connect(
                    listener.address, token=token, name="good", request_handler=echo
                ) as client:
                    await client.wait_closed()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(good_client)
                async with listener.accept() as server:
                    assert server.peer.name == "good"
                    assert await server.request("echo", 7) == 7


async def test_garbage_first_is_refused(
    token: str, ipc_log: pytest.LogCaptureFixture
) -> None:
    """A peer that sends garbage first is refused and told why."""
    with trio.fail_after(TIMEOUT):
        async with serving(token) as (listener, accepted):
            async with await raw_connect(listener.address) as stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = decode_frames(await read_until_eof(stream))
            assert reply[0].kind is FrameKind.HANDSHAKE
            assert reply[0].payload["ok"] is False
            assert "bad magic b'GE'" in reply[0].payload["error"]
            async with connect(listener.address, token=token, name="good") as client:
                assert await client.request("echo", 1) == 1
            assert (await accepted.receive()).peer.name == "good"
    assert "refused unauthenticated connection" in ipc_log.text
    assert "bad magic" in ipc_log.text


async def test_other_frame_first_is_refused_unprocessed(token: str) -> None:
    """A REQUEST before the handshake is refused and never reaches a handler."""
    calls: list[str] = []

    async def handler(method: str, params: Any) -> Any:
        calls.append(method)  # pragma: no cover

    with trio.fail_after(TIMEOUT):
        async with serving(token, request_handler=handler) as (listener, _):
            async with await raw_connect(listener.address) as stream:
                request = {"id": 1, "method": "evil", "params": None}
                await stream.send_all(
                    encode_frame(FrameKind.REQUEST, request) + hello(token)
                )
                reply = decode_frames(await read_until_eof(stream))
            assert reply[0].payload["ok"] is False
            assert "REQUEST frame, not HANDSHAKE" in reply[0].payload["error"]
    assert calls == []


async def test_handshake_that_never_arrives_times_out(
    token: str, ipc_log: pytest.LogCaptureFixture
) -> None:
    """A peer that connects and says nothing is dropped after handshake_timeout."""
    with trio.fail_after(TIMEOUT):
        async with serving(token, handshake_timeout=0.2) as (listener, _):
            async with await raw_connect(listener.address) as stream:
                reply = decode_frames(await read_until_eof(stream))
            assert "no handshake within 0.2 s" in reply[0].payload["error"]
            async with connect(listener.address, token=token, name="good") as client:
                assert await client.request("echo", 1) == 1
    assert "no handshake within 0.2 s" in ipc_log.text


async def test_silent_listener_times_out_the_client(token: str) -> None:
    """connect() gives up with HandshakeError if the listener never answers."""
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listeners[0] as silent:
            host, port = silent.socket.getsockname()[:2]
            address = Address("tcp", host=host, port=port)
            async with trio.open_nursery() as nursery:

                async def accept_and_ignore() -> None:
                    async with await silent.accept():
                        await trio.sleep_forever()

                nursery.start_soon(accept_and_ignore)
                with pytest.raises(HandshakeError, match="no handshake reply"):
                    async with connect(
                        address, token=token, name="c", handshake_timeout=0.2
                    ):
                        pass  # pragma: no cover
                nursery.cancel_scope.cancel()


async def test_connecting_nowhere_is_connection_lost(runtime_dir: str) -> None:
    """An address nobody listens on raises ConnectionLost, a TransportError."""
    address = Address("unix", path=os.path.join(runtime_dir, "nobody.sock"))
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionLost, match="could not"):
        async with connect(address, token="t", name="c"):
            pass  # pragma: no cover


# -- connections ending --------------------------------------------------------

DYING_PEER = textwrap.dedent(
    """
    import json, os, signal, socket, struct, sys

    HEADER = struct.Struct(">2sBBI")
    address, token, mode = sys.argv[1], os.environ["TOKEN"], sys.argv[2]
    transport, _, rest = address.partition(":")
    if transport == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(rest)
    else:
        host, _, port = rest.rpartition(":")
        sock = socket.create_connection((host, int(port)))

    def frame(kind, payload):
        data = json.dumps(payload).encode()
        return HEADER.pack(b"DT", 1, kind, len(data)) + data

    buffer = b""

    def read_frame():
        global buffer
        while len(buffer) < 8 or len(buffer) < 8 + HEADER.unpack(buffer[:8])[3]:
            buffer += sock.recv(65536)
        end = 8 + HEADER.unpack(buffer[:8])[3]
        payload, buffer = json.loads(buffer[8:end]), buffer[end:]
        return payload

    hello = {"protocol": 1, "token": token, "name": "dying", "pid": os.getpid()}
    sock.sendall(frame(1, hello))
    assert read_frame()["ok"] is True
    # Read both requests: exiting with unread data would reset the connection.
    request, _ = read_frame(), read_frame()
    response = frame(3, {"id": request["id"], "result": "x" * 1000})
    sock.sendall(response[: len(response) // 2])
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(0)
    """
)


@pytest.mark.parametrize("mode", ["exit", "sigkill"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_peer_dying_mid_frame_fails_pending_requests(
    token: str, transport: Transport, mode: str
) -> None:
    """A peer process that dies half-way through a frame fails every pending request."""
    failures: list[ConnectionLost] = []

    async def ask(server: Channel, params: Any) -> None:
        with pytest.raises(ConnectionLost) as info:
            await server.request("echo", params)
        failures.append(info.value)

    with trio.fail_after(TIMEOUT):
        async with open_listener(token=token, transport=transport) as listener:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", DYING_PEER, str(listener.address), mode],
                env={**os.environ, "TOKEN": token},
            )
            try:
                async with listener.accept() as server:
                    assert server.peer == Peer("dying", process.pid)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(ask, server, "first")
                        nursery.start_soon(ask, server, "second")
                    assert server.closed
                    assert "in the middle of a frame" in (server.close_reason or "")
                    # Later requests fail at once too.
                    with pytest.raises(ConnectionLost):
                        await server.send_event("late")
            finally:
                with trio.CancelScope(shield=True):
                    await process.wait()
    assert len(failures) == 2
    for failure in failures:
        assert failure.peer == f"dying pid {process.pid}"
        assert "in the middle of a frame" in failure.reason
        assert isinstance(failure, TransportError)
    assert process.returncode == (-9 if mode == "sigkill" else 0)


async def test_malformed_frame_closes_only_that_connection(
    token: str, ipc_log: pytest.LogCaptureFixture
) -> None:
    """Garbage after the handshake closes that connection, names the peer, no more."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token) as (listener, accepted),
            connect(listener.address, token=token, name="good") as good,
        ):
            good_server = await accepted.receive()
            async with await raw_connect(listener.address) as stream:
                await stream.send_all(hello(token, name="babbler"))
                bad_server = await accepted.receive()
                assert bad_server.peer.name == "babbler"
                async with trio.open_nursery() as nursery:

                    async def pending_request() -> None:
                        with pytest.raises(ConnectionLost, match="bad magic"):
                            await bad_server.request("echo")

                    nursery.start_soon(pending_request)
                    await trio.testing.wait_all_tasks_blocked()
                    await stream.send_all(b"\x00" * 16)
                await bad_server.wait_closed()
            assert "peer 'babbler pid" in (bad_server.close_reason or "")
            assert not good_server.closed
            assert await good.request("echo", "fine") == "fine"
    assert f"peer 'babbler pid {os.getpid()}' sent an invalid frame" in ipc_log.text


async def test_wrong_message_shape_is_a_protocol_error(token: str) -> None:
    """A well-formed frame with a malformed message closes the connection."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token) as (listener, accepted),
            await raw_connect(listener.address) as stream,
        ):
            await stream.send_all(hello(token))
            server = await accepted.receive()
            await stream.send_all(encode_frame(FrameKind.REQUEST, [1, 2]))
            await server.wait_closed()
    assert "REQUEST payload is a JSON list, not an object" in (
        server.close_reason or ""
    )


async def test_cancelling_the_owner_closes_the_socket(token: str) -> None:
    """Cancelling the scope around connect() closes the socket; the peer sees EOF."""
    with trio.fail_after(TIMEOUT):
        async with serving(token) as (listener, accepted):
            with trio.CancelScope() as scope:
                async with connect(listener.address, token=token, name="c") as client:
                    server = await accepted.receive()
                    scope.cancel()
                    await trio.sleep_forever()
            assert client.closed
            assert client._sock.fileno() == -1
            with pytest.raises(ConnectionLost, match="closed locally"):
                await client.request("echo")
            await server.wait_closed()
            assert server.close_reason == "the peer closed the connection"


async def test_lost_connection_cancels_on_channel(token: str) -> None:
    """serve() cancels on_channel when its connection ends, then closes it."""
    ended = trio.Event()

    async def on_channel(channel: Channel) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    with trio.fail_after(TIMEOUT):
        async with serving(token, on_channel=on_channel) as (listener, _):
            async with connect(listener.address, token=token, name="c"):
                pass
            await ended.wait()


async def test_aclose_fails_pending_requests(token: str) -> None:
    """aclose() fails pending requests at once and makes later ones fail."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(token) as (listener, _),
            connect(listener.address, token=token, name="client") as client,
            trio.open_nursery() as nursery,
        ):

            async def pending() -> None:
                with pytest.raises(ConnectionLost, match="closed locally"):
                    await client.request("sleep", 3600)

            nursery.start_soon(pending)
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose()
            await client.aclose()  # idempotent
            assert client.closed
            with pytest.raises(ConnectionLost):
                await client.request("echo")


async def test_send_cancelled_mid_frame_closes_the_connection(token: str) -> None:
    """A large send cut off by cancellation closes the channel, not corrupts it."""
    peer_done = trio.Event()

    async def stalled_peer(address: Address) -> None:
        # Completes the handshake, then never reads again.
        async with await raw_connect(address) as stream:
            await stream.send_all(hello(token, name="stalled"))
            await stream.receive_some()
            await peer_done.wait()

    with trio.fail_after(TIMEOUT):
        async with (
            open_listener(token=token) as listener,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(stalled_peer, listener.address)
            async with listener.accept() as server:
                with trio.move_on_after(0.2) as scope:
                    await server.send_event("big", "x" * (8 * 1024 * 1024))
                assert scope.cancelled_caught
                assert server.closed
                assert "cancelled after" in (server.close_reason or "")
                peer_done.set()


# -- listeners, sockets and files ------------------------------------------------


async def test_socket_dir_is_private(token: str, runtime_dir: str) -> None:
    """The unix socket lives in a fresh 0700 directory under the runtime dir."""
    with trio.fail_after(TIMEOUT):
        async with open_listener(token=token) as listener:
            path = listener.address.path
            directory = os.path.dirname(path)
            assert os.path.dirname(directory) == runtime_dir
            assert os.path.basename(directory).startswith("dapper-trio-")
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert os.listdir(runtime_dir) == []


@pytest.mark.parametrize("ending", ["normal", "exception", "cancelled"])
async def test_no_files_left_behind(token: str, runtime_dir: str, ending: str) -> None:
    """Leaving open_listener removes the socket and its directory, however it ends."""

    async def use_listener(scope: trio.CancelScope) -> None:
        async with (
            serving(token) as (listener, _),
            connect(listener.address, token=token, name="c"),
        ):
            assert os.listdir(runtime_dir) != []
            if ending == "exception":
                raise RuntimeError("boom")
            if ending == "cancelled":
                scope.cancel()
                await trio.sleep_forever()

    errors: list[BaseException] = []
    with trio.fail_after(TIMEOUT), trio.CancelScope() as scope:
        try:
            await use_listener(scope)
        except Exception as exc:
            errors.extend(leaves(exc))
    assert [repr(e) for e in errors] == (
        ["RuntimeError('boom')"] if ending == "exception" else []
    )
    assert scope.cancelled_caught == (ending == "cancelled")
    assert os.listdir(runtime_dir) == []


async def test_accept_remove_path_removes_the_file_once_the_peer_is_in(
    token: str, runtime_dir: str
) -> None:
    """accept(remove_path=True): the file goes once the right peer is in, not before."""
    with trio.fail_after(TIMEOUT):
        async with open_listener(token=token) as listener:
            address = listener.address

            async def peers() -> None:
                with pytest.raises(HandshakeError):
                    async with connect(address, token="nope", name="bad"):
                        pass  # pragma: no cover
                assert await trio.Path(address.path).exists()
                async with connect(
                    address, token=token, name="good", request_handler=echo
                ) as client:
                    await client.wait_closed()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peers)
                async with listener.accept(remove_path=True) as server:
                    assert os.listdir(runtime_dir) == []
                    # The connection is unaffected; no one else can connect.
                    assert await server.request("echo", 7) == 7
                    with pytest.raises(ConnectionLost, match="could not connect"):
                        async with connect(address, token=token, name="late"):
                            pass  # pragma: no cover
            listener.remove_path()  # idempotent
    assert os.listdir(runtime_dir) == []


_BIND_AND_WAIT = """
import signal, sys, time
from dapper_trio._sockets import bind_listening_socket
if sys.argv[1] == "ignored":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
bound = bind_listening_socket()
if sys.argv[1] == "closed":
    bound.close()
print(bound.address.path, signal.getsignal(signal.SIGTERM), flush=True)
time.sleep(30)
"""


async def _bound_child(
    how: str,
) -> tuple[trio.Process, trio.abc.ReceiveStream, str, str]:
    """A process that binds a unix socket, says where and its SIGTERM handler."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _BIND_AND_WAIT, how], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        data = await process.stdout.receive_some(4096)
        assert data, "the child exited early"
        line += data
    path, handler = line.decode().split(maxsplit=1)
    return process, process.stdout, path, handler.strip()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
async def test_signal_before_a_peer_connects_removes_the_socket_file(
    runtime_dir: str, signum: int
) -> None:
    """SIGTERM/SIGHUP left at their default still kill, after removing the file."""
    with trio.fail_after(TIMEOUT):
        process, stdout, path, _ = await _bound_child("default")
        async with stdout:
            assert await trio.Path(path).exists()
            process.send_signal(signum)
            assert await process.wait() == -signum
    assert os.listdir(runtime_dir) == []


async def test_an_ignored_sigterm_stays_ignored(runtime_dir: str) -> None:
    """A process that ignores SIGTERM keeps ignoring it while it has a socket file."""
    with trio.fail_after(TIMEOUT):
        process, stdout, path, _ = await _bound_child("ignored")
        async with stdout:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(0.5):
                await process.wait()
            assert process.returncode is None
            assert await trio.Path(path).exists()
            process.kill()
            await process.wait()
    shutil.rmtree(os.path.dirname(path))  # SIGKILL leaves it: nothing can run


async def test_the_default_action_is_back_once_no_file_is_left(
    runtime_dir: str,
) -> None:
    """Closing the last bound socket puts SIGTERM's default action back."""
    with trio.fail_after(TIMEOUT):
        process, stdout, path, handler = await _bound_child("closed")
        async with stdout:
            assert handler == str(signal.SIG_DFL)
            assert not await trio.Path(path).exists()
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == -signal.SIGTERM
    assert os.listdir(runtime_dir) == []


def test_runtime_dir_selection(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, runtime_dir: str
) -> None:
    """runtime_dir=, then $DAPPER_TRIO_RUNTIME_DIR, then $XDG_RUNTIME_DIR, then /tmp."""

    async def socket_base(**kwargs: Any) -> str:
        async with open_listener(token="t", **kwargs) as listener:
            return os.path.dirname(os.path.dirname(listener.address.path))

    explicit = tmp_path / "explicit"
    xdg = tmp_path / "xdg"
    explicit.mkdir()
    xdg.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert trio.run(partial(socket_base, runtime_dir=str(explicit))) == str(explicit)
    assert trio.run(socket_base) == runtime_dir
    monkeypatch.delenv("DAPPER_TRIO_RUNTIME_DIR")
    assert trio.run(socket_base) == str(xdg)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert trio.run(socket_base) == tempfile.gettempdir()
    assert list(explicit.iterdir()) == list(xdg.iterdir()) == []


async def test_too_long_socket_path(token: str, tmp_path: Any) -> None:
    """A socket path over the AF_UNIX limit is a clear error and leaves nothing."""
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with trio.fail_after(TIMEOUT), pytest.raises(IPCError, match="over the limit"):
        async with open_listener(token=token, runtime_dir=str(deep)):
            pass  # pragma: no cover
    assert list(deep.iterdir()) == []


async def test_tcp_binds_loopback_by_default(token: str) -> None:
    """A tcp listener binds 127.0.0.1 unless told otherwise."""
    with trio.fail_after(TIMEOUT):
        async with open_listener(token=token, transport="tcp") as listener:
            assert listener.address.host == "127.0.0.1"
            assert listener.address.port > 0
            assert str(listener.address) == f"tcp:127.0.0.1:{listener.address.port}"


async def test_bad_arguments(token: str) -> None:
    """An empty token or an unknown transport is refused up front."""
    with trio.fail_after(TIMEOUT), pytest.raises(ValueError, match="token"):
        async with open_listener(token=""):
            pass  # pragma: no cover
    with trio.fail_after(TIMEOUT), pytest.raises(ValueError, match="transport"):
        async with open_listener(token=token, transport="udp"):  # type: ignore[arg-type]
            pass  # pragma: no cover


# -- addresses and errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (
            Address("unix", path="/run/user/1000/dt/ipc.sock"),
            "unix:/run/user/1000/dt/ipc.sock",
        ),
        (Address("unix", path="/tmp/with:colon.sock"), "unix:/tmp/with:colon.sock"),
        (Address("tcp", host="127.0.0.1", port=5678), "tcp:127.0.0.1:5678"),
        (Address("tcp", host="::1", port=80), "tcp:[::1]:80"),
        (Address("tcp", host="localhost", port=65535), "tcp:localhost:65535"),
    ],
)
def test_address_round_trip(address: Address, text: str) -> None:
    """str() and Address.parse() invert each other."""
    assert str(address) == text
    assert Address.parse(text) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unix:",
        "tcp:",
        "tcp:host",
        "tcp:host:",
        "tcp::80",
        "tcp:h:port",
        "tcp:h:0",
        "tcp:h:70000",
        "udp:x:1",
        "/tmp/x.sock",
        "tcp:h:٣",
    ],
)
def test_address_parse_errors(text: str) -> None:
    """Malformed addresses raise ValueError naming the text."""
    with pytest.raises(ValueError, match="address"):
        Address.parse(text)


def test_connection_lost_is_a_transport_error() -> None:
    """ConnectionLost names the peer and reason, and pickles."""
    error = ConnectionLost("debuggee pid 12", "the peer closed the connection")
    assert isinstance(error, TransportError)
    assert isinstance(error, IPCError)
    assert str(error) == (
        "connection to peer 'debuggee pid 12' lost: the peer closed the connection"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.peer, copy.reason) == (error.peer, error.reason)


def test_new_token() -> None:
    """Tokens are 64 hex characters and differ every time."""
    tokens = {new_token() for _ in range(10)}
    assert len(tokens) == 10
    assert all(len(t) == 64 and int(t, 16) >= 0 for t in tokens)


def test_handshake_message_shape() -> None:
    """The hello a client sends is a HANDSHAKE frame with protocol, token, name, pid."""
    frame = decode_frames(hello("tok", "me"))[0]
    assert frame.kind is FrameKind.HANDSHAKE
    assert frame.payload == {
        "protocol": 1,
        "token": "tok",
        "name": "me",
        "pid": os.getpid(),
    }
    assert json.loads(hello("t")[8:]) == frame.payload | {"token": "t", "name": "raw"}
    assert struct.unpack(">2sBBI", hello("t")[:8])[:3] == (b"DT", 1, 1)
