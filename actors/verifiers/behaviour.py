"""Evidence from running the code when the request brings no tests: the same inputs for every candidate.

`inputs_for` picks the function to call and the inputs to call it with, from the task alone where it can (so
every candidate of a deliberation runs on the same inputs): the calls written in the task's text (`f(3) == 9`,
`>>> f("ab")`, "f([1, 2]) returns ..."), then a few small values chosen by each parameter's annotation or
name in the signature the task gives (`square(x)`, `def mean(values: list[float])`). Without a signature in
the task, the candidate's own function is used (the only function it defines, or the one the task names).

`run` calls the function on every input in one sandboxed run (py_runner.py, mode "calls") and reports each
output as plain data, or the exception's type. The checks it yields:
- `python.runs`: failed when the code raised on every input (or at import); skipped with the reason when there
  is no function to call;
- `generated.behaviour_agreement`: the outputs, and `group`: a digest of them. Candidates with the same digest
  behave the same on every input; scoring.agree (called by the protocol over all candidates) sets each check's
  `evidence` to the size of its group, so a larger group of agreeing candidates is stronger evidence
  (execution-based majority, as in MBR-exec and CodeT's dual agreement);
- `generated.tests`: when agents wrote asserts for the task (the protocol's test-writing step, `Job.examples`),
  how many of those whose call is the function's hold on this candidate (`tests_passed` of `tests_total`). Their
  calls are inputs too, after the task's own. An agent's assert may be wrong: this check never fails a candidate
  (scoring leaves `generated.*` out of the static checks); scoring.agree weighs it into the group's evidence
  CodeT-style, bounded (group size × (1 + share of asserts held)), so wrong asserts cannot overturn a group
  twice as large.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys

from ..scoring import BEHAVIOUR_CHECK as CHECK
from . import py_tests
from .base import Job
from .blocks import CodeBlock
from .sandbox import SandboxLimits

MAX_INPUTS = 8  # generated values per candidate
MAX_EXAMPLES = 6  # agent-written asserts run per candidate
TESTS_CHECK = "generated.tests"
SHOWN_CHARS = 120  # of each call and output kept on the behaviour check (what a judge of two groups is shown)
LIMITS = SandboxLimits(output_bytes=256 * 1024)
_SIGNATURE = re.compile(r"(?:def|function|method)\s+`?([A-Za-z_]\w*)\s*\(([^()]*)\)")
_ANY_SIGNATURE = re.compile(r"\b([A-Za-z_]\w*)\(([A-Za-z_][^()]*)\)")
_BUILTINS = frozenset(dir(__builtins__) if isinstance(__builtins__, dict) else dir(__builtins__))
_NAMED_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
# Small values per kind of parameter: empty, one, typical, an edge.
_VALUES = {
    "int": [0, 1, 2, 5, -3, 10, 7, 3],
    "float": [0.0, 1.5, -2.0, 3.25, 10.0, 0.5, 2.0, -0.5],
    "str": ["", "a", "Abba", "hello world", "racecar", "Hello, World!", "abc", "  x  "],
    "list": [[], [1], [3, 1, 2], [5, 5, -1], [0, 0], [10, -10, 3, 7], [2, 4, 6, 8], [1, 2, 3]],
    "dict": [{}, {"a": 1}, {"a": 1, "b": 2}, {"x": 0}, {"k": -1, "j": 5}, {"a": 2, "c": 3}, {"b": 1}, {"z": 9}],
    "bool": [True, False, True, False, True, False, True, False],
}
_BY_NAME = [
    (re.compile(r"^(s|st|str|text|string|word|words|sentence|name|line|chars|pattern|prefix|suffix|sep)\d*$"), "str"),
    (re.compile(r"^(items|lst|list|nums|numbers|xs|values|arr|array|seq|sequence|elements|data|scores|l)\d*$"), "list"),
    (re.compile(r"^(d|dct|dict|mapping|table|counts)\d*$"), "dict"),
    (re.compile(r"^(flag|reverse|strict)\d*$"), "bool"),
    (re.compile(r"^(x|y|z|f|r|ratio|rate|price|amount|celsius|fahrenheit)\d*$"), "float"),
]


def _kind(param: ast.arg) -> str:
    annotation = ast.unparse(param.annotation) if param.annotation is not None else ""
    for kind in ("str", "float", "bool", "dict", "list", "int"):
        if annotation.lower().startswith(kind) or annotation.startswith(kind.capitalize()):
            return kind
    if annotation.lower().startswith(("sequence", "iterable", "tuple", "set")):
        return "list"
    return next((kind for pattern, kind in _BY_NAME if pattern.match(param.arg)), "int")


def _function(source: str) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    return found[0] if found else None


def task_signature(task: str) -> tuple[str, list[ast.arg]] | None:
    """The function the task asks for, with its parameters, when the task gives a signature."""
    match = _SIGNATURE.search(task)
    if match:
        fn = _function(f"def {match.group(1)}({match.group(2)}):\n    pass\n")
        return (fn.name, fn.args.args) if fn else None
    for match in _ANY_SIGNATURE.finditer(task):  # "Write mean(values: list[float])": parameters, not values
        fn = _function(f"def {match.group(1)}({match.group(2)}):\n    pass\n")
        if fn and fn.args.args and fn.name not in _BUILTINS:
            return fn.name, fn.args.args
    return None


def task_calls(task: str, name: str) -> list[str]:
    """Argument lists of the calls of `name` written in the task with literal arguments ("f(3) == 9")."""
    found = []
    for match in _NAMED_CALL.finditer(task):
        if match.group(1) != name:
            continue
        depth, end = 1, match.end()
        while end < len(task) and depth:
            depth += {"(": 1, ")": -1}.get(task[end], 0)
            end += 1
        args = task[match.end(): end - 1]
        try:
            call = ast.parse(f"f({args})", mode="eval").body
            if all(py_tests.literal(a)[0] for a in call.args) and not call.keywords and call.args:
                found.append(args.strip())
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return list(dict.fromkeys(found))


def examples_for(examples: list[str], name: str) -> list[tuple[str, str]]:
    """(arguments, expected value) of the asserts `assert name(<literals>) == <literal>` among `examples`
    (source lines an agent wrote); anything else is ignored."""
    found = []
    for line in examples:
        try:
            node = ast.parse(line.strip()).body[0]
        except (SyntaxError, ValueError, RecursionError, MemoryError, IndexError):
            continue
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1
                and isinstance(node.test.ops[0], ast.Eq)):
            continue
        call, expected = node.test.left, node.test.comparators[0]
        if isinstance(expected, ast.Call) and not isinstance(call, ast.Call):
            call, expected = expected, call
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == name
                and not call.keywords and all(py_tests.literal(a)[0] for a in call.args)
                and py_tests.literal(expected)[0]):
            continue
        found.append((", ".join(ast.unparse(a) for a in call.args), ast.unparse(expected)))
    return list(dict.fromkeys(found))[:MAX_EXAMPLES]


def inputs_for(task: str, code: str, examples: list[str] | None = None) -> tuple[str, list[str]] | None:
    """(function name, argument lists as Python source) to call every candidate with: the task's calls, the
    calls of the agents' asserts (`examples`), then generated values; None when there is no function to call."""
    signature = task_signature(task)
    own = _function(code)
    if signature is None and own is None:
        return None
    name, params = signature if signature else (own.name, own.args.args)
    if own is not None and signature is None:
        params = own.args.args
    params = [p for p in params if p.arg not in ("self", "cls")]
    calls = task_calls(task, name) + [args for args, _ in examples_for(examples or [], name)]
    generated = []
    if params:
        kinds = [_kind(p) for p in params]
        for i in range(MAX_INPUTS):
            generated.append(", ".join(repr(_VALUES[k][(i + j) % MAX_INPUTS]) for j, k in enumerate(kinds)))
    else:
        generated.append("")
    given = list(dict.fromkeys(calls))[:MAX_INPUTS + MAX_EXAMPLES]
    return name, given + [g for g in dict.fromkeys(generated) if g not in given][:MAX_INPUTS]


def run(job: Job, blocks: list[CodeBlock], runner_source: str) -> None:
    """`python.runs` and `generated.behaviour_agreement` for a proposal without request tests."""
    code = "\n".join(b.code for b in blocks)
    plan = inputs_for(job.task, code, job.examples)
    if plan is None:
        job.check("python.runs", "skipped", "no function to call: the task names none and the code defines none")
        return
    name, calls = plan
    payload = {"blocks": [[b.line, b.code] for b in blocks], "mode": "calls", "function": name, "calls": calls}
    r = job.sandbox([sys.executable, "-I", "-B", "runner.py"],
                    {"runner.py": runner_source, "job.json": json.dumps(payload)}, limits=LIMITS)
    reports = py_tests.reports(r.stdout)
    called = next((str(x["called"])[:80] for x in reports if "called" in x), None)
    results = {x["call"]: x for x in reports if isinstance(x.get("call"), int) and 0 <= x["call"] < len(calls)}
    block_error = next((str(x["block"])[:200] for x in reports if "block" in x), None)
    if called is None:
        why = block_error or (f"{name} is not defined" if r.status == "ok" else f"did not run: {r.message}")
        job.check("python.runs", "failed", f"no function {name} to call: {why}", duration_s=r.duration_s)
        return
    outputs, values = [], []
    for i in range(len(calls)):
        x = results.get(i)
        value = py_tests.OPAQUE
        if x is None:
            outputs.append(("none", r.message if r.status != "ok" else "no result"))
        elif "error" in x:
            outputs.append(("raised", str(x["error"]).split(":")[0][:60]))
        else:
            value = py_tests.decode(x.get("value"))
            outputs.append(("value", repr(value)[:2000] if value is not py_tests.OPAQUE else "opaque"))
        values.append(value)
    raised = sum(1 for kind, _ in outputs if kind != "value")
    which = "" if called == name else f" (called {called}: the code defines no {name})"
    if raised == len(calls):
        first = outputs[0][1]
        job.check("python.runs", "failed", f"{called}() raised on all {len(calls)} input(s){which}: {first}",
                  duration_s=r.duration_s)
        return
    job.check("python.runs", "passed", f"{called}() ran on {len(calls)} input(s), {raised} raised{which}",
              duration_s=r.duration_s)
    digest = hashlib.sha256(json.dumps(outputs).encode()).hexdigest()[:12]
    shown = "; ".join(f"{name}({c[:30]}) -> {o[1][:30]}" for c, o in list(zip(calls, outputs))[:3])
    result = job.check(CHECK, "passed", f"behaviour {digest} on {len(calls)} generated input(s): {shown}")
    result.group = digest
    result.outputs = [[f"{name}({c})"[:SHOWN_CHARS], _shown(o)] for c, o in zip(calls, outputs)]
    _asserts(job, name, calls, outputs, values)


def _shown(output: tuple[str, str]) -> str:
    """An output as a judge sees it: the value's repr, or what went wrong."""
    kind, text = output
    return {"value": "", "raised": "raised "}.get(kind, "no result: ") + text[:SHOWN_CHARS]


def _asserts(job: Job, name: str, calls: list[str], outputs: list[tuple[str, str]], values: list) -> None:
    """`generated.tests`: which of the agents' asserts hold on this candidate's outputs (judged here, type-strict)."""
    asserts = [(args, expected) for args, expected in examples_for(job.examples, name) if args in calls]
    if not asserts:
        return
    held, wrong = 0, []
    for args, expected in asserts:
        i = calls.index(args)
        if py_tests.same(values[i], ast.literal_eval(expected)):
            held += 1
        elif not wrong:
            wrong.append(f"{name}({args[:40]}) gave {outputs[i][1][:40]}, the assert expects {expected[:40]}")
    job.check(TESTS_CHECK, "passed" if held == len(asserts) else "failed",
              f"{held} of {len(asserts)} agent-written assert(s) hold" + (f"; {wrong[0]}" if wrong else ""),
              tests=(held, len(asserts)))
