"""dapper-trio: a debugger runtime for Trio programs.

Every public name is re-exported here from a private implementation module;
``tests/test_exports.py`` keeps this list and docs/api.md honest.

Names are loaded on first use: ``dapper-trio run`` must be able to start the
debuggee before anything imports trio (see ``_spawn``), and ``import
dapper_trio`` stays cheap.  For type checkers the imports are spelled out.
"""

from __future__ import annotations

import importlib

from ._version import __version__ as __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._actors import Actor as Actor
    from ._actors import ActorNursery as ActorNursery
    from ._actors import Portal as Portal
    from ._actors import ProcessDied as ProcessDied
    from ._actors import RemoteError as RemoteError
    from ._actors import current_actor as current_actor
    from ._actors import open_actor_nursery as open_actor_nursery
    from ._api import breakpoint as breakpoint
    from ._api import post_mortem as post_mortem
    from ._api import run as run
    from ._api import set_trace as set_trace
    from ._dap_listen import listen as listen
    from ._engine import DebuggerQuit as DebuggerQuit
    from ._errors import DapperTrioError as DapperTrioError
    from ._errors import TransportError as TransportError
    from ._ipc import Address as Address
    from ._ipc import Channel as Channel
    from ._ipc import ConnectionLost as ConnectionLost
    from ._ipc import HandshakeError as HandshakeError
    from ._ipc import IPCError as IPCError
    from ._ipc import Listener as Listener
    from ._ipc import Peer as Peer
    from ._ipc import RemoteCommandError as RemoteCommandError
    from ._ipc import UnknownMethod as UnknownMethod
    from ._ipc import connect as connect
    from ._ipc import new_token as new_token
    from ._ipc import open_listener as open_listener
    from ._lifecycle import ErrorInfo as ErrorInfo
    from ._lifecycle import LifecycleManager as LifecycleManager
    from ._lifecycle import LifecycleStatistics as LifecycleStatistics
    from ._lifecycle import OperationAborted as OperationAborted
    from ._lifecycle import TransitionStream as TransitionStream
    from ._lifecycle import WatchOverflowError as WatchOverflowError
    from ._pool import PoolStatistics as PoolStatistics
    from ._pool import WorkerInfo as WorkerInfo
    from ._pool import WorkerPool as WorkerPool
    from ._pool import WorkerStartError as WorkerStartError
    from ._pool import WorkerTransition as WorkerTransition
    from ._pool import WorkerTransitionStream as WorkerTransitionStream
    from ._pool import open_worker_pool as open_worker_pool
    from ._states import BackendLifecycleState as BackendLifecycleState
    from ._states import LifecycleError as LifecycleError
    from ._states import StateMachine as StateMachine
    from ._states import Transition as Transition
    from ._states import WorkerState as WorkerState
    from ._wire import DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE
    from ._wire import Frame as Frame
    from ._wire import FrameDecoder as FrameDecoder
    from ._wire import FrameKind as FrameKind
    from ._wire import LocalProtocolError as LocalProtocolError
    from ._wire import ProtocolError as ProtocolError
    from ._wire import RemoteProtocolError as RemoteProtocolError
    from ._wire import encode_frame as encode_frame

#: public name -> the private module it lives in
_EXPORTS: dict[str, str] = {
    "Actor": "_actors",
    "ActorNursery": "_actors",
    "Portal": "_actors",
    "ProcessDied": "_actors",
    "RemoteError": "_actors",
    "current_actor": "_actors",
    "open_actor_nursery": "_actors",
    "breakpoint": "_api",
    "listen": "_dap_listen",
    "post_mortem": "_api",
    "run": "_api",
    "set_trace": "_api",
    "DebuggerQuit": "_engine",
    "DapperTrioError": "_errors",
    "TransportError": "_errors",
    "Address": "_ipc",
    "Channel": "_ipc",
    "ConnectionLost": "_ipc",
    "HandshakeError": "_ipc",
    "IPCError": "_ipc",
    "Listener": "_ipc",
    "Peer": "_ipc",
    "RemoteCommandError": "_ipc",
    "UnknownMethod": "_ipc",
    "connect": "_ipc",
    "new_token": "_ipc",
    "open_listener": "_ipc",
    "ErrorInfo": "_lifecycle",
    "LifecycleManager": "_lifecycle",
    "LifecycleStatistics": "_lifecycle",
    "OperationAborted": "_lifecycle",
    "TransitionStream": "_lifecycle",
    "WatchOverflowError": "_lifecycle",
    "PoolStatistics": "_pool",
    "WorkerInfo": "_pool",
    "WorkerPool": "_pool",
    "WorkerStartError": "_pool",
    "WorkerTransition": "_pool",
    "WorkerTransitionStream": "_pool",
    "open_worker_pool": "_pool",
    "BackendLifecycleState": "_states",
    "LifecycleError": "_states",
    "StateMachine": "_states",
    "Transition": "_states",
    "WorkerState": "_states",
    "DEFAULT_MAX_FRAME_SIZE": "_wire",
    "Frame": "_wire",
    "FrameDecoder": "_wire",
    "FrameKind": "_wire",
    "LocalProtocolError": "_wire",
    "ProtocolError": "_wire",
    "RemoteProtocolError": "_wire",
    "encode_frame": "_wire",
}

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "Actor",
    "ActorNursery",
    "Address",
    "BackendLifecycleState",
    "Channel",
    "ConnectionLost",
    "DapperTrioError",
    "DebuggerQuit",
    "ErrorInfo",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "HandshakeError",
    "IPCError",
    "LifecycleError",
    "LifecycleManager",
    "LifecycleStatistics",
    "Listener",
    "LocalProtocolError",
    "OperationAborted",
    "Peer",
    "PoolStatistics",
    "Portal",
    "ProcessDied",
    "ProtocolError",
    "RemoteCommandError",
    "RemoteError",
    "RemoteProtocolError",
    "StateMachine",
    "Transition",
    "TransitionStream",
    "TransportError",
    "UnknownMethod",
    "WatchOverflowError",
    "WorkerInfo",
    "WorkerPool",
    "WorkerStartError",
    "WorkerState",
    "WorkerTransition",
    "WorkerTransitionStream",
    "__version__",
    "breakpoint",
    "connect",
    "current_actor",
    "encode_frame",
    "listen",
    "new_token",
    "open_actor_nursery",
    "open_listener",
    "open_worker_pool",
    "post_mortem",
    "run",
    "set_trace",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dapper_trio' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dapper_trio.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
