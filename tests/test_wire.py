"""The frame codec: round trips, chunking, and every way a peer can be wrong."""

from __future__ import annotations

import itertools
import json
import pickle
import struct
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapper_trio._errors import DapperTrioError
from dapper_trio._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameKind,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    encode_frame,
)

PEER = "debuggee pid 1234"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
kinds = st.sampled_from(list(FrameKind))


def header(
    kind: int, length: int, *, magic: bytes = MAGIC, version: int = PROTOCOL_VERSION
) -> bytes:
    return HEADER.pack(magic, version, kind, length)


def decode_all(decoder: FrameDecoder) -> list[Frame]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def rejection(data: bytes, **kwargs: Any) -> RemoteProtocolError:
    """Feed *data* to a fresh decoder and return the error it raises."""
    decoder = FrameDecoder(peer=PEER, **kwargs)
    decoder.feed(data)
    with pytest.raises(RemoteProtocolError) as info:
        decode_all(decoder)
    assert info.value.peer == PEER
    assert str(info.value).startswith(f"peer {PEER!r} sent an invalid frame: ")
    return info.value


# -- round trips -------------------------------------------------------------


@given(kind=kinds, payload=json_values)
def test_round_trip(kind: FrameKind, payload: Any) -> None:
    """Any JSON value of any kind decodes to what was encoded."""
    decoder = FrameDecoder(peer=PEER)
    decoder.feed(encode_frame(kind, payload))
    assert decode_all(decoder) == [Frame(kind, payload)]
    assert decoder.buffered_bytes == 0


@settings(max_examples=200)
@given(
    frames=st.lists(st.tuples(kinds, json_values), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_arbitrary_chunking(
    frames: list[tuple[FrameKind, Any]], cuts: list[int]
) -> None:
    """A stream fed in arbitrary pieces decodes to the same frames, in order."""
    stream = b"".join(encode_frame(kind, payload) for kind, payload in frames)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    decoder = FrameDecoder(peer=PEER)
    decoded = []
    for start, end in itertools.pairwise(points):
        decoder.feed(stream[start:end])
        decoded.extend(decode_all(decoder))
    assert decoded == [Frame(kind, payload) for kind, payload in frames]


def test_frame_layout() -> None:
    """The header is magic, version, kind, big-endian length; then compact JSON."""
    data = encode_frame(FrameKind.EVENT, {"event": "stopped", "body": [1, "é"]})
    payload = b'{"event":"stopped","body":[1,"\\u00e9"]}'
    assert data == b"DT\x01\x04" + struct.pack(">I", len(payload)) + payload


def test_non_ascii_utf8_payload_decodes() -> None:
    """A peer may send raw (non-escaped) UTF-8 text in its JSON."""
    payload = json.dumps({"text": "héllo ✓ 🐍"}, ensure_ascii=False).encode()
    decoder = FrameDecoder(peer=PEER)
    decoder.feed(header(FrameKind.EVENT, len(payload)) + payload)
    assert decode_all(decoder) == [Frame(FrameKind.EVENT, {"text": "héllo ✓ 🐍"})]


def test_lone_surrogates_round_trip() -> None:
    """Strings holding lone surrogates (surrogateescape'd file names) survive."""
    name = b"caf\xe9.py".decode("utf-8", "surrogateescape")
    decoder = FrameDecoder(peer=PEER)
    decoder.feed(encode_frame(FrameKind.REQUEST, {"path": name}))
    assert decode_all(decoder) == [Frame(FrameKind.REQUEST, {"path": name})]


def test_large_frame_fed_in_small_pieces_is_linear() -> None:
    """An 8 MiB frame fed 1 KiB at a time decodes quickly (no quadratic copying)."""
    payload = "x" * (8 * 1024 * 1024)
    data = encode_frame(FrameKind.RESPONSE, payload)
    decoder = FrameDecoder(peer=PEER)
    start = time.perf_counter()
    frames = []
    for offset in range(0, len(data), 1024):
        decoder.feed(data[offset : offset + 1024])
        frames.extend(decode_all(decoder))
    elapsed = time.perf_counter() - start
    assert frames == [Frame(FrameKind.RESPONSE, payload)]
    # Linear decoding takes tens of milliseconds; quadratic takes many seconds.
    assert elapsed < 3.0


def test_bytes_needed_hint() -> None:
    """bytes_needed says how much the frame at the front still lacks."""
    data = encode_frame(FrameKind.EVENT, {"event": "x", "body": "y" * 100})
    decoder = FrameDecoder(peer=PEER)
    assert decoder.bytes_needed == 8
    decoder.feed(data[:3])
    assert decoder.bytes_needed == 5
    decoder.feed(data[3:20])
    assert decoder.bytes_needed == len(data) - 20
    assert decoder.next_frame() is None
    decoder.feed(data[20:])
    assert decoder.next_frame() is not None


def test_limits_may_change_between_frames() -> None:
    """peer and max_frame_size are attributes, e.g. raised after authentication."""
    decoder = FrameDecoder(peer="unauthenticated", max_frame_size=10)
    decoder.feed(
        encode_frame(FrameKind.HANDSHAKE, {}) + encode_frame(FrameKind.EVENT, "z" * 50)
    )
    assert decoder.next_frame() == Frame(FrameKind.HANDSHAKE, {})
    decoder.peer, decoder.max_frame_size = PEER, 100
    assert decoder.next_frame() == Frame(FrameKind.EVENT, "z" * 50)


# -- garbage -----------------------------------------------------------------


@settings(max_examples=300)
@given(
    data=st.binary(max_size=200)
    | st.builds(
        lambda kind, length, rest: (
            HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, length) + rest
        ),
        st.integers(0, 255),
        st.integers(0, 300),
        st.binary(max_size=300),
    ),
    cut=st.integers(min_value=0),
)
def test_garbage_raises_only_remote_protocol_error(data: bytes, cut: int) -> None:
    """Random bytes (with or without a plausible header) never raise anything else."""
    decoder = FrameDecoder(peer=PEER, max_frame_size=200)
    cut %= len(data) + 1
    blamed = PEER
    try:
        for piece in (data[:cut], data[cut:]):
            decoder.feed(piece)
            decode_all(decoder)
    except RemoteProtocolError as exc:
        blamed = exc.peer
    assert blamed == PEER


def test_bad_magic_names_the_bytes_seen() -> None:
    """Bad magic is reported with the bytes that arrived instead."""
    error = rejection(b"GET / HTTP/1.1\r\n")
    assert "bad magic b'GE'" in error.reason
    assert "b'GET / HTTP/1.1\\r\\n'" in error.reason
    assert "expected b'DT'" in error.reason


def test_bad_magic_is_caught_from_the_first_byte() -> None:
    """A peer that sends one wrong byte and waits is refused at once."""
    assert "bad magic b'x'" in rejection(b"x").reason
    assert "bad magic b'Dx'" in rejection(b"Dx").reason


def test_unsupported_version() -> None:
    """A header with another protocol version is refused, naming both versions."""
    error = rejection(header(FrameKind.EVENT, 2, version=7) + b"{}")
    assert "unsupported protocol version 7" in error.reason
    assert f"speaks version {PROTOCOL_VERSION}" in error.reason
    assert "version 7" in rejection(b"DT\x07").reason


@pytest.mark.parametrize("kind", [0, 5, 255])
def test_unknown_kind(kind: int) -> None:
    """Kinds outside FrameKind are protocol errors, full header or not."""
    assert f"unknown frame kind {kind}" in rejection(header(kind, 2) + b"{}").reason
    assert f"unknown frame kind {kind}" in rejection(b"DT\x01" + bytes([kind])).reason


def test_oversize_rejected_from_the_header_alone() -> None:
    """A declared length over the cap is refused before any payload arrives."""
    decoder = FrameDecoder(peer=PEER, max_frame_size=1000)
    decoder.feed(header(FrameKind.REQUEST, 2**32 - 1))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert "4294967295 bytes, over the limit of 1000 bytes" in info.value.reason
    assert "REQUEST" in info.value.reason
    assert decoder.buffered_bytes == 0


def test_default_cap() -> None:
    """The default cap is 16 MiB: exactly that is fine, one more byte is not."""
    assert DEFAULT_MAX_FRAME_SIZE == 16 * 1024 * 1024
    decoder = FrameDecoder(peer=PEER)
    decoder.feed(header(FrameKind.EVENT, DEFAULT_MAX_FRAME_SIZE))
    assert decoder.next_frame() is None
    rejection(header(FrameKind.EVENT, DEFAULT_MAX_FRAME_SIZE + 1))


def test_invalid_utf8() -> None:
    """A payload that is not UTF-8 is refused, saying so."""
    error = rejection(header(FrameKind.EVENT, 4) + b'"\xff"!')
    assert "EVENT payload is not valid UTF-8" in error.reason


@pytest.mark.parametrize(
    "payload",
    [b"{", b"", b"{}{}", b"NaN", b"[Infinity]", b"\xef\xbb\xbf{}", b"1" * 5000],
    ids=["truncated", "empty", "two-values", "nan", "infinity", "bom", "huge-int"],
)
def test_invalid_json(payload: bytes) -> None:
    """Anything json.loads would refuse, plus NaN/Infinity, is not valid JSON."""
    error = rejection(header(FrameKind.RESPONSE, len(payload)) + payload)
    assert "RESPONSE payload is not valid JSON" in error.reason


@pytest.mark.parametrize(
    "payload",
    [b' {"a": [1, 2]}', b'{"a": [1, 2]}\n', b'\t{ "a" : [ 1 , 2 ] }\r\n'],
    ids=["leading", "trailing", "both"],
)
def test_json_with_whitespace_is_valid(payload: bytes) -> None:
    """Whitespace around a peer's JSON value (which we never send) is accepted."""
    decoder = FrameDecoder(peer=PEER)
    decoder.feed(header(FrameKind.EVENT, len(payload)) + payload)
    assert decode_all(decoder) == [Frame(FrameKind.EVENT, {"a": [1, 2]})]


def test_invalid_json_message_is_precise() -> None:
    """The reason says what json found wrong and where."""
    payload = b'{"a": 1} x'
    error = rejection(header(FrameKind.EVENT, len(payload)) + payload)
    assert "Extra data: line 1 column 10 (char 9)" in error.reason


def test_absurd_nesting_is_a_protocol_error() -> None:
    """Deeply nested JSON is refused rather than crashing with RecursionError."""
    payload = b"[" * 200_000 + b"]" * 200_000
    error = rejection(
        header(FrameKind.EVENT, len(payload)) + payload, max_frame_size=2**20
    )
    assert "not valid JSON" in error.reason


def test_poisoned_decoder_keeps_raising() -> None:
    """After an error every call raises it again, even with good bytes fed."""
    decoder = FrameDecoder(peer=PEER)
    decoder.feed(b"XX")
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_frame()
    for call in (
        decoder.next_frame,
        lambda: decoder.feed(encode_frame(FrameKind.EVENT, {})),
    ):
        with pytest.raises(RemoteProtocolError) as again:
            call()
        assert str(again.value) == str(first.value)
        assert again.value.__cause__ is first.value


def test_error_hierarchy_and_pickling() -> None:
    """Both error kinds are ProtocolErrors; the remote one pickles with its peer."""
    assert issubclass(ProtocolError, DapperTrioError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    error = pickle.loads(pickle.dumps(RemoteProtocolError("bad", peer=PEER)))
    assert (error.reason, error.peer, str(error)) == (
        "bad",
        PEER,
        f"peer {PEER!r} sent an invalid frame: bad",
    )


# -- local errors ------------------------------------------------------------


def test_oversize_outgoing_payload() -> None:
    """Encoding a payload over the cap is our fault, and says by how much."""
    encode_frame(FrameKind.EVENT, "x" * 98, max_frame_size=100)
    with pytest.raises(LocalProtocolError, match="101 bytes, over the limit of 100"):
        encode_frame(FrameKind.EVENT, "x" * 99, max_frame_size=100)


def _circular() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    "payload",
    [object(), {1, 2}, {"x": b"bytes"}, float("nan"), float("inf"), _circular()],
    ids=["object", "set", "bytes", "nan", "inf", "circular"],
)
def test_unserialisable_outgoing_payload(payload: Any) -> None:
    """Values JSON cannot carry are LocalProtocolErrors, not TypeErrors."""
    with pytest.raises(LocalProtocolError, match="REQUEST payload is not JSON-serial"):
        encode_frame(FrameKind.REQUEST, payload)


@pytest.mark.parametrize("kind", [0, 5, "2", None])
def test_unknown_outgoing_kind(kind: Any) -> None:
    """Sending a frame of a kind that does not exist is refused."""
    with pytest.raises(LocalProtocolError, match="unknown kind"):
        encode_frame(kind, {})
