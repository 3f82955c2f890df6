"""RLM Runtime sandbox REPL driver (standard library only).

One long-lived process per sandbox session. It runs model-written Python
cells in a persistent namespace and talks to the agent over the control
socket inherited as fd 3. The wire protocol is described in PROTOCOL.md next
to this file. The driver does not use its own file path or import sibling
modules, so it can be run as `python3 -I -c <source>` or as a file.

Some rules that apply to the whole file:
* Every function below runs with a private copy of the builtins, made before
  anything else (CPython binds a function's builtins when the function is
  created). Cells can delete or replace builtins without breaking the
  driver.
* Module functions the driver needs are bound once, at start-up, to private
  names. Cells can monkeypatch `os`, `sys`, and so on without breaking it.
* SIGINT raises KeyboardInterrupt only while `_armed` is true. That is only
  while cell code runs, or while the main thread is blocked at a point where
  giving up leaves no partial frame behind. See PROTOCOL.md, "SIGINT".
"""

import builtins as _bi

__builtins__ = dict(_bi.__dict__)

# Modules the agent's bootstrap asks for (RLM_AGENT_PRELOAD), imported once
# READY is sent: while the session waits in the pool or for its first cell.
_preload = globals().pop("_rlm_preload", ())

_armed = False  # SIGINT may raise KeyboardInterrupt right now (main thread only)
_in_cell = False  # a cell is running (subcalls are allowed)
_pending = False  # a SIGINT arrived during the cell while disarmed


def _on_sigint(signum, frame):
    global _pending
    if _armed:
        raise KeyboardInterrupt
    if _in_cell:
        _pending = True


import _signal

_signal.signal(_signal.SIGINT, _on_sigint)

import sys as _sys
# posix, not os: it is loaded with the interpreter, while `os` (with
# _collections_abc, stat, posixpath) costs ~1.6 ms here before READY.
import posix as _os
import io as _io
import _socket
import _thread

_MAX_FRAME = 64 << 20
_BIG = 256 << 10  # frames with more missing bytes than this are read in place
_ERR_CAP = 256 << 10  # cap on the error message and traceback strings (chars)

_get_ident = _thread.get_ident
_alloc_lock = _thread.allocate_lock
_getpid = _os.getpid
_os_write = _os.write
_os_close = _os.close
_os_exit = _os._exit
_os_pread = _os.pread
_fstat = _os.fstat
_dup2 = _os.dup2
_set_blocking = _os.set_blocking
_io_open = _io.open
_sig_signal = _signal.signal
_sig_getsignal = _signal.getsignal
_sig_mask = getattr(_signal, "pthread_sigmask", None)
_SIGINT = _signal.SIGINT
_SIG_UNBLOCK = getattr(_signal, "SIG_UNBLOCK", 1)
_enc = None  # str -> JSON string literal (non-ASCII kept); see _load_json
_getrec = _sys.getrecursionlimit
_setrec = _sys.setrecursionlimit
_REC_LIMIT = _getrec()
_ModuleType = type(_sys)
_CodeType = type(_on_sigint.__code__)
_str_str = str.__str__
_dict_get = dict.get
_dict_setitem = dict.__setitem__
_G = globals()

_PID = _getpid()
_MAIN_TID = _get_ident()
_self_module = _sys.modules.get("__main__")  # keep the driver's module alive


def _die(code, msg):
    """The driver cannot go on: one line on fd 2, then exit `code`."""
    try:
        _os_write(2, ("rlm_driver: fatal: %s\n" % (msg,)).encode("utf-8", "replace"))
    except BaseException:
        pass
    _os_exit(code)


def _dup_high(fd):
    """Duplicate fd to the lowest free close-on-exec descriptor >= 64. Only
    called before any cell runs (no other thread opens descriptors), so the
    free one found stays free; no fcntl import (~0.2 ms) before READY."""
    new = 64
    while True:
        try:
            _fstat(new)
        except OSError as e:
            if e.errno != 9:  # only EBADF says the descriptor is free
                raise
            return _dup2(fd, new, False)
        new += 1


# ---------------------------------------------------------------- descriptors
# Move the control socket from fd 3 to a high close-on-exec fd. Child
# processes do not inherit it, and a cell that closes fd 3 does no harm.
try:
    _ctl_fd = _dup_high(3)
except OSError as _e:
    _die(2, "control socket fd 3 is not usable: %s" % (_e,))
_os_close(3)
try:
    _sock = _socket.socket(fileno=_ctl_fd)
    _sock.setblocking(True)
except OSError as _e:
    _die(2, "fd 3 is not a socket: %s" % (_e,))
_recvmsg_into = _sock.recvmsg_into
_recv = _sock.recv
_sendall = _sock.sendall
_SOL_SOCKET = _socket.SOL_SOCKET
_SCM_RIGHTS = _socket.SCM_RIGHTS
_MSG_PEEK = _socket.MSG_PEEK
_MSG_CTRUNC = getattr(_socket, "MSG_CTRUNC", 8)
_MSG_CMSG_CLOEXEC = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
_ANCSIZE = _socket.CMSG_SPACE(253 * 4)  # SCM_MAX_FD descriptors


def _save_fd(fd):
    # Keep a copy of the stdout/stderr pipes so a cell's dup2/close on fd 1/2
    # can be undone after the cell.
    try:
        st = _fstat(fd)
        _set_blocking(fd, True)
        return (fd, _dup_high(fd), st.st_dev, st.st_ino)
    except OSError:
        return None


_saved_fds = tuple(s for s in (_save_fd(1), _save_fd(2)) if s is not None)


def _mkstream(fd):
    # stderr is line buffered, as Python's own
    return _io_open(
        fd, "w", 1 if fd == 2 else -1, encoding="utf-8", errors="backslashreplace",
        closefd=False,
    )


_streams = [_sys.stdout, _sys.stderr]
for _i, _s in enumerate(_streams):
    try:
        _s.reconfigure(encoding="utf-8", errors="backslashreplace")
    except BaseException:
        try:
            _streams[_i] = _mkstream(_i + 1)
        except BaseException:
            _streams[_i] = None
_sys.stdout, _sys.stderr = _streams
_sys.__stdout__, _sys.__stderr__ = _streams
_stdin = _sys.stdin
_sys.argv = [""]


def _after_fork_in_child():
    # A forked child must never talk on the control socket; release its copy
    # so the agent still sees EOF when the driver dies.
    try:
        _os_close(_sock.detach())
    except BaseException:
        pass


try:
    _os.register_at_fork(after_in_child=_after_fork_in_child)
except BaseException:
    pass


# ----------------------------------------------------------------------- JSON
class _JsonCtx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name):
        raise ValueError("non-finite number " + name)

    memo = {}


_scan = None  # see _load_json


def _load_json():
    # The C accelerator (a shared library: ~0.5 ms), loaded after READY.
    global _enc, _scan
    import _json

    _enc = _json.encode_basestring
    _scan = _json.make_scanner(_JsonCtx())


def _jloads(s):
    if s[:1] in (" ", "\t", "\r", "\n"):
        s = s.lstrip(" \t\r\n")
    try:
        obj, end = _scan(s, 0)
    except Exception:
        # The C scanner's errors are terse (or a SystemError when json.decoder
        # is not loaded): let the json module produce the error message.
        import json

        return json.loads(s)
    if end != len(s) and s[end:].strip(" \t\r\n"):
        raise ValueError("trailing data after JSON value")
    return obj


def _utf8(text):
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. from surrogateescape) become U+FFFD, so the
        # agent always gets valid UTF-8.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _body(frame):
    """JSON body of a frame (bytearray whose byte 0 is the type)."""
    try:
        obj = _jloads(str(memoryview(frame)[1:], "utf-8"))
    except Exception as e:
        _die(2, "malformed %r frame: %s" % (chr(frame[0]), e))
    if type(obj) is not dict:
        _die(2, "malformed %r frame: body is not an object" % (chr(frame[0]),))
    return obj


# -------------------------------------------------------------------- framing
_SL = _alloc_lock()  # serialises whole frames on the way out
_rbuf = bytearray()  # bytes read but not yet consumed (reader role only)
_scratch = memoryview(bytearray(65536))
_fd_pool = []  # descriptors received (SCM_RIGHTS) and not yet claimed


def _take_fds(anc):
    for level, kind, data in anc:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            n = len(data) - len(data) % 4
            _fd_pool.extend(memoryview(data)[:n].cast("i"))


def _recv_into(view, at_boundary):
    try:
        nb, anc, flags, _addr = _recvmsg_into([view], _ANCSIZE, _MSG_CMSG_CLOEXEC)
    except ConnectionResetError:
        _os_exit(0)  # the agent closed its end with data unread: it is gone
    except OSError as e:
        _die(3, "control socket read failed: %s" % (e,))
    if anc:
        _take_fds(anc)
    if flags & _MSG_CTRUNC:
        _die(2, "file descriptors lost (ancillary data truncated)")
    if not nb:
        if at_boundary:
            _os_exit(0)  # the agent closed the session
        _die(2, "control socket closed in the middle of a frame")
    return nb


def _read_frame():
    """Read one frame; returns a bytearray: type byte, then the body."""
    global _rbuf
    buf = _rbuf
    while len(buf) < 4:
        nb = _recv_into(_scratch, not buf)
        buf += _scratch[:nb]
    n = int.from_bytes(buf[:4], "big")
    if n < 1 or n > _MAX_FRAME:
        _die(2, "bad frame length %d" % n)
    end = n + 4
    have = len(buf)
    if end - have > _BIG:
        frame = bytearray(n)
        pos = have - 4
        frame[:pos] = buf[4:]
        _rbuf = bytearray()
        mv = memoryview(frame)
        while pos < n:
            pos += _recv_into(mv[pos:], False)
        mv.release()
        return frame
    while len(buf) < end:
        nb = _recv_into(_scratch, False)
        buf += _scratch[:nb]
    frame = buf[4:end]
    del buf[:end]
    return frame


def _send_locked(kind, payload):
    """Send one frame; the caller holds _SL. kind: one-byte bytes."""
    n = len(payload) + 1
    if n > _MAX_FRAME:
        raise ValueError("frame too large (%d bytes, limit %d)" % (n, _MAX_FRAME))
    try:
        if n > 1 << 20:
            _sendall(n.to_bytes(4, "big") + kind)
            _sendall(payload)
        else:
            _sendall(n.to_bytes(4, "big") + kind + payload)
    except (BrokenPipeError, ConnectionResetError):
        _os_exit(0)  # the agent closed its end: it is gone
    except OSError as e:
        _die(3, "control socket write failed: %s" % (e,))


# ------------------------------------------------- readers, waiters, dispatch
# Frames are read by whichever thread needs one: the main loop waiting for
# EXEC, or a thread waiting for its SUBCALL_RESULT (cells may call the helpers
# from several threads). One thread at a time holds the reader role
# (`_reading`). It reads one frame and dispatches it under _L. Other waiters
# sleep on their own lock and are woken when their frame arrives, or to take
# over the reader role.
_L = _alloc_lock()
_reading = False
_sleepers = []
_calls = {}  # subcall id -> _Waiter, for calls still outstanding
_next_id = 1
_inbox = []  # EXEC/CONTEXTS frames for the main loop
_main_w = None  # the main loop's waiter while it waits for _inbox


class _Waiter:
    __slots__ = ("lock", "sleeping", "done", "value")

    def __init__(self):
        self.lock = _alloc_lock()
        self.lock.acquire()  # resting state: held; a wake-up releases it
        self.sleeping = False
        self.done = False
        self.value = None


def _wake(w):  # _L held
    if w.sleeping:
        w.sleeping = False
        _sleepers.remove(w)
        w.lock.release()


def _wake_one():  # _L held: let another waiter take the reader role
    if _sleepers:
        _wake(_sleepers[0])


def _complete(w, value):  # _L held
    w.value = value
    w.done = True
    _wake(w)


def _dispatch(frame):  # _L held
    t = frame[0]
    if t == 65:  # 'A' SUBCALL_RESULT
        obj = _body(frame)
        cid = obj.get("id")
        if type(cid) is not int or not 0 < cid < _next_id:
            _die(2, "SUBCALL_RESULT for an id that was never issued: %r" % (cid,))
        w = _calls.pop(cid, None)
        if w is not None:  # else: stale (abandoned) id, drop it
            _complete(w, obj.get("results"))
    elif t == 69 or t == 67:  # 'E' EXEC, 'C' CONTEXTS
        if _in_cell:
            _die(2, "%r frame received while a cell is running" % (chr(t),))
        _inbox.append(frame)
        if _main_w is not None:
            _complete(_main_w, None)
    else:
        _die(2, "unknown frame type %r" % (chr(t),))


def _wait(w, armable):
    """Block until w.done. With armable (main thread inside a cell) SIGINT
    interrupts the wait with KeyboardInterrupt; the caller then abandons."""
    global _reading, _armed, _pending
    L = _L
    while True:
        L.acquire()
        if w.done:
            L.release()
            return
        if _reading:
            w.sleeping = True
            _sleepers.append(w)
            L.release()
            if not armable:
                w.lock.acquire()
                continue
            try:
                _armed = True
                if _pending:
                    _pending = False
                    raise KeyboardInterrupt
                w.lock.acquire()
                _armed = False
            except BaseException:
                _armed = False
                L.acquire()
                if w.sleeping:
                    w.sleeping = False
                    _sleepers.remove(w)
                else:  # woken concurrently: back to resting state, pass the role on
                    w.lock.acquire(False)
                    if not _reading:
                        _wake_one()
                L.release()
                raise
            continue
        _reading = True
        L.release()
        if armable and not _rbuf:
            try:
                _armed = True
                if _pending:
                    _pending = False
                    raise KeyboardInterrupt
                _recv(1, _MSG_PEEK)  # wait for data without consuming any
                _armed = False
            except ConnectionResetError:
                _os_exit(0)
            except OSError as e:
                _armed = False
                _die(3, "control socket read failed: %s" % (e,))
            except BaseException:
                _armed = False
                L.acquire()
                _reading = False
                _wake_one()
                L.release()
                raise
        frame = _read_frame()
        L.acquire()
        _reading = False
        _dispatch(frame)
        if w.done:
            _wake_one()
        L.release()


def _next_control(w):
    """Main loop: the next EXEC/CONTEXTS frame."""
    global _main_w
    _L.acquire()
    if not _inbox:
        w.done = False
        _main_w = w
        _L.release()
        _wait(w, False)
        _L.acquire()
        _main_w = None
    frame = _inbox.pop(0)
    _L.release()
    return frame


# ------------------------------------------------------------------- subcalls
def _results(raw, n):
    if type(raw) is not list:
        raw = []
    out = []
    for i in range(n):
        item = raw[i] if i < len(raw) else None
        if type(item) is dict:
            text = item.get("text")
            if type(text) is str:
                out.append(text)
                continue
            err = item.get("error")
            if err is not None:
                out.append("Error: " + (err if type(err) is str else str(err)))
                continue
        out.append("Error: the agent returned no result for this prompt")
    return out


def _subcall(kind, prompts, model, batched, contexts):
    global _armed, _pending, _next_id
    if _getpid() != _PID:
        raise RuntimeError("%s_query is not available in a forked child process" % kind)
    main = _get_ident() == _MAIN_TID
    if main:
        prev = _armed
        _armed = False
    try:
        rest = ',"kind":"%s","prompts":[%s],"model":%s,"batched":%s' % (
            kind,
            ",".join([_enc(p) for p in prompts]),
            "null" if model is None else _enc(model),
            "true" if batched else "false",
        )
        if kind == "rlm":
            rest += ',"contexts":[%s]' % ",".join(
                ["null" if c is None else '{"text":%s}' % _enc(c) for c in contexts]
            )
        rest = _utf8(rest + "}")
        if len(rest) + 32 > _MAX_FRAME:
            raise ValueError(
                "%s_query payload too large: %d bytes (limit 64 MiB)" % (kind, len(rest))
            )
        if main and _pending:
            _pending = False
            raise KeyboardInterrupt
        w = _Waiter()
        _SL.acquire()
        try:
            _L.acquire()
            if not _in_cell:
                _L.release()
                raise RuntimeError(
                    "%s_query called while no cell is running (from a thread that "
                    "outlived its cell)" % kind
                )
            cid = _next_id
            _next_id = cid + 1
            _calls[cid] = w
            _L.release()
            _send_locked(b"S", b'{"id":' + str(cid).encode() + rest)
        finally:
            _SL.release()
        try:
            if main and _pending:
                _pending = False
                raise KeyboardInterrupt
            _wait(w, main)
        except BaseException:
            _L.acquire()
            _calls.pop(cid, None)
            _L.release()
            raise
        if w.value is _CANCELLED:
            raise RuntimeError(
                "%s_query cancelled: the cell that issued it has finished" % kind
            )
        return _results(w.value, len(prompts))
    finally:
        if main:
            _armed = prev
            if prev and _pending:  # a SIGINT arrived while disarmed
                _pending = False
                raise KeyboardInterrupt


_CANCELLED = object()


def _exact(s):
    return s if type(s) is str else _str_str(s)


def _check_prompt(p, fn, what="prompt"):
    if not isinstance(p, str):
        raise TypeError("%s: %s must be a str, not %s" % (fn, what, type(p).__name__))
    return _exact(p)


def _check_model(model, fn):
    if model is None:
        return None
    if not isinstance(model, str):
        raise TypeError("%s: model must be a str or None, not %s" % (fn, type(model).__name__))
    return _exact(model)


def _prompt_list(prompts, fn):
    if isinstance(prompts, (str, bytes, bytearray, dict)) or prompts is None:
        raise TypeError(
            "%s: prompts must be a list of str, not %s" % (fn, type(prompts).__name__)
        )
    try:
        items = list(prompts)
    except TypeError:
        raise TypeError(
            "%s: prompts must be a list of str, not %s" % (fn, type(prompts).__name__)
        ) from None
    return [_check_prompt(p, fn, "prompts[%d]" % i) for i, p in enumerate(items)]


def llm_query(prompt, model=None):
    """Ask a sub-model one question; returns its answer as a str.

    On failure the result is the string "Error: <message>"."""
    p = _check_prompt(prompt, "llm_query")
    m = _check_model(model, "llm_query")
    return _subcall("llm", (p,), m, False, None)[0]


def llm_query_batched(prompts, model=None):
    """Ask a sub-model several questions concurrently.

    Returns the answers in order; failed items are "Error: <message>" strings."""
    ps = _prompt_list(prompts, "llm_query_batched")
    m = _check_model(model, "llm_query_batched")
    if not ps:
        return []
    return _subcall("llm", ps, m, True, None)


def _check_context(c, fn, what="context"):
    if c is None:
        return None
    if not isinstance(c, str):
        raise TypeError("%s: %s must be a str or None, not %s" % (fn, what, type(c).__name__))
    return _exact(c)


def rlm_query(prompt, context=None):
    """Run a child RLM on `prompt`, with `context` (str or None) as its context.

    Returns its final answer as a str ("Error: <message>" on failure)."""
    p = _check_prompt(prompt, "rlm_query")
    c = _check_context(context, "rlm_query")
    return _subcall("rlm", (p,), None, False, () if c is None else (c,))[0]


def rlm_query_batched(prompts, contexts=None):
    """Run several child RLMs concurrently; contexts is None or a list aligned
    with prompts (each a str or None). Returns the answers in order."""
    fn = "rlm_query_batched"
    ps = _prompt_list(prompts, fn)
    if contexts is None:
        cs = ()
    else:
        if not isinstance(contexts, (list, tuple)):
            raise TypeError(
                "%s: contexts must be None or a list, not %s" % (fn, type(contexts).__name__)
            )
        if len(contexts) != len(ps):
            raise ValueError(
                "%s: contexts has %d items but prompts has %d" % (fn, len(contexts), len(ps))
            )
        cs = [_check_context(c, fn, "contexts[%d]" % i) for i, c in enumerate(contexts)]
    if not ps:
        return []
    return _subcall("rlm", ps, None, True, cs)


_final = (False, None)  # (FINAL called in this cell, value)
_last_shown = None  # the dict SHOW_VARS returned last (not echoed again)


def FINAL(value):
    """Record `value` (as str) as the final answer. The last call in a cell wins."""
    global _final
    s = str(value)
    _final = (True, _exact(s))


def FINAL_VAR(name):
    """Record the variable called `name` (a str) as the final answer."""
    global _final
    if not isinstance(name, str):
        raise TypeError(
            "FINAL_VAR expects the name of a variable as a str, e.g. FINAL_VAR(\"answer\"), "
            "not %s; use FINAL(value) to return a value directly" % type(name).__name__
        )
    key = _exact(name).strip()
    try:
        value = ns[key]
    except KeyError:
        shown = key if len(key) <= 80 else key[:77] + "..."
        raise NameError(
            "FINAL_VAR: no variable named %r is defined; pass the name of an existing "
            "variable as a string, or use FINAL(value) to return a value directly" % (shown,)
        ) from None
    _final = (True, _exact(str(value)))


def SHOW_VARS():
    """Print and return {name: type name} for the variables defined so far."""
    global _last_shown
    out = {}
    for k, v in list(dict.items(ns)):
        if type(k) is not str or k[:1] == "_" or isinstance(v, _ModuleType):
            continue
        if _HELPERS.get(k) is v:
            continue
        out[k] = type(v).__name__
    print(out)
    _last_shown = out
    return out


_HELPERS = {
    "llm_query": llm_query,
    "llm_query_batched": llm_query_batched,
    "rlm_query": rlm_query,
    "rlm_query_batched": rlm_query_batched,
    "FINAL": FINAL,
    "FINAL_VAR": FINAL_VAR,
    "SHOW_VARS": SHOW_VARS,
}


# ------------------------------------------------------- namespace, contexts
_lazy = {}  # name -> context index, for names not yet materialised
_ctx_fds = []  # index -> fd (None once closed)
_ctx_text = {}  # index -> decoded text, while another name still needs it
_CL = _alloc_lock()


class _Namespace(dict):
    """The cells' globals. `context`, `context_N` are decoded on first use."""

    __slots__ = ()

    def __missing__(self, key):
        if key not in _lazy:
            raise KeyError(key)
        return _materialize(key)


def _read_context(fd):
    size = _fstat(fd).st_size
    if size == 0:
        return ""
    try:
        import mmap

        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            return str(m, "utf-8", "replace")
    except (ImportError, ValueError, OSError):
        chunks = []
        off = 0
        while True:
            b = _os_pread(fd, 1 << 20, off)
            if not b:
                break
            chunks.append(b)
            off += len(b)
        return str(b"".join(chunks), "utf-8", "replace")


def _materialize(key):
    global _armed, _pending
    main = _get_ident() == _MAIN_TID
    if main:
        prev = _armed
        _armed = False
    try:
        with _CL:
            if dict.__contains__(ns, key):
                return dict.__getitem__(ns, key)
            i = _lazy.get(key)
            if i is None:
                raise KeyError(key)
            text = _ctx_text.get(i)
            if text is None:
                text = _read_context(_ctx_fds[i])
            del _lazy[key]
            if i in _lazy.values():
                _ctx_text[i] = text
            else:
                _ctx_text.pop(i, None)
                try:
                    _os_close(_ctx_fds[i])
                except OSError:
                    pass
                _ctx_fds[i] = None
            _dict_setitem(ns, key, text)
            if not _lazy:
                _drop_missing()
            return text
    finally:
        if main:
            _armed = prev
            if prev and _pending:  # a SIGINT arrived while disarmed
                _pending = False
                raise KeyboardInterrupt


def _drop_missing():
    # Once nothing is lazy, plain dict lookups again: builtins stop going
    # through a Python-level __missing__.
    try:
        del _Namespace.__missing__
    except AttributeError:
        pass


def _setup_contexts(frame):
    obj = _body(frame)
    n = obj.get("count")
    if type(n) is not int or n < 0:
        _die(2, "CONTEXTS frame without a valid count")
    if len(_fd_pool) != n:
        _die(2, "CONTEXTS announced %d descriptors but %d arrived" % (n, len(_fd_pool)))
    for i in range(n):
        fd = _fd_pool[i]
        try:
            nfd = _dup_high(fd)
            _os_close(fd)
        except OSError:
            nfd = fd
        _ctx_fds.append(nfd)
        _lazy["context_%d" % i] = i
    del _fd_pool[:]
    if n:
        _lazy["context"] = 0


def _prescan(code):
    """Class bodies look globals up with a plain dict lookup (no __missing__):
    materialise the contexts named in any class body of this cell now."""
    hits = []
    stack = [c for c in code.co_consts if type(c) is _CodeType]
    while stack:
        co = stack.pop()
        if not co.co_flags & 1:  # not CO_OPTIMIZED: a class body
            for n in co.co_names:
                if n in _lazy:
                    hits.append(n)
        stack.extend([c for c in co.co_consts if type(c) is _CodeType])
    for n in hits:
        if n in _lazy:
            ns[n]


class _MainModule(_ModuleType):
    """sys.modules['__main__']: attribute access goes to the cells' namespace
    (so pickle and `import __main__` see the variables cells define)."""

    def __getattr__(self, name):
        try:
            return ns[name]
        except KeyError:
            raise AttributeError("module '__main__' has no attribute %r" % (name,)) from None

    def __setattr__(self, name, value):
        ns[name] = value

    def __delattr__(self, name):
        try:
            del ns[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self):
        return list(ns)


ns = _Namespace()
ns["__name__"] = "__main__"
ns["__doc__"] = None
ns["__package__"] = None
ns["__spec__"] = None
ns["__builtins__"] = _bi
ns.update(_HELPERS)
_sys.modules["__main__"] = _MainModule("__main__")
_builtins_snapshot = dict(_bi.__dict__)


# ----------------------------------------------------------------- the cells
_cells = {}  # "<cell N>" -> source (also fed to linecache, for tracebacks)
# source -> (code, last): models often send the same cell again, and compiling
# through the AST costs ~50 us per pass. Functions defined in a reused cell
# keep the file name of its first run (same source, so tracebacks still show
# the right lines).
_compiled = {}
_COMPILED_MAX = 256
_COMPILED_SRC_MAX = 1 << 16
_cell_no = 0
_lc_synced = 0
_ast = None
_tbmod = None
_DONE_OK = b'{"final_called":false,"final_value":null,"error":null,"interrupted":false}'


def _sync_linecache(full):
    """Put the cells' sources in linecache (once it is loaded), so tracebacks
    and inspect show their lines."""
    global _lc_synced
    if _lc_synced == _cell_no and not full:
        return
    try:
        lc = _sys.modules.get("linecache")
        cache = getattr(lc, "cache", None) if lc is not None else None
        if type(cache) is not dict:
            return
        for i in range(1 if full else _lc_synced + 1, _cell_no + 1):
            name = "<cell %d>" % i
            if name not in cache:
                src = _cells[name]
                cache[name] = (len(src), None, src.splitlines(True), name)
        _lc_synced = _cell_no
    except BaseException:
        pass


def _trim(exc):
    """Drop the driver's own frames from tracebacks (the whole chain)."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        try:
            keep = []
            tb = e.__traceback__
            while tb is not None:
                if tb.tb_frame.f_globals is not _G:
                    keep.append(tb)
                tb = tb.tb_next
            nxt = None
            for t in reversed(keep):
                t.tb_next = nxt
                nxt = t
            e.__traceback__ = nxt
            todo.append(e.__cause__)
            todo.append(e.__context__)
        except BaseException:
            pass


def _type_name(e):
    try:
        t = type(e)
        mod, q = t.__module__, t.__qualname__
        if type(q) is not str:
            q = "?"
        if mod in ("builtins", "__main__") or type(mod) is not str:
            return q
        return mod + "." + q
    except BaseException:
        return "BaseException"


def _safe_str(e):
    try:
        return _exact(str(e))
    except BaseException:
        return "<exception str() failed>"


def _cap(s):
    if len(s) > _ERR_CAP:
        return s[:_ERR_CAP] + "\n... [truncated %d chars]" % (len(s) - _ERR_CAP)
    return s


def _fallback_traceback(e):
    out = []
    tb = e.__traceback__
    if tb is not None:
        out.append("Traceback (most recent call last):\n")
    while tb is not None:
        co = tb.tb_frame.f_code
        out.append('  File "%s", line %s, in %s\n' % (co.co_filename, tb.tb_lineno, co.co_name))
        src = _cells.get(co.co_filename)
        if src is not None:
            lines = src.splitlines()
            if 0 < tb.tb_lineno <= len(lines):
                out.append("    %s\n" % lines[tb.tb_lineno - 1].strip())
        tb = tb.tb_next
    msg = _safe_str(e)
    out.append("%s: %s\n" % (_type_name(e), msg) if msg else "%s\n" % _type_name(e))
    return "".join(out)


def _format_error(e):
    global _tbmod
    _trim(e)
    try:
        if _tbmod is None:
            import traceback

            _tbmod = traceback
        _sync_linecache(True)
        tb = "".join(_tbmod.format_exception(type(e), e, e.__traceback__))
        if type(tb) is not str:
            raise TypeError
    except BaseException:
        try:
            tb = _fallback_traceback(e)
        except BaseException:
            tb = _type_name(e) + "\n"
    return _type_name(e), _cap(_safe_str(e)), _cap(tb)


def _flush_real(i):
    """Flush the driver's stream for fd i+1, replacing it if it is unusable
    (closed or detached by a cell); returns the stream (None if fd i+1 is
    gone for good)."""
    s = _streams[i]
    try:
        s.flush()
        return s
    except BaseException:
        pass
    try:
        s = _mkstream(i + 1)
    except BaseException:
        s = None
    _streams[i] = s
    return s


def _restore_sigint():
    try:
        if _sig_getsignal(_SIGINT) is not _on_sigint:
            _sig_signal(_SIGINT, _on_sigint)
    except BaseException:
        pass


def _hygiene():
    """Undo what a cell may have done to the driver's environment."""
    sys = _sys
    # 1. flush whatever streams the cell left installed
    out, err = _streams
    for s in (getattr(sys, "stdout", None), getattr(sys, "stderr", None)):
        if s is not out and s is not err and s is not None:
            try:
                s.flush()
            except BaseException:
                pass
    # 2. fds 1/2 must still be the agent's pipes
    for fd, saved, dev, ino in _saved_fds:
        try:
            st = _fstat(fd)
            ok = st.st_ino == ino and st.st_dev == dev
        except OSError:
            ok = False
        if not ok:
            try:
                _dup2(saved, fd)
            except OSError:
                pass
    # 3. the real streams flushed and back in sys
    out = _flush_real(0)
    err = _flush_real(1)
    if getattr(sys, "stdout", None) is not out:
        sys.stdout = out
    if getattr(sys, "stderr", None) is not err:
        sys.stderr = err
    if getattr(sys, "__stdout__", None) is not out:
        sys.__stdout__ = out
    if getattr(sys, "__stderr__", None) is not err:
        sys.__stderr__ = err
    if getattr(sys, "stdin", None) is not _stdin:
        sys.stdin = _stdin
    # 4. SIGINT must reach the driver's handler (see also _restore_sigint)
    try:
        if _sig_mask is not None:
            _sig_mask(_SIG_UNBLOCK, (_SIGINT,))
    except BaseException:
        pass
    # 5. deleted builtins come back (replaced ones are left alone)
    bd = _bi.__dict__
    if len(bd) < len(_builtins_snapshot):
        for k, v in _builtins_snapshot.items():
            if k not in bd:
                bd[k] = v
    # 6. the helpers and dunders of the namespace
    for k in _HELPERS:
        if k not in ns:
            _dict_setitem(ns, k, _HELPERS[k])
    if _dict_get(ns, "__builtins__") is not _bi:
        _dict_setitem(ns, "__builtins__", _bi)
    name = _dict_get(ns, "__name__")
    if type(name) is not str or name != "__main__":
        _dict_setitem(ns, "__name__", "__main__")
    if _getrec() < 100:
        _setrec(_REC_LIMIT)


def _child_exit(exc):
    # A forked child finished the cell: it must not reach the protocol.
    code = 0
    if isinstance(exc, SystemExit):
        c = exc.code
        code = c if type(c) is int else (0 if c is None else 1)
    elif exc is not None:
        code = 1
    for s in (getattr(_sys, "stdout", None), getattr(_sys, "stderr", None)):
        try:
            s.flush()
        except BaseException:
            pass
    _os_exit(code)


def _run_cell(src):
    global _in_cell, _armed, _pending, _final, _last_shown, _cell_no, _ast
    _cell_no += 1
    fname = "<cell %d>" % _cell_no
    _cells[fname] = src
    _final = (False, None)
    _last_shown = None
    exc = None
    _pending = False
    _in_cell = True
    code = last = None
    try:
        hit = _compiled.get(src)
        if hit is None:
            tree = compile(src, fname, "exec", _ast.PyCF_ONLY_AST, True)
            body = tree.body
            if body and type(body[-1]) is _ast.Expr:
                last = compile(_ast.Expression(body.pop().value), fname, "eval", 0, True)
            code = compile(tree, fname, "exec", 0, True)
            if len(src) <= _COMPILED_SRC_MAX:
                if len(_compiled) >= _COMPILED_MAX:
                    _compiled.clear()
                _compiled[src] = (code, last)
        else:
            code = hit[0].replace(co_filename=fname)
            if hit[1] is not None:
                last = hit[1].replace(co_filename=fname)
    except BaseException as e:
        exc = e
    if exc is None:
        _sync_linecache(False)
        try:
            _armed = True
            if _pending:
                raise KeyboardInterrupt
            if _lazy:
                _prescan(code)
            exec(code, ns)
            if last is not None:
                v = eval(last, ns)
                if v is not None and v is not _last_shown:
                    print(repr(v))
            _armed = False
        except BaseException as e:
            _armed = False
            exc = e
        _restore_sigint()  # before anything else: a cell may have replaced it
    if _getpid() != _PID:
        _child_exit(exc)
    _finish_cell(exc)


def _finish_cell(exc):
    global _in_cell, _pending, _final, _last_shown
    called, value = _final
    if exc is None and not called:
        body = _DONE_OK
    else:
        if exc is None:
            err = "null"
            interrupted = False
        else:
            interrupted = isinstance(exc, KeyboardInterrupt)
            t, m, tb = _format_error(exc)
            err = '{"type":%s,"message":%s,"traceback":%s}' % (_enc(t), _enc(m), _enc(tb))
        head = '{"final_called":%s,"final_value":' % ("true" if called else "false")
        tail = ',"error":%s,"interrupted":%s}' % (err, "true" if interrupted else "false")
        body = _utf8(head + ("null" if value is None else _enc(value)) + tail)
        if len(body) + 1 > _MAX_FRAME:
            err = '{"type":"ValueError","message":%s,"traceback":""}' % _enc(
                "final value too large: %d bytes of JSON (limit 64 MiB)" % len(body)
            )
            body = _utf8(head + 'null,"error":%s,"interrupted":false}' % err)
    _last_shown = None
    _final = (False, None)
    try:
        _hygiene()
    except BaseException:
        pass  # a cell hostile enough to break this still gets its DONE
    _sync_linecache(False)
    _SL.acquire()
    try:
        _L.acquire()
        _in_cell = False
        for w in _calls.values():  # outstanding subcalls of background threads
            _complete(w, _CANCELLED)
        _calls.clear()
        _L.release()
        _pending = False
        _send_locked(b"D", body)
    finally:
        _SL.release()


def _main():
    global _ast
    v = _sys.version_info
    ready = '{"pid":%d,"python":"%d.%d.%d"}' % (_PID, v[0], v[1], v[2])
    _SL.acquire()
    _send_locked(b"R", ready.encode())
    _SL.release()
    _load_json()  # needed by every frame from the agent
    import _ast as a  # needed by every cell; loaded while the agent is busy

    _ast = a
    for m in _preload:
        try:
            __import__(m)
        except Exception:
            pass  # an optimisation only: the cell that needs it says why
    w = _Waiter()
    contexts_seen = started = False
    while True:
        frame = _next_control(w)
        if frame[0] == 67:  # CONTEXTS
            if contexts_seen or started:
                _die(2, "CONTEXTS frame sent twice or after the first EXEC")
            contexts_seen = True
            _setup_contexts(frame)
            continue
        if not started:
            started = True
            if _fd_pool:
                _die(2, "file descriptors received without a CONTEXTS frame")
            if not _lazy:
                _dict_setitem(ns, "context", None)
                _drop_missing()
        code = _body(frame).get("code")
        if type(code) is not str:
            _die(2, "EXEC frame without a string 'code'")
        _run_cell(code)


try:
    # Called from a frame with other globals so that, on CPython < 3.10 too
    # (where a frame inherits its caller's builtins when both share globals),
    # _main and everything it calls use the private builtins.
    eval("_main()", {"__builtins__": __builtins__, "_main": _main})
except BaseException:
    try:
        import traceback

        _os_write(2, ("rlm_driver: internal error\n" + traceback.format_exc()).encode("utf-8", "replace"))
    except BaseException:
        pass
    _os_exit(1)
