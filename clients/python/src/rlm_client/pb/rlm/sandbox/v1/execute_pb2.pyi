import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubcallKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBCALL_KIND_UNSPECIFIED: _ClassVar[SubcallKind]
    SUBCALL_KIND_LLM_QUERY: _ClassVar[SubcallKind]
    SUBCALL_KIND_RLM_QUERY: _ClassVar[SubcallKind]

class OutputStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_STREAM_UNSPECIFIED: _ClassVar[OutputStream]
    OUTPUT_STREAM_STDOUT: _ClassVar[OutputStream]
    OUTPUT_STREAM_STDERR: _ClassVar[OutputStream]

class SessionEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_END_REASON_UNSPECIFIED: _ClassVar[SessionEndReason]
    SESSION_END_REASON_OOM_KILLED: _ClassVar[SessionEndReason]
    SESSION_END_REASON_TIMEOUT_KILLED: _ClassVar[SessionEndReason]
    SESSION_END_REASON_INTERRUPT_KILLED: _ClassVar[SessionEndReason]
    SESSION_END_REASON_EXITED: _ClassVar[SessionEndReason]
    SESSION_END_REASON_CRASHED: _ClassVar[SessionEndReason]
    SESSION_END_REASON_PROTOCOL_ERROR: _ClassVar[SessionEndReason]
    SESSION_END_REASON_AGENT_SHUTDOWN: _ClassVar[SessionEndReason]
SUBCALL_KIND_UNSPECIFIED: SubcallKind
SUBCALL_KIND_LLM_QUERY: SubcallKind
SUBCALL_KIND_RLM_QUERY: SubcallKind
OUTPUT_STREAM_UNSPECIFIED: OutputStream
OUTPUT_STREAM_STDOUT: OutputStream
OUTPUT_STREAM_STDERR: OutputStream
SESSION_END_REASON_UNSPECIFIED: SessionEndReason
SESSION_END_REASON_OOM_KILLED: SessionEndReason
SESSION_END_REASON_TIMEOUT_KILLED: SessionEndReason
SESSION_END_REASON_INTERRUPT_KILLED: SessionEndReason
SESSION_END_REASON_EXITED: SessionEndReason
SESSION_END_REASON_CRASHED: SessionEndReason
SESSION_END_REASON_PROTOCOL_ERROR: SessionEndReason
SESSION_END_REASON_AGENT_SHUTDOWN: SessionEndReason

class ExecuteStart(_message.Message):
    __slots__ = ("session_id", "code", "timeout")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    code: str
    timeout: _duration_pb2.Duration
    def __init__(self, session_id: _Optional[str] = ..., code: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExecuteInterrupt(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class SubcallContext(_message.Message):
    __slots__ = ("text", "context_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    context_id: str
    def __init__(self, text: _Optional[str] = ..., context_id: _Optional[str] = ...) -> None: ...

class SubcallRequest(_message.Message):
    __slots__ = ("id", "kind", "prompts", "model", "batched", "contexts")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: SubcallKind
    prompts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    batched: bool
    contexts: _containers.RepeatedCompositeFieldContainer[SubcallContext]
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[_Union[SubcallKind, str]] = ..., prompts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., batched: _Optional[bool] = ..., contexts: _Optional[_Iterable[_Union[SubcallContext, _Mapping]]] = ...) -> None: ...

class SubcallResult(_message.Message):
    __slots__ = ("text", "error")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    text: str
    error: str
    def __init__(self, text: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class SubcallResponse(_message.Message):
    __slots__ = ("id", "results")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    results: _containers.RepeatedCompositeFieldContainer[SubcallResult]
    def __init__(self, id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[SubcallResult, _Mapping]]] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("stream", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: OutputStream
    data: bytes
    def __init__(self, stream: _Optional[_Union[OutputStream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExecutionError(_message.Message):
    __slots__ = ("exception_type", "message", "traceback")
    EXCEPTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    exception_type: str
    message: str
    traceback: str
    def __init__(self, exception_type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class ExecuteResult(_message.Message):
    __slots__ = ("final_called", "final_value", "error", "timed_out", "interrupted", "session_ended", "end_reason", "end_detail", "truncated", "output_bytes", "cpu_ms", "max_rss_bytes", "wall_duration", "subcalls")
    FINAL_CALLED_FIELD_NUMBER: _ClassVar[int]
    FINAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    END_DETAIL_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    WALL_DURATION_FIELD_NUMBER: _ClassVar[int]
    SUBCALLS_FIELD_NUMBER: _ClassVar[int]
    final_called: bool
    final_value: str
    error: ExecutionError
    timed_out: bool
    interrupted: bool
    session_ended: bool
    end_reason: SessionEndReason
    end_detail: str
    truncated: bool
    output_bytes: int
    cpu_ms: int
    max_rss_bytes: int
    wall_duration: _duration_pb2.Duration
    subcalls: int
    def __init__(self, final_called: _Optional[bool] = ..., final_value: _Optional[str] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., timed_out: _Optional[bool] = ..., interrupted: _Optional[bool] = ..., session_ended: _Optional[bool] = ..., end_reason: _Optional[_Union[SessionEndReason, str]] = ..., end_detail: _Optional[str] = ..., truncated: _Optional[bool] = ..., output_bytes: _Optional[int] = ..., cpu_ms: _Optional[int] = ..., max_rss_bytes: _Optional[int] = ..., wall_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., subcalls: _Optional[int] = ...) -> None: ...
