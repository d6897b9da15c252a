"""Runs a proposal's Python blocks and the rewritten tests: a stand-alone script (stdlib only), run in the sandbox.

Reads job.json (written by py_tests.plan: {"blocks": [[line, code]...], "mode", ...}) and deletes it,
executes each block in order into one module namespace (registered as module `solution`; later definitions
win; a block that raises is reported and the rest still run), then:
- "python": runs the tests' top-level statements in order, each assert rewritten as `__check__(i, values)`,
  then calls each test function and test method;
- "doctest": runs each example's source and reports what it printed, or the exception it raised;
- "calls": calls one function on each argument list and reports its outputs (behaviour.py, no tests).

It reports values, never verdicts: one JSON line per event on a private copy of stdout (fd 1 itself goes
to /dev/null). The expected values never enter this process; the trusted side (py_tests.verdict) compares.
Code under test can write to this channel too: it gains nothing, since it does not know what is expected.

An audit hook refuses processes, sockets, ctypes and writes outside the working directory, so a check
fails with a clear message; it is a courtesy, not a wall: the sandbox contains the run without it.
"""

from __future__ import annotations

import asyncio
import json
import linecache
import os
import sys
import traceback
import types

_BLOCKED = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
            "subprocess.Popen", "pty.spawn", "ctypes.dlopen", "socket.")
_ALLOWED = ("socket.__new__",)  # asyncio's self-pipe: a socketpair, connected to nothing
_PATH_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink", "os.link",
                "os.truncate", "shutil.")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PLAIN = (type(None), bool, int, float, str, bytes, list, tuple, dict, set, frozenset)
MAX_VALUE_CHARS = 20_000


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return f"module {exc.name!r} is not available"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "tests.py"]
    where = f"line {frames[-1].lineno}: {frames[-1].line}: " if frames else ""
    return (f"{where}{type(exc).__name__}" + (f": {exc}" if str(exc) else ""))[:400]


def _plain(value, depth: int = 0) -> bool:
    """Exactly the built-in data types all the way down (no subclass, so no code of the run's in repr)."""
    kind = type(value)
    if depth > 20 or kind not in _PLAIN:
        return False
    if kind is float:  # nan and inf have no literal: reported alone (encode), opaque inside containers
        return value == value and value not in (float("inf"), float("-inf"))
    if kind in (list, tuple, set, frozenset):
        return all(_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return True


def encode(value) -> dict:
    """A value for the trusted side: plain data as a literal, else only its type and repr (it equals nothing)."""
    try:
        if type(value) is float and (value != value or value in (float("inf"), float("-inf"))):
            return {"float": repr(value)}
        if _plain(value):
            text = repr(value)
            if len(text) <= MAX_VALUE_CHARS:
                return {"v": text}
    except BaseException:
        pass
    try:
        shown = repr(value)[:200]
    except BaseException:
        shown = "?"
    try:
        truthy = bool(value)
    except BaseException:
        truthy = False
    return {"opaque": True, "type": type(value).__name__, "repr": shown, "truthy": truthy}


def _audit(cwd: str):
    def hook(event: str, args: tuple) -> None:
        if event.startswith(_BLOCKED) and event not in _ALLOWED:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            writing = (isinstance(args[1], str) and any(c in args[1] for c in "wax+")) or (
                isinstance(args[2], int) and args[2] & _WRITE_FLAGS)
            paths = args[:1] if writing else ()
        else:
            paths = args if event.startswith(_PATH_EVENTS) else ()
        for path in (os.path.abspath(os.fsdecode(p)) for p in paths if isinstance(p, (str, bytes))):
            if path != cwd and not path.startswith(cwd + os.sep):
                raise PermissionError(f"sandbox: {event} outside the working directory: {path}")
    return hook


def _compile(source: str, filename: str, mode: str):
    """Compile, and keep the source where tracebacks look for it."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, mode)


def _run_python(job: dict, ns: dict, emit) -> None:
    ns["__check__"] = lambda i, *values: emit(check=i, values=[encode(v) for v in values])
    for item in job["items"]:
        try:
            exec(_compile(item["code"], "tests.py", "exec"), ns)
        except BaseException as exc:
            if item["check"] is None:
                emit(setup=_describe(exc))
            else:
                emit(check=item["check"], error=_describe(exc))
    for call in job["calls"]:
        try:
            names = call["call"]
            fn = ns[names[0]] if len(names) == 1 else getattr(ns[names[0]](), names[1])
            result = fn()
            if asyncio.iscoroutine(result):
                asyncio.run(result)
            emit(test_end=call["test"])
        except BaseException as exc:
            emit(test_error=call["test"], error=_describe(exc))


def _run_doctest(job: dict, ns: dict, emit, out) -> None:
    import io

    for i, source in enumerate(job["examples"]):
        buffer = io.StringIO()
        sys.stdout, hook = buffer, sys.displayhook
        sys.displayhook = lambda v: None if v is None else (buffer.write(repr(v) + "\n"), ns.__setitem__("_", v))
        exc_text = None
        try:
            exec(_compile(source, f"example {i}", "single"), ns)
        except BaseException as exc:
            exc_text = "".join(traceback.format_exception_only(type(exc), exc))
        finally:
            sys.stdout, sys.displayhook = out, hook
        emit(example=i, got=buffer.getvalue()[:MAX_VALUE_CHARS], exc=exc_text)


def _run_calls(job: dict, ns: dict, emit) -> None:
    """Call the function on each argument list; its output as plain data, or the exception's type and text."""
    fn = ns.get(job["function"])
    if not callable(fn):  # another name: the only function the code defines
        own = [v for v in ns.values() if isinstance(v, types.FunctionType) and v.__module__ == "solution"]
        fn = own[0] if len(own) == 1 else None
    if fn is None:
        return
    emit(called=fn.__name__)
    for i, args in enumerate(job["calls"]):
        try:
            value = fn(*eval(_compile(f"({args},)" if args else "()", "inputs", "eval"), {}))
            emit(call=i, value=encode(value))
        except BaseException as exc:  # noqa: BLE001 - the code's failure on this input
            emit(call=i, error=f"{type(exc).__name__}: {str(exc)[:100]}")


def main() -> None:
    with open("job.json", encoding="utf-8") as f:
        job = json.load(f)
    os.remove("job.json")
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    quiet = open(os.devnull, "w", encoding="utf-8")
    sys.stdout = quiet

    def emit(**event) -> None:
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    sys.addaudithook(_audit(os.getcwd()))
    module = types.ModuleType("solution")
    module.__file__ = os.path.abspath("solution.py")
    sys.modules["solution"] = module
    for line, code in job["blocks"]:
        try:
            exec(_compile(code, f"block at line {line}", "exec"), module.__dict__)
        except BaseException as exc:
            emit(block=f"block at line {line}: {_describe(exc)}")
    if job["mode"] == "doctest":
        _run_doctest(job, module.__dict__, emit, quiet)
    elif job["mode"] == "calls":
        _run_calls(job, module.__dict__, emit)
    else:
        _run_python(job, module.__dict__, emit)
    emit(done=True)


if __name__ == "__main__":
    main()
