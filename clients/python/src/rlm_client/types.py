"""Typed, immutable views of the service's messages.

Every view keeps the protobuf message it came from in ``raw`` for fields this
layer does not surface.
"""

from __future__ import annotations

import datetime as _dt
import enum
import os
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Iterator, Optional, Tuple, Union

from .pb.rlm.v1 import completion_pb2, context_pb2, events_pb2, jobs_pb2, rlm_service_pb2, trajectory_pb2

__all__ = [
    "TerminationReason",
    "Usage",
    "Completion",
    "Submission",
    "CompletionStatus",
    "Context",
    "UploadedContext",
    "Event",
    "IterationStarted",
    "ModelCallFinished",
    "CodeExecuted",
    "SubcallStarted",
    "SubcallOutcome",
    "SubcallFinished",
    "ResultEvent",
    "UnknownEvent",
    "TrajectorySummary",
    "TrajectoryPage",
    "Trajectory",
]


class TerminationReason(enum.IntEnum):
    """Why a completion ended (``rlm.v1.TerminationReason`` without its prefix).

    ``reason.name`` is the readable name (``"FINAL"``, ``"TOKEN_BUDGET"``, ...);
    the integer value is the wire value. A value this client does not know
    (a newer server) becomes a pseudo-member named ``UNKNOWN_<n>``.
    """

    UNSPECIFIED = 0
    FINAL = 1
    MAX_ITERATIONS = 2
    TOKEN_BUDGET = 3
    COST_BUDGET = 4
    TIMEOUT = 5
    MAX_SUBCALLS = 6
    CANCELLED = 7
    MODEL_ERROR = 8
    SANDBOX_ERROR = 9
    ERROR = 10

    @classmethod
    def _missing_(cls, value):
        if not isinstance(value, int):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        return member

    @property
    def is_budget(self) -> bool:
        """True for the reasons that are a limit of the request being reached."""
        return self in _BUDGET_REASONS

    def __str__(self) -> str:
        return self.name


_BUDGET_REASONS = frozenset(
    {
        TerminationReason.MAX_ITERATIONS,
        TerminationReason.TOKEN_BUDGET,
        TerminationReason.COST_BUDGET,
        TerminationReason.TIMEOUT,
        TerminationReason.MAX_SUBCALLS,
    }
)


def _enum_name(enum_type, value: int, prefix: str) -> str:
    """Short name of a proto enum value (`MODEL_CALL_PURPOSE_ITERATION` -> `ITERATION`)."""
    try:
        name = enum_type.Name(value)
    except ValueError:
        return f"UNKNOWN_{value}"
    return name[len(prefix):] if name.startswith(prefix) else name


def _timestamp(message, name: str) -> Optional[_dt.datetime]:
    if not message.HasField(name):
        return None
    return getattr(message, name).ToDatetime(tzinfo=_dt.timezone.utc)


def _duration(message, name: str) -> Optional[_dt.timedelta]:
    if not message.HasField(name):
        return None
    return getattr(message, name).ToTimedelta()


@dataclass(frozen=True)
class Usage:
    """Token and cost usage of a set of model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    #: Cost in USD of the calls whose price is known; a lower bound unless ``cost_known``.
    cost_usd: float = 0.0
    cost_known: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def from_proto(cls, message: Optional[completion_pb2.Usage]) -> "Usage":
        if message is None:
            return cls()
        return cls(
            input_tokens=message.input_tokens,
            output_tokens=message.output_tokens,
            calls=message.calls,
            cost_usd=message.cost_usd,
            cost_known=message.cost_known,
        )


@dataclass(frozen=True)
class Completion:
    """Outcome of a completion (``rlm.v1.CompletionResult``).

    ``partial`` is True whenever the answer did not come from FINAL; then
    ``termination_reason`` says why (a limit, cancellation, a failure) and
    ``detail`` explains it. ``str(completion)`` is the answer.
    """

    answer: str
    partial: bool
    termination_reason: TerminationReason
    detail: str
    completion_id: str
    trajectory_id: str
    usage: Usage
    #: Usage per model name, e.g. ``{"openai/gpt-4o": Usage(...)}``.
    model_usage: Dict[str, Usage]
    iterations: int
    total_iterations: int
    depth_reached: int
    subcalls: int
    child_rlms: int
    started_at: Optional[_dt.datetime]
    duration: Optional[_dt.timedelta]
    raw: completion_pb2.CompletionResult = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: completion_pb2.CompletionResult) -> "Completion":
        return cls(
            answer=message.answer,
            partial=message.partial,
            termination_reason=TerminationReason(message.termination_reason),
            detail=message.detail,
            completion_id=message.completion_id,
            trajectory_id=message.trajectory_id,
            usage=Usage.from_proto(message.total_usage),
            model_usage={m.model: Usage.from_proto(m.usage) for m in message.model_usage},
            iterations=message.iterations,
            total_iterations=message.total_iterations,
            depth_reached=message.depth_reached,
            subcalls=message.subcalls,
            child_rlms=message.child_rlms,
            started_at=_timestamp(message, "started_at"),
            duration=_duration(message, "duration"),
            raw=message,
        )

    def raise_for_partial(self) -> "Completion":
        """Raises the matching :class:`~rlm_client.IncompleteCompletion` when
        ``partial``; returns ``self`` otherwise."""
        if not self.partial:
            return self
        from .errors import BudgetExceeded, CompletionCancelled, CompletionFailed

        reason = self.termination_reason
        if reason.is_budget:
            raise BudgetExceeded(self)
        if reason == TerminationReason.CANCELLED:
            raise CompletionCancelled(self)
        raise CompletionFailed(self)

    def __str__(self) -> str:
        return self.answer


# --------------------------------------------------------------------------
# Queued completions


@dataclass(frozen=True)
class Submission:
    """What ``submit`` returns: the queued completion's id."""

    completion_id: str
    #: True when an earlier submission with the same ``idempotency_key`` was found
    #: (``completion_id`` is then that one's).
    duplicate: bool


_ENDED_STATES = frozenset({"FINISHED", "CANCELLED", "FAILED"})


@dataclass(frozen=True)
class CompletionStatus:
    """State of a queued completion (``rlm.v1.GetCompletionResponse``)."""

    completion_id: str
    #: ``"QUEUED"``, ``"RUNNING"``, ``"FINISHED"``, ``"CANCELLED"`` or ``"FAILED"``.
    state: str
    #: 1-based place in the queue while ``QUEUED``; 0 otherwise.
    queue_position: int
    #: The result once ended (``FINISHED``, ``CANCELLED``, ``FAILED``), else None.
    result: Optional[Completion]
    #: The best answer so far while ``RUNNING``.
    partial_answer: str
    #: Usage so far (the final usage once ended).
    usage: Usage
    #: Events recorded so far: ``watch(from_event_index=...)`` resumes from here.
    event_count: int
    attempts: int
    #: The replica running it (fleet mode), or ``""``.
    worker: str
    submitted_at: Optional[_dt.datetime]
    raw: jobs_pb2.GetCompletionResponse = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """True once the completion has ended, whatever the outcome."""
        return self.state in _ENDED_STATES

    @classmethod
    def from_proto(cls, message: jobs_pb2.GetCompletionResponse) -> "CompletionStatus":
        return cls(
            completion_id=message.completion_id,
            state=_enum_name(jobs_pb2.CompletionState, message.state, "COMPLETION_STATE_"),
            queue_position=message.queue_position,
            result=Completion.from_proto(message.result) if message.HasField("result") else None,
            partial_answer=message.partial_answer,
            usage=Usage.from_proto(message.usage),
            event_count=message.event_count,
            attempts=message.attempts,
            worker=message.worker,
            submitted_at=_timestamp(message, "submitted_at"),
            raw=message,
        )


# --------------------------------------------------------------------------
# Contexts


_FORMATS = {
    "text": context_pb2.CONTEXT_FORMAT_TEXT,
    "json": context_pb2.CONTEXT_FORMAT_JSON,
}


def _format(value: Union[str, int]) -> int:
    if isinstance(value, int):
        return value
    try:
        return _FORMATS[value.lower()]
    except KeyError:
        raise ValueError(f"context format must be 'text' or 'json', not {value!r}") from None


@dataclass(frozen=True)
class UploadedContext:
    """A context stored with ``upload_context``: pass it as ``context=``."""

    context_id: str
    size_bytes: int

    def as_json(self) -> "Context":
        """This content, presented to the REPL as parsed JSON."""
        return Context.from_id(self.context_id, format="json")


@dataclass(frozen=True)
class Context:
    """One context of a completion. Build it with a constructor:

    * ``Context.from_text(str)`` — a ``str`` in the REPL;
    * ``Context.from_json(value)`` — any JSON-serialisable value, bound to what
      ``json.loads`` gives;
    * ``Context.from_bytes(b, format="text")`` — raw bytes (decoded as UTF-8 by
      the server, invalid sequences replaced);
    * ``Context.from_file(path, format="text")`` — a file, always uploaded in
      chunks and passed by id (never read into memory whole);
    * ``Context.from_id("sha256:...", format="text")`` — content uploaded before.

    ``complete(context=...)`` also takes plain values: ``str`` (text), ``bytes``,
    ``dict`` / ``list`` (JSON), ``pathlib.Path`` (file) and :class:`UploadedContext`.
    Text, bytes and JSON larger than the client's ``max_inline_bytes`` (1 MiB by
    default) are uploaded automatically and passed by id.
    """

    kind: str  # "text" | "bytes" | "file" | "id"
    value: object = field(repr=False)
    format: int = context_pb2.CONTEXT_FORMAT_UNSPECIFIED

    @classmethod
    def from_text(cls, text: str) -> "Context":
        return cls("text", str(text), context_pb2.CONTEXT_FORMAT_TEXT)

    @classmethod
    def from_json(cls, value: object) -> "Context":
        import json

        return cls("text", json.dumps(value, ensure_ascii=False), context_pb2.CONTEXT_FORMAT_JSON)

    @classmethod
    def from_bytes(cls, data: Union[bytes, bytearray, memoryview], format: str = "text") -> "Context":
        return cls("bytes", bytes(data), _format(format))

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"], format: str = "text") -> "Context":
        return cls("file", os.fspath(path), _format(format))

    @classmethod
    def from_id(cls, context_id: str, format: str = "text") -> "Context":
        return cls("id", str(context_id), _format(format))


# --------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Event:
    """Base of the events of ``stream_complete`` (``rlm.v1.CompletionEvent``).

    ``sequence`` starts at 1 and grows by 1 per event; ``depth`` / ``node_id``
    tell which RLM of the tree emitted it (``"0"`` = the root).
    """

    kind: ClassVar[str] = "event"
    sequence: int
    completion_id: str
    depth: int
    node_id: str
    timestamp: Optional[_dt.datetime]
    raw: events_pb2.CompletionEvent = field(repr=False, compare=False)


@dataclass(frozen=True)
class IterationStarted(Event):
    """An RLM is about to call its model for an iteration."""

    kind: ClassVar[str] = "iteration_started"
    iteration: int
    #: Usage of the whole tree so far, before this iteration's model call.
    tree_usage: Usage


@dataclass(frozen=True)
class ModelCallFinished(Event):
    """A model call (iteration or llm_query) returned or failed."""

    kind: ClassVar[str] = "model_call_finished"
    model: str
    #: ``"ITERATION"`` or ``"LLM_QUERY"``.
    purpose: str
    iteration: int
    subcall_id: int
    item_index: int
    usage: Usage
    latency: Optional[_dt.timedelta]
    response_text: str
    error: str


@dataclass(frozen=True)
class CodeExecuted(Event):
    """A code block of a model reply ran in the REPL."""

    kind: ClassVar[str] = "code_executed"
    iteration: int
    block_index: int
    code: str
    output: str
    output_truncated: bool
    error: str
    final_called: bool
    timed_out: bool
    session_ended: bool
    duration: Optional[_dt.timedelta]
    cpu_ms: int


@dataclass(frozen=True)
class SubcallStarted(Event):
    """Code issued a sub-call request (llm_query, rlm_query or a batched variant)."""

    kind: ClassVar[str] = "subcall_started"
    subcall_id: int
    #: ``"LLM_QUERY"`` or ``"RLM_QUERY"``.
    subcall_kind: str
    batched: bool
    iteration: int
    prompts: Tuple[str, ...]
    model: str
    degraded: bool
    child_node_ids: Tuple[str, ...]


@dataclass(frozen=True)
class SubcallOutcome:
    """Answer (``text``) or ``error`` of one sub-call; exactly one is not None."""

    text: Optional[str]
    error: Optional[str]


@dataclass(frozen=True)
class SubcallFinished(Event):
    """Every prompt of a sub-call request has an answer or an error."""

    kind: ClassVar[str] = "subcall_finished"
    subcall_id: int
    subcall_kind: str
    outcomes: Tuple[SubcallOutcome, ...]
    error_count: int
    usage: Usage
    duration: Optional[_dt.timedelta]


@dataclass(frozen=True)
class ResultEvent(Event):
    """The completion ended; always the last event. ``completion`` is the result."""

    kind: ClassVar[str] = "result"
    completion: Completion


@dataclass(frozen=True)
class UnknownEvent(Event):
    """An event kind this client version does not know (a newer server)."""

    kind: ClassVar[str] = "unknown"


def event_from_proto(message: events_pb2.CompletionEvent) -> Event:
    base = dict(
        sequence=message.sequence,
        completion_id=message.completion_id,
        depth=message.depth,
        node_id=message.node_id,
        timestamp=_timestamp(message, "timestamp"),
        raw=message,
    )
    which = message.WhichOneof("event")
    if which == "iteration_started":
        e = message.iteration_started
        return IterationStarted(**base, iteration=e.iteration, tree_usage=Usage.from_proto(e.tree_usage))
    if which == "model_call_finished":
        e = message.model_call_finished
        return ModelCallFinished(
            **base,
            model=e.model,
            purpose=_enum_name(events_pb2.ModelCallPurpose, e.purpose, "MODEL_CALL_PURPOSE_"),
            iteration=e.iteration,
            subcall_id=e.subcall_id,
            item_index=e.item_index,
            usage=Usage.from_proto(e.usage),
            latency=_duration(e, "latency"),
            response_text=e.response_text,
            error=e.error,
        )
    if which == "code_executed":
        e = message.code_executed
        return CodeExecuted(
            **base,
            iteration=e.iteration,
            block_index=e.block_index,
            code=e.code,
            output=e.output,
            output_truncated=e.output_truncated,
            error=e.error,
            final_called=e.final_called,
            timed_out=e.timed_out,
            session_ended=e.session_ended,
            duration=_duration(e, "duration"),
            cpu_ms=e.cpu_ms,
        )
    if which == "subcall_started":
        e = message.subcall_started
        return SubcallStarted(
            **base,
            subcall_id=e.subcall_id,
            subcall_kind=_enum_name(events_pb2.SubcallKind, e.kind, "SUBCALL_KIND_"),
            batched=e.batched,
            iteration=e.iteration,
            prompts=tuple(e.prompts),
            model=e.model,
            degraded=e.degraded,
            child_node_ids=tuple(e.child_node_ids),
        )
    if which == "subcall_finished":
        e = message.subcall_finished
        outcomes = tuple(
            SubcallOutcome(
                text=o.text if o.WhichOneof("outcome") == "text" else None,
                error=o.error if o.WhichOneof("outcome") == "error" else None,
            )
            for o in e.outcomes
        )
        return SubcallFinished(
            **base,
            subcall_id=e.subcall_id,
            subcall_kind=_enum_name(events_pb2.SubcallKind, e.kind, "SUBCALL_KIND_"),
            outcomes=outcomes,
            error_count=e.error_count,
            usage=Usage.from_proto(e.usage),
            duration=_duration(e, "duration"),
        )
    if which == "result":
        return ResultEvent(**base, completion=Completion.from_proto(message.result))
    return UnknownEvent(**base)


# --------------------------------------------------------------------------
# Trajectories


@dataclass(frozen=True)
class TrajectorySummary:
    """Short description of a recorded trajectory."""

    trajectory_id: str
    completion_id: str
    prompt_preview: str
    #: ``"RUNNING"``, ``"FINISHED"`` or ``"INCOMPLETE"``.
    status: str
    termination_reason: TerminationReason
    started_at: Optional[_dt.datetime]
    duration: Optional[_dt.timedelta]
    usage: Usage
    iterations: int
    root_model: str
    metadata: Dict[str, str]
    raw: trajectory_pb2.TrajectorySummary = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: trajectory_pb2.TrajectorySummary) -> "TrajectorySummary":
        return cls(
            trajectory_id=message.trajectory_id,
            completion_id=message.completion_id,
            prompt_preview=message.prompt_preview,
            status=_enum_name(trajectory_pb2.TrajectoryStatus, message.status, "TRAJECTORY_STATUS_"),
            termination_reason=TerminationReason(message.termination_reason),
            started_at=_timestamp(message, "started_at"),
            duration=_duration(message, "duration"),
            usage=Usage.from_proto(message.total_usage),
            iterations=message.iterations,
            root_model=message.root_model,
            metadata=dict(message.metadata),
            raw=message,
        )


@dataclass(frozen=True)
class TrajectoryPage:
    """One page of ``list_trajectories``; iterate it for the summaries."""

    trajectories: Tuple[TrajectorySummary, ...]
    #: Pass as ``page_token=`` for the next page; empty on the last page.
    next_page_token: str

    def __iter__(self) -> Iterator[TrajectorySummary]:
        return iter(self.trajectories)

    def __len__(self) -> int:
        return len(self.trajectories)

    @classmethod
    def from_proto(cls, message: rlm_service_pb2.ListTrajectoriesResponse) -> "TrajectoryPage":
        return cls(
            trajectories=tuple(TrajectorySummary.from_proto(t) for t in message.trajectories),
            next_page_token=message.next_page_token,
        )


@dataclass(frozen=True)
class Trajectory:
    """Full record of one completion: the spec as the server understood it,
    every event, and the result (None unless the status is FINISHED)."""

    summary: TrajectorySummary
    spec: completion_pb2.CompletionSpec = field(repr=False)
    events: Tuple[Event, ...] = field(repr=False)
    result: Optional[Completion]
    raw: trajectory_pb2.Trajectory = field(repr=False, compare=False)

    @property
    def trajectory_id(self) -> str:
        return self.summary.trajectory_id

    @property
    def status(self) -> str:
        return self.summary.status

    @classmethod
    def from_proto(cls, message: trajectory_pb2.Trajectory) -> "Trajectory":
        return cls(
            summary=TrajectorySummary.from_proto(message.summary),
            spec=message.spec,
            events=tuple(event_from_proto(e) for e in message.events),
            result=Completion.from_proto(message.result) if message.HasField("result") else None,
            raw=message,
        )
