"""dapper-trio: a debugger runtime for Trio programs.

Every public name is re-exported here from a private implementation module;
``tests/test_exports.py`` keeps this list and docs/api.md honest.
"""

from ._api import breakpoint as breakpoint
from ._api import post_mortem as post_mortem
from ._api import run as run
from ._api import set_trace as set_trace
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
from ._states import BackendLifecycleState as BackendLifecycleState
from ._states import LifecycleError as LifecycleError
from ._states import StateMachine as StateMachine
from ._states import Transition as Transition
from ._states import WorkerState as WorkerState
from ._version import __version__ as __version__
from ._wire import DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE
from ._wire import Frame as Frame
from ._wire import FrameDecoder as FrameDecoder
from ._wire import FrameKind as FrameKind
from ._wire import LocalProtocolError as LocalProtocolError
from ._wire import ProtocolError as ProtocolError
from ._wire import RemoteProtocolError as RemoteProtocolError
from ._wire import encode_frame as encode_frame

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
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
    "ProtocolError",
    "RemoteCommandError",
    "RemoteProtocolError",
    "StateMachine",
    "Transition",
    "TransitionStream",
    "TransportError",
    "UnknownMethod",
    "WatchOverflowError",
    "WorkerState",
    "__version__",
    "breakpoint",
    "connect",
    "encode_frame",
    "new_token",
    "open_listener",
    "post_mortem",
    "run",
    "set_trace",
]
