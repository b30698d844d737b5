"""The DAP base-protocol codec: framing, every way a peer can be wrong, trio glue."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
import trio
import trio.testing

from dapper_trio._dap_wire import (
    DEFAULT_MAX_BODY_SIZE,
    MAX_HEADER_SIZE,
    DapDecoder,
    DapMessage,
    DapProtocolError,
    DapWriter,
    MalformedMessage,
    MessageFactory,
    encode_message,
    read_messages,
)
from dapper_trio._errors import DapperTrioError

Item = DapMessage | MalformedMessage

STOPPED = {
    "seq": 7,
    "type": "event",
    "event": "stopped",
    "body": {"reason": "breakpoint", "threadId": 1, "allThreadsStopped": True},
}
NEXT = {"seq": 8, "type": "request", "command": "next", "arguments": {"threadId": 3}}


def frame(body: bytes, *headers: bytes) -> bytes:
    """A message with *body* and the given header lines (Content-Length first)."""
    lines = [b"Content-Length: %d" % len(body), *headers]
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def decode(data: bytes, **kwargs: Any) -> list[Item]:
    """Everything a fresh decoder makes of *data* fed at once."""
    decoder = DapDecoder(**kwargs)
    decoder.feed(data)
    return list(decoder.messages())


def rejection(data: bytes, **kwargs: Any) -> str:
    """Feed *data* to a fresh decoder and return the header error it raises."""
    decoder = DapDecoder(**kwargs)
    decoder.feed(data)
    with pytest.raises(DapProtocolError) as info:
        list(decoder.messages())
    assert decoder.buffered_bytes == 0
    return str(info.value)


# -- encoding and round trips --------------------------------------------------


def test_encoded_layout() -> None:
    """A message is a Content-Length header, an empty line, then compact JSON."""
    body = b'{"seq":8,"type":"request","command":"next","arguments":{"threadId":3}}'
    assert encode_message(NEXT) == b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_round_trip() -> None:
    """Encoded messages decode to what was encoded, in order, leaving nothing."""
    nested = {"seq": 1, "type": "response", "body": {"a": [1, 2.5, None, {"b": []}]}}
    decoder = DapDecoder()
    decoder.feed(encode_message(STOPPED) + encode_message(NEXT))
    decoder.feed(encode_message(nested))
    assert list(decoder.messages()) == [STOPPED, NEXT, nested]
    assert decoder.next_message() is None
    assert decoder.buffered_bytes == 0


def test_content_length_counts_utf8_bytes() -> None:
    """Non-ASCII text goes out as raw UTF-8 and Content-Length counts its bytes."""
    message = {"seq": 1, "type": "event", "event": "output", "body": {"t": "é✓🐍"}}
    data = encode_message(message)
    header, _, body = data.partition(b"\r\n\r\n")
    assert "é✓🐍".encode() in body
    assert header == b"Content-Length: %d" % len(body)
    assert len(body) == len(body.decode()) + 1 + 2 + 3
    assert decode(data) == [message]


def test_peer_utf8_body_is_measured_in_bytes() -> None:
    """A peer's raw UTF-8 body, counted in bytes, decodes and the next one too."""
    body = json.dumps({"type": "event", "x": "héllo 🐍"}, ensure_ascii=False)
    data = frame(body.encode()) + encode_message(NEXT)
    assert decode(data) == [{"type": "event", "x": "héllo 🐍"}, NEXT]


def test_lone_surrogates_round_trip() -> None:
    """Strings holding lone surrogates (surrogateescape'd paths) survive as escapes."""
    path = b"/tmp/caf\xe9.py".decode("utf-8", "surrogateescape")
    message = {"seq": 1, "type": "event", "event": "x", "body": {"path": path, "é": 1}}
    data = encode_message(message)
    assert data.isascii()
    assert b"\\udce9" in data
    assert decode(data) == [message]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_refused(value: float) -> None:
    """NaN and infinities are not JSON: encoding them is a ValueError."""
    with pytest.raises(ValueError, match="cannot encode DAP message"):
        encode_message({"seq": 1, "type": "event", "body": {"value": value}})


def test_unencodable_values_refused() -> None:
    """Values JSON cannot carry, and non-mappings, are TypeErrors."""
    with pytest.raises(TypeError, match="cannot encode DAP message"):
        encode_message({"type": "event", "body": {"raw": b"bytes"}})
    with pytest.raises(TypeError, match="a DAP message is a mapping, not list"):
        encode_message([1, 2])  # type: ignore[arg-type]


def test_any_mapping_encodes() -> None:
    """A read-only mapping encodes like the dict it wraps."""
    from types import MappingProxyType

    assert encode_message(MappingProxyType(NEXT)) == encode_message(NEXT)


# -- chunking ------------------------------------------------------------------


def test_byte_at_a_time() -> None:
    """A message fed one byte at a time comes out once, at its last byte."""
    data = encode_message(STOPPED)
    decoder = DapDecoder()
    for index in range(len(data) - 1):
        decoder.feed(data[index : index + 1])
        assert decoder.next_message() is None
    decoder.feed(data[-1:])
    assert decoder.next_message() == STOPPED
    assert decoder.buffered_bytes == 0


def test_many_messages_in_one_chunk() -> None:
    """Many messages in one feed all come out, in order."""
    messages = [{"seq": n, "type": "event", "event": f"e{n}"} for n in range(1, 201)]
    assert decode(b"".join(encode_message(m) for m in messages)) == messages


def test_header_split_at_every_point() -> None:
    """A header split in two at any byte decodes the same."""
    data = frame(b'{"type":"event"}', b"Content-Type: application/json")
    header_end = data.index(b"\r\n\r\n") + 4
    for cut in range(header_end + 1):
        decoder = DapDecoder()
        decoder.feed(data[:cut])
        assert decoder.next_message() is None
        decoder.feed(data[cut:])
        assert decoder.next_message() == {"type": "event"}, cut


@pytest.mark.parametrize("seed", range(5))
def test_random_chunking_of_fifty_messages(seed: int) -> None:
    """50 messages fed in random pieces decode exactly as when fed whole."""
    rng = random.Random(seed)
    parts = []
    for seq in range(1, 51):
        choice = rng.randrange(5)
        if choice == 0:  # a malformed body amid the good ones
            parts.append(frame(b'{"seq": %d, "type": ' % seq))
        elif choice == 1:  # extra headers, odd case, bare LF
            body = b'{"seq":%d,"type":"event"}' % seq
            parts.append(
                b"content-type: application/json\ncontent-length: %d\n\n%b"
                % (len(body), body)
            )
        else:
            text = "".join(rng.choice('aé✓🐍\n{}"\\') for _ in range(rng.randrange(40)))
            size = rng.choice([0, 10, 1000, 70_000])
            message = {
                "seq": seq,
                "type": "event",
                "body": {"t": text, "pad": "x" * size},
            }
            parts.append(encode_message(message))
    stream = b"".join(parts)
    expected = decode(stream)
    assert len(expected) == 50
    assert sum(isinstance(item, MalformedMessage) for item in expected) > 0
    cuts = sorted(rng.sample(range(1, len(stream)), 300))
    decoder = DapDecoder()
    decoded: list[Item] = []
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        decoder.feed(stream[start:end])
        decoded.extend(decoder.messages())
    assert decoded == expected
    assert decoder.buffered_bytes == 0


def test_large_body_in_small_pieces() -> None:
    """A 4 MiB body fed 4 KiB at a time decodes (in place, not copied)."""
    message = {"seq": 1, "type": "response", "body": {"data": "y" * (4 * 1024 * 1024)}}
    data = encode_message(message)
    decoder = DapDecoder()
    decoded: list[Item] = []
    for offset in range(0, len(data), 4096):
        decoder.feed(data[offset : offset + 4096])
        decoded.extend(decoder.messages())
    assert decoded == [message]


# -- headers a peer may send ---------------------------------------------------


def test_extra_headers_are_ignored() -> None:
    """Headers other than Content-Length, before or after it, are ignored."""
    body = b'{"type":"event"}'
    data = (
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n"
        + b"Content-Length: %d\r\nX-Anything:\t whatever: you like \r\n\r\n" % len(body)
        + body
    )
    assert decode(data) == [{"type": "event"}]


@pytest.mark.parametrize(
    "line",
    [
        b"content-length: 16",
        b"CONTENT-LENGTH: 16",
        b"Content-length:16",
        b"cOnTeNt-LeNgTh: \t16 \t",
    ],
)
def test_header_names_are_case_insensitive(line: bytes) -> None:
    """Content-Length is found in any case, with any spacing around its value."""
    assert decode(line + b"\r\n\r\n" + b'{"type":"event"}') == [{"type": "event"}]


def test_bare_lf_line_endings_accepted() -> None:
    r"""Lines may end with a bare \n instead of \r\n, even mixed."""
    body = b'{"type":"event"}'
    data = b"Content-Length: 16\n\n" + body + b"Content-Length: 16\r\n\n" + body
    assert decode(data) == [{"type": "event"}] * 2


def test_empty_lines_between_messages_are_skipped() -> None:
    """Stray empty lines before a header section are skipped, as HTTP does."""
    one = encode_message(NEXT)
    assert decode(b"\r\n\n\r\n" + one + b"\n\r\n" + one) == [NEXT, NEXT]


def test_identical_duplicate_content_length_accepted() -> None:
    """Two Content-Length headers that agree are accepted."""
    assert decode(frame(b'{"type":"event"}', b"content-length: 16")) == [
        {"type": "event"}
    ]


def test_body_at_the_limit_is_accepted() -> None:
    """A body of exactly max_body_size bytes is fine."""
    body = b'{"type":"event"}'
    assert decode(frame(body), max_body_size=len(body)) == [{"type": "event"}]
    assert DEFAULT_MAX_BODY_SIZE == 64 * 1024 * 1024


def test_header_at_the_limit_is_accepted() -> None:
    """A header section of exactly MAX_HEADER_SIZE bytes is fine."""
    start = b"Content-Length: 16\r\nX-Pad: "
    pad = b"p" * (MAX_HEADER_SIZE - len(start) - 4)
    header = start + pad + b"\r\n\r\n"
    assert len(header) == MAX_HEADER_SIZE
    assert decode(header + b'{"type":"event"}') == [{"type": "event"}]


def test_max_body_size_may_change_between_messages() -> None:
    """max_body_size is an attribute, read when each header arrives."""
    decoder = DapDecoder(max_body_size=20)
    decoder.feed(encode_message({"type": "a"}) + encode_message(STOPPED))
    assert decoder.next_message() == {"type": "a"}
    decoder.max_body_size = 1000
    assert decoder.next_message() == STOPPED


# -- bad headers: the stream is dead -------------------------------------------


def test_oversized_body_refused_from_the_header() -> None:
    """A declared length over the limit is refused before its body is buffered."""
    decoder = DapDecoder(max_body_size=1000)
    decoder.feed(b"Content-Length: 1000000000000\r\n")  # not even the empty line yet
    with pytest.raises(DapProtocolError) as info:
        decoder.next_message()
    assert "a message declares a body of 1000000000000 bytes, over the limit of" in str(
        info.value
    )
    assert "1000 bytes" in str(info.value)
    assert decoder.buffered_bytes == 0


def test_absurdly_long_length_is_over_the_limit() -> None:
    """A length of thousands of digits is reported as over the limit, quoted short."""
    error = rejection(b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n")
    assert "over the limit of 67108864 bytes" in error
    assert len(error) < 300


def test_oversized_header_refused() -> None:
    """A header section that does not end within 8 KiB is refused."""
    decoder = DapDecoder()
    decoder.feed(b"Content-Length: 2\r\nX-Pad: " + b"p" * (MAX_HEADER_SIZE - 30))
    assert decoder.next_message() is None
    decoder.feed(b"p" * 20)
    with pytest.raises(DapProtocolError, match="header section is over 8192 bytes"):
        decoder.next_message()


def test_missing_content_length() -> None:
    """A header section without Content-Length is refused, quoting it."""
    error = rejection(b"Content-Type: application/json\r\n\r\n{}")
    assert "has no Content-Length" in error
    assert "Content-Type: application/json" in error


@pytest.mark.parametrize(
    "value",
    [b"abc", b"-5", b"+5", b"1.5", b"", b"1_0", b"0x10", b"12 3", b"\xd9\xa1"],
    ids=[
        "word",
        "negative",
        "plus",
        "float",
        "empty",
        "underscore",
        "hex",
        "two",
        "arabic-digit",
    ],
)
def test_garbled_content_length(value: bytes) -> None:
    """A Content-Length that is not plain decimal digits is refused."""
    error = rejection(b"Content-Length: " + value + b"\r\n\r\n{}")
    assert "is not a non-negative integer" in error


def test_conflicting_content_lengths() -> None:
    """Two Content-Length headers that disagree are refused."""
    error = rejection(frame(b"{}", b"Content-Length: 3"))
    assert "two Content-Length headers disagree: 2 and 3" in error


def test_bare_json_refused_at_the_first_byte() -> None:
    """A peer sending JSON without a header is refused at its '{', with a hint."""
    error = rejection(b"{")
    assert "is not 'Name: value'" in error
    assert "is the peer sending bare JSON?" in error


@pytest.mark.parametrize(
    "data",
    [b"hello world\r\n", b"Content Length: 2\r\n", b"Content-Length 2\r\n", b": 2\r\n"],
    ids=["words", "space-in-name", "no-colon", "empty-name"],
)
def test_header_line_not_name_value(data: bytes) -> None:
    """A header line that is not 'Name: value' is refused, quoting it."""
    assert "is not 'Name: value'" in rejection(data)


def test_poisoned_decoder_keeps_raising() -> None:
    """After a header error every call raises it again, even with good bytes fed."""
    decoder = DapDecoder()
    decoder.feed(b"nonsense\n")
    with pytest.raises(DapProtocolError) as first:
        decoder.next_message()
    for call in (
        decoder.next_message,
        lambda: decoder.feed(encode_message(NEXT)),
        decoder.feed_eof,
    ):
        with pytest.raises(DapProtocolError) as again:
            call()
        assert str(again.value) == str(first.value)
        assert again.value.__cause__ is first.value


def test_error_hierarchy() -> None:
    """DapProtocolError is one of the package's errors."""
    assert issubclass(DapProtocolError, DapperTrioError)


# -- bad bodies: reported, and the stream goes on ------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"type": "request", "seq": 1', "not valid JSON: Expecting ',' delimiter"),
        (b"", "not valid JSON: Expecting value"),
        (b'{"type": "event"} x', "not valid JSON: Extra data"),
        (b'{"type": "event", "v": NaN}', "not valid JSON: NaN is not a JSON value"),
        (b'\xef\xbb\xbf{"type": "event"}', "not valid JSON: Expecting value"),
        (b'{"type": "\xff"}', "not valid UTF-8"),
        (b"1" * 5000, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
    ids=[
        "truncated",
        "empty",
        "extra",
        "nan",
        "bom",
        "not-utf8",
        "huge-int",
        "nesting",
    ],
)
def test_bad_body_is_reported_and_the_next_message_decodes(
    body: bytes, reason: str
) -> None:
    """A body that is not JSON is a MalformedMessage; the next one still decodes."""
    decoded = decode(frame(body) + encode_message(NEXT))
    assert len(decoded) == 2
    malformed, after = decoded
    assert isinstance(malformed, MalformedMessage)
    assert reason in malformed.error
    assert (malformed.seq, malformed.command) == (None, None)
    assert after == NEXT


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'"text"', "a string"),
        (b"12", "a number"),
        (b"1.5", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_non_object_body(body: bytes, kind: str) -> None:
    """A JSON value that is not an object is reported by its kind."""
    assert decode(frame(body) + encode_message(NEXT)) == [
        MalformedMessage(f"body is {kind}, not a JSON object"),
        NEXT,
    ]


def test_missing_type_keeps_seq_and_command() -> None:
    """An object without "type" is malformed, but its seq and command are kept."""
    body = b'{"seq": 12, "command": "evaluate", "arguments": {}}'
    assert decode(frame(body) + encode_message(NEXT)) == [
        MalformedMessage('message has no "type" field', seq=12, command="evaluate"),
        NEXT,
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"type": 3, "seq": 4}',
            MalformedMessage('message "type" is 3, not a string', seq=4),
        ),
        (
            b'{"type": ["request"], "seq": true, "command": 5}',
            MalformedMessage('message "type" is ["request"], not a string'),
        ),
        (
            b'{"type": null, "seq": 1.0}',
            MalformedMessage('message has no "type" field'),
        ),
    ],
    ids=["number", "array-and-bad-fields", "null"],
)
def test_type_not_a_string(body: bytes, expected: MalformedMessage) -> None:
    """A non-string "type" is malformed; seq and command are kept only if well-typed."""
    assert decode(frame(body)) == [expected]


def test_unknown_type_string_passes_through() -> None:
    """Any string "type" is a message: judging its value is the dispatcher's job."""
    assert decode(frame(b'{"type": "gossip"}')) == [{"type": "gossip"}]


# -- end of stream -------------------------------------------------------------


def test_feed_eof_between_messages() -> None:
    """The stream may end between messages, even after stray empty lines."""
    decoder = DapDecoder()
    decoder.feed_eof()
    decoder.feed(encode_message(NEXT) + b"\r\n\r")
    assert list(decoder.messages()) == [NEXT]
    decoder.feed_eof()


def test_feed_eof_mid_header() -> None:
    """Ending in a header is an error that quotes what arrived."""
    decoder = DapDecoder()
    decoder.feed(b"Content-Len")
    assert decoder.next_message() is None
    with pytest.raises(DapProtocolError, match=r"ended in the header .*Content-Len"):
        decoder.feed_eof()


def test_feed_eof_mid_body() -> None:
    """Ending in a body is an error that says how much of it arrived."""
    decoder = DapDecoder()
    decoder.feed(encode_message(NEXT)[:-5])
    assert decoder.next_message() is None
    length = len(encode_message(NEXT).partition(b"\r\n\r\n")[2])
    with pytest.raises(DapProtocolError, match=f"{length - 5} of its {length} bytes"):
        decoder.feed_eof()


# -- building messages ---------------------------------------------------------


def test_factory_numbers_every_message_from_one() -> None:
    """Each message built gets the next seq, whatever its kind."""
    factory = MessageFactory()
    assert factory.last_seq == 0
    built = [
        factory.event("initialized"),
        factory.response(NEXT),
        factory.request("runInTerminal", {"args": ["x"]}),
        factory.error_response(NEXT, "no"),
        factory.event("output", {"output": "hi"}),
    ]
    assert [message["seq"] for message in built] == [1, 2, 3, 4, 5]
    assert factory.last_seq == 5


def test_factory_message_shapes() -> None:
    """Requests, responses and events have the fields the spec names."""
    factory = MessageFactory()
    assert factory.request("runInTerminal", {"args": ["x"]}) == {
        "seq": 1,
        "type": "request",
        "command": "runInTerminal",
        "arguments": {"args": ["x"]},
    }
    assert factory.request("startDebugging") == {
        "seq": 2,
        "type": "request",
        "command": "startDebugging",
    }
    assert factory.response(NEXT) == {
        "seq": 3,
        "type": "response",
        "request_seq": 8,
        "success": True,
        "command": "next",
    }
    assert factory.response(NEXT, {"threads": []})["body"] == {"threads": []}
    assert factory.event("stopped", {"reason": "step"}) == {
        "seq": 5,
        "type": "event",
        "event": "stopped",
        "body": {"reason": "step"},
    }
    assert "body" not in factory.event("initialized")


def test_error_response_shape() -> None:
    """An error response has success false, short text and a Message in body.error."""
    factory = MessageFactory()
    response = factory.error_response(
        NEXT, "Thread {id} is not stopped", error_id=2001, show_user=True
    )
    assert response == {
        "seq": 1,
        "type": "response",
        "request_seq": 8,
        "success": False,
        "command": "next",
        "message": "Thread {id} is not stopped",
        "body": {
            "error": {
                "id": 2001,
                "format": "Thread {id} is not stopped",
                "showUser": True,
            }
        },
    }
    short = factory.error_response(NEXT, "Not stopped.", short="notStopped")
    assert short["message"] == "notStopped"
    assert short["body"]["error"] == {
        "id": 0,
        "format": "Not stopped.",
        "showUser": False,
    }
    assert decode(encode_message(short)) == [short]


def test_error_response_to_malformed_messages() -> None:
    """A MalformedMessage is answered with its seq and command, or 0 and ""."""
    factory = MessageFactory()
    known = factory.error_response(MalformedMessage("bad", 12, "evaluate"), "bad")
    assert (known["request_seq"], known["command"]) == (12, "evaluate")
    unknown = factory.error_response(MalformedMessage("worse"), "worse")
    assert (unknown["request_seq"], unknown["command"]) == (0, "")
    garbled = factory.error_response({"seq": "1", "command": None}, "odd")
    assert (garbled["request_seq"], garbled["command"]) == (0, "")


# -- trio glue -----------------------------------------------------------------


@pytest.fixture(name="socket_pair")
async def _socket_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    left, right = trio.socket.socketpair()
    async with (
        trio.SocketStream(left) as left_stream,
        trio.SocketStream(right) as right_stream,
    ):
        yield left_stream, right_stream


async def collect(stream: trio.abc.ReceiveStream, count: int) -> list[Item]:
    """Read exactly *count* messages from *stream*."""
    items: list[Item] = []
    async with aclosing(read_messages(stream)) as messages:
        async for item in messages:
            items.append(item)
            if len(items) == count:
                break
    return items


async def read_all(stream: trio.abc.ReceiveStream, into: list[Item]) -> None:
    """Read messages from *stream* into *into* until it ends."""
    async for item in read_messages(stream):
        into.append(item)  # noqa: PERF401  # keep what arrived before an error


async def collect_into(
    stream: trio.abc.ReceiveStream, count: int, into: list[Item]
) -> None:
    """Read exactly *count* messages from *stream* into *into*."""
    into.extend(await collect(stream, count))


async def test_round_trip_over_a_socket(
    socket_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    """Messages sent by a DapWriter on a real socket are read back in order."""
    left, right = socket_pair
    writer = DapWriter(left)
    factory = MessageFactory()
    sent = [
        factory.event("output", {"output": "é🐍" * 1000}),
        factory.response(NEXT, {"big": "z" * 500_000}),
        factory.event("terminated"),
    ]
    received: list[Item] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_into, right, len(sent), received)
            for message in sent:
                await writer.send(message)
    assert received == sent


async def test_concurrent_sends_never_interleave(
    socket_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    """Many tasks sending large messages at once: each arrives whole."""
    left, right = socket_pair
    writer = DapWriter(left)
    factory = MessageFactory()
    messages = [
        factory.event("output", {"output": chr(ord("A") + n % 26) * 60_000, "n": n})
        for n in range(40)
    ]
    received: list[Item] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_into, right, len(messages), received)
            async with trio.open_nursery() as senders:
                for message in messages:
                    senders.start_soon(writer.send, message)
    assert all(isinstance(item, dict) for item in received)
    assert sorted(received, key=lambda item: item["seq"]) == messages  # type: ignore[index]


async def test_reader_ends_cleanly_at_eof_between_messages() -> None:
    """At EOF between messages the reader simply stops."""
    send_stream, receive_stream = trio.testing.memory_stream_one_way_pair()
    with trio.fail_after(5):
        await send_stream.send_all(
            encode_message(STOPPED) + encode_message(NEXT) + b"\r\n"
        )
        await send_stream.aclose()
        items = [item async for item in read_messages(receive_stream)]
    assert items == [STOPPED, NEXT]


async def test_reader_raises_at_eof_mid_message() -> None:
    """EOF inside a message is a DapProtocolError after the complete ones."""
    send_stream, receive_stream = trio.testing.memory_stream_one_way_pair()
    items: list[Item] = []
    with trio.fail_after(5):
        await send_stream.send_all(encode_message(STOPPED) + encode_message(NEXT)[:30])
        await send_stream.aclose()
        with pytest.raises(DapProtocolError, match="ended in the body of a message"):
            await read_all(receive_stream, items)
    assert items == [STOPPED]


async def test_reader_reports_malformed_bodies_and_goes_on() -> None:
    """A bad body arrives as a MalformedMessage item, and reading continues."""
    send_stream, receive_stream = trio.testing.memory_stream_one_way_pair()
    with trio.fail_after(5):
        await send_stream.send_all(
            frame(b'{"seq": 3, "command": "x"}') + encode_message(NEXT)
        )
        await send_stream.aclose()
        items = [item async for item in read_messages(receive_stream)]
    assert items == [MalformedMessage('message has no "type" field', 3, "x"), NEXT]


async def test_reader_raises_on_a_bad_header() -> None:
    """A header error ends the reader with DapProtocolError."""
    send_stream, receive_stream = trio.testing.memory_stream_one_way_pair()
    with trio.fail_after(5):
        await send_stream.send_all(b'{"type": "request"}')
        with pytest.raises(DapProtocolError, match="bare JSON"):
            async for _ in read_messages(receive_stream):
                pass  # pragma: no cover


async def test_reader_cancelled_loses_no_message() -> None:
    """A cancelled reader leaves buffered messages in its decoder, even unread ones."""
    _, receive_stream = trio.testing.memory_stream_one_way_pair()
    decoder = DapDecoder()
    decoder.feed(encode_message(STOPPED) + encode_message(NEXT))
    got: list[Item] = []
    with trio.fail_after(5), trio.CancelScope() as scope:
        async for item in read_messages(receive_stream, decoder):
            got.append(item)
            scope.cancel()  # the next step checkpoints before taking NEXT
    assert scope.cancelled_caught
    assert got == [STOPPED]
    assert decoder.next_message() == NEXT


async def test_send_cancelled_while_waiting_leaves_writer_usable(
    socket_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    """A send cancelled before its turn writes nothing; the writer still works."""
    left, right = socket_pair
    writer = DapWriter(left)
    big = {"seq": 1, "type": "event", "event": "big", "body": {"x": "x" * 2_000_000}}
    after = {"seq": 3, "type": "event", "event": "after"}
    received: list[Item] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send, big)  # fills the socket and waits
            await trio.testing.wait_all_tasks_blocked()
            waiting = trio.CancelScope()

            async def send_in_scope() -> None:
                with waiting:
                    await writer.send({"seq": 2, "type": "event", "event": "lost"})

            nursery.start_soon(send_in_scope)
            await trio.testing.wait_all_tasks_blocked()
            waiting.cancel()
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(collect_into, right, 2, received)
            await writer.send(after)  # queued behind big
    assert waiting.cancelled_caught
    assert received == [big, after]


async def test_send_cancelled_mid_write_breaks_the_writer(
    socket_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    """A send cut off part-way breaks the writer: later sends refuse."""
    left, right = socket_pair
    writer = DapWriter(left)
    big = {"seq": 1, "type": "event", "event": "big", "body": {"x": "x" * 2_000_000}}
    scope = trio.CancelScope()

    async def send_big() -> None:
        with scope:
            await writer.send(big)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_big)
            # Nobody reads: the send fills the socket's buffers and blocks
            # part-way, in send_all (not before it, however slow the machine).
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        assert scope.cancelled_caught
        assert (await right.receive_some(15)) == b"Content-Length:"  # part of it
        with pytest.raises(trio.BrokenResourceError, match="cut off part-way"):
            await writer.send(NEXT)


async def test_send_refuses_nan_before_writing() -> None:
    """An unencodable message is refused and the writer stays usable."""
    send_stream, receive_stream = trio.testing.memory_stream_one_way_pair()
    writer = DapWriter(send_stream)
    with trio.fail_after(5):
        with pytest.raises(ValueError, match="cannot encode"):
            await writer.send({"type": "event", "body": {"v": float("nan")}})
        await writer.send(NEXT)
        await send_stream.aclose()
        items = [item async for item in read_messages(receive_stream)]
    assert items == [NEXT]
