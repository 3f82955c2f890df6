from rlm_client.pb.rlm.v1 import completion_pb2 as _completion_pb2
from rlm_client.pb.rlm.v1 import events_pb2 as _events_pb2
from rlm_client.pb.rlm.v1 import jobs_pb2 as _jobs_pb2
from rlm_client.pb.rlm.v1 import trajectory_pb2 as _trajectory_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompleteRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _completion_pb2.CompletionSpec
    def __init__(self, spec: _Optional[_Union[_completion_pb2.CompletionSpec, _Mapping]] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _completion_pb2.CompletionResult
    def __init__(self, result: _Optional[_Union[_completion_pb2.CompletionResult, _Mapping]] = ...) -> None: ...

class StreamCompleteRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _completion_pb2.CompletionSpec
    def __init__(self, spec: _Optional[_Union[_completion_pb2.CompletionSpec, _Mapping]] = ...) -> None: ...

class StreamCompleteResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.CompletionEvent
    def __init__(self, event: _Optional[_Union[_events_pb2.CompletionEvent, _Mapping]] = ...) -> None: ...

class UploadContextRequest(_message.Message):
    __slots__ = ("chunk", "expected_sha256", "total_size_bytes")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    expected_sha256: str
    total_size_bytes: int
    def __init__(self, chunk: _Optional[bytes] = ..., expected_sha256: _Optional[str] = ..., total_size_bytes: _Optional[int] = ...) -> None: ...

class UploadContextResponse(_message.Message):
    __slots__ = ("context_id", "size_bytes")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    size_bytes: int
    def __init__(self, context_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class GetTrajectoryRequest(_message.Message):
    __slots__ = ("trajectory_id",)
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    def __init__(self, trajectory_id: _Optional[str] = ...) -> None: ...

class GetTrajectoryResponse(_message.Message):
    __slots__ = ("trajectory",)
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    trajectory: _trajectory_pb2.Trajectory
    def __init__(self, trajectory: _Optional[_Union[_trajectory_pb2.Trajectory, _Mapping]] = ...) -> None: ...

class ListTrajectoriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: _trajectory_pb2.TrajectoryStatus
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[_trajectory_pb2.TrajectoryStatus, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListTrajectoriesResponse(_message.Message):
    __slots__ = ("trajectories", "next_page_token")
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trajectories: _containers.RepeatedCompositeFieldContainer[_trajectory_pb2.TrajectorySummary]
    next_page_token: str
    def __init__(self, trajectories: _Optional[_Iterable[_Union[_trajectory_pb2.TrajectorySummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelCompletionRequest(_message.Message):
    __slots__ = ("completion_id", "reason")
    COMPLETION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    completion_id: str
    reason: str
    def __init__(self, completion_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelCompletionResponse(_message.Message):
    __slots__ = ("was_running",)
    WAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    was_running: bool
    def __init__(self, was_running: _Optional[bool] = ...) -> None: ...
