import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rlm_client.pb.rlm.v1 import completion_pb2 as _completion_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelCallPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_CALL_PURPOSE_UNSPECIFIED: _ClassVar[ModelCallPurpose]
    MODEL_CALL_PURPOSE_ITERATION: _ClassVar[ModelCallPurpose]
    MODEL_CALL_PURPOSE_LLM_QUERY: _ClassVar[ModelCallPurpose]

class SubcallKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBCALL_KIND_UNSPECIFIED: _ClassVar[SubcallKind]
    SUBCALL_KIND_LLM_QUERY: _ClassVar[SubcallKind]
    SUBCALL_KIND_RLM_QUERY: _ClassVar[SubcallKind]
MODEL_CALL_PURPOSE_UNSPECIFIED: ModelCallPurpose
MODEL_CALL_PURPOSE_ITERATION: ModelCallPurpose
MODEL_CALL_PURPOSE_LLM_QUERY: ModelCallPurpose
SUBCALL_KIND_UNSPECIFIED: SubcallKind
SUBCALL_KIND_LLM_QUERY: SubcallKind
SUBCALL_KIND_RLM_QUERY: SubcallKind

class CompletionEvent(_message.Message):
    __slots__ = ("sequence", "completion_id", "depth", "node_id", "timestamp", "iteration_started", "model_call_finished", "code_executed", "subcall_started", "subcall_finished", "result")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ITERATION_STARTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_CALL_FINISHED_FIELD_NUMBER: _ClassVar[int]
    CODE_EXECUTED_FIELD_NUMBER: _ClassVar[int]
    SUBCALL_STARTED_FIELD_NUMBER: _ClassVar[int]
    SUBCALL_FINISHED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    completion_id: str
    depth: int
    node_id: str
    timestamp: _timestamp_pb2.Timestamp
    iteration_started: IterationStartedEvent
    model_call_finished: ModelCallFinishedEvent
    code_executed: CodeExecutedEvent
    subcall_started: SubcallStartedEvent
    subcall_finished: SubcallFinishedEvent
    result: _completion_pb2.CompletionResult
    def __init__(self, sequence: _Optional[int] = ..., completion_id: _Optional[str] = ..., depth: _Optional[int] = ..., node_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., iteration_started: _Optional[_Union[IterationStartedEvent, _Mapping]] = ..., model_call_finished: _Optional[_Union[ModelCallFinishedEvent, _Mapping]] = ..., code_executed: _Optional[_Union[CodeExecutedEvent, _Mapping]] = ..., subcall_started: _Optional[_Union[SubcallStartedEvent, _Mapping]] = ..., subcall_finished: _Optional[_Union[SubcallFinishedEvent, _Mapping]] = ..., result: _Optional[_Union[_completion_pb2.CompletionResult, _Mapping]] = ...) -> None: ...

class IterationStartedEvent(_message.Message):
    __slots__ = ("iteration", "tree_usage")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TREE_USAGE_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    tree_usage: _completion_pb2.Usage
    def __init__(self, iteration: _Optional[int] = ..., tree_usage: _Optional[_Union[_completion_pb2.Usage, _Mapping]] = ...) -> None: ...

class ModelCallFinishedEvent(_message.Message):
    __slots__ = ("model", "purpose", "iteration", "subcall_id", "item_index", "usage", "latency", "response_text", "error")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    SUBCALL_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model: str
    purpose: ModelCallPurpose
    iteration: int
    subcall_id: int
    item_index: int
    usage: _completion_pb2.Usage
    latency: _duration_pb2.Duration
    response_text: str
    error: str
    def __init__(self, model: _Optional[str] = ..., purpose: _Optional[_Union[ModelCallPurpose, str]] = ..., iteration: _Optional[int] = ..., subcall_id: _Optional[int] = ..., item_index: _Optional[int] = ..., usage: _Optional[_Union[_completion_pb2.Usage, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., response_text: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class CodeExecutedEvent(_message.Message):
    __slots__ = ("iteration", "block_index", "code", "output", "output_truncated", "error", "final_called", "timed_out", "session_ended", "duration", "cpu_ms")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    BLOCK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FINAL_CALLED_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CPU_MS_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    block_index: int
    code: str
    output: str
    output_truncated: bool
    error: str
    final_called: bool
    timed_out: bool
    session_ended: bool
    duration: _duration_pb2.Duration
    cpu_ms: int
    def __init__(self, iteration: _Optional[int] = ..., block_index: _Optional[int] = ..., code: _Optional[str] = ..., output: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., error: _Optional[str] = ..., final_called: _Optional[bool] = ..., timed_out: _Optional[bool] = ..., session_ended: _Optional[bool] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cpu_ms: _Optional[int] = ...) -> None: ...

class SubcallStartedEvent(_message.Message):
    __slots__ = ("subcall_id", "kind", "batched", "iteration", "prompts", "model", "degraded", "child_node_ids")
    SUBCALL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    CHILD_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    subcall_id: int
    kind: SubcallKind
    batched: bool
    iteration: int
    prompts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    degraded: bool
    child_node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, subcall_id: _Optional[int] = ..., kind: _Optional[_Union[SubcallKind, str]] = ..., batched: _Optional[bool] = ..., iteration: _Optional[int] = ..., prompts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., degraded: _Optional[bool] = ..., child_node_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SubcallOutcome(_message.Message):
    __slots__ = ("text", "error")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    text: str
    error: str
    def __init__(self, text: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class SubcallFinishedEvent(_message.Message):
    __slots__ = ("subcall_id", "kind", "outcomes", "error_count", "usage", "duration")
    SUBCALL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    subcall_id: int
    kind: SubcallKind
    outcomes: _containers.RepeatedCompositeFieldContainer[SubcallOutcome]
    error_count: int
    usage: _completion_pb2.Usage
    duration: _duration_pb2.Duration
    def __init__(self, subcall_id: _Optional[int] = ..., kind: _Optional[_Union[SubcallKind, str]] = ..., outcomes: _Optional[_Iterable[_Union[SubcallOutcome, _Mapping]]] = ..., error_count: _Optional[int] = ..., usage: _Optional[_Union[_completion_pb2.Usage, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
