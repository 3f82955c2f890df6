import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rlm_client.pb.rlm.v1 import completion_pb2 as _completion_pb2
from rlm_client.pb.rlm.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrajectoryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAJECTORY_STATUS_UNSPECIFIED: _ClassVar[TrajectoryStatus]
    TRAJECTORY_STATUS_RUNNING: _ClassVar[TrajectoryStatus]
    TRAJECTORY_STATUS_FINISHED: _ClassVar[TrajectoryStatus]
    TRAJECTORY_STATUS_INCOMPLETE: _ClassVar[TrajectoryStatus]
TRAJECTORY_STATUS_UNSPECIFIED: TrajectoryStatus
TRAJECTORY_STATUS_RUNNING: TrajectoryStatus
TRAJECTORY_STATUS_FINISHED: TrajectoryStatus
TRAJECTORY_STATUS_INCOMPLETE: TrajectoryStatus

class TrajectorySummary(_message.Message):
    __slots__ = ("trajectory_id", "completion_id", "prompt_preview", "status", "termination_reason", "started_at", "duration", "total_usage", "iterations", "root_model", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_PREVIEW_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USAGE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    ROOT_MODEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    completion_id: str
    prompt_preview: str
    status: TrajectoryStatus
    termination_reason: _completion_pb2.TerminationReason
    started_at: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    total_usage: _completion_pb2.Usage
    iterations: int
    root_model: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, trajectory_id: _Optional[str] = ..., completion_id: _Optional[str] = ..., prompt_preview: _Optional[str] = ..., status: _Optional[_Union[TrajectoryStatus, str]] = ..., termination_reason: _Optional[_Union[_completion_pb2.TerminationReason, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total_usage: _Optional[_Union[_completion_pb2.Usage, _Mapping]] = ..., iterations: _Optional[int] = ..., root_model: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Trajectory(_message.Message):
    __slots__ = ("summary", "spec", "events", "result")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    summary: TrajectorySummary
    spec: _completion_pb2.CompletionSpec
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.CompletionEvent]
    result: _completion_pb2.CompletionResult
    def __init__(self, summary: _Optional[_Union[TrajectorySummary, _Mapping]] = ..., spec: _Optional[_Union[_completion_pb2.CompletionSpec, _Mapping]] = ..., events: _Optional[_Iterable[_Union[_events_pb2.CompletionEvent, _Mapping]]] = ..., result: _Optional[_Union[_completion_pb2.CompletionResult, _Mapping]] = ...) -> None: ...
