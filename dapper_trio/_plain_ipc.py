"""The client's end of an IPC connection on plain blocking sockets.

A debuggee's agent thread connects to its supervisor (``_debuggee``) or to
its DAP adapter (``_dap_agent``) with these: the same frames (``_wire``) and
handshake as ``_ipc``, without trio, which a debuggee imports only if the
program does (``_trio_import``).
"""

from __future__ import annotations

import hmac
import os
import socket
import traceback
from typing import Any

from ._sockets import Address
from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameKind,
    encode_frame,
)

#: An error response carries at most this much message and traceback text.
ERROR_TEXT_MAX = 64 * 1024

_RECEIVE_SIZE = 65536

#: The largest frame a listener reads before a peer has authenticated.
HANDSHAKE_MAX_FRAME_SIZE = 64 * 1024

#: The id of the one request a debuggee's agent makes: ``configure``.
CONFIGURE_ID = 1
#: That request's frame.
CONFIGURE_REQUEST = encode_frame(
    FrameKind.REQUEST, {"id": CONFIGURE_ID, "method": "configure", "params": None}
)


def truncate(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    """*text*, its middle cut out if it is longer than *limit*."""
    if len(text) <= limit:
        return text
    return text[: limit // 2] + "\n[... truncated ...]\n" + text[-limit // 2 :]


def error_body(exc: BaseException, type_name: str | None = None) -> dict[str, str]:
    """The ``error`` object of a RESPONSE that failed with *exc*."""
    return {
        "type": type_name or type(exc).__name__,
        "message": truncate(str(exc)),
        "traceback": truncate("".join(traceback.format_exception(exc))),
    }


def answer_to_configure(frame: Frame) -> Any:
    """If *frame* answers ``CONFIGURE_REQUEST``: its result, or its error as
    a RuntimeError.  Otherwise None."""
    message = frame.payload
    if (
        frame.kind is not FrameKind.RESPONSE
        or type(message) is not dict
        or message.get("id") != CONFIGURE_ID
    ):
        return None
    if "result" in message:
        return message["result"]
    error = message.get("error") or {}
    return RuntimeError(str(error.get("message", error)))


def check_hello(frame: Frame, token: bytes) -> tuple[tuple[str, int] | None, str]:
    """A listener's check of a peer's first frame, against its *token*.

    ``((name, pid), "")`` if the peer authenticates, else ``(None, why)``.
    """
    if frame.kind is not FrameKind.HANDSHAKE:
        return None, f"the first frame was a {frame.kind.name} frame, not HANDSHAKE"
    hello = frame.payload
    if type(hello) is not dict:
        return None, "the handshake payload is not a JSON object"
    if hello.get("protocol") != PROTOCOL_VERSION:
        return None, (
            f"unsupported protocol {hello.get('protocol')!r}"
            f" (this side speaks {PROTOCOL_VERSION})"
        )
    given = hello.get("token")
    if type(given) is not str or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token
    ):
        return None, "authentication failed: wrong token"
    name, pid = hello.get("name"), hello.get("pid")
    if type(name) is not str or type(pid) is not int:
        return None, "the handshake needs a string 'name' and an integer 'pid'"
    return (name, pid), ""


def welcome_frame(name: str) -> bytes:
    """A listener's answer to a peer that authenticated."""
    return encode_frame(
        FrameKind.HANDSHAKE,
        {"ok": True, "protocol": PROTOCOL_VERSION, "name": name, "pid": os.getpid()},
    )


def refusal_frame(reason: str) -> bytes:
    """A listener's answer to a peer it refuses, saying why."""
    return encode_frame(FrameKind.HANDSHAKE, {"ok": False, "error": reason})


class PlainConnection:
    """A connected, welcomed socket to an IPC listener, and its frame decoder.

    ``open`` connects and makes the handshake (bounded by *timeout*), or
    ``connect`` then ``handshake``; ``receive`` blocks for the next frame;
    ``send`` may be called from any thread holding no lock of the caller's
    that ``receive``'s thread needs.
    """

    def __init__(self, sock: socket.socket, peer: str, address: Address) -> None:
        self.sock = sock
        self.address = address
        self.decoder = FrameDecoder(peer=peer, max_frame_size=DEFAULT_MAX_FRAME_SIZE)

    @classmethod
    def open(
        cls, address: Address, *, token: str, name: str, timeout: float
    ) -> PlainConnection:
        """Connect to *address* and prove *token*; ConnectionError if refused.

        OSError if it cannot be reached.
        """
        connection = cls.connect(address, name=name, timeout=timeout)
        try:
            connection.handshake(token, name)
        except BaseException:
            connection.sock.close()
            raise
        return connection

    @classmethod
    def connect(cls, address: Address, *, name: str, timeout: float) -> PlainConnection:
        """Connect to *address* (OSError if it cannot be reached); no handshake.

        A listener's backlog takes the connection before the listener
        serves it: this returns at once if *address* listens at all.
        """
        if address.transport == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = address.path
        else:
            sock = socket.socket(
                socket.AF_INET6 if ":" in address.host else socket.AF_INET
            )
            target = (address.host, address.port)
        try:
            sock.settimeout(timeout)
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return cls(sock, f"{name}'s peer at {address}", address)

    def handshake(self, token: str, name: str) -> None:
        """Prove *token* (within the timeout given to ``connect``);
        ConnectionError if refused.  The caller closes the socket if it
        fails."""
        address = self.address
        hello = {
            "protocol": PROTOCOL_VERSION,
            "token": token,
            "name": name,
            "pid": os.getpid(),
        }
        self.send(encode_frame(FrameKind.HANDSHAKE, hello))
        reply = self.receive()
        if reply is None or reply.kind is not FrameKind.HANDSHAKE:
            raise ConnectionError(f"no handshake reply from {address}")
        payload = reply.payload
        if type(payload) is not dict or payload.get("ok") is not True:
            why = payload.get("error") if type(payload) is dict else payload
            raise ConnectionError(f"{address} refused the connection: {why}")
        self.sock.settimeout(None)

    def receive(self) -> Frame | None:
        """The next frame; None at the end of the stream.

        OSError if the connection fails, ``ProtocolError`` on bad frames.
        """
        while (frame := self.decoder.next_frame()) is None:
            data = self.sock.recv(_RECEIVE_SIZE)
            if not data:
                return None
            self.decoder.feed(data)
        return frame

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


__all__ = [
    "CONFIGURE_REQUEST",
    "HANDSHAKE_MAX_FRAME_SIZE",
    "PlainConnection",
    "answer_to_configure",
    "check_hello",
    "error_body",
    "refusal_frame",
    "truncate",
    "welcome_frame",
]
