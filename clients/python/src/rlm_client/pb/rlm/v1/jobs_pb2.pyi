import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rlm_client.pb.rlm.v1 import completion_pb2 as _completion_pb2
from rlm_client.pb.rlm.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompletionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPLETION_STATE_UNSPECIFIED: _ClassVar[CompletionState]
    COMPLETION_STATE_QUEUED: _ClassVar[CompletionState]
    COMPLETION_STATE_RUNNING: _ClassVar[CompletionState]
    COMPLETION_STATE_FINISHED: _ClassVar[CompletionState]
    COMPLETION_STATE_CANCELLED: _ClassVar[CompletionState]
    COMPLETION_STATE_FAILED: _ClassVar[CompletionState]
COMPLETION_STATE_UNSPECIFIED: CompletionState
COMPLETION_STATE_QUEUED: CompletionState
COMPLETION_STATE_RUNNING: CompletionState
COMPLETION_STATE_FINISHED: CompletionState
COMPLETION_STATE_CANCELLED: CompletionState
COMPLETION_STATE_FAILED: CompletionState

class SubmitCompletionRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: _completion_pb2.CompletionSpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[_completion_pb2.CompletionSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitCompletionResponse(_message.Message):
    __slots__ = ("completion_id", "duplicate")
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    duplicate: bool
    def __init__(self, completion_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetCompletionRequest(_message.Message):
    __slots__ = ("completion_id",)
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    def __init__(self, completion_id: _Optional[str] = ...) -> None: ...

class GetCompletionResponse(_message.Message):
    __slots__ = ("completion_id", "state", "queue_position", "result", "partial_answer", "usage", "event_count", "attempts", "worker", "submitted_at")
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_ANSWER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    state: CompletionState
    queue_position: int
    result: _completion_pb2.CompletionResult
    partial_answer: str
    usage: _completion_pb2.Usage
    event_count: int
    attempts: int
    worker: str
    submitted_at: _timestamp_pb2.Timestamp
    def __init__(self, completion_id: _Optional[str] = ..., state: _Optional[_Union[CompletionState, str]] = ..., queue_position: _Optional[int] = ..., result: _Optional[_Union[_completion_pb2.CompletionResult, _Mapping]] = ..., partial_answer: _Optional[str] = ..., usage: _Optional[_Union[_completion_pb2.Usage, _Mapping]] = ..., event_count: _Optional[int] = ..., attempts: _Optional[int] = ..., worker: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchCompletionRequest(_message.Message):
    __slots__ = ("completion_id", "from_event_index")
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    from_event_index: int
    def __init__(self, completion_id: _Optional[str] = ..., from_event_index: _Optional[int] = ...) -> None: ...

class WatchCompletionResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.CompletionEvent
    def __init__(self, event: _Optional[_Union[_events_pb2.CompletionEvent, _Mapping]] = ...) -> None: ...
