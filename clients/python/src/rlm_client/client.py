"""Synchronous client of ``rlm.v1.RLMService``."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import IO, Any, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Union

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import _core
from ._core import DEFAULT, Seconds
from .errors import RLMError, from_rpc_error
from .pb.rlm.v1 import jobs_pb2, rlm_service_pb2, rlm_service_pb2_grpc, trajectory_pb2
from .types import (
    Completion,
    CompletionStatus,
    Event,
    ResultEvent,
    Submission,
    Trajectory,
    TrajectoryPage,
    TrajectorySummary,
    UploadedContext,
    event_from_proto,
)

__all__ = ["RLMClient"]


def _mapped(method):
    """Re-raises ``grpc.RpcError`` as the matching :class:`RLMError`."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    return wrapper


class RLMClient:
    """Client of an RLM Runtime orchestrator (``rlm.v1.RLMService``).

    ::

        with RLMClient("127.0.0.1:50051", api_key=KEY, timeout=600) as rlm:
            result = rlm.complete("How many lines mention ERROR?", context=log_text)
            print(result.answer, result.usage.total_tokens)

    Args:
        target: ``host:port`` (also ``tcp://`` / ``http://host:port``) or ``unix:///path``.
        api_key: sent on every call as ``authorization: Bearer <api_key>`` metadata.
        timeout: default gRPC deadline of every call, in seconds (or a
            ``timedelta``); ``None`` = no deadline. For ``complete`` and
            ``stream_complete`` the deadline also bounds the completion: when it
            expires the server cancels it and the call raises ``DeadlineExceeded``.
        credentials: ``grpc.ChannelCredentials`` for TLS; default plaintext.
        options: extra gRPC channel options (merged over 64 MiB receive / 16 MiB send limits).
        interceptors: ``grpc`` client interceptors applied to the channel.
        grpc_metadata: extra ``(key, value)`` metadata sent on every call.
        max_inline_bytes: contexts larger than this (UTF-8 bytes) are uploaded
            in chunks and passed by id instead of inline (default 1 MiB).
        chunk_size: bytes per UploadContext message (default 1 MiB).
        raise_on_partial: default of ``complete(raise_on_partial=...)``.
        channel: use this channel instead of creating one (``target`` is then
            only informative and ``close()`` does not close it).
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: Optional[str] = None,
        timeout: Optional[Seconds] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Optional[Sequence[Tuple[str, Any]]] = None,
        interceptors: Optional[Sequence[Any]] = None,
        grpc_metadata: Optional[Iterable[Tuple[str, str]]] = None,
        max_inline_bytes: int = _core.MAX_INLINE_BYTES,
        chunk_size: int = _core.CHUNK_SIZE,
        raise_on_partial: bool = False,
        channel: Optional[grpc.Channel] = None,
    ) -> None:
        self.target = _core.normalise_target(target)
        self.timeout = _core.seconds(timeout)
        self.max_inline_bytes = max_inline_bytes
        self.chunk_size = chunk_size
        self.raise_on_partial = raise_on_partial
        self._metadata = _core.call_metadata(api_key, grpc_metadata)
        self._owns_channel = channel is None
        if channel is None:
            opts = _core.channel_options(options, self.target)
            if credentials is not None:
                channel = grpc.secure_channel(self.target, credentials, options=opts)
            else:
                channel = grpc.insecure_channel(self.target, options=opts)
        self._base_channel = channel
        if interceptors:
            channel = grpc.intercept_channel(channel, *interceptors)
        self.channel = channel
        self.stub = rlm_service_pb2_grpc.RLMServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        if self._owns_channel:
            self._base_channel.close()

    def __enter__(self) -> "RLMClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _deadline(self, timeout: Any) -> Optional[float]:
        return self.timeout if timeout is DEFAULT else _core.seconds(timeout)

    # -- completions ----------------------------------------------------------

    def _request_spec(self, prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline):
        planned = _core.plan_contexts(
            _core.collect_contexts(context, contexts, context_file), self.max_inline_bytes
        )
        ids = {i: self.upload_context(u.source, timeout=deadline.remaining()).context_id for i, u in planned.uploads()}
        return _core.build_spec(
            prompt,
            planned.resolve(ids),
            model=model,
            sub_model=sub_model,
            limits=_core.build_limits(limits),
            sandbox=_core.build_sandbox(sandbox),
            metadata=metadata,
        )

    @_mapped
    def complete(
        self,
        prompt: str,
        *,
        context: Any = None,
        contexts: Optional[Sequence[Any]] = None,
        context_file: Any = None,
        model: Optional[str] = None,
        sub_model: Optional[str] = None,
        sandbox: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Any = DEFAULT,
        raise_on_partial: Optional[bool] = None,
        **limits: Any,
    ) -> Completion:
        """Runs a completion and returns its result.

        Args:
            prompt: the task (required, non-empty).
            context: one context: ``str`` (text), ``bytes``, ``dict``/``list``
                (JSON), ``pathlib.Path`` (file, uploaded), ``UploadedContext`` or
                :class:`~rlm_client.Context`. Bound to ``context`` in the REPL.
            contexts: several contexts (``context_0``, ``context_1``, ...).
            context_file: path of a file to upload in chunks and use as the context.
            model: root model (``provider/model`` or ``scripted:<path>``); server default if None.
            sub_model: model of ``llm_query`` and child RLMs.
            sandbox: per-session limits: dict with ``memory_bytes``,
                ``cpu_millicores``, ``max_pids``, ``network``, ``allowed_paths``
                (or a ``SandboxLimits`` message).
            metadata: labels recorded in the trajectory.
            timeout: gRPC deadline of this call, uploads of large contexts
                included (default: the client's).
            raise_on_partial: raise :class:`~rlm_client.IncompleteCompletion`
                (``BudgetExceeded``, ``CompletionCancelled``, ``CompletionFailed``)
                instead of returning a partial result. Default: the client's
                (False): a limit hit is a result, not an error.
            **limits: ``max_depth``, ``max_iterations``, ``token_budget``,
                ``cost_budget_usd``, ``max_parallel``, ``max_subcalls``,
                ``completion_timeout`` and ``cell_timeout`` (seconds or timedelta).

        Raises:
            InvalidRequest, NotFound, PermissionDenied, ResourceExhausted,
            Unavailable, DeadlineExceeded, ... (see :mod:`rlm_client.errors`).
        """
        deadline = _core.Deadline(self._deadline(timeout))
        spec = self._request_spec(prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline)
        response = self.stub.Complete(
            rlm_service_pb2.CompleteRequest(spec=spec),
            timeout=deadline.remaining(),
            metadata=self._metadata,
        )
        completion = Completion.from_proto(response.result)
        if self.raise_on_partial if raise_on_partial is None else raise_on_partial:
            completion.raise_for_partial()
        return completion

    def stream_complete(
        self,
        prompt: str,
        *,
        context: Any = None,
        contexts: Optional[Sequence[Any]] = None,
        context_file: Any = None,
        model: Optional[str] = None,
        sub_model: Optional[str] = None,
        sandbox: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Any = DEFAULT,
        raise_on_partial: Optional[bool] = None,
        **limits: Any,
    ) -> Iterator[Event]:
        """Runs a completion and yields its events as they happen.

        Same arguments as :meth:`complete`. Events are :class:`~rlm_client.Event`
        subclasses (``IterationStarted``, ``ModelCallFinished``, ``CodeExecuted``,
        ``SubcallStarted``, ``SubcallFinished``); the last one is a
        :class:`~rlm_client.ResultEvent` whose ``completion`` is what ``complete``
        returns. With ``raise_on_partial``, a partial result is still yielded,
        then the matching ``IncompleteCompletion`` is raised. Leaving the loop
        early (``break``, an exception) cancels the RPC, which cancels the
        completion on the server.

        The request (and any context upload) is sent when iteration starts.
        """
        raise_partial = self.raise_on_partial if raise_on_partial is None else raise_on_partial
        try:
            deadline = _core.Deadline(self._deadline(timeout))
            spec = self._request_spec(prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline)
            call = self.stub.StreamComplete(
                rlm_service_pb2.StreamCompleteRequest(spec=spec),
                timeout=deadline.remaining(),
                metadata=self._metadata,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        yield from _events(call, raise_partial)

    # -- queued completions ---------------------------------------------------

    @_mapped
    def submit(
        self,
        prompt: str,
        *,
        context: Any = None,
        contexts: Optional[Sequence[Any]] = None,
        context_file: Any = None,
        model: Optional[str] = None,
        sub_model: Optional[str] = None,
        sandbox: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        idempotency_key: str = "",
        timeout: Any = DEFAULT,
        **limits: Any,
    ) -> Submission:
        """Queues a completion and returns its id at once (``SubmitCompletion``).

        Same arguments as :meth:`complete`, plus ``idempotency_key``: a second
        submission with the same key returns the first one's id
        (``duplicate=True``). ``timeout`` bounds the uploads and the
        submission, not the completion (use ``completion_timeout=``). Follow it
        with :meth:`watch`, :meth:`get_completion` or :meth:`wait`; a full
        queue raises :class:`~rlm_client.ResourceExhausted`.
        """
        deadline = _core.Deadline(self._deadline(timeout))
        spec = self._request_spec(prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline)
        response = self.stub.SubmitCompletion(
            jobs_pb2.SubmitCompletionRequest(spec=spec, idempotency_key=idempotency_key),
            timeout=deadline.remaining(),
            metadata=self._metadata,
        )
        return Submission(completion_id=response.completion_id, duplicate=response.duplicate)

    @_mapped
    def get_completion(self, completion_id: str, *, timeout: Any = DEFAULT) -> CompletionStatus:
        """The state of a queued completion: position, progress, or its result."""
        response = self.stub.GetCompletion(
            jobs_pb2.GetCompletionRequest(completion_id=completion_id),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return CompletionStatus.from_proto(response)

    def watch(
        self,
        completion_id: str,
        *,
        from_event_index: int = 0,
        timeout: Any = DEFAULT,
        raise_on_partial: Optional[bool] = None,
    ) -> Iterator[Event]:
        """Yields a queued completion's events, as :meth:`stream_complete` does.

        It waits while the completion is queued and ends with its
        :class:`~rlm_client.ResultEvent`. ``from_event_index`` resumes after a
        broken stream (the number of events already seen); events older
        than the server keeps raise :class:`~rlm_client.InvalidRequest`
        (OUT_OF_RANGE: read them with :meth:`get_trajectory`). Leaving the
        loop early stops watching; the completion goes on (see :meth:`cancel`).
        """
        raise_partial = self.raise_on_partial if raise_on_partial is None else raise_on_partial
        try:
            call = self.stub.WatchCompletion(
                jobs_pb2.WatchCompletionRequest(completion_id=completion_id, from_event_index=from_event_index),
                timeout=self._deadline(timeout),
                metadata=self._metadata,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        yield from _events(call, raise_partial)

    def wait(
        self, completion_id: str, *, timeout: Any = DEFAULT, raise_on_partial: Optional[bool] = None
    ) -> Completion:
        """Waits for a queued completion to end and returns its result."""
        raise_partial = self.raise_on_partial if raise_on_partial is None else raise_on_partial
        # Closed on return: the watch call ends now, not when collected.
        with contextlib.closing(self.watch(completion_id, timeout=timeout, raise_on_partial=False)) as events:
            for event in events:
                if isinstance(event, ResultEvent):
                    return event.completion.raise_for_partial() if raise_partial else event.completion
        raise RLMError(f"the event stream of {completion_id} ended without a result")

    @_mapped
    def cancel(self, completion_id: str, reason: str = "", *, timeout: Any = DEFAULT) -> bool:
        """Cancels a running or queued completion; True when it had not ended."""
        response = self.stub.CancelCompletion(
            rlm_service_pb2.CancelCompletionRequest(completion_id=completion_id, reason=reason),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return response.was_running

    # -- contexts -------------------------------------------------------------

    @_mapped
    def upload_context(
        self,
        source: Union[bytes, str, "os.PathLike[str]", IO[bytes]],
        *,
        timeout: Any = DEFAULT,
    ) -> UploadedContext:
        """Uploads a context in chunks of ``chunk_size`` bytes and returns its id.

        ``source`` is ``bytes``, a file path (``str`` or ``PathLike``; read in
        chunks, never whole) or a binary file object. To upload a ``str``,
        encode it (``text.encode()``). The returned id is checked against the
        SHA-256 of the bytes sent. Pass the result as ``context=`` (or
        ``result.as_json()`` for JSON content).
        """
        stream = _core.UploadStream(source, self.chunk_size)
        try:
            response = self.stub.UploadContext(
                iter(stream), timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError:
            stream.raise_local_error()
            raise
        return stream.finish(response)

    # -- trajectories ---------------------------------------------------------

    @_mapped
    def get_trajectory(self, trajectory_id: str, *, timeout: Any = DEFAULT) -> Trajectory:
        """One trajectory in full (also while it runs)."""
        response = self.stub.GetTrajectory(
            rlm_service_pb2.GetTrajectoryRequest(trajectory_id=trajectory_id),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return Trajectory.from_proto(response.trajectory)

    @_mapped
    def list_trajectories(
        self,
        *,
        status: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: Any = DEFAULT,
    ) -> TrajectoryPage:
        """One page of trajectory summaries, most recent first.

        ``status``: ``"RUNNING"``, ``"FINISHED"`` or ``"INCOMPLETE"`` (None = all);
        ``metadata``: only those whose labels include all these pairs.
        Use ``iter_trajectories`` to walk every page.
        """
        response = self.stub.ListTrajectories(
            _list_request(status, metadata, page_size, page_token),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return TrajectoryPage.from_proto(response)

    def iter_trajectories(
        self,
        *,
        status: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        timeout: Any = DEFAULT,
    ) -> Iterator[TrajectorySummary]:
        """Every trajectory summary, following ``next_page_token``."""
        token = ""
        while True:
            page = self.list_trajectories(
                status=status, metadata=metadata, page_size=page_size, page_token=token, timeout=timeout
            )
            yield from page
            token = page.next_page_token
            if not token:
                return

    # -- health ---------------------------------------------------------------

    @_mapped
    def health(self, service: str = "", *, timeout: Any = DEFAULT) -> str:
        """Standard gRPC health check: ``"SERVING"``, ``"NOT_SERVING"``, ...

        ``service``: ``""`` (overall) or e.g. ``"rlm.v1.RLMService"``.
        """
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return _core.HEALTH_STATUS_NAMES.get(response.status, f"UNKNOWN_{response.status}")


def _iterate(call) -> Iterator[Any]:
    try:
        yield from call
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error


def _events(call, raise_partial: bool) -> Iterator[Event]:
    """The typed events of a StreamComplete or WatchCompletion call; leaving
    early cancels the call."""
    try:
        for response in _iterate(call):
            event = event_from_proto(response.event)
            yield event
            if raise_partial and isinstance(event, ResultEvent):
                event.completion.raise_for_partial()
    finally:
        call.cancel()


def _list_request(status, metadata, page_size, page_token) -> rlm_service_pb2.ListTrajectoriesRequest:
    request = rlm_service_pb2.ListTrajectoriesRequest(page_size=page_size, page_token=page_token)
    if status:
        name = status.upper()
        if not name.startswith("TRAJECTORY_STATUS_"):
            name = "TRAJECTORY_STATUS_" + name
        try:
            request.status = trajectory_pb2.TrajectoryStatus.Value(name)
        except ValueError:
            raise ValueError(f"unknown trajectory status {status!r}; use RUNNING, FINISHED or INCOMPLETE") from None
    if metadata:
        request.metadata.update({str(k): str(v) for k, v in metadata.items()})
    return request
