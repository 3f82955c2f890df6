"""Starts the real rlm-sandbox-agent and rlm-orchestrator binaries for the tests,
the way tests/src/lib.rs `Stack::start` does: an agent on a Unix socket in a
temporary directory (its own cgroup name, a warm pool of 1) and an
orchestrator on free localhost ports, both stopped with SIGTERM at the end.

The binaries come from $RLM_BIN_DIR (default: <repo>/target/debug), built by
`cargo build --workspace --bins`. The agent isolates sessions with namespaces
and cgroups, so the tests must run as root.

Usage outside pytest (e.g. for manual exploration):

    python tests/stack.py      # starts a stack, prints its addresses, Ctrl-C stops it
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[3]


def bin_dir() -> Path:
    return Path(os.environ.get("RLM_BIN_DIR") or REPO / "target" / "debug")


def preflight() -> Optional[str]:
    """Why the stack cannot start here, or None."""
    if os.geteuid() != 0:
        return (
            "the client tests start the real rlm-sandbox-agent, which isolates sessions with "
            "namespaces and cgroups and therefore must run as root: run clients/test.sh as root "
            "(CI does)"
        )
    for name in ("rlm-sandbox-agent", "rlm-orchestrator"):
        if not (bin_dir() / name).is_file():
            return (
                f"{bin_dir() / name} is missing: build the binaries first "
                "(`cargo build --workspace --bins` in the repository root), or set RLM_BIN_DIR"
            )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: the service gets SIGTERM if the test process dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


class Service:
    def __init__(self, name: str, directory: Path, env: Dict[str, str]):
        self.name = name
        self.log_path = directory / f"{name}.log"
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        full_env.update(env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(bin_dir() / name)],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_serving(address: str, service: Service, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with status {service.process.returncode}; log:\n{service.log_text()}"
            )
        try:
            # grpc-core sends the socket path as :authority on unix: targets, which
            # the agent (hyper) rejects with RST_STREAM; use a plain authority.
            with grpc.insecure_channel(address, options=[("grpc.default_authority", "localhost")]) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                ).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = f"status {status}"
        except grpc.RpcError as error:
            last = f"{error.code().name}: {error.details()}"
        time.sleep(0.05)
    raise RuntimeError(
        f"{service.name} never became SERVING at {address} ({last}); log:\n{service.log_text()}"
    )


class Stack:
    """An agent and an orchestrator wired together in a temporary directory."""

    _counter = 0

    def __init__(self, extra_env: Optional[Dict[str, str]] = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="rlm-client-tests-")
        self.dir = Path(self._tmp.name)
        Stack._counter += 1
        self.agent_address = f"unix://{self.dir / 'run' / 'sandbox.sock'}"
        self.grpc_address = f"127.0.0.1:{free_port()}"
        self.http_address = f"127.0.0.1:{free_port()}"
        self.default_turns = self.turns("FINAL(default)", name="default")
        extra = dict(extra_env or {})
        agent_env = dict(extra)
        agent_env.update(
            RLM_AGENT_LISTEN=self.agent_address,
            RLM_AGENT_DATA_DIR=str(self.dir / "agent"),
            RLM_AGENT_CGROUP=f"rlm-pyclient-{os.getpid()}-{Stack._counter}",
            RLM_AGENT_POOL_SIZE="1",
            RLM_SHUTDOWN_ANNOUNCE="300ms",
        )
        orchestrator_env = dict(extra)
        orchestrator_env.update(
            RLM_LISTEN=self.grpc_address,
            RLM_HTTP_LISTEN=self.http_address,
            RLM_SANDBOX_ENDPOINT=self.agent_address,
            RLM_LOG_DIR=str(self.dir / "trajectories"),
            RLM_SHUTDOWN_ANNOUNCE="300ms",
            RLM_MODEL=self.default_turns,
        )
        self.agent = Service("rlm-sandbox-agent", self.dir, agent_env)
        self.orchestrator = None
        try:
            self.orchestrator = Service("rlm-orchestrator", self.dir, orchestrator_env)
            wait_serving(self.agent_address, self.agent)
            wait_serving(self.grpc_address, self.orchestrator)
        except BaseException:
            self.stop()
            raise

    def turns(self, *turns: str, name: Optional[str] = None) -> str:
        """Writes a scripted-model turns file; returns the model reference
        (``scripted:<path>``) to pass as ``model=``. Turn n answers the n-th
        model call of an RLM; the last one repeats."""
        Stack._counter += 1
        path = self.dir / "turns" / f"{name or 'turns'}-{Stack._counter}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n---\n".join(turns) + "\n", encoding="utf-8")
        return f"scripted:{path}"

    def logs(self) -> str:
        parts = []
        for service in (self.agent, self.orchestrator):
            if service is not None:
                parts.append(f"--- {service.name} log ---\n{service.log_text()[-20000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        # Orchestrator first, then the agent (which destroys its sessions and cgroups).
        for service in (self.orchestrator, self.agent):
            if service is not None:
                service.stop()
        self._tmp.cleanup()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    problem = preflight()
    if problem:
        sys.exit(problem)
    # Stop gracefully on SIGTERM and SIGINT (a background job of a
    # non-interactive shell starts with SIGINT ignored).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    stack = Stack()
    try:
        print(f"gRPC {stack.grpc_address}  HTTP {stack.http_address}  agent {stack.agent_address}  dir {stack.dir}", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
