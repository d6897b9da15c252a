"""The shipped task set of the budget-matched quality benchmark (one agent versus a council).

Two splits, each two files next to this module, in the same format:
  dev       python_functions.json, exact_answers.json: the original task set, which the protocol and its
            prompts were developed and tuned against;
  heldout   heldout_python_functions.json, heldout_exact_answers.json: written on 2026-12-07 and committed
            in 9d9cb54, beside the first protocol change of issue 22 (c763819, written without it); no
            protocol or prompt change is tuned on it (issue 22: the headline figures are to be held-out
            figures).
The files:
  *python_functions.json easy Python function tasks: id, task (the prompt), entry_point, tests (visible
                         asserts, handed to the council), hidden_tests (graded only), reference (a correct
                         solution, used only to validate the tests);
  *exact_answers.json    arithmetic and word problems: id, task, answer_format ("integer"), answer (a
                         string), expression (arithmetic that yields the answer, used only to check it).
Ids and entry points are unique across both splits.

Loading: load_python_tasks(split="dev"), load_exact_tasks(split="dev"), load_split(split) ->
{"python": [...], "exact": [...]}; SPLITS names the splits.

Grading:
  extract_code(text)          the Python code of a model answer;
  grade_python(code, task)    True when the code passes the task's hidden tests in a separate process;
  grade_exact(text, task)     True when the last number in the text equals the task's answer.

grade_python runs trusted benchmark output in a plain subprocess (isolated interpreter, minimal
environment, a temporary working directory, wall timeout, process group killed afterwards); it is not a
security sandbox.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path

from actors.verifiers.blocks import extract_code_blocks

__all__ = [
    "SPLITS", "load_python_tasks", "load_exact_tasks", "load_split", "extract_code", "grade_python", "grade_exact",
    "run_tests", "parse_last_number",
]

_HERE = Path(__file__).parent

# split -> (Python function tasks file, exact-answer tasks file)
_FILES = {
    "dev": ("python_functions.json", "exact_answers.json"),
    "heldout": ("heldout_python_functions.json", "heldout_exact_answers.json"),
}
SPLITS = tuple(_FILES)


@cache
def _load(name: str) -> tuple[dict, ...]:
    return tuple(json.loads((_HERE / name).read_text(encoding="utf-8")))


def _files(split: str) -> tuple[str, str]:
    try:
        return _FILES[split]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task split {split!r}; the splits are {', '.join(SPLITS)}") from None


def load_python_tasks(split: str = "dev") -> list[dict]:
    """The Python function tasks of a split (fresh dicts: callers may mutate them)."""
    return [dict(t) for t in _load(_files(split)[0])]


def load_exact_tasks(split: str = "dev") -> list[dict]:
    """The exact-answer tasks of a split (fresh dicts: callers may mutate them)."""
    return [dict(t) for t in _load(_files(split)[1])]


def load_split(split: str) -> dict[str, list[dict]]:
    """Both task families of a split: {"python": [...], "exact": [...]}."""
    return {"python": load_python_tasks(split), "exact": load_exact_tasks(split)}


# --- code extraction ------------------------------------------------------------------------------

_PYTHON_TAGS = frozenset({"python", "py", "python3", "py3", ""})


def extract_code(text: str) -> str:
    """The Python code of a model answer: the fenced ```python / ```py / untagged blocks joined by blank
    lines. With no fence at all, the text itself when it parses as Python and holds at least one
    statement that is not a bare expression (so a line of prose such as "Hello" is not code); else ""."""
    if not text:
        return ""
    blocks = extract_code_blocks(text)  # the verifiers' own fence parser
    if blocks:
        code = "\n\n".join(b.code for b in blocks if b.lang in _PYTHON_TAGS and b.code.strip())
        return code + "\n" if code else ""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return ""
    if not any(not isinstance(node, ast.Expr) for node in tree.body):
        return ""
    return text if text.endswith("\n") else text + "\n"


# --- running tests in a subprocess ----------------------------------------------------------------

# The child reads {"code", "tests", "token"} from stdin, silences its own stdout/stderr (candidate
# output can be unbounded), runs the code with __name__ != "__main__" (so an answer's demo block does
# not run), then the tests in the same namespace, and writes the token to the saved stdout only when
# everything passed. Any exception, including SystemExit from the candidate, is a failure.
_HARNESS = r"""
import json, os, sys
payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
try:
    import resource
    limit = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(payload["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
except Exception:
    pass
out = os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0); os.dup2(null, 1); os.dup2(null, 2)
namespace = {"__name__": "candidate", "__builtins__": __builtins__}
try:
    exec(compile(payload["code"], "<candidate>", "exec"), namespace)
    exec(compile(payload["tests"], "<tests>", "exec"), namespace)
except BaseException:
    os._exit(1)
os.write(out, payload["token"].encode())
os._exit(0)
"""

_MIN_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}


def run_tests(code: str, tests: str, timeout_s: float = 5.0) -> bool:
    """True only if `code` and then `tests` (assert lines) run to completion in a fresh isolated Python
    process within timeout_s seconds of wall time. No code or no tests is a failure. Never raises for
    bad code."""
    if not isinstance(code, str) or not code.strip() or not isinstance(tests, str) or not tests.strip():
        return False
    token = uuid.uuid4().hex
    payload = json.dumps({"code": code, "tests": tests, "token": token,
                          "cpu_s": max(1, int(timeout_s) + 1)}).encode("utf-8")
    try:
        with tempfile.TemporaryDirectory(prefix="quality-grade-") as cwd:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HARNESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, cwd=cwd, env=dict(_MIN_ENV), start_new_session=True)
            try:
                out, _ = proc.communicate(payload, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            finally:
                _kill_group(proc)
            return proc.returncode == 0 and out.decode("utf-8", "replace").endswith(token)
    except Exception:  # OSError on spawn, cleanup races: a failed grade, never an exception
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group (the candidate may have spawned processes), then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        proc.communicate(timeout=5)
    except Exception:
        pass


def grade_python(code: str, task: dict, timeout_s: float = 5.0) -> bool:
    """True only if `code` passes every hidden test of `task` (run in a separate process)."""
    return run_tests(code, task.get("hidden_tests", ""), timeout_s)


# --- exact answers --------------------------------------------------------------------------------

# A number: an optional minus sign (ASCII or U+2212) not glued to a preceding word ("x-1" is not -1),
# digits with optional comma thousands separators ("1,234"), an optional decimal part.
_NUMBER = re.compile(r"(?:(?<![\w\-\u2212])([-\u2212]))?(\d{1,3}(?:,\d{3})+(?![\d,]\d)|\d+)(\.\d+)?")


def parse_last_number(text: str) -> Decimal | None:
    """The last number in the text (thousands separators and a minus sign allowed), or None."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    sign, digits, frac = found[-1]
    try:
        value = Decimal(digits.replace(",", "") + frac)
    except InvalidOperation:
        return None
    return -value if sign else value


def grade_exact(text: str, task: dict) -> bool:
    """True when the last number in the text equals task["answer"] (an integer answer: "42.0" counts as
    42, "41.5" does not)."""
    value = parse_last_number(text)
    if value is None:
        return False
    try:
        return value == Decimal(str(task["answer"]).replace(",", "").strip())
    except (InvalidOperation, KeyError):
        return False
