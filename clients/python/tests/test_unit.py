"""Client-side logic that needs no server: request building, chunking, types."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json

import grpc
import pytest

import rlm_client
from rlm_client import _core
from rlm_client.errors import from_rpc_error
from rlm_client.pb.rlm.v1 import completion_pb2, context_pb2, events_pb2, rlm_service_pb2
from rlm_client.types import Completion, TerminationReason, event_from_proto


def test_upload_stream_chunks_bytes_at_most_1mib_and_declares_size_and_hash():
    data = bytes(range(256)) * ((5 << 20) // 256) + b"tail"
    stream = _core.UploadStream(data)
    messages = list(stream)
    assert [len(m.chunk) for m in messages[:-1]] == [1 << 20] * 5
    assert len(messages[-1].chunk) == 4
    assert b"".join(m.chunk for m in messages) == data
    assert messages[0].total_size_bytes == len(data)
    assert messages[0].expected_sha256 == hashlib.sha256(data).hexdigest()
    assert all(m.total_size_bytes == 0 and m.expected_sha256 == "" for m in messages[1:])
    # The id the server must answer with is checked.
    ok = rlm_service_pb2.UploadContextResponse(
        context_id="sha256:" + hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )
    assert stream.finish(ok).context_id == ok.context_id
    with pytest.raises(rlm_client.RLMError, match="integrity"):
        stream.finish(rlm_service_pb2.UploadContextResponse(context_id="sha256:" + "0" * 64, size_bytes=len(data)))


def test_upload_stream_from_file_and_file_object(tmp_path):
    path = tmp_path / "ctx.txt"
    path.write_bytes(b"a" * ((2 << 20) + 7))
    messages = list(_core.UploadStream(path))
    assert [len(m.chunk) for m in messages] == [1 << 20, 1 << 20, 7]
    assert messages[0].total_size_bytes == (2 << 20) + 7
    assert messages[0].expected_sha256 == ""  # a file is hashed while it streams
    buffered = list(_core.UploadStream(io.BytesIO(b"xyz"), chunk_size=2))
    assert [m.chunk for m in buffered] == [b"xy", b"z"]
    with pytest.raises(TypeError, match="binary"):
        list(_core.UploadStream(io.StringIO("text")))


def test_empty_upload_sends_one_empty_message():
    messages = list(_core.UploadStream(b""))
    assert len(messages) == 1 and messages[0].chunk == b""
    assert messages[0].expected_sha256 == hashlib.sha256(b"").hexdigest()


def test_plan_contexts_inlines_small_and_uploads_large():
    small = "é" * 10
    big = "x" * ((1 << 20) + 1)
    planned = _core.plan_contexts(
        [
            rlm_client.Context.from_text(small),
            rlm_client.Context.from_text(big),
            rlm_client.Context.from_bytes(b"\xff\xfe not utf-8"),
            rlm_client.Context.from_json({"k": [1, 2]}),
            rlm_client.Context.from_id("sha256:" + "a" * 64, format="json"),
            rlm_client.Context.from_file("/some/file"),
        ]
    )
    kinds = ["upload" if isinstance(i, _core.Upload) else i.WhichOneof("source") for i in planned.items]
    assert kinds == ["text", "upload", "upload", "text", "context_id", "upload"]
    assert planned.items[0].text == small
    assert planned.items[3].format == context_pb2.CONTEXT_FORMAT_JSON
    assert json.loads(planned.items[3].text) == {"k": [1, 2]}
    assert planned.items[1].source == big.encode()
    resolved = planned.resolve({1: "sha256:" + "1" * 64, 2: "sha256:" + "2" * 64, 5: "sha256:" + "5" * 64})
    assert [c.WhichOneof("source") for c in resolved] == ["text", "context_id", "context_id", "text", "context_id", "context_id"]


def test_plan_contexts_caps_the_inline_total():
    # 12 contexts of 900 KiB each: inline one by one, but not all together.
    items = [rlm_client.Context.from_text(chr(97 + i) * (900 << 10)) for i in range(12)]
    planned = _core.plan_contexts(items)
    inline = [i for i in planned.items if not isinstance(i, _core.Upload)]
    assert sum(len(i.text.encode()) for i in inline) <= _core.MAX_INLINE_TOTAL_BYTES
    assert len(planned.uploads()) >= 3


def test_collect_contexts_forms():
    assert _core.collect_contexts(None, None, None) == []
    assert _core.collect_contexts("text", None, None)[0].kind == "text"
    assert _core.collect_contexts([1, 2], None, None)[0].format == context_pb2.CONTEXT_FORMAT_JSON
    assert len(_core.collect_contexts(None, ["a", b"b", {"c": 1}], None)) == 3
    uploaded = rlm_client.UploadedContext("sha256:" + "b" * 64, 3)
    assert _core.collect_contexts(uploaded, None, None)[0].kind == "id"
    assert uploaded.as_json().format == context_pb2.CONTEXT_FORMAT_JSON
    with pytest.raises(TypeError, match="only one"):
        _core.collect_contexts("a", ["b"], None)
    with pytest.raises(TypeError):
        _core.collect_contexts(object(), None, None)


def test_build_limits_names_durations_and_unknowns():
    limits = _core.build_limits(
        dict(max_depth=0, max_iterations=3, token_budget=10, completion_timeout=1.5,
             cell_timeout=dt.timedelta(seconds=2), max_subcalls=0)
    )
    assert limits.HasField("max_depth") and limits.max_depth == 0
    assert limits.HasField("max_subcalls") and limits.max_subcalls == 0
    assert limits.timeout.ToMilliseconds() == 1500 and limits.cell_timeout.seconds == 2
    assert _core.build_limits({}) is None
    with pytest.raises(TypeError, match="max_iteration"):
        _core.build_limits({"max_iteration": 3})
    sandbox = _core.build_sandbox({"memory_bytes": 64 << 20, "allowed_paths": ["/data", ("/rw", True)]})
    assert [(p.host_path, p.read_write) for p in sandbox.allowed_paths] == [("/data", False), ("/rw", True)]


def test_termination_reason_names_and_unknown_values():
    assert TerminationReason(3).name == "TOKEN_BUDGET" and str(TerminationReason(1)) == "FINAL"
    assert TerminationReason(99).name == "UNKNOWN_99" and TerminationReason(99) == 99
    # Same numbering as the proto enum.
    for value in completion_pb2.TerminationReason.values():
        name = completion_pb2.TerminationReason.Name(value)
        assert "TERMINATION_REASON_" + TerminationReason(value).name == name


def _result(reason, partial=True, answer="part"):
    return completion_pb2.CompletionResult(
        completion_id="c1", trajectory_id="t1", answer=answer, termination_reason=reason,
        partial=partial, detail="why",
    )


@pytest.mark.parametrize(
    "reason,error",
    [
        (completion_pb2.TERMINATION_REASON_MAX_ITERATIONS, rlm_client.BudgetExceeded),
        (completion_pb2.TERMINATION_REASON_TOKEN_BUDGET, rlm_client.BudgetExceeded),
        (completion_pb2.TERMINATION_REASON_COST_BUDGET, rlm_client.BudgetExceeded),
        (completion_pb2.TERMINATION_REASON_TIMEOUT, rlm_client.BudgetExceeded),
        (completion_pb2.TERMINATION_REASON_MAX_SUBCALLS, rlm_client.BudgetExceeded),
        (completion_pb2.TERMINATION_REASON_CANCELLED, rlm_client.CompletionCancelled),
        (completion_pb2.TERMINATION_REASON_MODEL_ERROR, rlm_client.CompletionFailed),
        (completion_pb2.TERMINATION_REASON_SANDBOX_ERROR, rlm_client.CompletionFailed),
        (completion_pb2.TERMINATION_REASON_ERROR, rlm_client.CompletionFailed),
    ],
)
def test_raise_for_partial(reason, error):
    completion = Completion.from_proto(_result(reason))
    with pytest.raises(error) as info:
        completion.raise_for_partial()
    assert info.value.completion is completion
    assert isinstance(info.value, rlm_client.IncompleteCompletion)
    assert info.value.code is None and "why" in str(info.value)
    final = Completion.from_proto(_result(completion_pb2.TERMINATION_REASON_FINAL, partial=False, answer="42"))
    assert final.raise_for_partial() is final and str(final) == "42"


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    "code,cls",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, rlm_client.InvalidRequest),
        (grpc.StatusCode.OUT_OF_RANGE, rlm_client.InvalidRequest),
        (grpc.StatusCode.NOT_FOUND, rlm_client.NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, rlm_client.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, rlm_client.Unauthenticated),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, rlm_client.ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, rlm_client.FailedPrecondition),
        (grpc.StatusCode.UNAVAILABLE, rlm_client.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, rlm_client.DeadlineExceeded),
        (grpc.StatusCode.CANCELLED, rlm_client.RequestCancelled),
        (grpc.StatusCode.ABORTED, rlm_client.Aborted),
        (grpc.StatusCode.INTERNAL, rlm_client.ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, rlm_client.ServerError),
    ],
)
def test_error_mapping_keeps_the_message(code, cls):
    error = from_rpc_error(_FakeRpcError(code, "spec.x: server says no"))
    assert type(error) is cls and isinstance(error, rlm_client.RLMError)
    assert error.message == "spec.x: server says no" and error.code == code
    assert str(error) == f"spec.x: server says no ({code.name})"


def test_deadline_exceeded_is_a_timeout_error():
    assert issubclass(rlm_client.DeadlineExceeded, TimeoutError)


def test_event_conversion_covers_every_oneof_case():
    cases = [f.name for f in events_pb2.CompletionEvent.DESCRIPTOR.oneofs_by_name["event"].fields]
    converted = {}
    for name in cases:
        message = events_pb2.CompletionEvent(sequence=1, completion_id="c", node_id="0")
        getattr(message, name).SetInParent()
        converted[name] = type(event_from_proto(message)).__name__
    assert "UnknownEvent" not in converted.values(), converted
    assert converted["result"] == "ResultEvent"


def test_target_normalisation():
    assert _core.normalise_target("tcp://127.0.0.1:1") == "127.0.0.1:1"
    assert _core.normalise_target("http://h:2/") == "h:2"
    assert _core.normalise_target("unix:///run/x.sock") == "unix:///run/x.sock"
    assert _core.call_metadata("k", [("X-Team", "a")]) == (("authorization", "Bearer k"), ("x-team", "a"))
    assert _core.call_metadata(None, None) == ()
