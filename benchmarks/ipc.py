"""What our framing costs: dapper-trio channels against a bare trio socket echo.

Run ``python benchmarks/ipc.py`` (about a minute) or ``--quick`` (seconds).

For each transport (unix, tcp) and payload size (100 B, 1 MiB) it measures, in
one process and one ``trio.run``:

* round trips per second: ``await channel.request("echo", payload)`` against
  a bare client that writes a 4-byte length prefix and the payload and reads
  the echo back from a server task that does the same in reverse;
* frames per second, one way: ``await channel.send_event("tick", payload)`` in
  a loop (the receiver's event handler counts) against a bare sender writing
  length-prefixed frames that a receiver task parses.

Client and server share one thread, so the figures are the *total* CPU cost
of both ends, which is the harsh way to measure overhead: nothing of ours
hides behind a second core.  The bare side uses the same trio socket streams
and the same read-size policy as ours, but no JSON, no ids, no task per
request.  Each figure is the median of several runs, interleaved with the
baseline so both see the same noise; only ratios should be quoted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import outcome
import trio

from dapper_trio._ipc import Channel, connect, new_token, open_listener

Transport = Literal["unix", "tcp"]
SIZES = {"100 B": 100, "1 MiB": 1024 * 1024}
LENGTH = struct.Struct(">I")
RECEIVE_SIZE = 64 * 1024
LARGE_RECEIVE_SIZE = 4 * 1024 * 1024


@dataclass
class Plan:
    repeats: int
    round_trips: dict[int, int]  # payload size -> round trips per run
    frames: dict[int, int]  # payload size -> frames per run


FULL = Plan(
    repeats=5,
    round_trips={100: 4000, 1024 * 1024: 60},
    frames={100: 20000, 1024 * 1024: 120},
)
QUICK = Plan(
    repeats=3,
    round_trips={100: 1000, 1024 * 1024: 15},
    frames={100: 4000, 1024 * 1024: 30},
)


# -- ours -------------------------------------------------------------------------


@asynccontextmanager
async def our_pair(transport: Transport) -> AsyncIterator[tuple[Channel, list[int]]]:
    """Yield a client channel to an echo server, and the server's event count."""
    token = new_token()
    counter = [0]

    async def echo(method: str, params: Any) -> Any:
        if method == "count":
            return counter[0]
        return params

    async def count(event: str, body: Any) -> None:
        counter[0] += 1

    async def on_channel(channel: Channel) -> None:
        await channel.wait_closed()

    async with (
        open_listener(token=token, transport=transport) as listener,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(
            lambda task_status: listener.serve(
                on_channel,
                request_handler=echo,
                event_handler=count,
                task_status=task_status,
            )
        )
        async with connect(listener.address, token=token, name="bench") as client:
            yield client, counter
        nursery.cancel_scope.cancel()


async def ours_round_trips(client: Channel, payload: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await client.request("echo", payload)
    return n / (time.perf_counter() - start)


async def ours_frames(
    client: Channel, counter: list[int], payload: str, n: int
) -> float:
    counter[0] = 0
    start = time.perf_counter()
    for _ in range(n):
        await client.send_event("tick", payload)
    received = await client.request("count")  # all events are handled before it
    elapsed = time.perf_counter() - start
    assert received == n, (received, n)
    return n / elapsed


# -- bare ---------------------------------------------------------------------------


class BareReader:
    """Length-prefixed frames from a stream: the least a framed protocol must do."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def read_frame(self) -> bytes | None:
        buffer = self.buffer
        while True:
            if len(buffer) >= 4:
                (length,) = LENGTH.unpack_from(buffer)
                end = 4 + length
                if len(buffer) >= end:
                    frame = bytes(buffer[4:end])
                    del buffer[:end]
                    return frame
                needed = end - len(buffer)
            else:
                needed = 4
            data = await self.stream.receive_some(
                RECEIVE_SIZE
                if needed <= RECEIVE_SIZE
                else min(needed, LARGE_RECEIVE_SIZE)
            )
            if not data:
                return None
            buffer += data


async def serve_echo(stream: trio.SocketStream) -> None:
    """The bare server: b"E..." is echoed, b"S..." counted, b"C" answers the count."""
    reader = BareReader(stream)
    count = 0
    while (frame := await reader.read_frame()) is not None:
        mode = frame[:1]
        if mode == b"E":
            await stream.send_all(LENGTH.pack(len(frame)) + frame)
        elif mode == b"S":
            count += 1
        else:
            reply = b"C" + str(count).encode()
            await stream.send_all(LENGTH.pack(len(reply)) + reply)
            count = 0


@asynccontextmanager
async def bare_pair(
    transport: Transport,
    serve: Callable[[trio.SocketStream], Awaitable[None]] = serve_echo,
) -> AsyncIterator[trio.SocketStream]:
    """Yield a client stream connected to *serve* over a plain trio socket."""
    directory = path = ""
    if transport == "unix":
        directory = tempfile.mkdtemp(prefix="dapper-trio-bench-")
        path = os.path.join(directory, "bare.sock")
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(16)
        listener = trio.SocketListener(sock)
    else:
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        host, port = listener.socket.getsockname()[:2]

    async def serve_one() -> None:
        async with await listener.accept() as stream:
            await serve(stream)

    try:
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            if transport == "unix":
                client = await trio.open_unix_socket(path)
            else:
                client = await trio.open_tcp_stream(host, port)
            async with client:
                yield client
            nursery.cancel_scope.cancel()
    finally:
        if directory:
            os.unlink(path)
            os.rmdir(directory)


async def bare_round_trips(stream: trio.SocketStream, payload: bytes, n: int) -> float:
    reader = BareReader(stream)
    frame = LENGTH.pack(len(payload) + 1) + b"E" + payload
    start = time.perf_counter()
    for _ in range(n):
        await stream.send_all(frame)
        await reader.read_frame()
    return n / (time.perf_counter() - start)


async def bare_frames(stream: trio.SocketStream, payload: bytes, n: int) -> float:
    reader = BareReader(stream)
    frame = LENGTH.pack(len(payload) + 1) + b"S" + payload
    start = time.perf_counter()
    for _ in range(n):
        await stream.send_all(frame)
    await stream.send_all(LENGTH.pack(1) + b"C")
    reply = await reader.read_frame()
    elapsed = time.perf_counter() - start
    assert reply == b"C" + str(n).encode(), reply
    return n / elapsed


# -- bare, with our task structure ---------------------------------------------------


async def write_frame(stream: trio.SocketStream, frame: bytes) -> None:
    """Write without yielding when the socket takes it all (as dapper-trio does)."""
    try:
        sent = os.write(stream.socket.fileno(), frame)
    except BlockingIOError:
        sent = 0
    if sent < len(frame):
        await stream.send_all(memoryview(frame)[sent:])


@asynccontextmanager
async def bare_tasks_pair(transport: Transport) -> AsyncIterator[BareTasksClient]:
    """A bare client and server with dapper-trio's tasks but none of its framing.

    Each side has one reader task; the server runs every request in a task of
    its own, the client's reader hands each response to the waiting task.
    Frames are a length prefix and raw bytes: no JSON, no ids, no kinds.
    """
    async with bare_pair(transport, serve=serve_with_tasks) as stream:
        client = BareTasksClient(stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_responses)
            yield client
            nursery.cancel_scope.cancel()


async def serve_with_tasks(stream: trio.SocketStream) -> None:
    async def answer(frame: bytes) -> None:
        await write_frame(stream, LENGTH.pack(len(frame)) + frame)

    reader = BareReader(stream)
    async with trio.open_nursery() as nursery:
        while (frame := await reader.read_frame()) is not None:
            nursery.start_soon(answer, frame)


class BareTasksClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.waiting: trio.lowlevel.Task | None = None

    async def read_responses(self) -> None:
        reader = BareReader(self.stream)
        while (frame := await reader.read_frame()) is not None:
            task, self.waiting = self.waiting, None
            assert task is not None
            trio.lowlevel.reschedule(task, outcome.Value(frame))

    async def request(self, frame: bytes) -> bytes:
        await write_frame(self.stream, frame)
        self.waiting = trio.lowlevel.current_task()
        result: bytes = await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED
        )
        return result


async def bare_tasks_round_trips(
    client: BareTasksClient, payload: bytes, n: int
) -> float:
    frame = LENGTH.pack(len(payload)) + payload
    start = time.perf_counter()
    for _ in range(n):
        await client.request(frame)
    return n / (time.perf_counter() - start)


# -- driver -------------------------------------------------------------------------


@dataclass
class Row:
    transport: str
    size: str
    measure: str
    ours: float
    bare: float
    bare_tasks: float | None  # None: the bare figure already has our tasks
    passes: tuple[float, float]  # run-loop passes per operation: ours, bare


class PassCounter(trio.abc.Instrument):
    """Counts passes through trio's run loop (one epoll_wait each)."""

    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


async def passes_per_op(operation: Callable[[int], Awaitable[float]], n: int) -> float:
    counter = PassCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        await operation(n)
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter.passes / n


async def medians(
    operations: list[Callable[[], Awaitable[float]]], repeats: int
) -> list[float]:
    """Median rate of each operation, run in turn *repeats* times after a warm-up."""
    for operation in operations:
        await operation()
    rates: list[list[float]] = [[] for _ in operations]
    for _ in range(repeats):
        for operation, found in zip(operations, rates, strict=True):
            found.append(await operation())
    return [statistics.median(found) for found in rates]


async def run(plan: Plan, transports: list[Transport]) -> list[Row]:
    rows = []
    for transport in transports:
        async with (
            our_pair(transport) as (client, counter),
            bare_pair(transport) as bare,
            bare_tasks_pair(transport) as bare_tasks,
        ):
            for label, size in SIZES.items():
                text, data = "x" * size, b"x" * size
                trips, frames = plan.round_trips[size], plan.frames[size]

                async def ours_rt(n: int = trips, t: str = text) -> float:
                    return await ours_round_trips(client, t, n)

                async def bare_rt(n: int = trips, d: bytes = data) -> float:
                    return await bare_round_trips(bare, d, n)

                async def bare_tasks_rt(n: int = trips, d: bytes = data) -> float:
                    return await bare_tasks_round_trips(bare_tasks, d, n)

                async def ours_fr(n: int = frames, t: str = text) -> float:
                    return await ours_frames(client, counter, t, n)

                async def bare_fr(n: int = frames, d: bytes = data) -> float:
                    return await bare_frames(bare, d, n)

                ours, plain, tasks = await medians(
                    [ours_rt, bare_rt, bare_tasks_rt], plan.repeats
                )
                passes = (
                    await passes_per_op(ours_rt, 50),
                    await passes_per_op(bare_rt, 50),
                )
                rows.append(
                    Row(transport, label, "round trips/s", ours, plain, tasks, passes)
                )
                ours, plain = await medians([ours_fr, bare_fr], plan.repeats)
                passes = (
                    await passes_per_op(ours_fr, 50),
                    await passes_per_op(bare_fr, 50),
                )
                rows.append(
                    Row(transport, label, "frames/s one way", ours, plain, None, passes)
                )
    return rows


def render(rows: list[Row], plan: Plan) -> str:
    lines = [
        "| transport | payload | measure | dapper-trio | bare echo | ours/bare"
        " | time overhead | bare echo, our tasks | ours/that | loop passes/op"
        " ours, bare |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row.ours / row.bare
        if row.bare_tasks is None:
            tasks = "(same)"
            tasks_ratio = "(same)"
        else:
            tasks = f"{row.bare_tasks:,.0f}"
            tasks_ratio = f"{row.ours / row.bare_tasks:.2f}"
        lines.append(
            f"| {row.transport} | {row.size} | {row.measure} | {row.ours:,.0f}"
            f" | {row.bare:,.0f} | {ratio:.2f} | {1 / ratio - 1:+.0%} | {tasks}"
            f" | {tasks_ratio} | {row.passes[0]:.1f}, {row.passes[1]:.1f} |"
        )
    lines += [
        "",
        f"Median of {plan.repeats} interleaved runs; Python {sys.version.split()[0]},"
        f" trio {trio.__version__}, {os.cpu_count()} CPUs; client and server in one"
        " process.",
        "ours/bare: throughput ratio (1.00 = no overhead).  time overhead: extra"
        " time per operation over the bare echo.",
        "bare echo, our tasks: raw length-prefixed bytes, but a reader task per side"
        " and a task per request, as dapper-trio has.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument(
        "--transport", choices=["unix", "tcp"], action="append", help="repeatable"
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    transports: list[Transport] = args.transport or ["unix", "tcp"]
    started = time.perf_counter()
    rows = trio.run(run, plan, transports)
    print(render(rows, plan))
    print(f"(took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
