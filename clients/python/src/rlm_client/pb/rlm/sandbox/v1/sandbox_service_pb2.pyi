import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rlm_client.pb.rlm.sandbox.v1 import execute_pb2 as _execute_pb2
from rlm_client.pb.rlm.sandbox.v1 import info_pb2 as _info_pb2
from rlm_client.pb.rlm.sandbox.v1 import session_pb2 as _session_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("limits", "context_ids", "labels", "json_contexts")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    JSON_CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    limits: _session_pb2.SessionLimits
    context_ids: _containers.RepeatedScalarFieldContainer[str]
    labels: _session_pb2.SessionLabels
    json_contexts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, limits: _Optional[_Union[_session_pb2.SessionLimits, _Mapping]] = ..., context_ids: _Optional[_Iterable[str]] = ..., labels: _Optional[_Union[_session_pb2.SessionLabels, _Mapping]] = ..., json_contexts: _Optional[_Iterable[int]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session_id", "from_warm_pool", "profile", "limits", "contexts")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_WARM_POOL_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    from_warm_pool: bool
    profile: str
    limits: _session_pb2.SessionLimits
    contexts: _containers.RepeatedCompositeFieldContainer[ContextSummary]
    def __init__(self, session_id: _Optional[str] = ..., from_warm_pool: _Optional[bool] = ..., profile: _Optional[str] = ..., limits: _Optional[_Union[_session_pb2.SessionLimits, _Mapping]] = ..., contexts: _Optional[_Iterable[_Union[ContextSummary, _Mapping]]] = ...) -> None: ...

class ContextSummary(_message.Message):
    __slots__ = ("chars", "preview", "json")
    CHARS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    chars: int
    preview: str
    json: JsonShape
    def __init__(self, chars: _Optional[int] = ..., preview: _Optional[str] = ..., json: _Optional[_Union[JsonShape, _Mapping]] = ...) -> None: ...

class JsonShape(_message.Message):
    __slots__ = ("type", "items")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    type: str
    items: int
    def __init__(self, type: _Optional[str] = ..., items: _Optional[int] = ...) -> None: ...

class DestroySessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DestroySessionResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("completion_id",)
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    def __init__(self, completion_id: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_session_pb2.SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[_session_pb2.SessionInfo, _Mapping]]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("agent_version", "python_version", "isolation_mode", "isolation_features", "cgroup_version", "warnings", "pools", "live_sessions", "default_limits", "max_limits", "context_store", "started_at")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_MODE_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FEATURES_FIELD_NUMBER: _ClassVar[int]
    CGROUP_VERSION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    LIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIMITS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_STORE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    python_version: str
    isolation_mode: _info_pb2.IsolationMode
    isolation_features: _containers.RepeatedScalarFieldContainer[_info_pb2.IsolationFeature]
    cgroup_version: _info_pb2.CgroupVersion
    warnings: _containers.RepeatedScalarFieldContainer[str]
    pools: _containers.RepeatedCompositeFieldContainer[_info_pb2.PoolStats]
    live_sessions: int
    default_limits: _session_pb2.SessionLimits
    max_limits: _info_pb2.LimitMaxima
    context_store: _info_pb2.ContextStoreStats
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, agent_version: _Optional[str] = ..., python_version: _Optional[str] = ..., isolation_mode: _Optional[_Union[_info_pb2.IsolationMode, str]] = ..., isolation_features: _Optional[_Iterable[_Union[_info_pb2.IsolationFeature, str]]] = ..., cgroup_version: _Optional[_Union[_info_pb2.CgroupVersion, str]] = ..., warnings: _Optional[_Iterable[str]] = ..., pools: _Optional[_Iterable[_Union[_info_pb2.PoolStats, _Mapping]]] = ..., live_sessions: _Optional[int] = ..., default_limits: _Optional[_Union[_session_pb2.SessionLimits, _Mapping]] = ..., max_limits: _Optional[_Union[_info_pb2.LimitMaxima, _Mapping]] = ..., context_store: _Optional[_Union[_info_pb2.ContextStoreStats, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PutContextRequest(_message.Message):
    __slots__ = ("chunk", "expected_sha256", "total_size_bytes")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    expected_sha256: str
    total_size_bytes: int
    def __init__(self, chunk: _Optional[bytes] = ..., expected_sha256: _Optional[str] = ..., total_size_bytes: _Optional[int] = ...) -> None: ...

class PutContextResponse(_message.Message):
    __slots__ = ("context_id", "size_bytes", "already_existed")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_EXISTED_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    size_bytes: int
    already_existed: bool
    def __init__(self, context_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., already_existed: _Optional[bool] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("start", "subcall_response", "interrupt")
    START_FIELD_NUMBER: _ClassVar[int]
    SUBCALL_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    start: _execute_pb2.ExecuteStart
    subcall_response: _execute_pb2.SubcallResponse
    interrupt: _execute_pb2.ExecuteInterrupt
    def __init__(self, start: _Optional[_Union[_execute_pb2.ExecuteStart, _Mapping]] = ..., subcall_response: _Optional[_Union[_execute_pb2.SubcallResponse, _Mapping]] = ..., interrupt: _Optional[_Union[_execute_pb2.ExecuteInterrupt, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("output", "subcall_request", "result")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SUBCALL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    output: _execute_pb2.OutputChunk
    subcall_request: _execute_pb2.SubcallRequest
    result: _execute_pb2.ExecuteResult
    def __init__(self, output: _Optional[_Union[_execute_pb2.OutputChunk, _Mapping]] = ..., subcall_request: _Optional[_Union[_execute_pb2.SubcallRequest, _Mapping]] = ..., result: _Optional[_Union[_execute_pb2.ExecuteResult, _Mapping]] = ...) -> None: ...
