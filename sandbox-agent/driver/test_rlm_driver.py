"""Tests for rlm_driver.py. The test plays the agent's part.

Run: cd sandbox-agent/driver && python3 -m unittest -v test_rlm_driver
Standard library only. The driver runs under $RLM_DRIVER_PYTHON if set, else
/usr/bin/python3, else the Python running the tests.
"""

import json
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "rlm_driver.py")
if os.environ.get("RLM_DRIVER_PYTHON"):  # e.g. to try other CPython versions
    PY = os.environ["RLM_DRIVER_PYTHON"]
elif os.path.exists("/usr/bin/python3"):
    PY = "/usr/bin/python3"
else:
    assert sys.version_info >= (3, 9), "the driver needs Python 3.9+"
    PY = sys.executable
TIMEOUT = 10.0


class PipeReader:
    """Collects what the driver writes on one of its output pipes."""

    def __init__(self, fd):
        self.fd = fd
        os.set_blocking(fd, False)
        self.lock = threading.Lock()
        self.buf = bytearray()
        self.eof = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read_available(self):  # with self.lock held
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                self.eof = True
                return
            if not chunk:
                self.eof = True
                return
            self.buf += chunk

    def _run(self):
        while not self.eof:
            try:
                select.select([self.fd], [], [], 0.05)
            except (OSError, ValueError):
                return
            with self.lock:
                self._read_available()

    def take(self):
        """Everything written so far (the driver flushes before DONE, so
        after DONE this includes all of the cell's output)."""
        with self.lock:
            self._read_available()
            data = bytes(self.buf)
            self.buf.clear()
        return data.decode("utf-8", "replace")

    def wait_for(self, text, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen += self.take()
            if text in seen:
                return seen
            time.sleep(0.005)
        raise AssertionError("timed out waiting for %r; got %r" % (text, seen))

    def close(self):
        self.eof = True
        self.thread.join(1)
        try:
            os.close(self.fd)
        except OSError:
            pass


class Session:
    """One driver process plus the agent's end of its control socket."""

    def __init__(self, argv=None, contexts=None, contexts_raw_fds=None):
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        cfd = child.fileno()

        def put_socket_on_fd3():
            if cfd == 3:
                os.set_inheritable(3, True)
            else:
                os.dup2(cfd, 3)  # dup2 targets are inheritable

        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(
            argv or [PY, "-I", DRIVER],
            stdin=subprocess.DEVNULL,
            stdout=w1,
            stderr=w2,
            close_fds=False,  # all our other fds are close-on-exec
            preexec_fn=put_socket_on_fd3,
        )
        child.close()
        os.close(w1)
        os.close(w2)
        self.out = PipeReader(r1)
        self.err = PipeReader(r2)
        self.sock.settimeout(TIMEOUT)
        self.rbuf = b""
        self.subcalls = []
        if contexts is not None:
            self.send_contexts(contexts)
        t, self.ready = self.recv_frame()
        self.t_ready = time.perf_counter()
        assert t == "R", (t, self.ready)

    # -- framing
    def send_raw(self, data, fds=None):
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.sendall(data)

    def send(self, kind, obj, fds=None):
        body = kind.encode() + json.dumps(obj).encode()
        self.send_raw(struct.pack(">I", len(body)) + body, fds)

    def _read_exact(self, n):
        while len(self.rbuf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("driver closed the control socket")
            self.rbuf += chunk
        data, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return data

    def recv_frame(self):
        (n,) = struct.unpack(">I", self._read_exact(4))
        assert 1 <= n <= 64 << 20, n
        payload = self._read_exact(n)
        return chr(payload[0]), json.loads(payload[1:].decode("utf-8"))

    def send_contexts(self, texts):
        fds = []
        files = []
        for t in texts:
            f = tempfile.NamedTemporaryFile(delete=False)
            f.write(t if isinstance(t, bytes) else t.encode())
            f.close()
            files.append(f.name)
            fds.append(os.open(f.name, os.O_RDONLY))
        self.context_files = files
        self.send("C", {"count": len(fds)}, fds=fds)
        for fd in fds:
            os.close(fd)

    # -- cells
    def exec_start(self, code):
        self.send("E", {"code": code})

    def wait_done(self, on_subcall=None):
        """Read frames until DONE. on_subcall(frame) returns the results
        list to answer with, or None to leave the subcall unanswered."""
        while True:
            t, obj = self.recv_frame()
            if t == "D":
                return obj
            assert t == "S", (t, obj)
            self.subcalls.append(obj)
            if on_subcall is not None:
                results = on_subcall(obj)
                if results is not None:
                    self.send("A", {"id": obj["id"], "results": results})

    def run(self, code, on_subcall=None):
        """Run one cell; returns (done, stdout, stderr) of that cell."""
        self.exec_start(code)
        done = self.wait_done(on_subcall)
        return done, self.out.take(), self.err.take()

    def ok(self, code, on_subcall=None):
        done, out, err = self.run(code, on_subcall)
        assert done["error"] is None, done["error"]
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()
        for name in getattr(self, "context_files", ()):
            try:
                os.unlink(name)
            except OSError:
                pass


def echo_upper(frame):
    return [{"text": p.upper()} for p in frame["prompts"]]


class DriverTest(unittest.TestCase):
    def session(self, **kw):
        s = Session(**kw)
        self.addCleanup(s.close)
        return s

    def assertNoDriverFrames(self, tb):
        self.assertNotIn("rlm_driver", tb)
        self.assertNotIn("_run_cell", tb)
        self.assertNotIn("_subcall", tb)
        self.assertNotIn("_on_sigint", tb)


class BasicTest(DriverTest):
    def test_ready_frame(self):
        s = self.session()
        self.assertEqual(s.ready["pid"], s.proc.pid)
        self.assertEqual(s.ready["python"].count("."), 2)
        self.assertEqual(s.err.take(), "")

    def test_globals_persist_and_functions_see_them(self):
        s = self.session()
        self.assertEqual(s.ok("x = 41\ndef f():\n    return x + 1\n"), "")
        self.assertEqual(s.ok("y = f()\nprint(y)"), "42\n")
        self.assertEqual(s.ok("x = 100\nprint(f(), y)"), "101 42\n")

    def test_display_of_last_expression(self):
        s = self.session()
        self.assertEqual(s.ok("1 + 1"), "2\n")
        self.assertEqual(s.ok("'a'"), "'a'\n")
        self.assertEqual(s.ok("None"), "")
        self.assertEqual(s.ok("z = 5"), "")
        self.assertEqual(s.ok("for i in range(2):\n    pass\nz * 2"), "10\n")
        self.assertEqual(s.ok("print('hi')"), "hi\n")
        self.assertEqual(s.ok("z\nz + 1"), "6\n")  # only the last one
        self.assertEqual(s.ok(""), "")

    def test_name_main_builtins_and_main_module(self):
        s = self.session()
        out = s.ok(
            "import builtins, sys, pickle\n"
            "print(__name__, __builtins__ is builtins)\n"
            "def g(a):\n    return a * 2\n"
            "import __main__\n"
            "print(__main__.g(4), sys.modules['__main__'] is __main__)\n"
            "h = pickle.loads(pickle.dumps(g))\n"
            "print(h is g)\n"
        )
        self.assertEqual(out, "__main__ True\n8 True\nTrue\n")

    def test_preloaded_modules_are_imported_after_ready(self):
        # The agent's bootstrap sets _rlm_preload; a module that fails to
        # import is skipped, and the list does not leak into the cells.
        boot = "_rlm_preload = ['json', 'no_such_module_rlm']\nexec(compile(open(%r).read(), %r, 'exec'))" % (DRIVER, DRIVER)
        s = self.session(argv=[PY, "-I", "-c", boot])
        out = s.ok("import sys\nprint('json' in sys.modules, 'no_such_module_rlm' in sys.modules)")
        self.assertEqual(out, "True False\n")
        done, _, _ = s.run("_rlm_preload")
        self.assertEqual(done["error"]["type"], "NameError")

    def test_a_repeated_cell_runs_again_under_its_own_name(self):
        # Compiled code is reused for identical sources; each run still
        # executes (no result caching), shows its value, and names its cell.
        s = self.session()
        s.ok("x = 0")
        for i in range(1, 4):
            self.assertEqual(s.ok("x = x + 1\nx"), "%d\n" % i)
        for n in (5, 6):
            done, _, _ = s.run("y = 1\n1/0")
            self.assertIn('File "<cell %d>", line 2, in <module>' % n, done["error"]["traceback"])
            self.assertIn("1/0", done["error"]["traceback"])

    def test_exception_reports_cell_traceback(self):
        s = self.session()
        done, out, _ = s.run("a = 1\nprint('before')\nFINAL('early')\n1/0\nFINAL('late')")
        self.assertEqual(out, "before\n")
        err = done["error"]
        self.assertEqual(err["type"], "ZeroDivisionError")
        self.assertEqual(err["message"], "division by zero")
        tb = err["traceback"]
        self.assertTrue(tb.startswith("Traceback (most recent call last):\n"), tb)
        self.assertIn('File "<cell 1>", line 4, in <module>', tb)
        self.assertIn("1/0", tb)
        self.assertTrue(tb.endswith("ZeroDivisionError: division by zero\n"), tb)
        self.assertNoDriverFrames(tb)
        self.assertTrue(done["final_called"])
        self.assertEqual(done["final_value"], "early")
        self.assertFalse(done["interrupted"])
        # The function's frames in earlier cells are named, too.
        s.ok("def boom():\n    raise ValueError('bad value')\n")
        done, _, _ = s.run("x = 2\nboom()")
        tb = done["error"]["traceback"]
        self.assertEqual(done["error"]["type"], "ValueError")
        self.assertIn('File "<cell 3>", line 2, in <module>', tb)
        self.assertIn('File "<cell 2>", line 2, in boom', tb)
        self.assertIn("raise ValueError('bad value')", tb)
        self.assertFalse(done["final_called"])
        self.assertIsNone(done["final_value"])
        self.assertEqual(s.ok("print(a, x)"), "1 2\n")

    def test_custom_exception_type_and_chain(self):
        s = self.session()
        done, _, _ = s.run(
            "class MyErr(Exception):\n    pass\n"
            "try:\n    {}['k']\nexcept KeyError as e:\n    raise MyErr('wrapped') from e\n"
        )
        self.assertEqual(done["error"]["type"], "MyErr")
        self.assertEqual(done["error"]["message"], "wrapped")
        tb = done["error"]["traceback"]
        self.assertIn("KeyError: 'k'", tb)
        self.assertIn("direct cause", tb)
        self.assertNoDriverFrames(tb)

    def test_syntax_error(self):
        s = self.session()
        s.ok("ok = 1")
        done, out, _ = s.run("x = (\n")
        self.assertEqual(out, "")
        err = done["error"]
        self.assertEqual(err["type"], "SyntaxError")
        self.assertIn("(<cell 2>, line 1)", err["message"])
        self.assertIn('File "<cell 2>", line 1', err["traceback"])
        self.assertIn("SyntaxError", err["traceback"])
        self.assertNoDriverFrames(err["traceback"])
        self.assertFalse(done["interrupted"])
        self.assertEqual(s.ok("print(ok)"), "1\n")
        done, _, _ = s.run("a = 1\n  b = 2\n")
        self.assertEqual(done["error"]["type"], "IndentationError")

    def test_final_and_final_var(self):
        s = self.session()
        done, out, _ = s.run("r = FINAL(42)\nprint(r)")
        self.assertEqual(out, "None\n")
        self.assertEqual((done["final_called"], done["final_value"]), (True, "42"))
        done, _, _ = s.run("FINAL('first')\nFINAL(['second', 2])")
        self.assertEqual(done["final_value"], "['second', 2]")
        done, _, _ = s.run("answer = 'the answer'\nFINAL_VAR('answer')")
        self.assertEqual((done["final_called"], done["final_value"]), (True, "the answer"))
        self.assertIsNone(done["error"])
        done, _, _ = s.run("print('x')")  # not carried over to the next cell
        self.assertEqual((done["final_called"], done["final_value"]), (False, None))
        done, _, _ = s.run("FINAL_VAR('nope')")
        self.assertEqual(done["error"]["type"], "NameError")
        self.assertIn("'nope'", done["error"]["message"])
        self.assertFalse(done["final_called"])
        self.assertNoDriverFrames(done["error"]["traceback"])
        self.assertIn("FINAL_VAR('nope')", done["error"]["traceback"])
        done, _, _ = s.run("FINAL_VAR(answer)")  # the value, not the name
        self.assertEqual(done["error"]["type"], "NameError")
        done, _, _ = s.run("FINAL_VAR(3)")
        self.assertEqual(done["error"]["type"], "TypeError")
        done, _, _ = s.run("class S:\n    def __str__(self):\n        return 'custom'\nFINAL(S())")
        self.assertEqual(done["final_value"], "custom")
        done, _, _ = s.run("FINAL('bad \\ud800 surrogate')")
        self.assertEqual(done["final_value"], "bad \ufffd surrogate")
        done, _, _ = s.run("FINAL('x' * (5 << 20) + 'é')")
        self.assertEqual(len(done["final_value"]), (5 << 20) + 1)

    def test_show_vars(self):
        s = self.session()
        s.ok("import json\na = 1\nb = 'x'\n_hidden = 2\ndef f():\n    pass\nllm_query = llm_query\n")
        done, out, _ = s.run("SHOW_VARS()")
        self.assertEqual(out, "{'a': 'int', 'b': 'str', 'f': 'function'}\n")  # printed once
        out = s.ok("v = SHOW_VARS()\nprint(v == {'a': 'int', 'b': 'str', 'f': 'function'})")
        self.assertEqual(out, "{'a': 'int', 'b': 'str', 'f': 'function'}\nTrue\n")
        self.assertEqual(s.ok("SHOW_VARS()\n"), "{'a': 'int', 'b': 'str', 'f': 'function', 'v': 'dict'}\n")

    def test_stdout_stderr_and_large_output(self):
        s = self.session()
        done, out, err = s.run("import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nprint('é ☃ \\udcff')")
        self.assertEqual(out, "to out\né ☃ \\udcff\n")
        self.assertEqual(err, "to err\n")
        # more than a pipe buffer: all of it is out before DONE
        done, out, _ = s.run("for i in range(20000):\n    print('line %05d' % i)")
        self.assertIsNone(done["error"])
        self.assertEqual(len(out), 20000 * 11)
        self.assertTrue(out.endswith("line 19999\n"))

    def test_system_exit_is_an_error_not_an_exit(self):
        s = self.session()
        done, _, _ = s.run("import sys\nsys.exit(3)")
        self.assertEqual(done["error"]["type"], "SystemExit")
        self.assertEqual(done["error"]["message"], "3")
        done, _, _ = s.run("exit()")
        self.assertEqual(done["error"]["type"], "SystemExit")
        self.assertEqual(s.ok("print('alive')"), "alive\n")

    def test_agent_closing_the_socket_ends_the_driver(self):
        s = self.session()
        s.ok("x = 1")
        s.sock.close()
        self.assertEqual(s.proc.wait(5), 0)
        self.assertEqual(s.err.take(), "")

    def test_protocol_error_is_fatal(self):
        s = self.session()
        s.send_raw(struct.pack(">I", 3) + b"Z{}")
        self.assertEqual(s.proc.wait(5), 2)
        self.assertIn("unknown frame type", s.err.wait_for("\n"))
        s2 = self.session()
        s2.send_raw(struct.pack(">I", 0))
        self.assertEqual(s2.proc.wait(5), 2)

    def test_runs_from_dash_c(self):
        with open(DRIVER) as f:
            source = f.read()
        s = self.session(argv=[PY, "-I", "-c", source])
        self.assertEqual(s.ok("x = 2\nprint(x * 21)"), "42\n")
        done, _, _ = s.run("def f():\n    return 1 / 0\nf()")
        tb = done["error"]["traceback"]
        self.assertIn('File "<cell 2>", line 2, in f', tb)
        self.assertNotIn("<string>", tb)
        done, _, _ = s.run("exec('1/0')")  # user code's own <string> frames are kept
        self.assertIn('File "<string>", line 1', done["error"]["traceback"])


class SubcallTest(DriverTest):
    def test_llm_query_round_trip(self):
        s = self.session()
        out = s.ok("r = llm_query('hello')\nprint(r)", on_subcall=echo_upper)
        self.assertEqual(out, "HELLO\n")
        self.assertEqual(
            s.subcalls[-1],
            {"id": 1, "kind": "llm", "prompts": ["hello"], "model": None, "batched": False},
        )
        out = s.ok("print(llm_query('x', model='small'))", on_subcall=echo_upper)
        self.assertEqual(out, "X\n")
        self.assertEqual(s.subcalls[-1]["id"], 2)
        self.assertEqual(s.subcalls[-1]["model"], "small")
        out = s.ok(
            "print(llm_query('bad'))",
            on_subcall=lambda f: [{"error": "rate limited"}],
        )
        self.assertEqual(out, "Error: rate limited\n")

    def test_llm_query_batched(self):
        s = self.session()

        def answer(frame):
            return [{"text": "A"}, {"error": "boom"}, {"text": "C"}]

        out = s.ok("r = llm_query_batched(['a', 'b', 'c'], model='m')\nprint(r)", on_subcall=answer)
        self.assertEqual(out, "['A', 'Error: boom', 'C']\n")
        self.assertEqual(
            s.subcalls[-1],
            {"id": 1, "kind": "llm", "prompts": ["a", "b", "c"], "model": "m", "batched": True},
        )
        out = s.ok("print(llm_query_batched([]), llm_query_batched(()))")
        self.assertEqual(out, "[] []\n")
        self.assertEqual(len(s.subcalls), 1)  # nothing sent for empty lists
        out = s.ok("print(llm_query_batched(p for p in ['q']))", on_subcall=echo_upper)
        self.assertEqual(out, "['Q']\n")

    def test_rlm_query_and_batched(self):
        s = self.session()
        out = s.ok("print(rlm_query('p', context='ctx'))", on_subcall=echo_upper)
        self.assertEqual(out, "P\n")
        self.assertEqual(
            s.subcalls[-1],
            {"id": 1, "kind": "rlm", "prompts": ["p"], "model": None, "batched": False,
             "contexts": [{"text": "ctx"}]},
        )
        s.ok("rlm_query('p2')", on_subcall=echo_upper)
        self.assertEqual(s.subcalls[-1]["contexts"], [])
        out = s.ok("print(rlm_query_batched(['a', 'b'], ['x', None]))", on_subcall=echo_upper)
        self.assertEqual(out, "['A', 'B']\n")
        self.assertEqual(s.subcalls[-1]["contexts"], [{"text": "x"}, None])
        self.assertTrue(s.subcalls[-1]["batched"])
        s.ok("rlm_query_batched(['a', 'b'])", on_subcall=echo_upper)
        self.assertEqual(s.subcalls[-1]["contexts"], [])
        self.assertEqual([f["id"] for f in s.subcalls], [1, 2, 3, 4])

    def test_type_checks_happen_before_sending(self):
        s = self.session()
        cases = [
            ("llm_query(1)", "TypeError"),
            ("llm_query(b'x')", "TypeError"),
            ("llm_query('a', model=3)", "TypeError"),
            ("llm_query_batched('abc')", "TypeError"),
            ("llm_query_batched(['a', 2])", "TypeError"),
            ("llm_query_batched(5)", "TypeError"),
            ("rlm_query('a', context=['x'])", "TypeError"),
            ("rlm_query_batched(['a'], ['x', 'y'])", "ValueError"),
            ("rlm_query_batched(['a'], 'x')", "TypeError"),
        ]
        for code, etype in cases:
            done, _, _ = s.run(code)
            self.assertEqual(done["error"]["type"], etype, code)
            self.assertNoDriverFrames(done["error"]["traceback"])
        self.assertEqual(s.subcalls, [])

    def test_unicode_and_str_subclass_prompts(self):
        s = self.session()
        out = s.ok(
            "class S(str):\n    pass\n"
            "print(llm_query(S('héllo ☃')) == 'HÉLLO ☃')",
            on_subcall=echo_upper,
        )
        self.assertEqual(out, "True\n")
        self.assertEqual(s.subcalls[-1]["prompts"], ["héllo ☃"])

    def test_large_subcall_payloads(self):
        s = self.session()
        big = "y" * (3 << 20)
        out = s.ok(
            "r = llm_query('z' * (2 << 20))\nprint(len(r), r[:3])",
            on_subcall=lambda f: [{"text": big}],
        )
        self.assertEqual(out, "%d yyy\n" % len(big))
        self.assertEqual(len(s.subcalls[-1]["prompts"][0]), 2 << 20)

    def test_subcalls_from_threads(self):
        s = self.session()
        s.exec_start(
            "from concurrent.futures import ThreadPoolExecutor\n"
            "prompts = ['p%d' % i for i in range(8)]\n"
            "with ThreadPoolExecutor(4) as ex:\n"
            "    res = list(ex.map(llm_query, prompts))\n"
            "print(res == [p.upper() for p in prompts])\n"
        )
        # Answer in rounds of 4, in reverse order of arrival.
        answered = 0
        while answered < 8:
            batch = []
            while len(batch) < 4:
                t, obj = s.recv_frame()
                self.assertEqual(t, "S")
                batch.append(obj)
            for obj in reversed(batch):
                s.send("A", {"id": obj["id"], "results": echo_upper(obj)})
            answered += len(batch)
        t, done = s.recv_frame()
        self.assertEqual(t, "D")
        self.assertIsNone(done["error"])
        self.assertEqual(s.out.take(), "True\n")
        self.assertEqual(s.ok("print(llm_query('main'))", on_subcall=echo_upper), "MAIN\n")

    def test_background_thread_subcall_cancelled_when_cell_ends(self):
        s = self.session()
        s.exec_start(
            "import threading\n"
            "box = []\n"
            "def work():\n"
            "    try:\n        box.append(llm_query('bg'))\n"
            "    except Exception as e:\n        box.append(type(e).__name__)\n"
            "t = threading.Thread(target=work)\nt.start()\n"
        )
        t, frame = s.recv_frame()
        self.assertEqual(t, "S")
        t, done = s.recv_frame()  # the cell ends without waiting for the thread
        self.assertEqual(t, "D")
        self.assertIsNone(done["error"])
        s.send("A", {"id": frame["id"], "results": [{"text": "late"}]})  # stale
        out = s.ok("t.join(5)\nprint(box)")
        self.assertEqual(out, "['RuntimeError']\n")
        self.assertEqual(s.ok("print(llm_query('next'))", on_subcall=echo_upper), "NEXT\n")
        self.assertEqual(s.subcalls[-1]["id"], frame["id"] + 1)


class ContextTest(DriverTest):
    def test_two_contexts_lazy(self):
        s = self.session(contexts=["first context", b"second \xff\xfe bytes"])
        # Nothing materialised yet: SHOW_VARS lists no context names.
        self.assertEqual(s.ok("SHOW_VARS()"), "{}\n")
        # The driver has not read context_1 yet: rewrite the file in place and
        # the new bytes are what the cell sees.
        self.assertEqual(s.ok("print(context)"), "first context\n")
        with open(s.context_files[1], "r+b") as f:
            f.write(b"SECOND")
        self.assertEqual(s.ok("print(SHOW_VARS())"), "{'context': 'str'}\n{'context': 'str'}\n")
        out = s.ok("print(ascii(context_1), context_0 is context)")
        self.assertEqual(out, "'SECOND \\ufffd\\ufffd bytes' True\n")
        self.assertEqual(s.ok("print(len(context_0))"), "13\n")
        done, _, _ = s.run("context_2")
        self.assertEqual(done["error"]["type"], "NameError")
        self.assertEqual(done["error"]["message"], "name 'context_2' is not defined")

    def test_context_in_function_comprehension_and_class(self):
        s = self.session(contexts=["abc", "defg", "hi"])
        s.ok("def f():\n    return context_1.upper()\n")
        self.assertEqual(s.ok("print(f())"), "DEFG\n")
        self.assertEqual(s.ok("print([len(context_0) for _ in range(2)])"), "[3, 3]\n")
        self.assertEqual(s.ok("class K:\n    c = context_2\nprint(K.c)"), "hi\n")
        self.assertEqual(s.ok("print(eval('context'))"), "abc\n")
        done, _, _ = s.run("del context\ncontext")
        self.assertEqual(done["error"]["type"], "NameError")
        s.ok("context = 'mine'")
        self.assertEqual(s.ok("print(context, context_0)"), "mine abc\n")
        # builtins still resolve after every context was materialised
        self.assertEqual(s.ok("print(len('xy'), sorted([2, 1]))"), "2 [1, 2]\n")

    def test_context_touched_first_in_later_function_call(self):
        s = self.session(contexts=["lazy one"])
        s.ok("def g():\n    return context\n")
        with open(s.context_files[0], "wb") as f:
            f.write(b"rewritten")
        self.assertEqual(s.ok("print(g())"), "rewritten\n")

    def test_empty_and_no_contexts(self):
        s = self.session(contexts=[""])
        self.assertEqual(s.ok("print(repr(context), repr(context_0))"), "'' ''\n")
        s0 = self.session(contexts=[])
        self.assertEqual(s0.ok("print(context)"), "None\n")
        done, _, _ = s0.run("context_0")
        self.assertEqual(done["error"]["type"], "NameError")
        none = self.session()
        self.assertEqual(none.ok("print(context)"), "None\n")

    def test_large_context(self):
        text = ("0123456789" * 100 + "\n") * 10000  # ~10 MB
        s = self.session(contexts=[text])
        self.assertEqual(s.ok("print(len(context), context[-2:] == '9\\n')"), "%d True\n" % len(text))

    def test_contexts_after_exec_is_fatal(self):
        s = self.session()
        s.ok("x = 1")
        s.send("C", {"count": 0})
        self.assertEqual(s.proc.wait(5), 2)


class InterruptTest(DriverTest):
    def test_sigint_interrupts_sleep_and_busy_loop(self):
        s = self.session()
        s.ok("x = 1")
        for body in ("time.sleep(30)", "while True:\n    pass"):
            s.exec_start("import time\nx += 1\nprint('go', flush=True)\n" + body + "\nx = -1\n")
            s.out.wait_for("go\n")
            t0 = time.monotonic()
            os.kill(s.proc.pid, signal.SIGINT)
            done = s.wait_done()
            self.assertLess(time.monotonic() - t0, 5)
            self.assertTrue(done["interrupted"])
            self.assertEqual(done["error"]["type"], "KeyboardInterrupt")
            self.assertIn('File "<cell', done["error"]["traceback"])
            self.assertNoDriverFrames(done["error"]["traceback"])
        self.assertEqual(s.ok("print(x)"), "3\n")

    def test_sigint_while_idle_is_ignored(self):
        s = self.session()
        s.ok("x = 1")
        for _ in range(20):
            os.kill(s.proc.pid, signal.SIGINT)
            time.sleep(0.002)
        time.sleep(0.05)
        self.assertIsNone(s.proc.poll())
        done, out, _ = s.run("import time\ntime.sleep(0.05)\nprint(x)")
        self.assertFalse(done["interrupted"])
        self.assertIsNone(done["error"])
        self.assertEqual(out, "1\n")

    def test_sigint_while_waiting_for_subcall_and_stale_result(self):
        s = self.session()
        s.exec_start("r = llm_query('slow')\n")
        t, frame = s.recv_frame()
        self.assertEqual((t, frame["id"]), ("S", 1))
        os.kill(s.proc.pid, signal.SIGINT)
        t, done = s.recv_frame()
        self.assertEqual(t, "D")
        self.assertTrue(done["interrupted"])
        self.assertEqual(done["error"]["type"], "KeyboardInterrupt")
        tb = done["error"]["traceback"]
        self.assertIn("r = llm_query('slow')", tb)
        self.assertNoDriverFrames(tb)
        # The late answer to id 1 arrives while idle...
        s.send("A", {"id": 1, "results": [{"text": "stale"}]})
        s.exec_start("r2 = llm_query('again')\nprint(r2)")
        t, frame = s.recv_frame()
        self.assertEqual((t, frame["id"], frame["prompts"]), ("S", 2, ["again"]))
        # ...and once more while the next cell waits for id 2.
        s.send("A", {"id": 1, "results": [{"text": "stale again"}]})
        s.send("A", {"id": 2, "results": [{"text": "fresh"}]})
        t, done = s.recv_frame()
        self.assertEqual(t, "D")
        self.assertIsNone(done["error"])
        self.assertEqual(s.out.take(), "fresh\n")
        self.assertEqual(s.ok("print('r' in globals(), r2)"), "False fresh\n")

    def test_sigint_with_concurrent_subcalls(self):
        """Main thread and a worker both wait for results; SIGINT interrupts
        the main thread, the worker's call is cancelled at DONE, and late
        results for both ids are dropped."""
        s = self.session()
        s.exec_start(
            "import threading, time\nbox = []\n"
            "def work():\n    try:\n        box.append(llm_query('t'))\n"
            "    except BaseException as e:\n        box.append(type(e).__name__)\n"
            "th = threading.Thread(target=work)\nth.start()\ntime.sleep(0.1)\n"
            "r = llm_query('m')\n"
        )
        frames = [s.recv_frame(), s.recv_frame()]
        self.assertEqual(sorted(f[1]["prompts"][0] for f in frames), ["m", "t"])
        os.kill(s.proc.pid, signal.SIGINT)
        t, done = s.recv_frame()
        self.assertEqual(t, "D")
        self.assertTrue(done["interrupted"])
        for _, f in frames:
            s.send("A", {"id": f["id"], "results": [{"text": "late"}]})
        out = s.ok("th.join(5)\nprint(box, 'r' in globals())")
        self.assertEqual(out, "['RuntimeError'] False\n")
        self.assertEqual(s.ok("print(llm_query('after'))", on_subcall=echo_upper), "AFTER\n")
        self.assertEqual(s.subcalls[-1]["id"], 3)

    def test_sigint_handler_and_mask_restored(self):
        s = self.session()
        s.ok("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})")
        s.exec_start("import time\nprint('go', flush=True)\ntime.sleep(30)")
        s.out.wait_for("go\n")
        os.kill(s.proc.pid, signal.SIGINT)
        self.assertTrue(s.wait_done()["interrupted"])

    def test_sigint_storm(self):
        """SIGINTs at random moments never break the protocol: every EXEC
        gets one well-formed DONE, and the session stays usable."""
        s = self.session()
        s.ok("x = 0")
        stop = threading.Event()

        def storm():
            while not stop.is_set():
                try:
                    os.kill(s.proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    return
                time.sleep(0.0003)

        th = threading.Thread(target=storm)
        th.start()
        interrupted = 0
        try:
            for i in range(300):
                code = "x = x + 1" if i % 3 else "y = llm_query('p%d')" % i
                done, _, _ = s.run(code, on_subcall=echo_upper)
                self.assertEqual(set(done), {"final_called", "final_value", "error", "interrupted"})
                if done["error"] is not None:
                    self.assertEqual(done["error"]["type"], "KeyboardInterrupt")
                    interrupted += 1
        finally:
            stop.set()
            th.join()
        self.assertIsNone(s.proc.poll())
        time.sleep(0.05)
        out = s.ok("x = x + 1000\nprint(x >= 1000, llm_query('end'))", on_subcall=echo_upper)
        self.assertEqual(out, "True END\n")
        ids = [f["id"] for f in s.subcalls]
        self.assertEqual(ids, list(range(1, len(ids) + 1)))
        print("\n[storm] 300 cells, %d interrupted" % interrupted, file=sys.stderr)


class HostileTest(DriverTest):
    def test_stdout_none(self):
        s = self.session()
        done, out, _ = s.run("import sys\nsys.stdout = None\nprint('lost')\n1 + 1")
        self.assertIsNone(done["error"])
        self.assertEqual(out, "")
        self.assertEqual(s.ok("print('back')"), "back\n")

    def test_stdout_stringio(self):
        s = self.session()
        s.ok("import sys, io\nbuf = io.StringIO()\nsys.stdout = buf\nprint('captured')")
        self.assertEqual(s.ok("print(repr(buf.getvalue()))"), "'captured\\n'\n")
        self.assertEqual(s.ok("import sys\nprint(sys.stdout is sys.__stdout__)"), "True\n")

    def test_stdout_closed_and_fd1_redirected(self):
        s = self.session()
        s.ok("import sys\nsys.stdout.close()")
        self.assertEqual(s.ok("print('reopened')"), "reopened\n")
        s.ok("import os\nf = os.open(os.devnull, os.O_WRONLY)\nos.dup2(f, 1)\nos.dup2(f, 2)")
        self.assertEqual(s.ok("print('fd 1 restored')"), "fd 1 restored\n")
        s.ok("import os\nos.close(1)")
        self.assertEqual(s.ok("import subprocess\n_ = subprocess.run(['echo', 'child'])\n"), "child\n")

    def test_deleted_builtins(self):
        s = self.session()
        done, _, _ = s.run("import builtins\ndel builtins.print\ndel builtins.len\n"
                           "del builtins.KeyboardInterrupt\nprint('x')")
        self.assertEqual(done["error"]["type"], "NameError")
        self.assertEqual(done["error"]["message"], "name 'print' is not defined")
        self.assertEqual(s.ok("print(len('abc'))"), "3\n")  # restored after the cell
        self.assertEqual(s.ok("print(llm_query('q'))", on_subcall=echo_upper), "Q\n")
        done, _, _ = s.run("del llm_query\nllm_query")
        self.assertEqual(done["error"]["type"], "NameError")
        self.assertEqual(s.ok("print(callable(llm_query))"), "True\n")
        done, _, _ = s.run("__builtins__ = {}\nx = 1")
        self.assertEqual(s.ok("print(len([1]))"), "1\n")

    def test_monkeypatched_modules(self):
        s = self.session()
        s.ok("import os, sys, json\nos.write = None\nos.getpid = lambda: 1\n"
             "sys.getrecursionlimit = None\njson.dumps = None\n")
        self.assertEqual(s.ok("print(llm_query('ok'))", on_subcall=echo_upper), "OK\n")
        done, _, _ = s.run("raise ValueError('still formatted')")
        self.assertEqual(done["error"]["message"], "still formatted")

    def test_forged_frame_goes_to_stdout(self):
        s = self.session()
        done, out, _ = s.run('print("\\x00\\x00\\x00\\x05Dhello", flush=True)\nimport sys\n'
                             '_ = sys.stdout.buffer.write(b"\\x00\\x00\\x00\\x02R{")')
        self.assertIsNone(done["error"])
        self.assertEqual(out, "\x00\x00\x00\x05Dhello\n\x00\x00\x00\x02R{")
        self.assertEqual(s.ok("print(1)"), "1\n")

    def test_close_fd3_is_harmless(self):
        s = self.session()
        # fd 3 is no longer the control socket (the driver moved it away)
        s.ok("import os\ntry:\n    os.close(3)\nexcept OSError:\n    pass\n")
        self.assertEqual(s.ok("print(llm_query('still here'))", on_subcall=echo_upper), "STILL HERE\n")

    def test_closing_all_fds_exits_promptly(self):
        s = self.session()
        s.exec_start("import os\nos.closerange(3, 65536)\n")
        t0 = time.monotonic()
        rc = s.proc.wait(5)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertNotEqual(rc, 0)
        self.assertIn("control socket", s.err.wait_for("\n"))

    def test_threads_that_keep_printing(self):
        s = self.session()
        done, _, _ = s.run(
            "import threading, time\nstop = False\n"
            "def spam():\n    while not stop:\n        print('spam')\n        time.sleep(0.001)\n"
            "th = threading.Thread(target=spam, daemon=True)\nth.start()\ntime.sleep(0.05)\n"
        )
        self.assertIsNone(done["error"])
        for _ in range(5):
            done, _, _ = s.run("x = 1")
            self.assertIsNone(done["error"])
        s.ok("stop = True\nth.join()")
        s.out.take()
        self.assertEqual(s.ok("print('quiet')"), "quiet\n")

    def test_forked_child_never_reaches_the_protocol(self):
        s = self.session()
        done, out, _ = s.run(
            "import os, sys\npid = os.fork()\n"
            "if pid == 0:\n    print('child', flush=True)\n"
            "else:\n    _, status = os.waitpid(pid, 0)\n    print('parent', status)\n"
        )
        self.assertIsNone(done["error"])
        self.assertEqual(sorted(out.splitlines()), ["child", "parent 0"])
        done, out, _ = s.run(
            "import os\npid = os.fork()\n"
            "if pid == 0:\n    llm_query('from child')\n"
            "else:\n    _, status = os.waitpid(pid, 0)\n    print(os.waitstatus_to_exitcode(status))\n"
        )
        self.assertIsNone(done["error"])
        self.assertEqual(out, "1\n")
        self.assertEqual(s.subcalls, [])
        self.assertEqual(s.ok("print(llm_query('a'))", on_subcall=echo_upper), "A\n")

    def test_keyboard_interrupt_raised_by_code(self):
        s = self.session()
        done, _, _ = s.run("raise KeyboardInterrupt")
        self.assertTrue(done["interrupted"])
        self.assertEqual(s.ok("print(2)"), "2\n")

    def test_huge_exception_message_is_capped(self):
        s = self.session()
        done, _, _ = s.run("raise ValueError('m' * (2 << 20))")
        self.assertLess(len(done["error"]["message"]), 300 << 10)
        self.assertIn("truncated", done["error"]["message"])

    def test_exception_with_broken_str(self):
        s = self.session()
        done, _, _ = s.run("class E(Exception):\n    def __str__(self):\n        raise RuntimeError\nraise E()")
        self.assertEqual(done["error"]["type"], "E")
        self.assertEqual(s.ok("print(3)"), "3\n")


def compile_to_marshal(path_out):
    """The marshalled driver code object, made by the driver's interpreter."""
    subprocess.run(
        [PY, "-I", "-c",
         "import marshal, sys\n"
         "src = open(sys.argv[1]).read()\n"
         "open(sys.argv[2], 'wb').write(marshal.dumps(compile(src, 'rlm_driver.py', 'exec')))",
         DRIVER, path_out],
        check=True,
    )
    return [PY, "-I", "-c",
            "import marshal\nwith open(%r, 'rb') as f: c = marshal.loads(f.read())\nexec(c)"
            % path_out]


def cpu_ns(pid):
    """CPU time used so far by process pid (ns), or None if unknown."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class MarshalBootstrapTest(DriverTest):
    def test_driver_runs_from_marshalled_code(self):
        d = tempfile.mkdtemp()
        self.addCleanup(lambda: (os.path.exists(os.path.join(d, "drv.bin")) and
                                 os.unlink(os.path.join(d, "drv.bin")), os.rmdir(d)))
        s = self.session(argv=compile_to_marshal(os.path.join(d, "drv.bin")))
        self.assertEqual(s.ok("print(llm_query('boot'))", on_subcall=echo_upper), "BOOT\n")
        done, _, _ = s.run("def f():\n    raise KeyError('k')\nf()")
        tb = done["error"]["traceback"]
        self.assertIn('File "<cell 2>", line 2, in f', tb)
        self.assertNoDriverFrames(tb)


class MoreProtocolTest(DriverTest):
    def test_malformed_json_is_fatal(self):
        s = self.session()
        body = b'E{"code": '
        s.send_raw(struct.pack(">I", len(body)) + body)
        self.assertEqual(s.proc.wait(5), 2)
        self.assertIn("malformed 'E' frame", s.err.wait_for("\n"))

    def test_exec_without_code_is_fatal(self):
        s = self.session()
        s.send("E", {"source": "x = 1"})
        self.assertEqual(s.proc.wait(5), 2)

    def test_unknown_subcall_id_is_fatal(self):
        s = self.session()
        s.send("A", {"id": 99, "results": []})
        self.assertEqual(s.proc.wait(5), 2)

    def test_context_fd_count_mismatch_is_fatal(self):
        s = self.session()
        fd = os.open(DRIVER, os.O_RDONLY)
        try:
            s.send("C", {"count": 2}, fds=[fd])
        finally:
            os.close(fd)
        self.assertEqual(s.proc.wait(5), 2)
        self.assertIn("CONTEXTS announced 2", s.err.wait_for("\n"))

    def test_malformed_result_items(self):
        s = self.session()
        out = s.ok("print(llm_query_batched(['a', 'b', 'c']))",
                   on_subcall=lambda f: [{"text": "ok"}, {"bogus": 1}])
        self.assertEqual(
            out,
            "['ok', 'Error: the agent returned no result for this prompt', "
            "'Error: the agent returned no result for this prompt']\n",
        )

    def test_inspect_getsource_of_cell_functions(self):
        s = self.session()
        s.ok("def f(a):\n    return a + 1\n")
        s.ok("import inspect")
        self.assertEqual(s.ok("print(inspect.getsource(f), end='')"), "def f(a):\n    return a + 1\n")

    def test_frames_split_across_writes(self):
        s = self.session()
        body = json.dumps({"code": "print('split')"}).encode()
        frame = struct.pack(">I", len(body) + 1) + b"E" + body
        for i in range(len(frame)):
            s.sock.sendall(frame[i:i + 1])
            time.sleep(0.0005)
        self.assertIsNone(s.wait_done()["error"])
        self.assertEqual(s.out.take(), "split\n")
        # and two frames in one write
        s.sock.sendall(struct.pack(">I", len(body) + 1) + b"E" + body + frame)
        self.assertIsNone(s.wait_done()["error"])
        self.assertIsNone(s.wait_done()["error"])
        self.assertEqual(s.out.take(), "split\nsplit\n")


class PerfTest(DriverTest):
    """Measures and prints (does not assert) start-up and round-trip times."""

    def spawn_once(self, argv, first_cell):
        """Seconds from spawn to READY (to exit, for `pass`; to the first
        DONE with first_cell), spawning as Session does but without pipes."""
        a, b = socket.socketpair()
        a.settimeout(TIMEOUT)
        cfd = b.fileno()
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=False,
                             preexec_fn=lambda: os.dup2(cfd, 3))
        b.close()
        if argv[-1] == "pass":
            p.wait()
        else:
            s = Session.__new__(Session)
            s.sock, s.rbuf = a, b""
            self.assertEqual(s.recv_frame()[0], "R")
            if first_cell:
                body = b'E{"code":"x = 1"}'
                s.send_raw(struct.pack(">I", len(body)) + body)
                self.assertEqual(s.recv_frame()[0], "D")
        t = time.perf_counter() - t0
        a.close()
        p.wait()
        return t

    def test_startup_and_round_trip(self):
        d = tempfile.mkdtemp()
        binpath = os.path.join(d, "drv.bin")
        self.addCleanup(lambda: (os.path.exists(binpath) and os.unlink(binpath), os.rmdir(d)))
        boot = compile_to_marshal(binpath)
        plain = [PY, "-I", DRIVER]
        kinds = {
            "pass": ([PY, "-I", "-c", "pass"], False),
            "ready": (plain, False),
            "ready_boot": (boot, False),
            "done": (plain, True),
            "done_boot": (boot, True),
        }
        samples = {k: [] for k in kinds}
        for _ in range(20):  # interleaved, so machine noise hits all alike
            for k, (argv, first_cell) in kinds.items():
                samples[k].append(self.spawn_once(argv, first_cell))
        med = {k: statistics.median(v) * 1000 for k, v in samples.items()}

        s = self.session()
        s.ok("x = 0")
        body = b'E{"code":"x = x + 1"}'
        frame = struct.pack(">I", len(body)) + body
        rts = []
        c0 = cpu_ns(s.proc.pid)
        for _ in range(1000):
            t0 = time.perf_counter()
            s.sock.sendall(frame)
            t, done = s.recv_frame()
            rts.append(time.perf_counter() - t0)
            assert t == "D" and done["error"] is None
        c1 = cpu_ns(s.proc.pid)
        self.assertEqual(s.ok("print(x)"), "1000\n")
        rts.sort()
        print(
            "\n[perf] medians of 20: spawn->exit `python3 -I -c pass`: %.2f ms | spawn->READY: "
            "%.2f ms (marshal bootstrap: %.2f ms) | spawn->first DONE: %.2f ms (bootstrap: "
            "%.2f ms)"
            "\n[perf] EXEC round trip 'x = x + 1' over the socketpair (this Python harness "
            "included): median %.1f us, p10 %.1f us, p90 %.1f us; driver CPU per cell: %s"
            % (med["pass"], med["ready"], med["ready_boot"], med["done"], med["done_boot"],
               rts[500] * 1e6, rts[100] * 1e6, rts[900] * 1e6,
               "%.1f us" % ((c1 - c0) / 1000 / 1000) if c0 is not None else "n/a"),
            file=sys.stderr,
        )


if __name__ == "__main__":
    unittest.main()
