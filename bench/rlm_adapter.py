"""Adapter: rlm-runtime (this repository) for the shared bench's run_peers.py.

    python3 <shared>/bench/run_peers.py --ours-adapter bench/rlm_adapter.py \\
        --ours-python bench/.venv/bin/python --ours-label "rlm-runtime (isolated)" ...

(bench/run.sh does exactly that.) Same contract as the shared
adapters/_common.py: build(args) -> (run_fn, isolation); run_fn performs ONE
top-level call and returns (answer, extra).

Wiring: the real release binaries (target/release/rlm-sandbox-agent and
rlm-orchestrator, or those in $RLM_BIN_DIR) are started once per adapter
process, outside every timed region, with full isolation (root needed), a warm
pool of 8 sessions and the fake model at --base-url as the default model
(`openai/fake-rlm`). Each call is one Complete over the public gRPC API:
  needle      UploadContext (1 MiB chunks) then Complete with the context id.
              Variant `default` times upload + Complete; variant `by-id`
              uploads in build() (untimed) and times only Complete.
  fanout      the chunks inline as a JSON context (CONTEXT_FORMAT_JSON).
  iterations  the context inline as text.
The variant comes from --variant, or from $RLM_BENCH_VARIANT when --variant
is `default` (run_peers.py always passes `default`; bench/run.sh --by-id sets
the variable).

Stubs are generated from the repository's proto/ with grpc_tools.protoc into
bench/.gen/ at import (again whenever a .proto file or grpcio-tools changes).
Needs grpcio, grpcio-tools and protobuf (bench/requirements.txt) and nothing
else beyond the standard library. Service logs go to a temporary directory
that is removed at exit unless $RLM_BENCH_KEEP_LOGS is set (its path is
printed to stderr either way); a failing run shows the tail of both logs.
"""
from __future__ import annotations

import atexit
import ctypes
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROTO_ROOT = os.path.join(REPO, "proto")
GEN_DIR = os.path.join(HERE, ".gen")
BIN_DIR = os.environ.get("RLM_BIN_DIR") or os.path.join(REPO, "target", "release")

ISOLATION = "namespaces+cgroups+seccomp (rlm-sandbox-agent)"
POOL_SIZE = 8
MAX_PARALLEL = 16
UPLOAD_CHUNK = 1 << 20
MAX_MESSAGE = 64 << 20
RPC_TIMEOUT_S = 600


# --------------------------------------------------------------------------- stubs
def _proto_files() -> list[str]:
    files = glob.glob(os.path.join(PROTO_ROOT, "rlm", "**", "*.proto"), recursive=True)
    return sorted(os.path.relpath(f, PROTO_ROOT) for f in files)


def _stamp(files: list[str]) -> str:
    from importlib import metadata
    h = hashlib.sha256()
    h.update(metadata.version("grpcio-tools").encode())
    for rel in files:
        h.update(rel.encode() + b"\0")
        with open(os.path.join(PROTO_ROOT, rel), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def ensure_stubs() -> None:
    """Generates the Python stubs into GEN_DIR unless they are up to date."""
    files = _proto_files()
    if not files:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT}")
    stamp = _stamp(files)
    stamp_path = os.path.join(GEN_DIR, "STAMP")
    try:
        with open(stamp_path) as f:
            if f.read().strip() == stamp:
                return
    except OSError:
        pass
    import grpc_tools
    from grpc_tools import protoc
    staging = tempfile.mkdtemp(prefix=".gen-", dir=HERE)
    os.chmod(staging, 0o755)
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                      f"--python_out={staging}", f"--grpc_python_out={staging}", *files])
    if rc != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {PROTO_ROOT}")
    with open(os.path.join(staging, "STAMP"), "w") as f:
        f.write(stamp + "\n")
    old = GEN_DIR + f".old-{os.getpid()}"
    if os.path.exists(GEN_DIR):
        os.rename(GEN_DIR, old)
    os.rename(staging, GEN_DIR)
    shutil.rmtree(old, ignore_errors=True)


ensure_stubs()
sys.path.insert(0, GEN_DIR)

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from rlm.sandbox.v1 import sandbox_service_pb2, sandbox_service_pb2_grpc  # noqa: E402
from rlm.v1 import completion_pb2, context_pb2, rlm_service_pb2, rlm_service_pb2_grpc  # noqa: E402

from _common import inputs, main  # noqa: E402  (on PYTHONPATH, set by run_peers.py)


# --------------------------------------------------------------------------- services
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the adapter dies (even SIGKILLed
    by run_peers.py on a timeout), so no service outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}, encoded


def _serving(channel: grpc.Channel) -> bool:
    """Overall health over the standard grpc.health.v1 service; the message
    is tiny, so it is encoded by hand instead of generating health stubs."""
    check = channel.unary_unary(_HEALTH_CHECK, request_serializer=lambda _: b"",
                                response_deserializer=lambda b: b)
    try:
        return check(None, timeout=1) == _SERVING
    except grpc.RpcError:
        return False


class Services:
    """rlm-sandbox-agent + rlm-orchestrator in a temporary directory."""

    def __init__(self, base_url: str):
        self.dir = tempfile.mkdtemp(prefix="rlm-bench-")
        self.agent_address = f"unix://{self.dir}/sandbox.sock"
        self.grpc_address = f"127.0.0.1:{_free_port()}"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        print(f"rlm_adapter: services in {self.dir}", file=sys.stderr, flush=True)
        common = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                  "RLM_SHUTDOWN_ANNOUNCE": "100ms"}
        if os.environ.get("RLM_LOG"):
            common["RLM_LOG"] = os.environ["RLM_LOG"]
        self._start("rlm-sandbox-agent", {
            **common,
            "RLM_AGENT_LISTEN": self.agent_address,
            "RLM_AGENT_DATA_DIR": os.path.join(self.dir, "agent"),
            "RLM_AGENT_POOL_SIZE": str(POOL_SIZE),
            "RLM_AGENT_MAX_SESSIONS": "256",
            "RLM_AGENT_CGROUP": f"rlm-bench-{os.getpid()}",
        })
        self._start("rlm-orchestrator", {
            **common,
            "RLM_LISTEN": self.grpc_address,
            "RLM_HTTP_LISTEN": f"127.0.0.1:{_free_port()}",
            "RLM_SANDBOX_ENDPOINT": self.agent_address,
            "RLM_LOG_DIR": os.path.join(self.dir, "trajectories"),
            "RLM_MODEL": "openai/fake-rlm",
            "RLM_LLM_BASE_URL": base_url.rstrip("/"),
            "OPENAI_API_KEY": "x",
            "RLM_MAX_PARALLEL": str(MAX_PARALLEL),
        })
        atexit.register(self.stop)
        options = [("grpc.max_send_message_length", MAX_MESSAGE),
                   ("grpc.max_receive_message_length", MAX_MESSAGE)]
        # grpc-core's default :authority for a unix: target is refused by the
        # agent's HTTP/2 server (RST_STREAM PROTOCOL_ERROR); name a host.
        self.agent_channel = grpc.insecure_channel(
            self.agent_address, options=options + [("grpc.default_authority", "localhost")])
        self.channel = grpc.insecure_channel(self.grpc_address, options=options)
        self._wait_serving("rlm-sandbox-agent", self.agent_channel)
        self._wait_serving("rlm-orchestrator", self.channel)
        self.client = rlm_service_pb2_grpc.RLMServiceStub(self.channel)
        self.agent = sandbox_service_pb2_grpc.SandboxServiceStub(self.agent_channel)

    def _start(self, name: str, env: dict) -> None:
        path = os.path.join(BIN_DIR, name)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is missing: run `cargo build --release --workspace --bins` "
                               "(or set RLM_BIN_DIR)")
        log = open(os.path.join(self.dir, f"{name}.log"), "wb")
        proc = subprocess.Popen([path], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.procs.append((name, proc))

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            with open(os.path.join(self.dir, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _wait_serving(self, name: str, channel: grpc.Channel, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        proc = dict(self.procs)[name]
        while not _serving(channel):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} never became SERVING (exit {proc.poll()}); log:\n"
                                   + self.log_tail(name))
            time.sleep(0.02)

    def wait_pool_full(self, timeout_s: float = 60) -> None:
        """Waits until the agent's warm pool is full again, so pool refills
        from a previous pass never compete with a timed call."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.agent.GetInfo(sandbox_service_pb2.GetInfoRequest(), timeout=5)
            if all(p.ready >= p.target_size for p in info.pools):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm pool not refilled within {timeout_s} s: {info.pools}")
            time.sleep(0.02)

    def upload(self, data: bytes) -> str:
        def chunks():
            for i in range(0, max(len(data), 1), UPLOAD_CHUNK):
                yield rlm_service_pb2.UploadContextRequest(
                    chunk=data[i:i + UPLOAD_CHUNK], total_size_bytes=len(data) if i == 0 else 0)
        stored = self.client.UploadContext(chunks(), timeout=RPC_TIMEOUT_S)
        if stored.size_bytes != len(data):
            raise RuntimeError(f"UploadContext stored {stored.size_bytes} bytes of {len(data)}")
        return stored.context_id

    def complete(self, spec) -> "completion_pb2.CompletionResult":
        response = self.client.Complete(rlm_service_pb2.CompleteRequest(spec=spec),
                                        timeout=RPC_TIMEOUT_S)
        return response.result

    def stop(self) -> None:
        # Orchestrator first (it ends its sessions), then the agent (it
        # removes its cgroups on SIGTERM).
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if os.environ.get("RLM_BENCH_KEEP_LOGS"):
            print(f"rlm_adapter: logs kept in {self.dir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


_SERVICES: Services | None = None


def services(base_url: str) -> Services:
    global _SERVICES
    if _SERVICES is None:
        _SERVICES = Services(base_url)
    return _SERVICES


# --------------------------------------------------------------------------- calls
def _limits(scenario: str, params: dict) -> "completion_pb2.CompletionLimits":
    iterations = int(params.get("n", 20)) + 5 if scenario == "iterations" else 30
    return completion_pb2.CompletionLimits(
        max_iterations=iterations, max_parallel=MAX_PARALLEL,
        timeout=duration_pb2.Duration(seconds=RPC_TIMEOUT_S))


def _context(text: str | None = None, context_id: str | None = None, json_format=False):
    fmt = context_pb2.CONTEXT_FORMAT_JSON if json_format else context_pb2.CONTEXT_FORMAT_TEXT
    if context_id is not None:
        return context_pb2.ContextInput(context_id=context_id, format=fmt)
    return context_pb2.ContextInput(text=text, format=fmt)


def _outcome(svc: Services, result) -> tuple[str, dict]:
    if result.termination_reason != completion_pb2.TERMINATION_REASON_FINAL:
        reason = completion_pb2.TerminationReason.Name(result.termination_reason)
        raise RuntimeError(f"completion ended with {reason}: {result.detail!r}; answer "
                           f"{result.answer[:200]!r}; trajectory {result.trajectory_id}\n"
                           f"orchestrator log tail:\n{svc.log_tail('rlm-orchestrator')}")
    duration = result.duration.seconds * 1000 + result.duration.nanos / 1e6
    return result.answer, {"iterations": result.iterations, "subcalls": result.subcalls,
                           "engine_ms": round(duration, 3)}


def build(a):
    svc = services(a.base_url)
    question, payload = inputs(a.scenario, a.params)
    variant = a.variant
    if variant == "default":
        variant = os.environ.get("RLM_BENCH_VARIANT") or "default"
    if variant not in ("default", "by-id"):
        raise ValueError(f"unknown variant {variant!r} (default, by-id)")
    limits = _limits(a.scenario, a.params)

    def spec(contexts):
        return completion_pb2.CompletionSpec(prompt=question, contexts=contexts, limits=limits,
                                             metadata={"bench": f"{a.scenario}/{variant}"})

    if a.scenario == "needle":
        data = payload.encode("utf-8")
        if variant == "by-id":
            context_id = svc.upload(data)

            def run():
                return _outcome(svc, svc.complete(spec([_context(context_id=context_id)])))
        else:
            def run():
                context_id = svc.upload(data)
                return _outcome(svc, svc.complete(spec([_context(context_id=context_id)])))
    elif a.scenario == "fanout":
        text = json.dumps(payload)

        def run():
            return _outcome(svc, svc.complete(spec([_context(text=text, json_format=True)])))
    else:
        def run():
            return _outcome(svc, svc.complete(spec([_context(text=payload)])))

    svc.wait_pool_full()
    return run, ISOLATION


if __name__ == "__main__":
    main(build)
