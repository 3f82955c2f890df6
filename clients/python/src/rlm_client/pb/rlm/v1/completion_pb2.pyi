import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rlm_client.pb.rlm.v1 import context_pb2 as _context_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TerminationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINATION_REASON_UNSPECIFIED: _ClassVar[TerminationReason]
    TERMINATION_REASON_FINAL: _ClassVar[TerminationReason]
    TERMINATION_REASON_MAX_ITERATIONS: _ClassVar[TerminationReason]
    TERMINATION_REASON_TOKEN_BUDGET: _ClassVar[TerminationReason]
    TERMINATION_REASON_COST_BUDGET: _ClassVar[TerminationReason]
    TERMINATION_REASON_TIMEOUT: _ClassVar[TerminationReason]
    TERMINATION_REASON_MAX_SUBCALLS: _ClassVar[TerminationReason]
    TERMINATION_REASON_CANCELLED: _ClassVar[TerminationReason]
    TERMINATION_REASON_MODEL_ERROR: _ClassVar[TerminationReason]
    TERMINATION_REASON_SANDBOX_ERROR: _ClassVar[TerminationReason]
    TERMINATION_REASON_ERROR: _ClassVar[TerminationReason]
TERMINATION_REASON_UNSPECIFIED: TerminationReason
TERMINATION_REASON_FINAL: TerminationReason
TERMINATION_REASON_MAX_ITERATIONS: TerminationReason
TERMINATION_REASON_TOKEN_BUDGET: TerminationReason
TERMINATION_REASON_COST_BUDGET: TerminationReason
TERMINATION_REASON_TIMEOUT: TerminationReason
TERMINATION_REASON_MAX_SUBCALLS: TerminationReason
TERMINATION_REASON_CANCELLED: TerminationReason
TERMINATION_REASON_MODEL_ERROR: TerminationReason
TERMINATION_REASON_SANDBOX_ERROR: TerminationReason
TERMINATION_REASON_ERROR: TerminationReason

class CompletionSpec(_message.Message):
    __slots__ = ("prompt", "contexts", "root_model", "sub_model", "limits", "sandbox", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    ROOT_MODEL_FIELD_NUMBER: _ClassVar[int]
    SUB_MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    contexts: _containers.RepeatedCompositeFieldContainer[_context_pb2.ContextInput]
    root_model: str
    sub_model: str
    limits: CompletionLimits
    sandbox: SandboxLimits
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, prompt: _Optional[str] = ..., contexts: _Optional[_Iterable[_Union[_context_pb2.ContextInput, _Mapping]]] = ..., root_model: _Optional[str] = ..., sub_model: _Optional[str] = ..., limits: _Optional[_Union[CompletionLimits, _Mapping]] = ..., sandbox: _Optional[_Union[SandboxLimits, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CompletionLimits(_message.Message):
    __slots__ = ("max_depth", "max_iterations", "token_budget", "cost_budget_usd", "max_parallel", "max_subcalls", "timeout", "cell_timeout")
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    COST_BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBCALLS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CELL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    max_depth: int
    max_iterations: int
    token_budget: int
    cost_budget_usd: float
    max_parallel: int
    max_subcalls: int
    timeout: _duration_pb2.Duration
    cell_timeout: _duration_pb2.Duration
    def __init__(self, max_depth: _Optional[int] = ..., max_iterations: _Optional[int] = ..., token_budget: _Optional[int] = ..., cost_budget_usd: _Optional[float] = ..., max_parallel: _Optional[int] = ..., max_subcalls: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cell_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SandboxLimits(_message.Message):
    __slots__ = ("memory_bytes", "cpu_millicores", "max_pids", "network", "allowed_paths")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLICORES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PATHS_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu_millicores: int
    max_pids: int
    network: bool
    allowed_paths: _containers.RepeatedCompositeFieldContainer[AllowedPath]
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu_millicores: _Optional[int] = ..., max_pids: _Optional[int] = ..., network: _Optional[bool] = ..., allowed_paths: _Optional[_Iterable[_Union[AllowedPath, _Mapping]]] = ...) -> None: ...

class AllowedPath(_message.Message):
    __slots__ = ("host_path", "read_write")
    HOST_PATH_FIELD_NUMBER: _ClassVar[int]
    READ_WRITE_FIELD_NUMBER: _ClassVar[int]
    host_path: str
    read_write: bool
    def __init__(self, host_path: _Optional[str] = ..., read_write: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "calls", "cost_usd", "cost_known")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    COST_KNOWN_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    calls: int
    cost_usd: float
    cost_known: bool
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., calls: _Optional[int] = ..., cost_usd: _Optional[float] = ..., cost_known: _Optional[bool] = ...) -> None: ...

class ModelUsage(_message.Message):
    __slots__ = ("model", "usage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    usage: Usage
    def __init__(self, model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class CompletionResult(_message.Message):
    __slots__ = ("completion_id", "trajectory_id", "answer", "termination_reason", "partial", "detail", "total_usage", "model_usage", "iterations", "total_iterations", "depth_reached", "subcalls", "child_rlms", "started_at", "duration")
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_USAGE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_REACHED_FIELD_NUMBER: _ClassVar[int]
    SUBCALLS_FIELD_NUMBER: _ClassVar[int]
    CHILD_RLMS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    trajectory_id: str
    answer: str
    termination_reason: TerminationReason
    partial: bool
    detail: str
    total_usage: Usage
    model_usage: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    iterations: int
    total_iterations: int
    depth_reached: int
    subcalls: int
    child_rlms: int
    started_at: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    def __init__(self, completion_id: _Optional[str] = ..., trajectory_id: _Optional[str] = ..., answer: _Optional[str] = ..., termination_reason: _Optional[_Union[TerminationReason, str]] = ..., partial: _Optional[bool] = ..., detail: _Optional[str] = ..., total_usage: _Optional[_Union[Usage, _Mapping]] = ..., model_usage: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., iterations: _Optional[int] = ..., total_iterations: _Optional[int] = ..., depth_reached: _Optional[int] = ..., subcalls: _Optional[int] = ..., child_rlms: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
