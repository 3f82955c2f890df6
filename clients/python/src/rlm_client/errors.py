"""Exceptions raised by the RLM clients.

Two families, both under :class:`RLMError`:

* **RPC errors** — the server (or the channel) refused the call. They carry the
  gRPC status ``code`` and the server's ``message`` unchanged::

      RLMError
      ├── InvalidRequest      INVALID_ARGUMENT, OUT_OF_RANGE (bad parameters; the message names the field)
      ├── NotFound            NOT_FOUND (unknown context id or trajectory id)
      ├── PermissionDenied    PERMISSION_DENIED (network access, a host path the server does not allow)
      ├── Unauthenticated     UNAUTHENTICATED (missing or rejected api_key)
      ├── ResourceExhausted   RESOURCE_EXHAUSTED (server at capacity, upload over the size limit)
      ├── FailedPrecondition  FAILED_PRECONDITION
      ├── Unavailable         UNAVAILABLE (server unreachable, sandbox agent down before anything ran)
      ├── DeadlineExceeded    DEADLINE_EXCEEDED (the client's ``timeout`` expired; also a TimeoutError)
      ├── RequestCancelled    CANCELLED (the call was cancelled on the client side)
      ├── Aborted             ABORTED (a conflicting change on the server; the call may be retried)
      └── ServerError         INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS and any other code

* **Incomplete completions** — NOT RPC errors. A completion that hit a limit, was
  cancelled, or whose model/sandbox failed still returns OK with a partial
  result (``Completion.partial``). These exceptions are raised only when the
  caller opts in with ``raise_on_partial=True`` (or calls
  ``Completion.raise_for_partial()``), and carry that partial ``completion``::

      RLMError
      └── IncompleteCompletion   any termination reason other than FINAL
          ├── BudgetExceeded       MAX_ITERATIONS, TOKEN_BUDGET, COST_BUDGET, TIMEOUT, MAX_SUBCALLS
          ├── CompletionCancelled  CANCELLED (CancelCompletion, or the RPC was cancelled)
          └── CompletionFailed     MODEL_ERROR, SANDBOX_ERROR, ERROR (and reasons unknown to this client)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import grpc

if TYPE_CHECKING:  # pragma: no cover
    from .types import Completion

__all__ = [
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
    "from_rpc_error",
]


class RLMError(Exception):
    """Base of every exception of this package.

    ``message`` is the server's status message (or the client's own text),
    ``code`` the gRPC status code (``None`` for errors that are not RPC errors).
    """

    def __init__(self, message: str, *, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        return f"{self.message} ({self.code.name})"


class InvalidRequest(RLMError):
    """The request was rejected as invalid (INVALID_ARGUMENT / OUT_OF_RANGE)."""


class NotFound(RLMError):
    """A context id or trajectory id the server does not hold (NOT_FOUND)."""


class PermissionDenied(RLMError):
    """Something the server does not allow, e.g. network access (PERMISSION_DENIED)."""


class Unauthenticated(RLMError):
    """Missing or rejected credentials (UNAUTHENTICATED)."""


class ResourceExhausted(RLMError):
    """Server at capacity, or an upload over its size limit (RESOURCE_EXHAUSTED)."""


class FailedPrecondition(RLMError):
    """The server is not in a state to run the request (FAILED_PRECONDITION)."""


class Unavailable(RLMError):
    """The server (or its sandbox agent) cannot be reached (UNAVAILABLE)."""


class DeadlineExceeded(RLMError, TimeoutError):
    """The client-side ``timeout`` (gRPC deadline) expired (DEADLINE_EXCEEDED)."""


class RequestCancelled(RLMError):
    """The RPC was cancelled on the client side (CANCELLED)."""


class Aborted(RLMError):
    """A conflicting change on the server, e.g. a queued completion that kept
    changing state while it was cancelled; the call may be retried (ABORTED)."""


class ServerError(RLMError):
    """Any other RPC failure (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...)."""


class IncompleteCompletion(RLMError):
    """A completion ended without FINAL; raised only with ``raise_on_partial=True``.

    ``completion`` is the full (partial) result: its ``answer`` is the best
    partial answer the server assembled.
    """

    def __init__(self, completion: "Completion") -> None:
        reason = completion.termination_reason.name
        text = f"completion {completion.completion_id} ended with {reason}"
        if completion.detail:
            text += f": {completion.detail}"
        super().__init__(text)
        self.completion = completion

    @property
    def termination_reason(self):
        return self.completion.termination_reason


class BudgetExceeded(IncompleteCompletion):
    """A limit ended the completion: iterations, tokens, cost, timeout or sub-calls."""


class CompletionCancelled(IncompleteCompletion):
    """The completion was cancelled (CancelCompletion or RPC cancellation)."""


class CompletionFailed(IncompleteCompletion):
    """The root model or sandbox failed persistently, or another server-side error."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: RequestCancelled,
    grpc.StatusCode.ABORTED: Aborted,
}


def from_rpc_error(error: grpc.RpcError) -> RLMError:
    """The :class:`RLMError` matching a ``grpc.RpcError`` (sync or ``grpc.aio``)."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    message = details if details else f"RPC failed with {code.name}"
    cls = _BY_CODE.get(code, ServerError)
    return cls(message, code=code)
