"""The Debug Adapter Protocol base protocol: bytes in, messages out, and back.

Theory of operation
===================

The problem.  An IDE talks to a debug adapter over a byte stream (stdio or a
socket) carrying DAP messages.  Each message is a header section -- lines of
``Name: value`` ending with an empty line -- and a body of exactly
``Content-Length`` bytes of UTF-8 JSON::

    Content-Length: 72\\r\\n
    \\r\\n
    {"seq":153,"type":"request","command":"next","arguments":{"threadId":3}}

The adapter must survive an IDE (or a bug in one) that sends a message it
cannot read, and must never let a hostile or garbled header make it buffer
without bound.

Things that don't work.
* Reading lines: the body is not line-delimited (a client may pretty-print
  it), only its length says where it ends.
* Counting characters for Content-Length: it counts bytes of UTF-8, so "é"
  is 2 and "🐍" is 4.
* Treating a bad body as fatal: one unparseable request (a client bug, a
  string its encoder mangled) would end the whole debug session, although
  the length is known and the next message starts right after it.
* Resynchronising after a bad *header* by scanning for the next
  ``Content-Length:``: that text can occur inside a body (an ``evaluate``
  result, a log line), so the scan can land in the middle of one and decode
  the rest of it as messages -- acting on requests nobody sent is worse than
  stopping.
* Checking the declared length only once the body is in: a garbled length
  of 10**12 would make us buffer until memory runs out.
* ``json.dumps(ensure_ascii=False)`` then UTF-8 alone: a str holding lone
  surrogates (a file name decoded with surrogateescape) cannot be encoded.
  ``ensure_ascii=True`` alone always works but sends non-ASCII text as
  ``\\uXXXX`` escapes, two to three times larger.

The design.  ``encode_message`` writes compact JSON as raw UTF-8 and falls
back to ``\\uXXXX`` escapes only for a message that holds lone surrogates;
NaN and infinities are refused (they are not JSON).  ``DapDecoder`` is
sans-I/O: feed it bytes, take messages out.  What it accepts:
* lines may end with ``\\r\\n`` (the spec, and all we send) or a bare
  ``\\n`` (hand-written clients and test scripts);
* header names are case-insensitive; headers other than Content-Length
  (Content-Type, say) are ignored; empty lines *before* a header section are
  skipped, as HTTP servers do;
* the header section is at most ``MAX_HEADER_SIZE`` bytes and the declared
  body at most ``max_body_size``, checked as soon as the Content-Length line
  is in, before any of the body is buffered.
Errors come in two kinds, by whether the stream is still in step:
* a bad *header* (no or garbled Content-Length, a line that is not
  ``Name: value``, over the limits) raises ``DapProtocolError``.  The end
  of the message is unknown, so the decoder is poisoned: every later call
  raises the error again, and the connection should be closed.  A line is
  judged from its first bytes, so a peer sending bare JSON is refused at
  its ``{`` rather than after a timeout;
* a bad *body* (not UTF-8, not JSON, not an object, no string ``"type"``)
  is consumed and returned as a ``MalformedMessage`` item naming what was
  wrong and, when it could be read, the message's ``seq`` and ``command``,
  so the server can send an error response and go on serving.
``MessageFactory`` builds outgoing messages and numbers them.
``read_messages`` and ``DapWriter`` are the thin trio adapters; the writer
holds a lock across each write so concurrent handlers never interleave bytes.

Known holes.  Only ``"type"`` is checked: the rest of a message's shape
(``seq`` an int, ``command`` a string...) is the dispatcher's business.  A
Content-Type naming a charset other than UTF-8 is ignored, not refused.  The
spec wants ``seq`` to go up by one per message *sent*, but the factory
numbers messages when they are built: build and send with no checkpoint in
between (``await writer.send(factory.event(...))``) and trio's FIFO lock
keeps the numbers in order on the wire, but a send cancelled before it
writes leaves a gap.  A body is held whole in memory (up to
``max_body_size``) before it is decoded.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from ._errors import DapperTrioError

if TYPE_CHECKING:
    import trio

MAX_HEADER_SIZE = 8 * 1024
"""Largest header section, in bytes, its closing empty line included."""
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
"""Largest body, in bytes, a ``DapDecoder`` accepts by default."""

DapMessage: TypeAlias = dict[str, Any]
"""A decoded message: a JSON object with a string ``"type"``."""

# Bodies up to this size are copied out of the buffer before decoding (the
# fastest way for small ones); larger ones are decoded in place.
_COPY_LIMIT = 64 * 1024
_RECEIVE_SIZE = 64 * 1024
# RFC 9110 token characters: what a header name is made of.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The start of a line that has no colon yet: token characters, perhaps
# followed by the CR of a CRLF whose LF has not arrived.
_PARTIAL_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*\r?")
_DIGITS = re.compile(rb"[0-9]+")
# More digits than this is over any limit; int() of thousands of digits
# would be slow, or refused by the interpreter's digit limit.
_MAX_LENGTH_DIGITS = 18
# How much of the offending bytes an error message quotes.
_QUOTE_LIMIT = 60


class DapProtocolError(DapperTrioError):
    """The peer sent bytes that are not a DAP message stream.

    Raised for a header that cannot be read; the stream cannot be
    resynchronised after one, so the connection should be closed.
    """


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """A message whose body could not be used; the stream is still in step.

    ``error`` says what was wrong, in words fit for an error response's
    text.  ``seq`` and ``command`` are the message's own, when its body was a
    JSON object holding them (an int and a string), else None.
    """

    error: str
    seq: int | None = None
    command: str | None = None


# -- encoding ------------------------------------------------------------------

# Compact separators; NaN and infinities are not JSON.  The first writes
# non-ASCII text as it is, the second as \uXXXX escapes (for lone surrogates).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":")
)


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Return the bytes of one DAP message: its header, then compact JSON.

    Non-ASCII text is sent as UTF-8, and Content-Length counts its bytes.
    Raises ``ValueError`` if *message* holds NaN or an infinity (or refers to
    itself), ``TypeError`` if it holds a value JSON cannot carry or is not a
    mapping.
    """
    if not isinstance(message, Mapping):
        raise TypeError(f"a DAP message is a mapping, not {type(message).__name__}")
    if not isinstance(message, dict):
        message = dict(message)  # json encodes only dicts as objects
    try:
        text = _ENCODER.encode(message)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"cannot encode DAP message: {exc}") from exc
    try:
        body = text.encode()
    except UnicodeEncodeError:  # lone surrogates: escape them (and all else)
        body = _ASCII_ENCODER.encode(message).encode()
    return b"Content-Length: %d\r\n\r\n%b" % (len(body), body)


# -- decoding ------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)

_JSON_TYPE_NAMES: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _quote(data: bytes | bytearray) -> str:
    if len(data) > _QUOTE_LIMIT:
        return f"{bytes(data[:_QUOTE_LIMIT])!r}..."
    return repr(bytes(data))


class DapDecoder:
    """Turns the byte stream from a DAP peer into messages.

    Feed it bytes as they arrive with ``feed()``, then call
    ``next_message()`` until it returns None (it needs more bytes), or
    iterate over ``messages()``.  Each item is a ``DapMessage`` (a dict with a
    string ``"type"``) or a ``MalformedMessage`` for a body that could not be
    used.  A header that cannot be read raises ``DapProtocolError`` and
    poisons the decoder: every later call raises it again.  See the module
    docstring for what is accepted.

    ``max_body_size`` is a plain attribute and may be changed between
    messages.
    """

    __slots__ = ("_buffer", "_error", "_length", "max_body_size")

    def __init__(self, *, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> None:
        self.max_body_size = max_body_size
        self._buffer = bytearray()
        # The body length of the message at the front, once its header has
        # been read (and removed from the buffer); None while reading one.
        self._length: int | None = None
        self._error: DapProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """How many bytes have been fed but not yet returned as messages."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer.

        Raises the decoder's earlier ``DapProtocolError`` if it is poisoned.
        """
        if self._error is not None:
            self._raise_again()
        self._buffer += data

    def feed_eof(self) -> None:
        """Say the stream has ended; raise ``DapProtocolError`` if mid-message.

        Call it after ``next_message()`` has returned None.  Empty lines
        after the last message are not a message.
        """
        if self._error is not None:
            self._raise_again()
        if self._length is not None:
            self._fail(
                f"the stream ended in the body of a message: {len(self._buffer)}"
                f" of its {self._length} bytes arrived"
            )
        if self._buffer.strip(b"\r\n"):
            self._fail(
                "the stream ended in the header of a message, after"
                f" {_quote(self._buffer)}"
            )

    def next_message(self) -> DapMessage | MalformedMessage | None:
        """Return the next complete message, or None if more bytes are needed.

        Raises ``DapProtocolError`` if a header cannot be read; the decoder
        is then poisoned and raises it on every call.
        """
        if self._error is not None:
            self._raise_again()
        length = self._length
        if length is None:
            length = self._read_header()
            if length is None:
                return None
            self._length = length
        if len(self._buffer) < length:
            return None
        self._length = None
        return self._take_body(length)

    def messages(self) -> Iterator[DapMessage | MalformedMessage]:
        """Yield every complete message buffered, as ``next_message()`` would."""
        while (message := self.next_message()) is not None:
            yield message

    # The header ------------------------------------------------------------

    def _read_header(self) -> int | None:
        """Remove a complete header section and return its body length.

        Returns None, removing nothing but leading empty lines, if the
        header section is not complete yet.  A header is re-read from the
        start on each call until it is complete; it is at most 8 KiB.
        """
        buffer = self._buffer
        skip = 0
        while True:
            if buffer.startswith(b"\n", skip):
                skip += 1
            elif buffer.startswith(b"\r\n", skip):
                skip += 2
            else:
                break
        if skip:
            del buffer[:skip]
        length: int | None = None
        start = 0
        while True:
            end = buffer.find(b"\n", start, MAX_HEADER_SIZE)
            if end < 0:
                if len(buffer) >= MAX_HEADER_SIZE:
                    self._fail(
                        f"the header section is over {MAX_HEADER_SIZE} bytes"
                        f" without ending: it starts {_quote(buffer)}"
                    )
                self._check_partial_line(buffer[start:])
                return None
            line = bytes(buffer[start:end])
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                break
            name, colon, value = line.partition(b":")
            if not colon or _TOKEN.fullmatch(name) is None:
                self._fail(self._bad_line(line))
            if name.lower() == b"content-length":
                declared = self._parse_length(value.strip(b" \t"))
                if length is not None and declared != length:
                    self._fail(
                        f"two Content-Length headers disagree: {length} and {declared}"
                    )
                length = declared
        if length is None:
            self._fail(
                f"the header section has no Content-Length: {_quote(buffer[:start])}"
            )
        del buffer[:start]
        return length

    def _parse_length(self, value: bytes) -> int:
        if _DIGITS.fullmatch(value) is None:
            self._fail(f"Content-Length {_quote(value)} is not a non-negative integer")
        if len(value) > _MAX_LENGTH_DIGITS or int(value) > self.max_body_size:
            shown = value.decode() if len(value) <= 30 else f"{value[:30].decode()}..."
            self._fail(
                f"a message declares a body of {shown} bytes, over the limit of"
                f" {self.max_body_size} bytes"
            )
        return int(value)

    def _check_partial_line(self, tail: bytearray) -> None:
        # Judge a line from its first bytes, so that a peer that sends bare
        # JSON (or "hello\n") and waits is refused at once, not at a timeout.
        name, colon, _ = tail.partition(b":")
        pattern = _TOKEN if colon else _PARTIAL_NAME
        if pattern.fullmatch(name) is None:
            self._fail(self._bad_line(tail))

    def _bad_line(self, line: bytes | bytearray) -> str:
        hint = ""
        if line[:1] in (b"{", b"["):
            hint = (
                " (a DAP message starts with a 'Content-Length: N' header; is"
                " the peer sending bare JSON?)"
            )
        return f"header line {_quote(line)} is not 'Name: value'{hint}"

    # The body --------------------------------------------------------------

    def _take_body(self, length: int) -> DapMessage | MalformedMessage:
        buffer = self._buffer
        try:
            if length <= _COPY_LIMIT:
                text = buffer[:length].decode()
            else:  # decode in place rather than copy a large body first
                with memoryview(buffer) as view, view[:length] as body:
                    text = str(body, "utf-8")
        except UnicodeDecodeError as exc:
            return MalformedMessage(f"body is not valid UTF-8: {exc}")
        finally:
            del buffer[:length]
        try:
            value = _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError, NaN/Infinity and ints over
            # the interpreter's digit limit; RecursionError, absurd nesting.
            return MalformedMessage(f"body is not valid JSON: {exc}")
        if type(value) is not dict:
            return MalformedMessage(
                f"body is {_JSON_TYPE_NAMES.get(type(value), 'a value')},"
                " not a JSON object"
            )
        kind = value.get("type")
        if type(kind) is not str:
            seq = value.get("seq")
            command = value.get("command")
            return MalformedMessage(
                'message has no "type" field'
                if kind is None
                else f'message "type" is {json.dumps(kind)}, not a string',
                seq=seq if type(seq) is int else None,
                command=command if type(command) is str else None,
            )
        return value

    # Errors ----------------------------------------------------------------

    def _fail(self, reason: str) -> NoReturn:
        self._error = DapProtocolError(f"the DAP peer sent an invalid header: {reason}")
        self._buffer = bytearray()
        self._length = None
        raise self._error

    def _raise_again(self) -> NoReturn:
        assert self._error is not None
        raise DapProtocolError(str(self._error)) from self._error


# -- building messages ---------------------------------------------------------


def _request_key(request: Mapping[str, Any] | MalformedMessage) -> tuple[int, str]:
    """The (seq, command) a response to *request* names; 0 and "" if unknown."""
    if isinstance(request, MalformedMessage):
        seq: Any = request.seq
        command: Any = request.command
    else:
        seq = request.get("seq")
        command = request.get("command")
    return (
        seq if type(seq) is int else 0,
        command if type(command) is str else "",
    )


class MessageFactory:
    """Builds the messages one side sends, numbering them 1, 2, 3...

    Each method returns a new dict with the next ``seq``.  Use one factory
    per connection and direction, and send messages in the order they were
    built (see ``DapWriter``).  Not thread-safe.
    """

    __slots__ = ("_last_seq",)

    def __init__(self, last_seq: int = 0) -> None:
        #: Start after *last_seq*: another writer sent the messages before.
        self._last_seq = last_seq

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last message built (0 before the first)."""
        return self._last_seq

    def _next_seq(self) -> int:
        self._last_seq += 1
        return self._last_seq

    def request(
        self, command: str, arguments: Mapping[str, Any] | None = None
    ) -> DapMessage:
        """A request (a reverse request, from an adapter: ``runInTerminal``...)."""
        message: DapMessage = {
            "seq": self._next_seq(),
            "type": "request",
            "command": command,
        }
        if arguments is not None:
            message["arguments"] = dict(arguments)
        return message

    def response(
        self, request: Mapping[str, Any], body: Mapping[str, Any] | None = None
    ) -> DapMessage:
        """A successful response to *request*, with *body* if given."""
        request_seq, command = _request_key(request)
        message: DapMessage = {
            "seq": self._next_seq(),
            "type": "response",
            "request_seq": request_seq,
            "success": True,
            "command": command,
        }
        if body is not None:
            message["body"] = dict(body)
        return message

    def error_response(
        self,
        request: Mapping[str, Any] | MalformedMessage,
        message: str,
        *,
        error_id: int = 0,
        show_user: bool = False,
        short: str | None = None,
    ) -> DapMessage:
        """A failed response to *request* (or to a ``MalformedMessage``).

        *message* is the text for the user: the response's ``message`` and
        its ``body.error`` Message object's ``format``.  The client
        substitutes ``{name}`` in a format only from the Message's
        ``variables``, which we never send, so braces in *message* are shown
        as they are.  *short* replaces the response's ``message`` when the
        spec defines a value for it (``"cancelled"``, ``"notStopped"``).
        *error_id* is the Message's ``id`` (0: no particular error), and
        *show_user* asks the client to show it to the user.  A request whose
        ``seq`` or ``command`` is unknown is answered with 0 or "" in their
        place, which the spec requires to be present.
        """
        request_seq, command = _request_key(request)
        return {
            "seq": self._next_seq(),
            "type": "response",
            "request_seq": request_seq,
            "success": False,
            "command": command,
            "message": message if short is None else short,
            "body": {
                "error": {"id": error_id, "format": message, "showUser": show_user}
            },
        }

    def event(self, event: str, body: Mapping[str, Any] | None = None) -> DapMessage:
        """An event named *event*, with *body* if given."""
        message: DapMessage = {"seq": self._next_seq(), "type": "event", "event": event}
        if body is not None:
            message["body"] = dict(body)
        return message


# -- trio adapters -------------------------------------------------------------


async def read_messages(
    stream: trio.abc.ReceiveStream,
    decoder: DapDecoder | None = None,
    *,
    receive_size: int = _RECEIVE_SIZE,
) -> AsyncGenerator[DapMessage | MalformedMessage, None]:
    """Yield the messages read from *stream*, until it ends.

    Items are as ``DapDecoder.next_message()`` returns them.  To stop early,
    close the generator (``async with contextlib.aclosing(...)``).  Ends when the
    stream ends between messages; raises ``DapProtocolError`` if it ends in
    the middle of one, or if a header cannot be read.  Errors of the stream
    itself (``trio.BrokenResourceError``...) propagate.  Pass *decoder* to
    set its limits, or to go on reading where an earlier call stopped.

    Each step is a checkpoint, also when the message was already buffered.
    Cancellation: the step raises ``Cancelled`` and the generator is
    finished; no message or byte is lost -- whatever was received and not
    yet yielded stays in *decoder*.
    """
    import trio

    if decoder is None:
        decoder = DapDecoder()
    checkpointed = False
    while True:
        if not checkpointed:
            await trio.lowlevel.checkpoint()
        message = decoder.next_message()
        if message is not None:
            # Nothing may wait between taking the message and yielding it,
            # or a cancellation there would lose it.
            checkpointed = False
            yield message
            continue
        data = await stream.receive_some(receive_size)
        checkpointed = True
        if not data:
            decoder.feed_eof()
            return
        decoder.feed(data)


class DapWriter:
    """Sends messages on a stream, one whole message at a time.

    Concurrent ``send()`` calls take turns (a ``trio.Lock``, which is FIFO),
    so their bytes never interleave, and messages go out in the order their
    senders called ``send()``.  The writer does not own the stream: closing
    it is the caller's business.
    """

    __slots__ = ("_broken", "_lock", "_stream")

    def __init__(self, stream: trio.abc.SendStream) -> None:
        import trio

        self._stream = stream
        self._lock = trio.Lock()
        self._broken = False

    async def send(self, message: Mapping[str, Any]) -> None:
        """Encode *message* and write it to the stream whole.

        Raises ``ValueError``/``TypeError`` as ``encode_message`` does,
        before anything is written, and ``trio.BrokenResourceError`` if an
        earlier send failed part-way.  Errors of the stream propagate and
        break the writer.

        Cancellation: if cancelled while waiting for its turn, nothing is
        written and the writer stays usable.  If cancelled while writing,
        part of the message may be on the wire, so the writer is broken and
        every later send raises ``trio.BrokenResourceError``: close the
        stream.
        """
        import trio

        data = encode_message(message)
        async with self._lock:
            if self._broken:
                raise trio.BrokenResourceError(
                    "an earlier DAP message was cut off part-way; this stream"
                    " cannot carry more messages"
                )
            # A cancellation that arrived while we took the lock is raised
            # here, before anything is written, not inside send_all.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                await self._stream.send_all(data)
            except BaseException:
                self._broken = True
                raise
