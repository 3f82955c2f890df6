"""Request building shared by the sync and async clients (no I/O on the network here)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
import time
from dataclasses import dataclass
from typing import IO, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from google.protobuf import duration_pb2

from .errors import RLMError
from .pb.rlm.v1 import completion_pb2, context_pb2, rlm_service_pb2
from .types import Context, UploadedContext

#: Size of one UploadContext message (the server recommends 1 MiB or less).
CHUNK_SIZE = 1 << 20
#: Contexts whose encoded size exceeds this are uploaded and passed by id.
MAX_INLINE_BYTES = 1 << 20
#: Inline contexts of one request never add up to more than this (the
#: server's whole-request limit is 16 MiB); the largest are uploaded instead.
MAX_INLINE_TOTAL_BYTES = 8 << 20
#: Default client channel options: results and trajectories can be large.
DEFAULT_CHANNEL_OPTIONS: Tuple[Tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 16 << 20),
)

_LIMIT_FIELDS = {
    "max_depth": "max_depth",
    "max_iterations": "max_iterations",
    "token_budget": "token_budget",
    "cost_budget_usd": "cost_budget_usd",
    "max_parallel": "max_parallel",
    "max_subcalls": "max_subcalls",
    # `timeout` is the client's gRPC deadline; the completion's own wall-clock
    # limit (CompletionLimits.timeout) is spelled `completion_timeout`.
    "completion_timeout": "timeout",
    "cell_timeout": "cell_timeout",
}
_DURATION_LIMITS = {"timeout", "cell_timeout"}
_SANDBOX_FIELDS = ("memory_bytes", "cpu_millicores", "max_pids", "network", "allowed_paths")

LimitValue = Union[int, float, _dt.timedelta, None]
Seconds = Union[int, float, _dt.timedelta]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: Sentinel: "use the client's default" (for per-call ``timeout``).
DEFAULT: Any = _Default()


def seconds(value: Optional[Seconds]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


class Deadline:
    """One deadline shared by the calls of one client method (its uploads, then
    the completion), so ``timeout`` bounds the whole method, not each call."""

    def __init__(self, timeout: Optional[float]) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> Optional[float]:
        """Seconds left (0 once expired: the next call fails DEADLINE_EXCEEDED)."""
        return None if self._end is None else max(0.0, self._end - time.monotonic())


def to_duration(value: Seconds) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    if isinstance(value, _dt.timedelta):
        message.FromTimedelta(value)
    else:
        message.FromNanoseconds(round(float(value) * 1e9))
    return message


def build_limits(limits: Mapping[str, LimitValue]) -> Optional[completion_pb2.CompletionLimits]:
    unknown = sorted(set(limits) - set(_LIMIT_FIELDS))
    if unknown:
        raise TypeError(
            f"unknown limit(s) {', '.join(unknown)}; known limits: {', '.join(_LIMIT_FIELDS)}"
        )
    given = {k: v for k, v in limits.items() if v is not None}
    if not given:
        return None
    message = completion_pb2.CompletionLimits()
    for key, value in given.items():
        name = _LIMIT_FIELDS[key]
        if name in _DURATION_LIMITS:
            getattr(message, name).CopyFrom(to_duration(value))
        else:
            setattr(message, name, value)
    return message


def build_sandbox(sandbox: Union[None, Mapping[str, Any], completion_pb2.SandboxLimits]):
    if sandbox is None or isinstance(sandbox, completion_pb2.SandboxLimits):
        return sandbox
    unknown = sorted(set(sandbox) - set(_SANDBOX_FIELDS))
    if unknown:
        raise TypeError(
            f"unknown sandbox setting(s) {', '.join(unknown)}; known: {', '.join(_SANDBOX_FIELDS)}"
        )
    message = completion_pb2.SandboxLimits()
    for key, value in sandbox.items():
        if key == "allowed_paths":
            for entry in value:
                if isinstance(entry, (str, os.PathLike)):
                    message.allowed_paths.add(host_path=os.fspath(entry))
                elif isinstance(entry, Mapping):
                    message.allowed_paths.add(**entry)
                else:
                    path, read_write = entry
                    message.allowed_paths.add(host_path=os.fspath(path), read_write=bool(read_write))
        elif value is not None:
            setattr(message, key, value)
    return message


def as_context(value: Any) -> Context:
    """Normalises what ``context=`` accepts into a :class:`Context`."""
    if isinstance(value, Context):
        return value
    if isinstance(value, UploadedContext):
        return Context.from_id(value.context_id)
    if isinstance(value, str):
        return Context.from_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Context.from_bytes(value)
    if isinstance(value, os.PathLike):
        return Context.from_file(value)
    if isinstance(value, (dict, list, tuple)):
        return Context.from_json(value)
    raise TypeError(
        "a context must be str, bytes, dict/list (JSON), pathlib.Path, UploadedContext or "
        f"rlm_client.Context, not {type(value).__name__}"
    )


def collect_contexts(context: Any, contexts: Optional[Sequence[Any]], context_file: Any) -> List[Context]:
    given = [name for name, v in (("context", context), ("contexts", contexts), ("context_file", context_file)) if v is not None]
    if len(given) > 1:
        raise TypeError(f"pass only one of context=, contexts= and context_file= (got {', '.join(given)})")
    if context is not None:
        return [as_context(context)]
    if contexts is not None:
        if isinstance(contexts, (str, bytes)):
            raise TypeError("contexts= takes a list of contexts; use context= for a single one")
        return [as_context(c) for c in contexts]
    if context_file is not None:
        return [Context.from_file(context_file)]
    return []


@dataclass
class Upload:
    """A context that must be uploaded before the request: bytes or a file path."""

    source: Union[bytes, str]
    format: int


@dataclass
class PlannedContexts:
    """Contexts of a request: each is a ready ContextInput or an Upload."""

    items: List[Union[context_pb2.ContextInput, Upload]]

    def uploads(self) -> List[Tuple[int, Upload]]:
        return [(i, item) for i, item in enumerate(self.items) if isinstance(item, Upload)]

    def resolve(self, context_ids: Dict[int, str]) -> List[context_pb2.ContextInput]:
        out = []
        for i, item in enumerate(self.items):
            if isinstance(item, Upload):
                out.append(context_pb2.ContextInput(context_id=context_ids[i], format=item.format))
            else:
                out.append(item)
        return out


def plan_contexts(
    contexts: Sequence[Context],
    max_inline_bytes: int = MAX_INLINE_BYTES,
    max_inline_total: int = MAX_INLINE_TOTAL_BYTES,
) -> PlannedContexts:
    """Decides which contexts travel inline and which are uploaded first.

    A context goes inline when it is text (valid UTF-8 for bytes) of at most
    ``max_inline_bytes`` encoded bytes; files always upload. If the inline ones
    add up to more than ``max_inline_total``, the largest are uploaded too.
    """
    items: List[Union[context_pb2.ContextInput, Upload]] = []
    inline_sizes: Dict[int, Tuple[int, bytes]] = {}
    for index, ctx in enumerate(contexts):
        if ctx.kind == "id":
            items.append(context_pb2.ContextInput(context_id=ctx.value, format=ctx.format))
        elif ctx.kind == "file":
            items.append(Upload(ctx.value, ctx.format))
        else:
            if ctx.kind == "text":
                data = ctx.value.encode("utf-8")
                text: Optional[str] = ctx.value
            else:
                data = ctx.value
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    text = None  # not valid UTF-8: only an upload keeps the bytes as given
            if text is not None and len(data) <= max_inline_bytes:
                items.append(context_pb2.ContextInput(text=text, format=ctx.format))
                inline_sizes[index] = (len(data), data)
            else:
                items.append(Upload(data, ctx.format))
    total = sum(size for size, _ in inline_sizes.values())
    for index in sorted(inline_sizes, key=lambda i: inline_sizes[i][0], reverse=True):
        if total <= max_inline_total:
            break
        size, data = inline_sizes[index]
        items[index] = Upload(data, items[index].format)
        total -= size
    return PlannedContexts(items)


def build_spec(
    prompt: str,
    contexts: Sequence[context_pb2.ContextInput],
    *,
    model: Optional[str],
    sub_model: Optional[str],
    limits: Optional[completion_pb2.CompletionLimits],
    sandbox: Optional[completion_pb2.SandboxLimits],
    metadata: Optional[Mapping[str, str]],
) -> completion_pb2.CompletionSpec:
    spec = completion_pb2.CompletionSpec(prompt=prompt, contexts=list(contexts))
    if model:
        spec.root_model = model
    if sub_model:
        spec.sub_model = sub_model
    if limits is not None:
        spec.limits.CopyFrom(limits)
    if sandbox is not None:
        spec.sandbox.CopyFrom(sandbox)
    if metadata:
        spec.metadata.update({str(k): str(v) for k, v in metadata.items()})
    return spec


# --------------------------------------------------------------------------
# Uploads


class UploadStream:
    """Iterates the UploadContext messages of one upload, at most ``chunk_size``
    bytes each, hashing as it goes so the returned id can be verified.

    ``source`` is bytes, a file path, or a binary file object. The first
    message declares ``total_size_bytes`` when the size is known, and
    ``expected_sha256`` for in-memory bytes.

    gRPC hides an exception raised while it pulls the messages (it reports
    UNKNOWN, or cancels an async call), so one raised here by opening or
    reading the source is kept in ``local_error`` for the caller to re-raise.
    """

    def __init__(self, source: Union[bytes, str, "os.PathLike[str]", IO[bytes]], chunk_size: int = CHUNK_SIZE):
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self._hash = hashlib.sha256()
        self.sent_bytes = 0
        self._data: Optional[bytes] = None
        self._path: Optional[str] = None
        self._file: Optional[IO[bytes]] = None
        self.total_size = 0
        self.expected_sha256 = ""
        self.local_error: Optional[BaseException] = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data = bytes(source)
            self.total_size = len(self._data)
            self.expected_sha256 = hashlib.sha256(self._data).hexdigest()
        elif isinstance(source, (str, os.PathLike)):
            self._path = os.fspath(source)
            self.total_size = os.stat(self._path).st_size
        elif isinstance(source, io.TextIOBase):
            raise TypeError("upload_context needs a binary file object (open(path, 'rb')), not a text one")
        elif hasattr(source, "read"):
            self._file = source  # size unknown: not declared
        else:
            raise TypeError(
                f"upload_context takes bytes, a file path or a binary file object, not {type(source).__name__}"
            )

    def _blocks(self) -> Iterator[bytes]:
        if self._data is not None:
            view = memoryview(self._data)
            for start in range(0, len(view), self.chunk_size):
                yield bytes(view[start:start + self.chunk_size])
        elif self._path is not None:
            with open(self._path, "rb") as handle:
                yield from self._read_all(handle)
        else:
            yield from self._read_all(self._file)

    def _read_all(self, handle: IO[bytes]) -> Iterator[bytes]:
        while True:
            block = handle.read(self.chunk_size)
            if not block:
                return
            if isinstance(block, str):
                raise TypeError("upload_context needs a binary file object (open(path, 'rb'))")
            yield block

    def __iter__(self) -> Iterator[rlm_service_pb2.UploadContextRequest]:
        first = True
        try:
            for block in self._blocks():
                yield self._message(block, first)
                first = False
        except Exception as error:
            self.local_error = error
            raise
        if first:  # empty content: one empty message (an empty stream is an error)
            yield self._message(b"", True)

    def raise_local_error(self) -> None:
        """Re-raises what reading the source raised, if anything did."""
        if self.local_error is not None:
            raise self.local_error

    def _message(self, block: bytes, first: bool) -> rlm_service_pb2.UploadContextRequest:
        self._hash.update(block)
        self.sent_bytes += len(block)
        if first:
            return rlm_service_pb2.UploadContextRequest(
                chunk=block,
                expected_sha256=self.expected_sha256,
                total_size_bytes=self.total_size,
            )
        return rlm_service_pb2.UploadContextRequest(chunk=block)

    def finish(self, response: rlm_service_pb2.UploadContextResponse) -> UploadedContext:
        """Checks the server's answer against the content."""
        if self.expected_sha256:
            # Hash and size declared up front: the server may answer before
            # reading every chunk when it already holds that content.
            expected_id, expected_size = "sha256:" + self.expected_sha256, self.total_size
        else:
            expected_id, expected_size = "sha256:" + self._hash.hexdigest(), self.sent_bytes
        if response.context_id != expected_id or response.size_bytes != expected_size:
            raise RLMError(
                f"upload integrity check failed: the content is {expected_size} bytes with id {expected_id}, "
                f"the server answered {response.size_bytes} bytes as {response.context_id!r}"
            )
        return UploadedContext(context_id=response.context_id, size_bytes=response.size_bytes)


def call_metadata(api_key: Optional[str], extra: Optional[Iterable[Tuple[str, str]]]) -> Tuple[Tuple[str, str], ...]:
    metadata: List[Tuple[str, str]] = []
    if api_key:
        metadata.append(("authorization", f"Bearer {api_key}"))
    if extra:
        metadata.extend((str(k).lower(), str(v)) for k, v in extra)
    return tuple(metadata)


def normalise_target(target: str) -> str:
    """Accepts ``host:port``, ``tcp://host:port``, ``http://host:port`` and ``unix:///path``."""
    for prefix in ("tcp://", "http://", "grpc://"):
        if target.startswith(prefix):
            return target[len(prefix):].rstrip("/")
    return target


def channel_options(options: Optional[Sequence[Tuple[str, Any]]], target: str = "") -> List[Tuple[str, Any]]:
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    if target.startswith("unix:"):
        # grpc-core sends the socket path as :authority on unix: targets, which
        # HTTP/2 servers such as ours (hyper) reject with RST_STREAM.
        merged["grpc.default_authority"] = "localhost"
    merged.update(dict(options or ()))
    return list(merged.items())


HEALTH_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
