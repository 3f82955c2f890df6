"""Drives `rlm mcp-serve` over stdio with the official MCP Python SDK (`mcp`).

Started by cli/tests/mcp_serve.rs against a real orchestrator and sandbox
agent. Checks: the tools and their schemas, Python state kept across two
execute_python calls in one session, a completion with the scripted model
(context from a file), its trajectory, and failures surfacing as tool errors
(isError) with clear text. Exits non-zero on the first failed check.

    python mcp_client_check.py --rlm PATH --addr HOST:PORT --model scripted:FILE \
        --context-file FILE --expect-answer TEXT [--http-url http://127.0.0.1:PORT/mcp]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

TOOLS = ["destroy_session", "execute_python", "get_trajectory", "list_sessions", "rlm_complete"]

passed = 0


def check(condition: bool, what: str, detail: object = "") -> None:
    global passed
    if not condition:
        print(f"FAILED: {what}\n{detail}", file=sys.stderr)
        sys.exit(1)
    passed += 1
    print(f"ok: {what}")


def text_of(result) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def call(session: ClientSession, name: str, arguments: dict):
    return await session.call_tool(name, arguments, read_timeout_seconds=180)


async def main(args: argparse.Namespace) -> None:
    server = StdioServerParameters(
        command=args.rlm,
        args=["--addr", args.addr, "mcp-serve"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    async with stdio_client(server, errlog=sys.stderr) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.server_info.name == "rlm", "the server names itself rlm", init.server_info)
            check(init.capabilities.tools is not None, "the server offers tools", init.capabilities)

            listed = (await session.list_tools()).tools
            by_name = {tool.name: tool for tool in listed}
            check(sorted(by_name) == TOOLS, "exactly the five tools are listed", sorted(by_name))
            for tool in listed:
                check(bool(tool.description), f"{tool.name} has a description")
                check(tool.input_schema.get("type") == "object", f"{tool.name} takes an object")
            execute_schema = by_name["execute_python"].input_schema
            check(execute_schema.get("required") == ["code"], "execute_python requires only code", execute_schema)
            check(
                all(p.get("description") for p in execute_schema["properties"].values()),
                "every execute_python argument is described",
                execute_schema,
            )
            check(
                by_name["rlm_complete"].input_schema.get("required") == ["prompt"],
                "rlm_complete requires only prompt",
                by_name["rlm_complete"].input_schema,
            )
            check(by_name["execute_python"].output_schema is not None, "execute_python declares its output")

            # Two calls, one session: the state is kept.
            first = await call(session, "execute_python", {"code": "x = 20\nprint('stored')"})
            check(not first.is_error, "execute_python runs code", text_of(first))
            out = first.structured_content
            check(out["created_session"] and out["session_id"], "a session is created and returned", out)
            check(out["stdout"] == "stored\n", "stdout comes back", out)
            session_id = out["session_id"]
            second = await call(
                session,
                "execute_python",
                {"code": "print(x * 2)\nFINAL(x + 1)", "session_id": session_id, "timeout_seconds": 30},
            )
            out = second.structured_content
            check(not second.is_error and out is not None, "the second call runs", text_of(second))
            check(out["stdout"] == "40\n", "the variable from the first call is still there", out)
            check(out["result"] == "21" and not out["created_session"], "FINAL's value is the result", out)
            check(out["session_id"] == session_id, "the same session is used", out)

            raised = await call(session, "execute_python", {"code": "undefined_name", "session_id": session_id})
            out = raised.structured_content
            check(
                not raised.is_error and out["error"]["exception_type"] == "NameError",
                "a Python exception is reported with its type",
                text_of(raised),
            )

            listed = (await call(session, "list_sessions", {})).structured_content["sessions"]
            check([s["session_id"] for s in listed] == [session_id], "list_sessions shows the session", listed)
            check(listed[0]["executions"] == 3, "three runs were counted", listed)

            # Failures are tool errors with clear text, never protocol errors.
            unknown = await call(
                session,
                "execute_python",
                {"code": "print(1)", "session_id": "0b7f3c52-6f1e-4a43-9b8e-2d6c1f0a9e11"},
            )
            check(
                unknown.is_error and "NOT_FOUND" in text_of(unknown) and "session_id" in text_of(unknown),
                "an unknown session is a tool error naming NOT_FOUND and the field",
                text_of(unknown),
            )
            malformed = await call(session, "execute_python", {"code": 42})
            check(
                malformed.is_error and "expected a string" in text_of(malformed),
                "a wrongly typed argument is a tool error saying what was expected",
                text_of(malformed),
            )
            empty = await call(session, "execute_python", {"code": "   "})
            check(empty.is_error and "must not be empty" in text_of(empty), "empty code is a tool error", text_of(empty))
            missing = await call(session, "rlm_complete", {"prompt": "x", "context_file": "/nonexistent/ctx.txt"})
            check(
                missing.is_error and "/nonexistent/ctx.txt" in text_of(missing),
                "an unreadable context file is a tool error naming it",
                text_of(missing),
            )

            # A completion with the scripted model, its context read from a file.
            done = await call(
                session,
                "rlm_complete",
                {
                    "prompt": "What is the needle?",
                    "context_file": args.context_file,
                    "model": args.model,
                    "max_iterations": 5,
                },
            )
            out = done.structured_content
            check(not done.is_error and out is not None, "rlm_complete runs", text_of(done))
            check(out["answer"] == args.expect_answer, "the completion answers from its context", out)
            check(out["termination_reason"] == "final" and not out["partial"], "it ended with FINAL", out)
            check(out["iterations"] == 2 and "input_tokens" in out["usage"], "usage and iterations are reported", out)
            trajectory = await call(session, "get_trajectory", {"trajectory_id": out["trajectory_id"]})
            check(
                not trajectory.is_error and "needle" in text_of(trajectory),
                "get_trajectory shows the run",
                text_of(trajectory),
            )
            as_json = await call(session, "get_trajectory", {"trajectory_id": out["trajectory_id"], "format": "json"})
            parsed = json.loads(text_of(as_json))
            check(parsed["result"]["answer"] == args.expect_answer, "get_trajectory also gives JSON", parsed.get("result"))
            gone = await call(session, "get_trajectory", {"trajectory_id": "no-such-trajectory"})
            check(gone.is_error and "GetTrajectory failed" in text_of(gone), "an unknown trajectory is a tool error", text_of(gone))

            destroyed = await call(session, "destroy_session", {"session_id": session_id})
            check(not destroyed.is_error and destroyed.structured_content["destroyed"], "destroy_session works", text_of(destroyed))
            again = await call(session, "destroy_session", {"session_id": session_id})
            check(again.is_error and "NOT_FOUND" in text_of(again), "destroying twice is a tool error", text_of(again))
            remaining = (await call(session, "list_sessions", {})).structured_content["sessions"]
            check(remaining == [], "no session is left", remaining)
    if args.http_url:
        await over_http(args.http_url)
    print(f"mcp client: {passed} passed, 0 failed")


async def over_http(url: str) -> None:
    """The same server over streamable HTTP (`rlm mcp-serve --http`)."""
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.server_info.name == "rlm", "over HTTP: the server names itself rlm", init.server_info)
            names = sorted(tool.name for tool in (await session.list_tools()).tools)
            check(names == TOOLS, "over HTTP: the five tools are listed", names)
            first = (await call(session, "execute_python", {"code": "y = 'kept'"})).structured_content
            session_id = first["session_id"]
            again = await call(session, "execute_python", {"code": "print(y)", "session_id": session_id})
            check(again.structured_content["stdout"] == "kept\n", "over HTTP: state is kept", text_of(again))
            gone = await call(session, "destroy_session", {"session_id": session_id})
            check(not gone.is_error, "over HTTP: the session is destroyed", text_of(gone))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rlm", required=True)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--context-file", required=True)
    parser.add_argument("--expect-answer", required=True)
    parser.add_argument("--http-url", help="also check `rlm mcp-serve --http` at this URL")
    anyio.run(main, parser.parse_args())
