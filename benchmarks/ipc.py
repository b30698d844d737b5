"""What our framing costs: dapper-trio channels against a bare trio socket echo.

Run ``python benchmarks/ipc.py`` (a few minutes) or ``--quick`` (seconds);
``--clock cpu`` measures the process's CPU time instead of wall time.

For each transport (unix, tcp) and payload size (100 B, 1 MiB) it measures, in
one process and one ``trio.run``:

* round trips per second: ``await channel.request("echo", payload)``, once
  against an ``async def`` echo handler (run in a task per request) and once
  against a plain-function one (run inline by the reader), against a bare
  client that writes a 4-byte length prefix and the payload and reads the echo
  back from a server task that does the same in reverse;
* frames per second, one way: ``await channel.send_event("tick", payload)`` in
  a loop (the receiver's ``async def`` event handler counts) against a bare
  sender writing length-prefixed frames that a receiver task parses.

Two baselines, both measured in the same run:

* **bare echo**: what an application would write with trio's socket streams
  (``send_all``, ``receive_some``), one task per side.  The project's target
  is stated against this one.
* **bare, our structure**: the same raw length-prefixed bytes, but with
  dapper-trio's task structure (a reader task per side that wakes the waiting
  requester; a task per request for the async rows, answers written by the
  reader for the sync rows) and dapper-trio's socket I/O (``os.write`` first,
  ``os.read`` once ``wait_readable`` says so, see ``RawReader``).  Ours over
  this one is the cost of the framing alone: JSON, header, ids, dispatch.

Client and server share one thread, so the figures are the *total* CPU cost
of both ends, which is the harsh way to measure overhead: nothing of ours
hides behind a second core.  Each figure is the median of several runs,
interleaved with the baselines so all see the same noise; only ratios should
be quoted.
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
HandlerKind = Literal["async", "sync"]
SIZES = {"100 B": 100, "1 MiB": 1024 * 1024}
LENGTH = struct.Struct(">I")
RECEIVE_SIZE = 64 * 1024
LARGE_RECEIVE_SIZE = 4 * 1024 * 1024


# What rates are measured in: wall time, or with --clock cpu this process's
# CPU time.  Client and server share the process, so its CPU time is the work
# both ends did (the kernel's share of the I/O included), and on a shared
# machine it is less disturbed by other processes than wall time is.
clock: Callable[[], float] = time.perf_counter


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


def read_size(needed: int) -> int:
    """How much to ask for when *needed* more bytes complete a frame (as ours)."""
    return RECEIVE_SIZE if needed <= RECEIVE_SIZE else min(needed, LARGE_RECEIVE_SIZE)


# -- ours -------------------------------------------------------------------------


@asynccontextmanager
async def our_pair(
    transport: Transport, handler: HandlerKind
) -> AsyncIterator[tuple[Channel, list[int]]]:
    """Yield a client channel to an echo server, and the server's event count."""
    token = new_token()
    counter = [0]

    async def async_echo(method: str, params: Any) -> Any:
        if method == "count":
            return counter[0]
        return params

    def sync_echo(method: str, params: Any) -> Any:
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
                request_handler=async_echo if handler == "async" else sync_echo,
                event_handler=count,
                task_status=task_status,
            )
        )
        async with connect(listener.address, token=token, name="bench") as client:
            yield client, counter
        nursery.cancel_scope.cancel()


async def ours_round_trips(client: Channel, payload: str, n: int) -> float:
    start = clock()
    for _ in range(n):
        await client.request("echo", payload)
    return n / (clock() - start)


async def ours_frames(
    client: Channel, counter: list[int], payload: str, n: int
) -> float:
    counter[0] = 0
    start = clock()
    for _ in range(n):
        await client.send_event("tick", payload)
    received = await client.request("count")  # all events are handled before it
    elapsed = clock() - start
    assert received == n, (received, n)
    return n / elapsed


# -- bare echo: trio's socket streams, one task per side ---------------------------


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
            data = await self.stream.receive_some(read_size(needed))
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
    start = clock()
    for _ in range(n):
        await stream.send_all(frame)
        await reader.read_frame()
    return n / (clock() - start)


async def bare_frames(stream: trio.SocketStream, payload: bytes, n: int) -> float:
    reader = BareReader(stream)
    frame = LENGTH.pack(len(payload) + 1) + b"S" + payload
    start = clock()
    for _ in range(n):
        await stream.send_all(frame)
    await stream.send_all(LENGTH.pack(1) + b"C")
    reply = await reader.read_frame()
    elapsed = clock() - start
    assert reply == b"C" + str(n).encode(), reply
    return n / elapsed


# -- bare, with our structure: our tasks and our socket I/O, no framing -----------


class RawReader:
    """Length-prefixed frames, read the way dapper-trio's reader reads.

    ``os.read`` on the descriptor; ``wait_readable`` before it only when the
    last read emptied the socket, a checkpoint otherwise.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.sock = stream.socket
        self.buffer = bytearray()
        self.drained = True

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
            if self.drained:
                await trio.lowlevel.wait_readable(self.sock)
            else:
                await trio.lowlevel.checkpoint()
            size = read_size(needed)
            try:
                data = os.read(self.sock.fileno(), size)
            except BlockingIOError:
                self.drained = True
                continue
            if not data:
                return None
            self.drained = len(data) < size
            buffer += data


def write_nowait(stream: trio.SocketStream, frame: bytes) -> int:
    """Write what the socket takes now, without yielding (as dapper-trio does)."""
    try:
        return os.write(stream.socket.fileno(), frame)
    except BlockingIOError:
        return 0


async def write_frame(stream: trio.SocketStream, frame: bytes) -> bool:
    """Write a frame; return whether it went out at once, without waiting."""
    sent = write_nowait(stream, frame)
    if sent == len(frame):
        return True
    await stream.send_all(memoryview(frame)[sent:])
    return False


@asynccontextmanager
async def structure_pair(
    transport: Transport, handler: HandlerKind
) -> AsyncIterator[StructureClient]:
    """A bare client and server with dapper-trio's structure but none of its framing.

    Each side has one reader task.  The server answers each echo request in a
    task of its own (``handler="async"``) or from its reader (``"sync"``); the
    client's reader hands each response to the waiting task.  Frames are a
    length prefix and raw bytes: no JSON, no ids, no kinds.
    """

    async def serve(stream: trio.SocketStream) -> None:
        await serve_with_structure(stream, handler)

    async with bare_pair(transport, serve=serve) as stream:
        client = StructureClient(stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_responses)
            yield client
            nursery.cancel_scope.cancel()


async def serve_with_structure(stream: trio.SocketStream, handler: HandlerKind) -> None:
    async def answer(frame: bytes) -> None:
        await write_frame(stream, frame)

    reader = RawReader(stream)
    count = 0
    async with trio.open_nursery() as nursery:
        while (frame := await reader.read_frame()) is not None:
            mode = frame[:1]
            if mode == b"S":
                count += 1
                continue
            if mode == b"C":
                frame = b"C" + str(count).encode()
                count = 0
            reply = LENGTH.pack(len(frame)) + frame
            if handler == "async":
                nursery.start_soon(answer, reply)
            else:
                sent = write_nowait(stream, reply)
                if sent < len(reply):  # rare; a single client cannot deadlock us
                    await stream.send_all(memoryview(reply)[sent:])


class StructureClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.waiting: trio.lowlevel.Task | None = None

    async def read_responses(self) -> None:
        reader = RawReader(self.stream)
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

    async def send(self, frame: bytes) -> None:
        """A one-way frame, ending with a schedule point as ``send_event`` does."""
        if await write_frame(self.stream, frame):
            await trio.lowlevel.cancel_shielded_checkpoint()


async def structure_round_trips(
    client: StructureClient, payload: bytes, n: int
) -> float:
    frame = LENGTH.pack(len(payload) + 1) + b"E" + payload
    start = clock()
    for _ in range(n):
        await client.request(frame)
    return n / (clock() - start)


async def structure_frames(client: StructureClient, payload: bytes, n: int) -> float:
    frame = LENGTH.pack(len(payload) + 1) + b"S" + payload
    start = clock()
    for _ in range(n):
        await client.send(frame)
    reply = await client.request(LENGTH.pack(1) + b"C")
    elapsed = clock() - start
    assert reply == b"C" + str(n).encode(), reply
    return n / elapsed


# -- driver -------------------------------------------------------------------------


@dataclass
class Row:
    transport: str
    size: str
    measure: str
    handler: str  # which kind of handler ours runs
    ours: float
    bare: float
    structure: float
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
            our_pair(transport, "async") as (async_client, counter),
            our_pair(transport, "sync") as (sync_client, _),
            bare_pair(transport) as bare,
            structure_pair(transport, "async") as async_structure,
            structure_pair(transport, "sync") as sync_structure,
        ):
            for label, size in SIZES.items():
                text, data = "x" * size, b"x" * size
                trips, frames = plan.round_trips[size], plan.frames[size]

                async def bare_rt(n: int = trips, d: bytes = data) -> float:
                    return await bare_round_trips(bare, d, n)

                for kind, client, structure in (
                    ("async", async_client, async_structure),
                    ("sync", sync_client, sync_structure),
                ):

                    async def ours_rt(
                        n: int = trips, t: str = text, c: Channel = client
                    ) -> float:
                        return await ours_round_trips(c, t, n)

                    async def structure_rt(
                        n: int = trips, d: bytes = data, s: StructureClient = structure
                    ) -> float:
                        return await structure_round_trips(s, d, n)

                    ours, plain, ours_structure = await medians(
                        [ours_rt, bare_rt, structure_rt], plan.repeats
                    )
                    passes = (
                        await passes_per_op(ours_rt, 50),
                        await passes_per_op(bare_rt, 50),
                    )
                    rows.append(
                        Row(
                            transport,
                            label,
                            "round trips/s",
                            kind,
                            ours,
                            plain,
                            ours_structure,
                            passes,
                        )
                    )

                async def ours_fr(n: int = frames, t: str = text) -> float:
                    return await ours_frames(async_client, counter, t, n)

                async def bare_fr(n: int = frames, d: bytes = data) -> float:
                    return await bare_frames(bare, d, n)

                async def structure_fr(n: int = frames, d: bytes = data) -> float:
                    return await structure_frames(sync_structure, d, n)

                ours, plain, ours_structure = await medians(
                    [ours_fr, bare_fr, structure_fr], plan.repeats
                )
                passes = (
                    await passes_per_op(ours_fr, 50),
                    await passes_per_op(bare_fr, 50),
                )
                rows.append(
                    Row(
                        transport,
                        label,
                        "frames/s one way",
                        "async (event)",
                        ours,
                        plain,
                        ours_structure,
                        passes,
                    )
                )
    return rows


def render(rows: list[Row], plan: Plan, clock_name: str) -> str:
    lines = [
        "| transport | payload | measure | our handler | dapper-trio | bare echo"
        " | ours/bare | time overhead | bare, our structure | ours/that"
        " | loop passes/op ours, bare |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row.ours / row.bare
        lines.append(
            f"| {row.transport} | {row.size} | {row.measure} | {row.handler}"
            f" | {row.ours:,.0f} | {row.bare:,.0f} | {ratio:.2f} | {1 / ratio - 1:+.0%}"
            f" | {row.structure:,.0f} | {row.ours / row.structure:.2f}"
            f" | {row.passes[0]:.1f}, {row.passes[1]:.1f} |"
        )
    lines += [
        "",
        f"Median of {plan.repeats} interleaved runs, {clock_name} time;"
        f" Python {sys.version.split()[0]}, trio {trio.__version__},"
        f" {os.cpu_count()} CPUs; client and server in one process.",
        "our handler: async = `async def` request handler (a task per request);"
        " sync = plain function (run by the reader).",
        "ours/bare: throughput ratio (1.00 = no overhead).  time overhead: extra"
        " time per operation over the bare echo (the target: under +25%).",
        "bare, our structure: raw length-prefixed bytes with dapper-trio's tasks"
        " and socket I/O; ours/that is the cost of the framing alone.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument(
        "--transport", choices=["unix", "tcp"], action="append", help="repeatable"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="measure wall time (default) or this process's CPU time",
    )
    args = parser.parse_args()
    if args.clock == "cpu":
        global clock
        clock = time.process_time
    plan = QUICK if args.quick else FULL
    transports: list[Transport] = args.transport or ["unix", "tcp"]
    started = time.perf_counter()
    rows = trio.run(run, plan, transports)
    print(render(rows, plan, args.clock))
    print(f"(took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
