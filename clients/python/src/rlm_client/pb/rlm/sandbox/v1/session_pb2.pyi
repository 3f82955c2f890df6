import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_IDLE: _ClassVar[SessionState]
    SESSION_STATE_EXECUTING: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_IDLE: SessionState
SESSION_STATE_EXECUTING: SessionState
SESSION_STATE_ENDED: SessionState

class SessionLimits(_message.Message):
    __slots__ = ("memory_bytes", "cpu_millicores", "max_pids", "network", "allowed_paths", "tmpfs_bytes", "output_cap_bytes", "idle_ttl")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLICORES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PATHS_FIELD_NUMBER: _ClassVar[int]
    TMPFS_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CAP_BYTES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu_millicores: int
    max_pids: int
    network: bool
    allowed_paths: _containers.RepeatedCompositeFieldContainer[AllowedPath]
    tmpfs_bytes: int
    output_cap_bytes: int
    idle_ttl: _duration_pb2.Duration
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu_millicores: _Optional[int] = ..., max_pids: _Optional[int] = ..., network: _Optional[bool] = ..., allowed_paths: _Optional[_Iterable[_Union[AllowedPath, _Mapping]]] = ..., tmpfs_bytes: _Optional[int] = ..., output_cap_bytes: _Optional[int] = ..., idle_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AllowedPath(_message.Message):
    __slots__ = ("host_path", "read_write")
    HOST_PATH_FIELD_NUMBER: _ClassVar[int]
    READ_WRITE_FIELD_NUMBER: _ClassVar[int]
    host_path: str
    read_write: bool
    def __init__(self, host_path: _Optional[str] = ..., read_write: _Optional[bool] = ...) -> None: ...

class SessionLabels(_message.Message):
    __slots__ = ("completion_id", "depth", "node_id")
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    depth: int
    node_id: str
    def __init__(self, completion_id: _Optional[str] = ..., depth: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "state", "created_at", "last_used_at", "profile", "limits", "labels", "context_ids", "executions", "pid_count", "memory_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_IDS_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    PID_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: SessionState
    created_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    profile: str
    limits: SessionLimits
    labels: SessionLabels
    context_ids: _containers.RepeatedScalarFieldContainer[str]
    executions: int
    pid_count: int
    memory_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., profile: _Optional[str] = ..., limits: _Optional[_Union[SessionLimits, _Mapping]] = ..., labels: _Optional[_Union[SessionLabels, _Mapping]] = ..., context_ids: _Optional[_Iterable[str]] = ..., executions: _Optional[int] = ..., pid_count: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...
