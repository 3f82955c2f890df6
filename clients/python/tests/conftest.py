"""Fixtures: one real stack (agent + orchestrator) per test session.

Tests that need the live services take the `stack` (or `client`) fixture.
When the stack cannot start (not root, binaries not built) those tests fail
with the reason; tests without it (unit tests, the in-process fake server)
still run.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import stack as stack_module  # noqa: E402
from rlm_client import RLMClient  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    problem = stack_module.preflight()
    if problem:
        pytest.fail(problem, pytrace=False)
    running = stack_module.Stack()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "stack" in request.fixturenames:
        running = request.getfixturevalue("stack")
        sys.stderr.write(running.logs()[-8000:] + "\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def client(stack):
    with RLMClient(stack.grpc_address, timeout=120) as c:
        yield c
