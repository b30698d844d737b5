"""The frame codec: bytes in, frames out, and back.  No I/O, no trio.

A stream between two dapper-trio processes is a sequence of frames.  Each frame
is an 8-byte header followed by a UTF-8 JSON payload::

    offset  size  field
    0       2     magic b"DT"
    2       1     protocol version (PROTOCOL_VERSION)
    3       1     kind (a FrameKind)
    4       4     payload length in bytes, unsigned big-endian
    8       n     payload: UTF-8 encoded JSON

Errors say who is to blame, as in h11: ``LocalProtocolError`` means *we* tried
to send something illegal (too large, not JSON); ``RemoteProtocolError`` means
the peer sent garbage, and its message names the peer and what was wrong.  A
decoder that raised is poisoned: the stream cannot be resynchronised, so every
later call raises the same error again.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Callable, Sequence
from json.encoder import (  # type: ignore[attr-defined]
    c_make_encoder,
    encode_basestring_ascii,
)
from typing import Any, NamedTuple, NoReturn

from ._errors import DapperTrioError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER",
    "MAGIC",
    "PROTOCOL_VERSION",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "encode_frame",
]

MAGIC = b"DT"
PROTOCOL_VERSION = 1
HEADER = struct.Struct(">2sBBI")
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
"""Largest payload (in bytes, header excluded) a frame may carry by default."""

_HEADER_SIZE = HEADER.size
# Payloads up to this size are copied out of the buffer before decoding (the
# fastest way for small ones); larger ones are decoded in place.
_COPY_LIMIT = 64 * 1024
_MAGIC_0 = MAGIC[0]
_MAGIC_1 = MAGIC[1]


class FrameKind(enum.IntEnum):
    """What a frame carries.  Values 5-255 are reserved; receiving one is an error."""

    HANDSHAKE = 1
    REQUEST = 2
    RESPONSE = 3
    EVENT = 4


# The kind byte is looked up here rather than through FrameKind(value), which
# raises ValueError on unknown values and costs more per frame.
_KINDS: dict[int, FrameKind] = {kind.value: kind for kind in FrameKind}


class Frame(NamedTuple):
    """One decoded frame: its kind and its payload (a JSON value, usually a dict).

    A NamedTuple rather than a frozen dataclass: the decoder builds one per
    frame, and a frozen dataclass's ``__init__`` (two ``object.__setattr__``
    calls) costs about three times as much as building a tuple.
    """

    kind: FrameKind
    payload: Any


class ProtocolError(DapperTrioError):
    """A frame could not be encoded or decoded."""


class LocalProtocolError(ProtocolError):
    """We tried to send something illegal: too large, or not JSON-serialisable."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid frame.

    ``peer`` names the sender, ``reason`` says what was wrong; ``str(error)``
    combines both, e.g. ``peer 'debuggee pid 1234' sent an invalid frame: ...``.
    """

    def __init__(self, reason: str, *, peer: str) -> None:
        super().__init__(f"peer {peer!r} sent an invalid frame: {reason}")
        self.reason = reason
        self.peer = peer

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_remote_protocol_error, (self.reason, self.peer))


def _rebuild_remote_protocol_error(reason: str, peer: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, peer=peer)


# Compact separators; ASCII output so that a str holding lone surrogates (a
# file name decoded with surrogateescape, say) still round-trips as \\udcXX
# escapes instead of failing to encode; NaN and infinities are not JSON.
_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _encode_one_chunk(value: Any, _indent: int) -> Sequence[str]:  # pragma: no cover
    # Used only where json has no C accelerator.
    return (_ENCODER.encode(value),)


# The C encoder behind _ENCODER, built once instead of on every encode() call,
# and called directly: ``"".join(_encode_chunks(value, 0))`` is the JSON text.
# It runs without circular-reference markers: a circular value then fails
# with RecursionError, which is reported like any unserialisable value.
_encode_chunks: Callable[[Any, int], Sequence[str]] = (
    c_make_encoder(
        None,
        _ENCODER.default,
        encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
    if c_make_encoder is not None and encode_basestring_ascii is not None
    else _encode_one_chunk
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_scan_once = _DECODER.scan_once  # type: ignore[attr-defined]  # set in __init__


def encode_frame(
    kind: FrameKind, payload: Any, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes:
    """Return the bytes of one frame carrying *payload* (any JSON value).

    Raises ``LocalProtocolError`` if *kind* is not a ``FrameKind``, if *payload*
    is not JSON-serialisable (or holds NaN/infinity), or if the encoded payload
    is longer than *max_frame_size* bytes.  Dict keys that are not strings are
    converted as ``json.dumps`` does (``1`` becomes ``"1"``).
    """
    if _KINDS.get(kind) is None:
        raise LocalProtocolError(f"cannot send a frame of unknown kind {kind!r}")
    try:
        data = "".join(_encode_chunks(payload, 0)).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(
            f"{FrameKind(kind).name} payload is not JSON-serialisable: {exc}"
        ) from exc
    size = len(data)
    if size > max_frame_size:
        raise LocalProtocolError(
            f"{FrameKind(kind).name} payload is {size} bytes, over the limit of"
            f" {max_frame_size} bytes"
        )
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, size) + data


class FrameDecoder:
    """Turns a byte stream from one peer into frames.

    Feed it bytes as they arrive with ``feed()``, then call ``next_frame()``
    until it returns None (it needs more bytes).  A bad header is reported as
    soon as the bytes that show it are fed: a frame whose declared length is
    over ``max_frame_size`` is refused from its header, before its payload is
    buffered, so a hostile length never makes the decoder hold more than the
    bytes already fed.

    ``peer`` (a label used in error messages) and ``max_frame_size`` are plain
    attributes and may be changed between frames -- for instance once a
    connection has authenticated.

    Buffering is linear: bytes are appended to one ``bytearray`` and consumed
    from its front (CPython makes that O(1)), and a payload is decoded straight
    out of the buffer, so a large frame fed in many small pieces costs one
    append per piece and one UTF-8 decode at the end.
    """

    __slots__ = ("_buffer", "_error", "max_frame_size", "peer")

    def __init__(
        self, *, peer: str, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self.peer = peer
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._error: RemoteProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """How many bytes have been fed but not yet returned as frames."""
        return len(self._buffer)

    @property
    def bytes_needed(self) -> int:
        """How many more bytes the frame at the front needs (at least 1).

        A hint for how much to read next; only meaningful while ``next_frame()``
        returns None.
        """
        buffer = self._buffer
        if len(buffer) < _HEADER_SIZE:
            return _HEADER_SIZE - len(buffer)
        length: int = HEADER.unpack_from(buffer)[3]
        missing = _HEADER_SIZE + length - len(buffer)
        return missing if missing > 0 else 1

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer.

        Raises the decoder's earlier ``RemoteProtocolError`` if it is poisoned.
        """
        if self._error is not None:
            self._raise_again()
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None if more bytes are needed.

        Raises ``RemoteProtocolError`` (naming the peer) if the bytes are not a
        valid frame; the decoder is then poisoned and raises it on every call.
        """
        if self._error is not None:
            self._raise_again()
        buffer = self._buffer
        have = len(buffer)
        if have < _HEADER_SIZE:
            if have:
                self._check_partial_header()
            return None
        magic, version, kind, length = HEADER.unpack_from(buffer)
        if (
            magic != MAGIC
            or version != PROTOCOL_VERSION
            or length > self.max_frame_size
        ):
            self._check_header(magic, version, kind, length)
        frame_kind = _KINDS.get(kind)
        if frame_kind is None:
            self._fail(
                f"unknown frame kind {kind} (known kinds:"
                f" {', '.join(f'{k.value}={k.name}' for k in FrameKind)})"
            )
        end = _HEADER_SIZE + length
        if have < end:
            return None
        try:
            if length <= _COPY_LIMIT:
                text = buffer[_HEADER_SIZE:end].decode()
            else:  # decode in place rather than copy a large payload first
                with memoryview(buffer) as view, view[_HEADER_SIZE:end] as body:
                    text = str(body, "utf-8")
        except UnicodeDecodeError as exc:
            self._fail(f"{frame_kind.name} payload is not valid UTF-8: {exc}")
        del buffer[:end]
        # The scanner alone is about twice as fast as JSONDecoder.decode(),
        # which it is the core of.  Anything it does not take whole (leading
        # or trailing whitespace, garbage) goes through decode(), which allows
        # whitespace and gives the precise error message for the rest.
        try:
            payload, parsed = _scan_once(text, 0)
        except StopIteration:  # no JSON value at the very start
            parsed = -1
        except (ValueError, RecursionError) as exc:
            self._bad_json(frame_kind, exc)
        if parsed != len(text):
            try:
                payload = _DECODER.decode(text)
            except (ValueError, RecursionError) as exc:
                self._bad_json(frame_kind, exc)
        # tuple.__new__ rather than Frame(): skips the Python-level __new__
        # that NamedTuple generates, a function call per frame.
        return tuple.__new__(Frame, (frame_kind, payload))

    def _bad_json(self, kind: FrameKind, exc: Exception) -> NoReturn:
        # ValueError covers JSONDecodeError, NaN/Infinity and ints over the
        # interpreter's digit limit; RecursionError, absurd nesting.
        self._fail(f"{kind.name} payload is not valid JSON: {exc}")

    def _check_partial_header(self) -> None:
        # Report garbage from its first bytes, so that a peer that sends
        # "hello\n" and waits is refused at once, not at a timeout.
        buffer = self._buffer
        if buffer[0] != _MAGIC_0 or (len(buffer) > 1 and buffer[1] != _MAGIC_1):
            self._fail(self._bad_magic(bytes(buffer[:2])))
        if len(buffer) > 2 and buffer[2] != PROTOCOL_VERSION:
            self._fail(self._bad_version(buffer[2]))
        if len(buffer) > 3 and buffer[3] not in _KINDS:
            self._fail(f"unknown frame kind {buffer[3]}")

    def _check_header(self, magic: bytes, version: int, kind: int, length: int) -> None:
        if magic != MAGIC:
            self._fail(self._bad_magic(magic))
        if version != PROTOCOL_VERSION:
            self._fail(self._bad_version(version))
        if length > self.max_frame_size:
            name = _KINDS[kind].name if kind in _KINDS else f"kind-{kind}"
            self._fail(
                f"{name} frame declares a payload of {length} bytes, over the"
                f" limit of {self.max_frame_size} bytes"
            )

    def _bad_magic(self, magic: bytes) -> str:
        seen = bytes(self._buffer[:16])
        return (
            f"bad magic {magic!r} (expected {MAGIC!r}); the stream starts with"
            f" {seen!r}: this is not a dapper-trio peer"
        )

    def _bad_version(self, version: int) -> str:
        return (
            f"unsupported protocol version {version} (this side speaks version"
            f" {PROTOCOL_VERSION})"
        )

    def _fail(self, reason: str) -> NoReturn:
        self._error = RemoteProtocolError(reason, peer=self.peer)
        self._buffer = bytearray()
        raise self._error

    def _raise_again(self) -> NoReturn:
        assert self._error is not None
        error = self._error
        raise RemoteProtocolError(error.reason, peer=error.peer) from error
