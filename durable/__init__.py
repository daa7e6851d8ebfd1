"""durable: durable functions for Python, on trio, checkpointed in LMDB."""

from typing import TYPE_CHECKING, Any

from . import _legacy  # noqa: F401  (old module paths that stored pickles name)
from ._graph.catch import CaughtError as CaughtError
from ._graph.context import Context as Context
from ._graph.context import StepInfo as StepInfo
from ._graph.context import current_step as current_step
from ._frontends.decorators import StepFunction as StepFunction
from ._frontends.decorators import WorkflowFunction as WorkflowFunction
from ._frontends.decorators import step as step
from ._engine.engine import Engine as Engine
from .client import AsyncClient as AsyncClient
from .client import EventFeed as EventFeed
from .client import Client as Client
from ._engine.events import Event as Event
from ._engine.events import EventBus as EventBus
from ._engine.events import Subscription as Subscription
from ._frontends.parallel import parallel as parallel
from ._graph.states import Catch as Catch
from ._graph.states import ChildState as ChildState
from ._graph.states import ChoiceState as ChoiceState
from ._graph.states import Graph as Graph
from ._graph.states import MapState as MapState
from ._graph.states import ParallelState as ParallelState
from ._graph.states import PassState as PassState
from ._graph.states import SignalState as SignalState
from ._graph.states import TaskState as TaskState
from ._graph.states import WaitState as WaitState
from ._graph.states import When as When
from ._frontends.map import map as map  # not in __all__: a star import must not hide the builtin map
from ._frontends.map import map_ as map_
from ._model.records import InstanceStatus as InstanceStatus
from ._model.records import StepResult as StepResult
from ._model.records import StepStatus as StepStatus
from ._model.records import WorkflowInstance as WorkflowInstance
from ._model.queues import Queue as Queue
from ._model.retry import Retry as Retry
from ._frontends.values import deprecate_patch as deprecate_patch
from ._frontends.values import now as now  # not in __all__ (nor random, uuid4): a star import must not hide
from ._frontends.values import patched as patched  # the stdlib's random module or a user's now()
from ._frontends.values import random as random
from ._frontends.values import uuid4 as uuid4
from ._frontends.waits import sleep as sleep
from ._frontends.waits import sleep_until as sleep_until
from ._frontends.waits import wait_for_signal as wait_for_signal
from ._version import __version__ as __version__
from ._frontends.entry import workflow as workflow
from .errors import ChildWorkflowFailed as ChildWorkflowFailed
from .errors import Deduplicated as Deduplicated
from .errors import DurableError as DurableError
from .errors import EventsDropped as EventsDropped
from .errors import GraphError as GraphError
from .errors import IdConflict as IdConflict
from .errors import InstanceNotFound as InstanceNotFound
from .errors import JobNotFound as JobNotFound
from .errors import MapFailed as MapFailed
from .errors import NoChoiceMatched as NoChoiceMatched
from .errors import NonDeterminismError as NonDeterminismError
from .errors import ParallelFailed as ParallelFailed
from .errors import QueueNotFound as QueueNotFound
from .errors import SerializationError as SerializationError
from .errors import SignalTimeout as SignalTimeout
from .errors import StepFailed as StepFailed
from .errors import StepTimeout as StepTimeout
from .errors import StoreError as StoreError
from .errors import WorkflowCancelled as WorkflowCancelled
from .errors import WorkflowNotFound as WorkflowNotFound
from .errors import WorkflowTimeout as WorkflowTimeout
from .stores import LMDBStore as LMDBStore
from .stores import MemoryStore as MemoryStore
from .stores import Store as Store

if TYPE_CHECKING:
    from .stores import PostgresStore as PostgresStore

__all__ = [
    "AsyncClient",
    "Catch",
    "CaughtError",
    "ChildState",
    "ChildWorkflowFailed",
    "ChoiceState",
    "Client",
    "Context",
    "Deduplicated",
    "DurableError",
    "Engine",
    "Event",
    "EventBus",
    "EventFeed",
    "EventsDropped",
    "Graph",
    "GraphError",
    "IdConflict",
    "InstanceNotFound",
    "InstanceStatus",
    "JobNotFound",
    "LMDBStore",
    "MapFailed",
    "MapState",
    "MemoryStore",
    "NoChoiceMatched",
    "NonDeterminismError",
    "ParallelFailed",
    "ParallelState",
    "PassState",
    "PostgresStore",
    "Queue",
    "QueueNotFound",
    "Retry",
    "SerializationError",
    "SignalState",
    "SignalTimeout",
    "StepFailed",
    "StepFunction",
    "StepInfo",
    "StepResult",
    "StepStatus",
    "StepTimeout",
    "Store",
    "StoreError",
    "Subscription",
    "TaskState",
    "WaitState",
    "When",
    "WorkflowCancelled",
    "WorkflowFunction",
    "WorkflowInstance",
    "WorkflowNotFound",
    "WorkflowTimeout",
    "__version__",
    "current_step",
    "deprecate_patch",
    "map_",
    "parallel",
    "patched",
    "sleep",
    "sleep_until",
    "step",
    "wait_for_signal",
    "workflow",
]


def __getattr__(name: str) -> Any:
    """``PostgresStore``, imported on first use (it needs the ``postgres`` extra, psycopg 3)."""
    if name == "PostgresStore":
        from . import stores

        return stores.PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
