"""Asynchronous client of ``rlm.v1.RLMService`` on ``grpc.aio``.

Same surface as :class:`rlm_client.RLMClient`, with coroutines and async
iterators::

    async with AsyncRLMClient("127.0.0.1:50051") as rlm:
        result = await rlm.complete("Summarise", context=text)
        async for event in rlm.stream_complete("Summarise", context=text):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from typing import IO, Any, AsyncIterator, Iterable, Mapping, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import _core
from ._core import DEFAULT, Seconds
from .client import _list_request
from .errors import RLMError, from_rpc_error
from .pb.rlm.v1 import jobs_pb2, rlm_service_pb2, rlm_service_pb2_grpc
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

__all__ = ["AsyncRLMClient"]


def _mapped(method):
    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    return wrapper


class AsyncRLMClient:
    """Asynchronous client; arguments as :class:`rlm_client.RLMClient`.

    Create it inside a running event loop (``grpc.aio`` binds the channel to it).
    ``interceptors`` (``grpc.aio`` client interceptors) apply to the channel it
    creates; with ``channel=`` set them on that channel instead (passing both
    is a ``ValueError``).
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
        channel: Optional[grpc.aio.Channel] = None,
    ) -> None:
        self.target = _core.normalise_target(target)
        self.timeout = _core.seconds(timeout)
        self.max_inline_bytes = max_inline_bytes
        self.chunk_size = chunk_size
        self.raise_on_partial = raise_on_partial
        self._metadata = _core.call_metadata(api_key, grpc_metadata)
        self._owns_channel = channel is None
        if channel is not None and interceptors:
            # grpc.aio takes interceptors only when it creates the channel.
            raise ValueError("AsyncRLMClient: pass interceptors to the grpc.aio channel you create, not with channel=")
        if channel is None:
            opts = _core.channel_options(options, self.target)
            if credentials is not None:
                channel = grpc.aio.secure_channel(self.target, credentials, options=opts, interceptors=interceptors)
            else:
                channel = grpc.aio.insecure_channel(self.target, options=opts, interceptors=interceptors)
        self.channel = channel
        self.stub = rlm_service_pb2_grpc.RLMServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> "AsyncRLMClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _deadline(self, timeout: Any) -> Optional[float]:
        return self.timeout if timeout is DEFAULT else _core.seconds(timeout)

    async def _request_spec(self, prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline):
        planned = _core.plan_contexts(
            _core.collect_contexts(context, contexts, context_file), self.max_inline_bytes
        )
        ids = {}
        for index, upload in planned.uploads():
            ids[index] = (await self.upload_context(upload.source, timeout=deadline.remaining())).context_id
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
    async def complete(
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
        """See :meth:`rlm_client.RLMClient.complete`."""
        deadline = _core.Deadline(self._deadline(timeout))
        spec = await self._request_spec(prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline)
        response = await self.stub.Complete(
            rlm_service_pb2.CompleteRequest(spec=spec),
            timeout=deadline.remaining(),
            metadata=self._metadata,
        )
        completion = Completion.from_proto(response.result)
        if self.raise_on_partial if raise_on_partial is None else raise_on_partial:
            completion.raise_for_partial()
        return completion

    async def stream_complete(
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
    ) -> AsyncIterator[Event]:
        """See :meth:`rlm_client.RLMClient.stream_complete` (an async iterator)."""
        raise_partial = self.raise_on_partial if raise_on_partial is None else raise_on_partial
        try:
            deadline = _core.Deadline(self._deadline(timeout))
            spec = await self._request_spec(prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline)
            call = self.stub.StreamComplete(
                rlm_service_pb2.StreamCompleteRequest(spec=spec),
                timeout=deadline.remaining(),
                metadata=self._metadata,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        async with contextlib.aclosing(_events(call, raise_partial)) as events:
            async for event in events:
                yield event

    @_mapped
    async def submit(
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
        """See :meth:`rlm_client.RLMClient.submit`."""
        deadline = _core.Deadline(self._deadline(timeout))
        spec = await self._request_spec(prompt, context, contexts, context_file, model, sub_model, sandbox, metadata, limits, deadline)
        response = await self.stub.SubmitCompletion(
            jobs_pb2.SubmitCompletionRequest(spec=spec, idempotency_key=idempotency_key),
            timeout=deadline.remaining(),
            metadata=self._metadata,
        )
        return Submission(completion_id=response.completion_id, duplicate=response.duplicate)

    @_mapped
    async def get_completion(self, completion_id: str, *, timeout: Any = DEFAULT) -> CompletionStatus:
        """See :meth:`rlm_client.RLMClient.get_completion`."""
        response = await self.stub.GetCompletion(
            jobs_pb2.GetCompletionRequest(completion_id=completion_id),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return CompletionStatus.from_proto(response)

    async def watch(
        self,
        completion_id: str,
        *,
        from_event_index: int = 0,
        timeout: Any = DEFAULT,
        raise_on_partial: Optional[bool] = None,
    ) -> AsyncIterator[Event]:
        """See :meth:`rlm_client.RLMClient.watch` (an async iterator)."""
        raise_partial = self.raise_on_partial if raise_on_partial is None else raise_on_partial
        call = self.stub.WatchCompletion(
            jobs_pb2.WatchCompletionRequest(completion_id=completion_id, from_event_index=from_event_index),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        async with contextlib.aclosing(_events(call, raise_partial)) as events:
            async for event in events:
                yield event

    async def wait(
        self, completion_id: str, *, timeout: Any = DEFAULT, raise_on_partial: Optional[bool] = None
    ) -> Completion:
        """See :meth:`rlm_client.RLMClient.wait`."""
        raise_partial = self.raise_on_partial if raise_on_partial is None else raise_on_partial
        # Closed on return: the watch call ends now, not when collected.
        async with contextlib.aclosing(self.watch(completion_id, timeout=timeout, raise_on_partial=False)) as events:
            async for event in events:
                if isinstance(event, ResultEvent):
                    return event.completion.raise_for_partial() if raise_partial else event.completion
        raise RLMError(f"the event stream of {completion_id} ended without a result")

    @_mapped
    async def cancel(self, completion_id: str, reason: str = "", *, timeout: Any = DEFAULT) -> bool:
        """Cancels a running or queued completion; True when it had not ended."""
        response = await self.stub.CancelCompletion(
            rlm_service_pb2.CancelCompletionRequest(completion_id=completion_id, reason=reason),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return response.was_running

    @_mapped
    async def upload_context(
        self,
        source: Union[bytes, str, "os.PathLike[str]", IO[bytes]],
        *,
        timeout: Any = DEFAULT,
    ) -> UploadedContext:
        """See :meth:`rlm_client.RLMClient.upload_context`. Files are read in a
        worker thread, one chunk at a time."""
        stream = _core.UploadStream(source, self.chunk_size)

        async def messages():
            iterator = iter(stream)
            while True:
                message = await asyncio.to_thread(next, iterator, None)
                if message is None:
                    return
                yield message

        try:
            response = await self.stub.UploadContext(
                messages(), timeout=self._deadline(timeout), metadata=self._metadata
            )
        except (grpc.RpcError, asyncio.CancelledError):
            # grpc.aio cancels the call when the message iterator raises.
            stream.raise_local_error()
            raise
        return stream.finish(response)

    @_mapped
    async def get_trajectory(self, trajectory_id: str, *, timeout: Any = DEFAULT) -> Trajectory:
        response = await self.stub.GetTrajectory(
            rlm_service_pb2.GetTrajectoryRequest(trajectory_id=trajectory_id),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return Trajectory.from_proto(response.trajectory)

    @_mapped
    async def list_trajectories(
        self,
        *,
        status: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: Any = DEFAULT,
    ) -> TrajectoryPage:
        response = await self.stub.ListTrajectories(
            _list_request(status, metadata, page_size, page_token),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return TrajectoryPage.from_proto(response)

    async def iter_trajectories(
        self,
        *,
        status: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        page_size: int = 0,
        timeout: Any = DEFAULT,
    ) -> AsyncIterator[TrajectorySummary]:
        token = ""
        while True:
            page = await self.list_trajectories(
                status=status, metadata=metadata, page_size=page_size, page_token=token, timeout=timeout
            )
            for summary in page:
                yield summary
            token = page.next_page_token
            if not token:
                return

    @_mapped
    async def health(self, service: str = "", *, timeout: Any = DEFAULT) -> str:
        response = await self._health.Check(
            health_pb2.HealthCheckRequest(service=service),
            timeout=self._deadline(timeout),
            metadata=self._metadata,
        )
        return _core.HEALTH_STATUS_NAMES.get(response.status, f"UNKNOWN_{response.status}")


async def _events(call, raise_partial: bool) -> AsyncIterator[Event]:
    """The typed events of a StreamComplete or WatchCompletion call; leaving
    early cancels the call."""
    try:
        try:
            async for response in call:
                event = event_from_proto(response.event)
                yield event
                if raise_partial and isinstance(event, ResultEvent):
                    event.completion.raise_for_partial()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
    finally:
        call.cancel()
