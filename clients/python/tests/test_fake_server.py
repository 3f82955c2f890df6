"""What the clients put on the wire, checked against an in-process fake
RLMService built from the generated servicer base class: the authorization
metadata, the deadline, upload chunk sizes and error statuses.
(The real server ignores `authorization`, so this is where it is checked.)"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from concurrent import futures

import grpc
import pytest

import rlm_client
from rlm_client import AsyncRLMClient, RLMClient
from rlm_client.pb.rlm.v1 import completion_pb2, events_pb2, jobs_pb2, rlm_service_pb2, rlm_service_pb2_grpc


class FakeService(rlm_service_pb2_grpc.RLMServiceServicer):
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # (method, metadata dict, time_remaining, request)
        self.upload_chunks = []
        self.upload_delay = 0.0

    def _record(self, method, context, request=None):
        with self.lock:
            self.calls.append((method, dict(context.invocation_metadata()), context.time_remaining(), request))

    def _result(self, spec):
        if spec.prompt.startswith("abort:"):
            return None
        partial = spec.prompt == "partial"
        return completion_pb2.CompletionResult(
            completion_id="c-1",
            trajectory_id="t-1",
            answer="part" if partial else "fake answer",
            termination_reason=completion_pb2.TERMINATION_REASON_TOKEN_BUDGET if partial else completion_pb2.TERMINATION_REASON_FINAL,
            partial=partial,
            detail="token budget reached" if partial else "",
        )

    def Complete(self, request, context):
        self._record("Complete", context, request)
        if request.spec.prompt.startswith("abort:"):
            _, code, message = request.spec.prompt.split(":", 2)
            context.abort(getattr(grpc.StatusCode, code), message)
        return rlm_service_pb2.CompleteResponse(result=self._result(request.spec))

    def StreamComplete(self, request, context):
        self._record("StreamComplete", context, request)
        yield rlm_service_pb2.StreamCompleteResponse(
            event=events_pb2.CompletionEvent(
                sequence=1, completion_id="c-1", node_id="0",
                iteration_started=events_pb2.IterationStartedEvent(iteration=1),
            )
        )
        yield rlm_service_pb2.StreamCompleteResponse(
            event=events_pb2.CompletionEvent(sequence=2, completion_id="c-1", node_id="0", result=self._result(request.spec))
        )

    def SubmitCompletion(self, request, context):
        self._record("SubmitCompletion", context, request)
        return jobs_pb2.SubmitCompletionResponse(completion_id="c-9", duplicate=bool(request.idempotency_key))

    def GetCompletion(self, request, context):
        self._record("GetCompletion", context, request)
        return jobs_pb2.GetCompletionResponse(
            completion_id=request.completion_id,
            state=jobs_pb2.COMPLETION_STATE_FINISHED,
            result=self._result(completion_pb2.CompletionSpec(prompt="done")),
            event_count=2,
        )

    def WatchCompletion(self, request, context):
        self._record("WatchCompletion", context, request)
        spec = completion_pb2.CompletionSpec(prompt="partial" if request.completion_id == "partial" else "done")
        events = [
            events_pb2.CompletionEvent(
                sequence=1, completion_id=request.completion_id, node_id="0",
                iteration_started=events_pb2.IterationStartedEvent(iteration=1),
            ),
            events_pb2.CompletionEvent(sequence=2, completion_id=request.completion_id, node_id="0", result=self._result(spec)),
        ]
        for event in events[request.from_event_index:]:
            yield jobs_pb2.WatchCompletionResponse(event=event)

    def UploadContext(self, request_iterator, context):
        self._record("UploadContext", context)
        if self.upload_delay:
            time.sleep(self.upload_delay)
        digest = hashlib.sha256()
        size = 0
        for index, message in enumerate(request_iterator):
            with self.lock:
                self.upload_chunks.append((index, len(message.chunk), message.total_size_bytes, message.expected_sha256))
            digest.update(message.chunk)
            size += len(message.chunk)
        return rlm_service_pb2.UploadContextResponse(context_id="sha256:" + digest.hexdigest(), size_bytes=size)


@pytest.fixture
def fake():
    service = FakeService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", 16 << 20)])
    rlm_service_pb2_grpc.add_RLMServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    service.target = f"127.0.0.1:{port}"
    yield service
    server.stop(grace=None)


def test_api_key_is_sent_as_bearer_metadata_and_timeout_as_deadline(fake):
    with RLMClient(fake.target, api_key="s3cret", timeout=42, grpc_metadata=[("x-team", "search")]) as client:
        assert client.complete("hello").answer == "fake answer"
        client.complete("hello", timeout=7)
        list(client.stream_complete("hello"))
        client.upload_context(b"abc")
    methods = [c[0] for c in fake.calls]
    assert methods == ["Complete", "Complete", "StreamComplete", "UploadContext"]
    for _, metadata, _, _ in fake.calls:
        assert metadata["authorization"] == "Bearer s3cret"
        assert metadata["x-team"] == "search"
    remaining = [c[2] for c in fake.calls]
    assert 35 < remaining[0] <= 42.5
    assert 0 < remaining[1] <= 7.5
    assert 35 < remaining[2] <= 42.5


def test_no_api_key_no_authorization_and_no_timeout_no_deadline(fake):
    with RLMClient(fake.target) as client:
        client.complete("hello")
    _, metadata, remaining, _ = fake.calls[0]
    assert "authorization" not in metadata
    assert remaining is None or remaining > 10**6


def test_large_inline_context_goes_up_in_1mib_chunks_and_by_id(fake):
    big = "z" * (3 * (1 << 20) + 5)
    with RLMClient(fake.target) as client:
        client.complete("hello", context=big, model="scripted:/x")
    methods = [c[0] for c in fake.calls]
    assert methods == ["UploadContext", "Complete"]
    sizes = [size for _, size, _, _ in fake.upload_chunks]
    assert max(sizes) == 1 << 20 and sum(sizes) == len(big)
    assert fake.upload_chunks[0][2] == len(big)
    assert fake.upload_chunks[0][3] == hashlib.sha256(big.encode()).hexdigest()
    spec = fake.calls[1][3].spec
    assert [c.WhichOneof("source") for c in spec.contexts] == ["context_id"]
    assert spec.contexts[0].context_id == "sha256:" + hashlib.sha256(big.encode()).hexdigest()
    assert spec.root_model == "scripted:/x"
    assert fake.calls[1][3].ByteSize() < 4096


def test_server_status_becomes_typed_error_with_server_message(fake):
    with RLMClient(fake.target) as client:
        with pytest.raises(rlm_client.ResourceExhausted) as info:
            client.complete("abort:RESOURCE_EXHAUSTED:server at capacity: 256 completions running")
        assert info.value.message == "server at capacity: 256 completions running"
        with pytest.raises(rlm_client.Unauthenticated):
            client.complete("abort:UNAUTHENTICATED:bad key")
        with pytest.raises(rlm_client.ServerError):
            client.complete("abort:INTERNAL:boom")


def test_raise_on_partial_per_call_and_per_client(fake):
    with RLMClient(fake.target) as client:
        result = client.complete("partial")
        assert result.partial and result.termination_reason.name == "TOKEN_BUDGET"
        with pytest.raises(rlm_client.BudgetExceeded) as info:
            client.complete("partial", raise_on_partial=True)
        assert info.value.completion.answer == "part"
        events = []
        with pytest.raises(rlm_client.BudgetExceeded):
            for event in client.stream_complete("partial", raise_on_partial=True):
                events.append(event)
        assert isinstance(events[-1], rlm_client.ResultEvent)  # yielded before raising
    with RLMClient(fake.target, raise_on_partial=True) as client:
        with pytest.raises(rlm_client.BudgetExceeded):
            client.complete("partial")
        assert client.complete("partial", raise_on_partial=False).partial


def test_async_client_sends_the_same_metadata(fake):
    async def run():
        async with AsyncRLMClient(fake.target, api_key="k2", timeout=30) as client:
            assert (await client.complete("hello")).answer == "fake answer"
            events = [e async for e in client.stream_complete("hello")]
            assert [e.sequence for e in events] == [1, 2]
            uploaded = await client.upload_context(b"q" * ((1 << 20) + 1))
            assert uploaded.size_bytes == (1 << 20) + 1
            with pytest.raises(rlm_client.NotFound):
                await client.complete("abort:NOT_FOUND:no such thing")

    asyncio.run(run())
    assert all(c[1]["authorization"] == "Bearer k2" for c in fake.calls)
    assert all(0 < c[2] <= 30.5 for c in fake.calls), [c[2] for c in fake.calls]
    assert [size for _, size, _, _ in fake.upload_chunks] == [1 << 20, 1]


def test_one_timeout_bounds_the_uploads_and_the_completion(fake):
    fake.upload_delay = 0.3
    big = "u" * ((1 << 20) + 1)
    with RLMClient(fake.target, timeout=5) as client:
        client.complete("hello", contexts=[big, big + "v"])
    assert [c[0] for c in fake.calls] == ["UploadContext", "UploadContext", "Complete"]
    remaining = [c[2] for c in fake.calls]
    # Each call gets what is left of the one 5 s deadline.
    assert remaining[1] <= 4.75 and remaining[2] <= 4.45, remaining


def test_an_unreadable_upload_source_raises_its_own_error(fake, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    with RLMClient(fake.target) as client:
        with open(text_file) as handle, pytest.raises(TypeError, match="binary file object"):
            client.upload_context(handle)
        with pytest.raises(IsADirectoryError):
            client.complete("hello", context_file=tmp_path)

    class Broken:
        def read(self, n):
            raise OSError(5, "disk says no")

    async def run():
        async with AsyncRLMClient(fake.target) as client:
            with pytest.raises(OSError, match="disk says no"):
                await client.upload_context(Broken())

    asyncio.run(run())


def test_async_client_refuses_interceptors_it_cannot_apply(fake):
    async def run():
        channel = grpc.aio.insecure_channel(fake.target)
        try:
            with pytest.raises(ValueError, match="interceptors"):
                AsyncRLMClient(fake.target, channel=channel, interceptors=[object()])
        finally:
            await channel.close()

    asyncio.run(run())


def test_queued_completions_carry_metadata_and_map_their_messages(fake):
    with RLMClient(fake.target, api_key="q", timeout=20) as client:
        submitted = client.submit("hello", idempotency_key="k-1", max_iterations=3)
        assert submitted == rlm_client.Submission(completion_id="c-9", duplicate=True)
        status = client.get_completion("c-9")
        assert status.state == "FINISHED" and status.done and status.event_count == 2
        assert status.result.answer == "fake answer"
        assert [e.sequence for e in client.watch("c-9", from_event_index=1)] == [2]
        assert client.wait("c-9").answer == "fake answer"
        with pytest.raises(rlm_client.BudgetExceeded):
            client.wait("partial", raise_on_partial=True)
    methods = [c[0] for c in fake.calls]
    assert methods == ["SubmitCompletion", "GetCompletion", "WatchCompletion", "WatchCompletion", "WatchCompletion"]
    assert all(c[1]["authorization"] == "Bearer q" and 0 < c[2] <= 20.5 for c in fake.calls)
    submit = fake.calls[0][3]
    assert submit.idempotency_key == "k-1" and submit.spec.limits.max_iterations == 3
    assert fake.calls[2][3].from_event_index == 1

    async def run():
        async with AsyncRLMClient(fake.target, api_key="q") as client:
            assert (await client.submit("hello")).duplicate is False
            assert (await client.get_completion("c-9")).state == "FINISHED"
            assert [e.sequence async for e in client.watch("c-9")] == [1, 2]
            assert (await client.wait("c-9")).answer == "fake answer"

    asyncio.run(run())
