"""Runs a proposal's Python blocks against tests: a stand-alone script (stdlib only) run in the sandbox.

Reads job.json ({"nonce", "blocks": [[line, code]...], "tests"}) and deletes it, executes each block in
order into one module namespace (registered as module `solution`; later definitions win; a block that
raises is reported and the rest still run), then runs each test separately and reports each result as
one line "<nonce>{json}" on a private copy of stdout (fd 1 itself goes to /dev/null: what the code prints
does not pass for a result; code that digs the nonce out of the runner's frames could forge one, which
the sandbox does not prevent: it only contains what such code can do). Test formats (`plan` lists them; the verifier calls it before the run too):
- doctest: any line starting with `>>>`: each example is a test, with ELLIPSIS and NORMALIZE_WHITESPACE;
- Python: each top-level `assert` is a test, run in place among the other statements (setup: imports,
  helpers), then each top-level `test*` function and each `test*` method of `Test*` classes, no pytest.
An audit hook refuses processes, sockets, ctypes and writes outside the working directory: defense in
depth only, the sandbox contains the run without it.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
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


def is_doctest(tests: str) -> bool:
    return any(line.lstrip().startswith(">>>") for line in tests.splitlines())


def plan(tests: str) -> list[str]:
    """A label for each test, in the order they run; SyntaxError or ValueError when the tests do not parse."""
    if is_doctest(tests):
        examples = doctest.DocTestParser().get_examples(tests)
        for ex in examples:
            compile(ex.source, "tests", "single")
        return [">>> " + ex.source.strip() for ex in examples]
    tree = ast.parse(tests)
    asserts = [ast.get_source_segment(tests, node) or "assert" for node in tree.body if isinstance(node, ast.Assert)]
    functions = [f"{node.name}()" for node in tree.body if _is_test_function(node)]
    methods = [f"{node.name}.{item.name}()" for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name.startswith("Test")
               for item in node.body if _is_test_function(item)]
    return asserts + functions + methods


def _is_test_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def _describe(exc: BaseException, node: ast.Assert | None = None, ns: dict | None = None) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return f"module {exc.name!r} is not available"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "tests.py"]
    where = f"line {frames[-1].lineno}: {frames[-1].line}: " if frames and node is None else ""
    text = f"{where}{type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    if isinstance(exc, AssertionError) and node is not None and isinstance(node.test, ast.Compare) \
            and len(node.test.comparators) == 1:
        try:  # show both sides of a failed comparison
            left, right = (eval(compile(ast.Expression(e), "tests.py", "eval"), ns)
                           for e in (node.test.left, node.test.comparators[0]))
            text += f" (left: {repr(left)[:80]}, right: {repr(right)[:80]})"
        except BaseException:  # noqa: BLE001 - any error here only loses the detail
            pass
    return text[:400]


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


def _run_tests(tests: str, ns: dict, emit) -> None:
    if is_doctest(tests):
        runner = _DocRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        for i, ex in enumerate(doctest.DocTestParser().get_examples(tests)):
            runner.why = ""
            result = runner.run(doctest.DocTest([ex], ns, "tests", "tests", 0, tests), out=lambda s: None,
                                clear_globs=False)
            emit(event="test", index=i, ok=result.failed == 0, message=runner.why)
        return
    tree = ast.parse(tests)
    _compile(tests, "tests.py", "exec")
    index = 0
    for node in tree.body:
        code = compile(ast.Module([node], []), "tests.py", "exec")
        try:
            exec(code, ns)
            if isinstance(node, ast.Assert):
                emit(event="test", index=index, ok=True, message="")
        except BaseException as exc:  # noqa: BLE001 - a test's failure, whatever it raised
            emit(event="test" if isinstance(node, ast.Assert) else "setup", index=index, ok=False,
                 message=_describe(exc, node if isinstance(node, ast.Assert) else None, ns))
        index += isinstance(node, ast.Assert)
    calls = [ns.get(n.name) for n in tree.body if _is_test_function(n)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.startswith("Test")):
        calls += [(ns.get(cls.name), item.name) for item in cls.body if _is_test_function(item)]
    for call in calls:
        try:
            fn = getattr(call[0](), call[1]) if isinstance(call, tuple) else call
            result = fn()
            if asyncio.iscoroutine(result):
                asyncio.run(result)
            emit(event="test", index=index, ok=True, message="")
        except BaseException as exc:  # noqa: BLE001
            emit(event="test", index=index, ok=False, message=_describe(exc))
        index += 1


class _DocRunner(doctest.DocTestRunner):
    why = ""

    def report_failure(self, out, test, example, got):
        self.why = f"expected {example.want.strip()[:120]!r}, got {got.strip()[:120]!r}"

    def report_unexpected_exception(self, out, test, example, exc_info):
        self.why = _describe(exc_info[1])


def main() -> None:
    with open("job.json", encoding="utf-8") as f:
        job = json.load(f)
    os.remove("job.json")
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)

    failures = []

    def emit(**event) -> None:
        if event["event"] == "test" and not event["ok"]:  # only the first failure's message is read
            failures.append(event)
            event["message"] = event["message"] if len(failures) == 1 else ""
        results.write(job["nonce"] + json.dumps(event) + "\n")
        results.flush()

    sys.addaudithook(_audit(os.getcwd()))
    module = types.ModuleType("solution")
    module.__file__ = os.path.abspath("solution.py")
    sys.modules["solution"] = module
    for line, code in job["blocks"]:
        try:
            exec(_compile(code, f"block at line {line}", "exec"), module.__dict__)
        except BaseException as exc:  # noqa: BLE001 - the code's failure, whatever it raised
            emit(event="block", line=line, message=_describe(exc))
    _run_tests(job["tests"], module.__dict__, emit)
    emit(event="done")


if __name__ == "__main__":
    main()
