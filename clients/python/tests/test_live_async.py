"""AsyncRLMClient (grpc.aio) against the real services: same surface as RLMClient."""

from __future__ import annotations

import asyncio
import hashlib
import time

import grpc
import pytest

import rlm_client
from rlm_client import AsyncRLMClient, Context, ResultEvent, TerminationReason


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


@pytest.fixture
def address(stack):
    return stack.grpc_address


@pytest.mark.asyncio
async def test_async_unix_socket_targets_work(stack):
    async with AsyncRLMClient(stack.agent_address, timeout=10) as client:
        assert await client.health() == "SERVING"


@pytest.mark.asyncio
async def test_async_complete_and_health(stack, address):
    async with AsyncRLMClient(address, timeout=120) as client:
        assert await client.health() == "SERVING"
        assert await client.health("rlm.v1.RLMService") == "SERVING"
        model = stack.turns("```repl\nprint(len(context))\n```", "FINAL(42)")
        result = await client.complete("async", context="hello", model=model)
        assert result.answer == "42" and not result.partial
        assert result.termination_reason is TerminationReason.FINAL
        trajectory = await client.get_trajectory(result.trajectory_id)
        assert trajectory.result.answer == result.answer and trajectory.status == "FINISHED"
        page = await client.list_trajectories(page_size=1)
        assert len(page) == 1
        seen = [t async for t in client.iter_trajectories(page_size=2)]
        assert result.trajectory_id in [t.trajectory_id for t in seen]


@pytest.mark.asyncio
async def test_async_stream_events_in_order(stack, address):
    async with AsyncRLMClient(address, timeout=120) as client:
        model = stack.turns("```repl\nprint(len(context))\n```", "FINAL(42)")
        events = [e async for e in client.stream_complete("async stream", context="hello", model=model)]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert isinstance(events[-1], ResultEvent) and events[-1].completion.answer == "42"
        assert not any(isinstance(e, ResultEvent) for e in events[:-1])


@pytest.mark.asyncio
async def test_async_submit_watch_and_wait(stack, address):
    async with AsyncRLMClient(address, timeout=120) as client:
        model = stack.turns("```repl\nprint(len(context))\n```", "FINAL(later)")
        submitted = await client.submit("queued", context="hello", model=model)
        events = [e async for e in client.watch(submitted.completion_id)]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert isinstance(events[-1], ResultEvent) and events[-1].completion.answer == "later"
        assert (await client.wait(submitted.completion_id)).answer == "later"
        status = await client.get_completion(submitted.completion_id)
        assert status.state == "FINISHED" and status.event_count == len(events)


@pytest.mark.asyncio
async def test_async_leaving_the_stream_cancels_the_completion(stack, address):
    async with AsyncRLMClient(address, timeout=120) as client:
        model = stack.turns(repl("import time\ntime.sleep(30)"), "FINAL(too late)")
        label = f"abandon-async-{time.monotonic_ns()}"
        stream = client.stream_complete("abandon", model=model, metadata={"run": label})
        async for event in stream:
            break
        await stream.aclose()  # `break` leaves closing an async generator to the caller
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            summary = (await client.list_trajectories(metadata={"run": label})).trajectories[0]
            if summary.status == "FINISHED":
                break
            await asyncio.sleep(0.1)
        assert summary.termination_reason is TerminationReason.CANCELLED


@pytest.mark.asyncio
async def test_async_upload_and_automatic_upload(stack, address, tmp_path):
    data = b"x" * ((3 << 20) + 3)
    path = tmp_path / "ctx.bin"
    path.write_bytes(data)
    async with AsyncRLMClient(address, timeout=120) as client:
        uploaded = await client.upload_context(path)
        assert uploaded.context_id == "sha256:" + hashlib.sha256(data).hexdigest()
        assert uploaded.size_bytes == len(data)
        model = stack.turns(repl("FINAL(len(context))"))
        assert (await client.complete("len", context=uploaded, model=model)).answer == str(len(data))
        big = "y" * (2 << 20)
        assert (await client.complete("len", context=big, model=model)).answer == str(len(big))
        assert (await client.complete("len", context_file=path, model=model)).answer == str(len(data))


@pytest.mark.asyncio
async def test_async_errors(stack, address):
    async with AsyncRLMClient(address, timeout=60) as client:
        with pytest.raises(rlm_client.InvalidRequest) as info:
            await client.complete("")
        assert "spec.prompt" in info.value.message
        with pytest.raises(rlm_client.InvalidRequest, match="spec.prompt"):
            async for _ in client.stream_complete(""):
                pass
        with pytest.raises(rlm_client.NotFound):
            await client.get_trajectory("no-such-trajectory")
        with pytest.raises(rlm_client.NotFound):
            await client.complete("x", context=Context.from_id("sha256:" + "f" * 64))
        with pytest.raises(rlm_client.PermissionDenied):
            await client.complete("x", sandbox={"network": True})
        slow = stack.turns(repl("import time\ntime.sleep(30)"))
        with pytest.raises(rlm_client.DeadlineExceeded):
            await client.complete("slow", model=slow, timeout=1.0)
    async with AsyncRLMClient("127.0.0.1:1", timeout=10) as closed:
        with pytest.raises(rlm_client.Unavailable):
            await closed.complete("x")


@pytest.mark.asyncio
async def test_async_partial_and_cancel(stack, address):
    async with AsyncRLMClient(address, timeout=120) as client:
        looping = stack.turns(repl("print('again')"))
        result = await client.complete("loop", model=looping, max_iterations=2)
        assert result.partial and result.termination_reason is TerminationReason.MAX_ITERATIONS
        with pytest.raises(rlm_client.BudgetExceeded):
            await client.complete("loop", model=looping, max_iterations=1, raise_on_partial=True)
        slow = stack.turns(repl("import time\ntime.sleep(30)"), "FINAL(late)")
        events = []
        started = time.monotonic()
        async for event in client.stream_complete("cancel me", model=slow):
            events.append(event)
            if len(events) == 1:
                assert await client.cancel(event.completion_id, reason="async stop")
        assert events[-1].completion.termination_reason is TerminationReason.CANCELLED
        assert time.monotonic() - started < 20


@pytest.mark.asyncio
async def test_async_concurrent_completions(stack, address):
    async with AsyncRLMClient(address, timeout=120) as client:
        model = stack.turns(repl("FINAL(context + '!')"))
        results = await asyncio.gather(*(client.complete("many", context=str(i), model=model) for i in range(4)))
        assert [r.answer for r in results] == [f"{i}!" for i in range(4)]
