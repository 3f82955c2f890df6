"""Python client of the RLM Runtime (``rlm.v1.RLMService``).

::

    from rlm_client import RLMClient

    with RLMClient("127.0.0.1:50051") as rlm:
        print(rlm.complete("What is the total?", context=numbers_text).answer)

* :class:`RLMClient` / :class:`AsyncRLMClient` — the thin layer;
* :mod:`rlm_client.errors` — the exception hierarchy (also re-exported here);
* :mod:`rlm_client.types` — typed results and events;
* ``rlm_client.pb.rlm.v1`` / ``rlm_client.pb.rlm.sandbox.v1`` — the generated
  messages and stubs (``*_pb2``, ``*_pb2_grpc``, with ``.pyi`` type stubs).
"""

from ._core import CHUNK_SIZE, MAX_INLINE_BYTES
from ._version import __version__
from .aio import AsyncRLMClient
from .client import RLMClient
from .errors import (
    Aborted,
    BudgetExceeded,
    CompletionCancelled,
    CompletionFailed,
    DeadlineExceeded,
    FailedPrecondition,
    IncompleteCompletion,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RequestCancelled,
    ResourceExhausted,
    RLMError,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from .types import (
    CodeExecuted,
    Completion,
    CompletionStatus,
    Context,
    Event,
    IterationStarted,
    ModelCallFinished,
    ResultEvent,
    SubcallFinished,
    SubcallOutcome,
    SubcallStarted,
    Submission,
    TerminationReason,
    Trajectory,
    TrajectoryPage,
    TrajectorySummary,
    UnknownEvent,
    UploadedContext,
    Usage,
)

__all__ = [
    "__version__",
    "RLMClient",
    "AsyncRLMClient",
    "CHUNK_SIZE",
    "MAX_INLINE_BYTES",
    # errors
    "RLMError",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "Unauthenticated",
    "ResourceExhausted",
    "FailedPrecondition",
    "Unavailable",
    "DeadlineExceeded",
    "RequestCancelled",
    "Aborted",
    "ServerError",
    "IncompleteCompletion",
    "BudgetExceeded",
    "CompletionCancelled",
    "CompletionFailed",
    # types
    "Completion",
    "Submission",
    "CompletionStatus",
    "Context",
    "UploadedContext",
    "TerminationReason",
    "Usage",
    "Event",
    "IterationStarted",
    "ModelCallFinished",
    "CodeExecuted",
    "SubcallStarted",
    "SubcallOutcome",
    "SubcallFinished",
    "ResultEvent",
    "UnknownEvent",
    "Trajectory",
    "TrajectoryPage",
    "TrajectorySummary",
]
