import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from rlm_client.pb.rlm.sandbox.v1 import session_pb2 as _session_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IsolationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISOLATION_MODE_UNSPECIFIED: _ClassVar[IsolationMode]
    ISOLATION_MODE_FULL: _ClassVar[IsolationMode]
    ISOLATION_MODE_PARTIAL: _ClassVar[IsolationMode]
    ISOLATION_MODE_NONE: _ClassVar[IsolationMode]

class IsolationFeature(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISOLATION_FEATURE_UNSPECIFIED: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_MOUNT_NAMESPACE: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_PID_NAMESPACE: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_NETWORK_NAMESPACE: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_IPC_NAMESPACE: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_UTS_NAMESPACE: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_READONLY_ROOT: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_SESSION_TMPFS: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_SESSION_UID: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_CGROUP_MEMORY: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_CGROUP_PIDS: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_CGROUP_CPU: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_RLIMITS: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_SECCOMP: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_NO_NEW_PRIVS: _ClassVar[IsolationFeature]
    ISOLATION_FEATURE_NO_CAPABILITIES: _ClassVar[IsolationFeature]

class CgroupVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CGROUP_VERSION_UNSPECIFIED: _ClassVar[CgroupVersion]
    CGROUP_VERSION_NONE: _ClassVar[CgroupVersion]
    CGROUP_VERSION_V1: _ClassVar[CgroupVersion]
    CGROUP_VERSION_V2: _ClassVar[CgroupVersion]
ISOLATION_MODE_UNSPECIFIED: IsolationMode
ISOLATION_MODE_FULL: IsolationMode
ISOLATION_MODE_PARTIAL: IsolationMode
ISOLATION_MODE_NONE: IsolationMode
ISOLATION_FEATURE_UNSPECIFIED: IsolationFeature
ISOLATION_FEATURE_MOUNT_NAMESPACE: IsolationFeature
ISOLATION_FEATURE_PID_NAMESPACE: IsolationFeature
ISOLATION_FEATURE_NETWORK_NAMESPACE: IsolationFeature
ISOLATION_FEATURE_IPC_NAMESPACE: IsolationFeature
ISOLATION_FEATURE_UTS_NAMESPACE: IsolationFeature
ISOLATION_FEATURE_READONLY_ROOT: IsolationFeature
ISOLATION_FEATURE_SESSION_TMPFS: IsolationFeature
ISOLATION_FEATURE_SESSION_UID: IsolationFeature
ISOLATION_FEATURE_CGROUP_MEMORY: IsolationFeature
ISOLATION_FEATURE_CGROUP_PIDS: IsolationFeature
ISOLATION_FEATURE_CGROUP_CPU: IsolationFeature
ISOLATION_FEATURE_RLIMITS: IsolationFeature
ISOLATION_FEATURE_SECCOMP: IsolationFeature
ISOLATION_FEATURE_NO_NEW_PRIVS: IsolationFeature
ISOLATION_FEATURE_NO_CAPABILITIES: IsolationFeature
CGROUP_VERSION_UNSPECIFIED: CgroupVersion
CGROUP_VERSION_NONE: CgroupVersion
CGROUP_VERSION_V1: CgroupVersion
CGROUP_VERSION_V2: CgroupVersion

class PoolStats(_message.Message):
    __slots__ = ("profile", "limits", "target_size", "ready", "starting", "hits", "misses")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TARGET_SIZE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    STARTING_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    profile: str
    limits: _session_pb2.SessionLimits
    target_size: int
    ready: int
    starting: int
    hits: int
    misses: int
    def __init__(self, profile: _Optional[str] = ..., limits: _Optional[_Union[_session_pb2.SessionLimits, _Mapping]] = ..., target_size: _Optional[int] = ..., ready: _Optional[int] = ..., starting: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ...) -> None: ...

class LimitMaxima(_message.Message):
    __slots__ = ("memory_bytes", "cpu_millicores", "max_pids", "network_allowed", "allowed_path_prefixes", "tmpfs_bytes", "output_cap_bytes", "idle_ttl", "execute_timeout", "sessions", "context_bytes")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLICORES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PATH_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    TMPFS_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CAP_BYTES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu_millicores: int
    max_pids: int
    network_allowed: bool
    allowed_path_prefixes: _containers.RepeatedScalarFieldContainer[str]
    tmpfs_bytes: int
    output_cap_bytes: int
    idle_ttl: _duration_pb2.Duration
    execute_timeout: _duration_pb2.Duration
    sessions: int
    context_bytes: int
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu_millicores: _Optional[int] = ..., max_pids: _Optional[int] = ..., network_allowed: _Optional[bool] = ..., allowed_path_prefixes: _Optional[_Iterable[str]] = ..., tmpfs_bytes: _Optional[int] = ..., output_cap_bytes: _Optional[int] = ..., idle_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., execute_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., sessions: _Optional[int] = ..., context_bytes: _Optional[int] = ...) -> None: ...

class ContextStoreStats(_message.Message):
    __slots__ = ("context_count", "total_bytes")
    CONTEXT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    context_count: int
    total_bytes: int
    def __init__(self, context_count: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...
