"""The sync client against the real orchestrator and sandbox agent (see stack.py),
with the offline scripted model: each test writes its model's turns."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import rlm_client
from rlm_client import (
    CodeExecuted,
    Context,
    IterationStarted,
    ModelCallFinished,
    ResultEvent,
    RLMClient,
    SubcallFinished,
    SubcallStarted,
    TerminationReason,
)
from rlm_client.pb.rlm.v1 import rlm_service_pb2

REPL_LEN = "```repl\nprint(len(context))\n```"


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


# -- complete -----------------------------------------------------------------


def test_complete_returns_final_answer_usage_and_ids(stack, client):
    model = stack.turns(REPL_LEN, "FINAL(42)")
    result = client.complete("How long is the context?", context="hello world", model=model)
    assert result.answer == "42" and str(result) == "42"
    assert result.partial is False
    assert result.termination_reason is TerminationReason.FINAL
    assert result.termination_reason.name == "FINAL"
    assert result.detail == ""
    assert result.completion_id and result.trajectory_id
    assert result.iterations == 2 and result.total_iterations == 2
    assert result.usage.calls == 2 and result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert result.usage.cost_known is False  # the scripted model has no price
    assert list(result.model_usage) == [model]
    assert result.started_at is not None and result.duration is not None


def test_complete_reads_the_context_in_the_repl(stack, client):
    model = stack.turns(repl("FINAL(str(len(context)) + ':' + context[:5])"))
    assert client.complete("len", context="héllo wörld", model=model).answer == "11:héllo"


def test_json_context_and_several_contexts(stack, client):
    model = stack.turns(repl("FINAL(type(context).__name__ + str(context['a'][2]))"))
    assert client.complete("json", context={"a": [1, 2, 3]}, model=model).answer == "dict3"
    model = stack.turns(
        repl("FINAL(','.join([str(len(context_0)), str(len(context_1)), type(context_2).__name__, str(context == context_0)]))")
    )
    answer = client.complete("several", contexts=["a", b"bb", [1, 2]], model=model).answer
    assert answer == "1,2,list,True"


def test_no_context_binds_none(stack, client):
    model = stack.turns(repl("FINAL(repr(context))"))
    assert client.complete("none", model=model).answer == "None"


def test_metadata_labels_and_list_trajectories(stack, client):
    model = stack.turns("FINAL(labelled)")
    label = f"run-{time.monotonic_ns()}"
    result = client.complete("labels", model=model, metadata={"suite": "pyclient", "run": label})
    page = client.list_trajectories(metadata={"run": label})
    assert [t.trajectory_id for t in page] == [result.trajectory_id]
    summary = page.trajectories[0]
    assert summary.status == "FINISHED" and summary.termination_reason is TerminationReason.FINAL
    assert summary.metadata == {"suite": "pyclient", "run": label}
    assert summary.prompt_preview == "labels" and summary.root_model == model
    finished = client.list_trajectories(status="FINISHED", page_size=1)
    assert len(finished) == 1 and finished.next_page_token
    # iter_trajectories follows the page tokens.
    seen = [t.trajectory_id for t in client.iter_trajectories(page_size=2)]
    assert len(seen) == len(set(seen)) and result.trajectory_id in seen and len(seen) >= 3


def test_get_trajectory_matches_the_stream(stack, client):
    model = stack.turns(REPL_LEN, "FINAL(done)")
    events = list(client.stream_complete("trajectory", context="abc", model=model))
    result = events[-1].completion
    trajectory = client.get_trajectory(result.trajectory_id)
    assert trajectory.status == "FINISHED"
    assert trajectory.result == result
    assert [e.sequence for e in trajectory.events] == [e.sequence for e in events]
    assert [type(e) for e in trajectory.events] == [type(e) for e in events]
    assert trajectory.spec.prompt == "trajectory"


def test_complete_result_equals_the_recorded_result(stack, client):
    result = client.complete("same result", context="abc", model=stack.turns(REPL_LEN, "FINAL(1)"))
    trajectory = client.get_trajectory(result.trajectory_id)
    assert trajectory.result == result
    assert trajectory.events[-1].completion == result
    assert trajectory.summary.started_at == result.started_at


# -- stream_complete ----------------------------------------------------------


def test_stream_events_in_order_ending_with_the_result(stack, client):
    model = stack.turns(REPL_LEN, "FINAL(42)")
    events = list(client.stream_complete("stream", context="hello", model=model))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len({e.completion_id for e in events}) == 1
    assert all(e.node_id == "0" and e.depth == 0 for e in events)
    assert isinstance(events[-1], ResultEvent)
    assert not any(isinstance(e, ResultEvent) for e in events[:-1])
    kinds = [type(e) for e in events]
    assert kinds == [IterationStarted, ModelCallFinished, CodeExecuted, IterationStarted, ModelCallFinished, ResultEvent]
    code = events[2]
    assert code.code == "print(len(context))" and code.output.strip() == "5" and code.error == ""
    assert events[1].purpose == "ITERATION" and events[1].model == model and events[1].usage.calls == 1
    result = events[-1].completion
    assert result.answer == "42" and result.completion_id == events[0].completion_id
    timestamps = [e.timestamp for e in events]
    assert timestamps == sorted(timestamps)


def test_stream_subcall_events(stack, client):
    root = stack.turns(repl("r = llm_query('what is the answer?')\nFINAL(r)"))
    sub = stack.turns("sub answer")
    events = list(client.stream_complete("subcalls", model=root, sub_model=sub))
    started = [e for e in events if isinstance(e, SubcallStarted)]
    finished = [e for e in events if isinstance(e, SubcallFinished)]
    assert len(started) == 1 and len(finished) == 1
    assert started[0].subcall_kind == "LLM_QUERY" and started[0].prompts == ("what is the answer?",)
    assert started[0].model == sub
    assert finished[0].outcomes[0].text == "sub answer" and finished[0].outcomes[0].error is None
    llm_calls = [e for e in events if isinstance(e, ModelCallFinished) and e.purpose == "LLM_QUERY"]
    assert len(llm_calls) == 1 and llm_calls[0].subcall_id == started[0].subcall_id
    result = events[-1].completion
    assert result.answer == "sub answer" and result.subcalls == 1
    assert set(result.model_usage) == {root, sub}


def test_leaving_the_stream_cancels_the_completion(stack, client):
    model = stack.turns(repl("import time\ntime.sleep(30)"), "FINAL(too late)")
    label = f"abandon-{time.monotonic_ns()}"
    for event in client.stream_complete("abandon", model=model, metadata={"run": label}):
        assert isinstance(event, IterationStarted)
        break
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        summary = client.list_trajectories(metadata={"run": label}).trajectories[0]
        if summary.status == "FINISHED":
            break
        time.sleep(0.1)
    assert summary.termination_reason is TerminationReason.CANCELLED


def test_cancel_a_running_completion(stack, client):
    model = stack.turns(repl("import time\ntime.sleep(30)"), "FINAL(too late)")
    events = []
    with pytest.raises(rlm_client.CompletionCancelled) as info:
        for event in client.stream_complete("cancel me", model=model, raise_on_partial=True):
            events.append(event)
            if len(events) == 1:
                assert client.cancel(event.completion_id, reason="user pressed stop") is True
    completion = info.value.completion
    assert completion.termination_reason is TerminationReason.CANCELLED and completion.partial
    assert "user pressed stop" in completion.detail
    assert isinstance(events[-1], ResultEvent)
    assert client.cancel(completion.completion_id) is False
    with pytest.raises(rlm_client.NotFound):
        client.cancel("no-such-completion")


# -- limits: results, not errors ----------------------------------------------


def test_limits_give_partial_results_not_errors(stack, client):
    looping = stack.turns(repl("print('still going')"))
    result = client.complete("loop", model=looping, max_iterations=2)
    assert result.partial and result.termination_reason is TerminationReason.MAX_ITERATIONS
    assert result.termination_reason.is_budget and "max_iterations" in result.detail
    assert result.iterations == 2
    result = client.complete("tokens", model=looping, token_budget=10)
    assert result.partial and result.termination_reason is TerminationReason.TOKEN_BUDGET
    slow = stack.turns(repl("import time\ntime.sleep(30)"))
    started = time.monotonic()
    result = client.complete("wall clock", model=slow, completion_timeout=1.0)
    assert result.termination_reason is TerminationReason.TIMEOUT and time.monotonic() - started < 10


def test_raise_on_partial_raises_budget_exceeded_with_the_partial_result(stack, client):
    looping = stack.turns(repl("print('still going')"))
    with pytest.raises(rlm_client.BudgetExceeded) as info:
        client.complete("loop", model=looping, max_iterations=1, raise_on_partial=True)
    assert info.value.completion.termination_reason is TerminationReason.MAX_ITERATIONS
    assert info.value.completion.answer  # the best partial answer (last reply)
    assert info.value.code is None


# -- contexts: uploads ----------------------------------------------------------


class ChunkRecorder(grpc.StreamUnaryClientInterceptor, grpc.UnaryUnaryClientInterceptor):
    """Records the size of every UploadContext message and of every unary request."""

    def __init__(self):
        self.uploads = []
        self.unary = []

    def intercept_stream_unary(self, continuation, details, request_iterator):
        sizes = []
        self.uploads.append(sizes)

        def recording():
            for message in request_iterator:
                sizes.append(message.ByteSize())
                yield message

        return continuation(details, recording())

    def intercept_unary_unary(self, continuation, details, request):
        self.unary.append((details.method, request.ByteSize()))
        return continuation(details, request)


def test_submit_then_wait_get_and_watch_a_queued_completion(stack, client):
    model = stack.turns(REPL_LEN, "FINAL(queued)")
    key = f"key-{time.monotonic_ns()}"
    submitted = client.submit("How long is the context?", context="hello", model=model, idempotency_key=key)
    assert submitted.completion_id and submitted.duplicate is False
    again = client.submit("anything", model=model, idempotency_key=key)
    assert again == rlm_client.Submission(completion_id=submitted.completion_id, duplicate=True)

    result = client.wait(submitted.completion_id)
    assert result.answer == "queued" and result.completion_id == submitted.completion_id
    status = client.get_completion(submitted.completion_id)
    assert (status.state, status.done, status.queue_position) == ("FINISHED", True, 0)
    assert status.result.answer == "queued" and status.usage.calls == 2
    assert status.submitted_at is not None and status.event_count >= 2
    # Resuming at the last index replays only the result.
    events = list(client.watch(submitted.completion_id, from_event_index=status.event_count - 1))
    assert len(events) == 1 and isinstance(events[0], ResultEvent)
    assert events[0].completion.answer == "queued"
    with pytest.raises(rlm_client.NotFound):
        client.get_completion("no-such-completion")


def test_upload_multi_megabyte_context_then_read_it(stack):
    data = (b"0123456789abcdef" * (6 << 16)) + "é".encode()  # 6 MiB + 2 bytes
    recorder = ChunkRecorder()
    with RLMClient(stack.grpc_address, timeout=120, interceptors=[recorder]) as client:
        uploaded = client.upload_context(data)
        assert uploaded.context_id == "sha256:" + hashlib.sha256(data).hexdigest()
        assert uploaded.size_bytes == len(data)
        assert len(recorder.uploads[0]) == 7 and max(recorder.uploads[0]) <= (1 << 20) + 128
        # Content-addressed: the same bytes give the same id (the server may
        # answer before the last chunk when it already holds the content).
        assert client.upload_context(data) == uploaded
        model = stack.turns(repl("FINAL(len(context))"))
        assert client.complete("len", context=uploaded, model=model).answer == str((6 << 20) + 1)


def test_large_inline_context_is_uploaded_automatically(stack):
    text = "ü" * (2 << 20)  # 4 MiB of UTF-8
    recorder = ChunkRecorder()
    with RLMClient(stack.grpc_address, timeout=120, interceptors=[recorder]) as client:
        model = stack.turns(repl("FINAL(len(context))"))
        assert client.complete("len", context=text, model=model).answer == str(2 << 20)
    assert len(recorder.uploads) == 1 and sum(1 for _ in recorder.uploads[0]) == 4
    method, size = recorder.unary[-1]
    assert method.endswith("/Complete") and size < 4096


def test_context_file_and_json_file(stack, client, tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("line\n" * 500_000)  # 2.4 MB
    model = stack.turns(repl("FINAL(context.count('line'))"))
    assert client.complete("count", context_file=path, model=model).answer == "500000"
    json_path = tmp_path / "docs.json"
    json_path.write_text(json.dumps([{"id": i} for i in range(1000)]))
    model = stack.turns(repl("FINAL(sum(d['id'] for d in context))"))
    answer = client.complete("sum", context=Context.from_file(json_path, format="json"), model=model).answer
    assert answer == str(sum(range(1000)))
    uploaded = client.upload_context(str(json_path))
    assert client.complete("sum", context=uploaded.as_json(), model=model).answer == str(sum(range(1000)))


# -- RPC errors -------------------------------------------------------------------


def test_empty_prompt_is_invalid_request_naming_spec_prompt(client):
    with pytest.raises(rlm_client.InvalidRequest) as info:
        client.complete("")
    assert "spec.prompt" in info.value.message
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(info.value, rlm_client.RLMError)
    with pytest.raises(rlm_client.InvalidRequest, match="spec.prompt"):
        list(client.stream_complete("   "))


def test_out_of_range_limit_is_invalid_request_naming_the_limit(client):
    with pytest.raises(rlm_client.InvalidRequest, match="max_iterations"):
        client.complete("x", max_iterations=5000)
    with pytest.raises(TypeError, match="max_iteration"):
        client.complete("x", max_iteration=3)  # a typo is caught before sending


def test_malformed_context_id_is_invalid_request(client):
    with pytest.raises(rlm_client.InvalidRequest, match="context_id"):
        client.complete("x", context=Context.from_id("sha256:zz"))


def test_unknown_context_id_is_not_found(client):
    unknown = "sha256:" + "0" * 64
    with pytest.raises(rlm_client.NotFound) as info:
        client.complete("x", context=Context.from_id(unknown))
    assert unknown in info.value.message


def test_unknown_trajectory_is_not_found(client):
    with pytest.raises(rlm_client.NotFound, match="trajectory_id"):
        client.get_trajectory("no-such-trajectory")


def test_invalid_page_token_is_invalid_request(client):
    with pytest.raises(rlm_client.InvalidRequest, match="page_token"):
        client.list_trajectories(page_token="garbage")


def test_network_access_is_permission_denied(client):
    with pytest.raises(rlm_client.PermissionDenied, match="network"):
        client.complete("x", sandbox={"network": True})
    with pytest.raises(rlm_client.PermissionDenied, match="allowed_paths"):
        client.complete("x", sandbox={"allowed_paths": ["/etc"]})


def test_closed_port_is_unavailable():
    with RLMClient(f"127.0.0.1:{free_closed_port()}", timeout=10) as client:
        with pytest.raises(rlm_client.Unavailable):
            client.complete("x")
        with pytest.raises(rlm_client.Unavailable):
            client.health()
        with pytest.raises(rlm_client.Unavailable):
            client.upload_context(b"x")
        with pytest.raises(rlm_client.Unavailable):
            list(client.stream_complete("x"))


def test_client_deadline_raises_deadline_exceeded(stack, client):
    slow = stack.turns(repl("import time\ntime.sleep(30)"))
    started = time.monotonic()
    with pytest.raises(rlm_client.DeadlineExceeded):
        client.complete("slow", model=slow, timeout=1.0)
    with pytest.raises(TimeoutError):
        list(client.stream_complete("slow", model=slow, timeout=1.0))
    assert time.monotonic() - started < 10


def test_api_key_is_accepted(stack):
    with RLMClient(stack.grpc_address, api_key="any-key", timeout=60) as client:
        assert client.complete("k", model=stack.turns("FINAL(ok)")).answer == "ok"


def test_concurrent_completions_from_threads(stack, client):
    model = stack.turns(repl("FINAL(context * 2)"))
    answers = {}

    def run(i):
        answers[i] = client.complete("threads", context=str(i), model=model).answer

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert answers == {i: str(i) * 2 for i in range(4)}


# -- health and reflection ------------------------------------------------------


def test_health_via_client_and_grpcio_health_checking(stack, client):
    assert client.health() == "SERVING"
    assert client.health("rlm.v1.RLMService") == "SERVING"
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service="rlm.v1.RLMService"), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_unix_socket_targets_work(stack):
    # A unix: target served by hyper (the agent's socket here): grpc-core's
    # default :authority would be refused with RST_STREAM.
    with rlm_client.RLMClient(stack.agent_address, timeout=10) as client:
        assert client.health() == "SERVING"


def test_reflection_lists_the_service_and_matches_our_stubs(stack):
    with grpc.insecure_channel(stack.grpc_address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "rlm.v1.RLMService" in services
        assert "grpc.health.v1.Health" in services
        # The server's contract is the one these stubs were generated from.
        pool = descriptor_pool.DescriptorPool(database)
        served = pool.FindServiceByName("rlm.v1.RLMService")
        ours = rlm_service_pb2.DESCRIPTOR.services_by_name["RLMService"]
        assert _methods(served) == _methods(ours)
        for message in (served.methods_by_name["Complete"].input_type, served.methods_by_name["StreamComplete"].output_type):
            _assert_same_message(message, rlm_service_pb2.DESCRIPTOR.pool.FindMessageTypeByName(message.full_name))


def _methods(service):
    return sorted(
        (m.name, m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)
        for m in service.methods
    )


def _assert_same_message(served, ours, seen=None):
    seen = set() if seen is None else seen
    if served.full_name in seen:
        return
    seen.add(served.full_name)
    fields = lambda d: sorted((f.number, f.name, f.type, f.is_repeated, f.has_presence) for f in d.fields)  # noqa: E731
    assert fields(served) == fields(ours), served.full_name
    for field in served.fields:
        if field.message_type is not None and field.message_type.full_name.startswith("rlm."):
            _assert_same_message(field.message_type, ours.fields_by_name[field.name].message_type, seen)


def free_closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
