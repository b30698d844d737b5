"""Exception bases shared by every layer.

Errors say who is to blame (the habit is h11's): a ``TransportError`` means the
path to a peer broke (connection lost, peer process died, a deadline passed);
an error a peer *reports* about a command it ran is not a transport error, and
does not put a backend into ERROR.
"""

from __future__ import annotations


class DapperTrioError(Exception):
    """Base class of every exception dapper-trio raises on purpose."""


class TransportError(DapperTrioError):
    """The channel to a peer or backend failed: lost, dead, or timed out.

    A ``LifecycleManager`` moves to ERROR when one of these escapes an
    operation; an error reported by the peer's command does not.
    """
