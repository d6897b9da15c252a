"""Python tests judged by a parent that runs no untrusted code: the plan sent into the sandbox, and the verdict.

The proposal's code and the tests run together in the sandbox (py_runner.py); this module, on the trusted
side, decides which tests passed. Before the run it rewrites the tests so that the sandbox never sees an
expected value: each `assert` becomes `__check__(i, <the computed side(s)>)`, and the comparison operator,
any `not` and the literal expected value stay here (`Check`). The run reports the values it computed, as
plain data (None, bool, int, float, str, bytes and lists, tuples, dicts and sets of them; anything else is
"opaque" and equals nothing); `verdict` compares them type-strictly here. So code that forges the run's
output, patches globals, returns an object with its own `__eq__`, or exits early (`os._exit(0)`) gets no
pass: it would have to report the expected value, which it never saw.

Doctest examples are judged the same way: the run gets only each example's source and reports what it
printed or raised; the expected output is compared here with doctest's own OutputChecker.

What the parent cannot know (docs/protocol.md, "What the tests prove"): a bare `assert E` is judged on
the truthiness the run reports, a comparison of two computed values (`assert f(x) == g(y)`) on the two
values it reports, and a test function that raises nothing on its own passes when the run reports that it
returned. Comparisons with a literal expected value cannot be forged.
"""

from __future__ import annotations

import ast
import doctest
import json
import operator
from dataclasses import dataclass, field
from typing import Any

_OPS: dict[type, tuple[str, Any]] = {
    ast.Eq: ("==", None), ast.NotEq: ("!=", None), ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt), ast.GtE: (">=", operator.ge), ast.In: ("in", None), ast.NotIn: ("not in", None),
    ast.Is: ("is", None), ast.IsNot: ("is not", None),
}
_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
OPAQUE = object()  # a value the run could not report as plain data: equal to nothing


@dataclass
class Check:
    """One assert, judged here: `test` is the index of the test (label) it belongs to."""

    test: int
    source: str
    op: str | None = None  # None: truthiness of the one value
    negate: bool = False  # `assert not E`
    expected: Any = None
    has_expected: bool = False  # the expected value is a literal kept here (not sent into the sandbox)
    literal_left: bool = False  # `assert L op E`: the literal is on the left
    required: bool = True  # at the top level of its test function (not inside a loop, branch or with)


@dataclass
class Plan:
    """What the sandbox runs (`job`) and what stays here to judge it."""

    labels: list[str]
    checks: list[Check] = field(default_factory=list)
    job: dict = field(default_factory=dict)
    wants: list[doctest.Example] = field(default_factory=list)  # doctest mode


def is_doctest(tests: str) -> bool:
    return any(line.lstrip().startswith(">>>") for line in tests.splitlines())


def _is_test_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def plan(tests: str) -> Plan:
    """The labels, the sandbox's job and the checks kept here; SyntaxError or ValueError when the tests do not parse."""
    if is_doctest(tests):
        examples = doctest.DocTestParser().get_examples(tests)
        for ex in examples:
            compile(ex.source, "tests", "single")
        return Plan([">>> " + ex.source.strip() for ex in examples], [],
                    {"mode": "doctest", "examples": [ex.source for ex in examples]}, examples)
    tree = ast.parse(tests)
    labels: list[str] = []
    checks: list[Check] = []
    items, calls = [], []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            labels.append(ast.get_source_segment(tests, node) or "assert")
            items.append({"code": ast.unparse(_rewrite(node, len(labels) - 1, checks, tests, True)),
                          "check": len(checks) - 1})
            continue
        if _is_test_function(node) or (isinstance(node, ast.ClassDef) and node.name.startswith("Test")):
            methods = [node] if _is_test_function(node) else [m for m in node.body if _is_test_function(m)]
            for fn in methods:
                labels.append(f"{fn.name}()" if fn is node else f"{node.name}.{fn.name}()")
                _Rewriter(len(labels) - 1, checks, tests).rewrite_function(fn)
                calls.append({"test": len(labels) - 1, "call": [fn.name] if fn is node else [node.name, fn.name]})
        items.append({"code": ast.unparse(ast.fix_missing_locations(ast.Module([node], []))), "check": None})
    # The labels run in this order: top-level asserts first (in place among the statements), then functions.
    return Plan(labels, checks, {"mode": "python", "items": items, "calls": calls})


def _rewrite(node: ast.Assert, test: int, checks: list[Check], tests: str, required: bool) -> ast.stmt:
    """`assert ...` -> `__check__(i, <computed values>)`, with what it expects kept in `checks[i]`."""
    check = Check(test=test, source=(ast.get_source_segment(tests, node) or "assert")[:200], required=required)
    expr, values = node.test, None
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        check.negate, expr = True, expr.operand
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and type(expr.ops[0]) in _OPS:
        op = _OPS[type(expr.ops[0])][0]
        left, right = expr.left, expr.comparators[0]
        left_lit, left_value = literal(left)
        right_lit, right_value = literal(right)
        if right_lit and not left_lit:
            check.op, check.expected, check.has_expected, values = op, right_value, True, [left]
        elif left_lit and not right_lit:
            check.op, check.expected, check.has_expected, check.literal_left, values = \
                op, left_value, True, True, [right]
        elif op not in ("is", "is not"):
            check.op, values = op, [left, right]
    if values is None:  # judged on the truthiness the run reports
        values = [expr]
    checks.append(check)
    call = ast.Call(ast.Name("__check__", ast.Load()), [ast.Constant(len(checks) - 1), *values], [])
    return ast.copy_location(ast.Expr(call), node)


class _Rewriter(ast.NodeTransformer):
    """Every assert in one test function, nested ones included (those need not run: `required=False`)."""

    def __init__(self, test: int, checks: list[Check], tests: str):
        self.test, self.checks, self.tests, self.depth = test, checks, tests, 0

    def rewrite_function(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        fn.body = [self.visit(stmt) for stmt in fn.body]
        ast.fix_missing_locations(fn)

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        return _rewrite(node, self.test, self.checks, self.tests, self.depth == 0)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        nested = isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try,
                                   ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Match))
        self.depth += nested
        try:
            return super().generic_visit(node)
        finally:
            self.depth -= nested


# --- the verdict -----------------------------------------------------------------------------------

def decode(encoded: Any) -> Any:
    """A value as the run reported it: plain data, or OPAQUE."""
    if not isinstance(encoded, dict):
        return OPAQUE
    if "v" in encoded and isinstance(encoded["v"], str):
        ok, value = _literal_text(encoded["v"])
        return value if ok else OPAQUE
    if encoded.get("float") in ("nan", "inf", "-inf"):
        return float(encoded["float"])
    return OPAQUE


def _literal_text(text: str) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def truthy(encoded: Any) -> bool:
    value = decode(encoded)
    if value is OPAQUE:
        return isinstance(encoded, dict) and encoded.get("truthy") is True
    return bool(value)


def same(a: Any, b: Any) -> bool:
    """Equality without any code of the run's: plain data of the same kind (int and float compare as numbers)."""
    if a is OPAQUE or b is OPAQUE:
        return False
    numbers = (int, float)
    if type(a) in numbers and type(b) in numbers:
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, (str, bytes)):
        return type(item) is type(container) and item in container
    if isinstance(container, dict):
        container = list(container)
    if isinstance(container, (list, tuple, set, frozenset)):
        return any(same(item, x) for x in container)
    return False


def compare(op: str, left: Any, right: Any) -> bool:
    if left is OPAQUE or right is OPAQUE:
        return False
    if op == "==":
        return same(left, right)
    if op == "!=":
        return not same(left, right)
    if op in ("in", "not in"):
        return _contains(right, left) == (op == "in")
    if op == "is":
        return left is None and right is None or (type(left) is bool and type(right) is bool and left == right)
    if op == "is not":
        return not compare("is", left, right)
    fn = next(f for o, f in _OPS.values() if o == op)
    try:
        return bool(fn(left, right)) if _orderable(left, right) else False
    except TypeError:
        return False


def _orderable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if type(a) in numbers and type(b) in numbers:
        return True
    return type(a) is type(b) and isinstance(a, (str, bytes, list, tuple))


def judge(check: Check, report: dict) -> tuple[bool, str]:
    """Whether one reported check passed, and why not."""
    if "error" in report:
        return False, str(report["error"])[:300]
    values = report.get("values")
    if not isinstance(values, list) or len(values) not in (1, 2):
        return False, "no value reported"
    if check.op is None:
        ok = truthy(values[0]) != check.negate
        return ok, "" if ok else f"AssertionError (value: {_show(values[0])})"
    if check.has_expected:
        if len(values) != 1:
            return False, "no value reported"
        actual = decode(values[0])
        left, right = (check.expected, actual) if check.literal_left else (actual, check.expected)
    else:
        if len(values) != 2:
            return False, "no value reported"
        left, right = decode(values[0]), decode(values[1])
    op = check.op
    ok = compare(op, left, right) != check.negate
    if ok:
        return True, ""
    shown = [_show(v) for v in values] if not check.has_expected else None
    if check.has_expected:
        pair = (repr(check.expected)[:80], _show(values[0])) if check.literal_left else \
            (_show(values[0]), repr(check.expected)[:80])
    else:
        pair = (shown[0], shown[1])
    return False, f"AssertionError (left: {pair[0]}, right: {pair[1]})"


def _show(encoded: Any) -> str:
    value = decode(encoded)
    if value is not OPAQUE:
        return repr(value)[:80]
    if isinstance(encoded, dict) and isinstance(encoded.get("repr"), str):
        return f"{encoded['repr'][:60]} ({str(encoded.get('type', 'object'))[:30]}, not plain data)"
    return "?"


@dataclass
class Verdict:
    passed: list[bool]
    messages: list[str]  # per test: why it failed ("" when it passed or had no result)
    setup: list[str]  # errors of the tests' own setup statements
    code: list[str]  # errors the proposal's blocks raised
    finished: bool  # the run reported its end


def reports(stdout: str) -> list[dict]:
    """The run's JSON lines; anything else (or a line cut off by a kill) is ignored."""
    found = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                found.append(item)
    return found


def verdict(plan: Plan, stdout: str) -> Verdict:
    items = reports(stdout)
    n = len(plan.labels)
    passed, messages = [False] * n, [""] * n
    setup = [str(r["setup"])[:300] for r in items if "setup" in r][:1]
    code = [str(r["block"])[:300] for r in items if "block" in r][:1]
    finished = any(r.get("done") is True for r in items)
    if plan.job["mode"] == "doctest":
        checker = doctest.OutputChecker()
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        got = {r["example"]: r for r in items if isinstance(r.get("example"), int)}
        for i, ex in enumerate(plan.wants):
            r = got.get(i)
            if r is None:
                continue
            text, exc = str(r.get("got", "")), r.get("exc")
            if ex.exc_msg is not None:
                ok = isinstance(exc, str) and checker.check_output(ex.exc_msg, exc, flags)
                why = f"expected exception {ex.exc_msg.strip()[:120]!r}, got {str(exc or text).strip()[:120]!r}"
            else:
                ok = exc is None and checker.check_output(ex.want, text, flags)
                why = f"expected {ex.want.strip()[:120]!r}, got {(str(exc) if exc else text).strip()[:120]!r}"
            passed[i], messages[i] = ok, "" if ok else why
        return Verdict(passed, messages, setup, code, finished)
    reported: dict[int, list[dict]] = {}
    for r in items:
        if isinstance(r.get("check"), int) and 0 <= r["check"] < len(plan.checks):
            reported.setdefault(r["check"], []).append(r)
    ended = {r["test_end"] for r in items if isinstance(r.get("test_end"), int)}
    raised = {r["test_error"]: str(r.get("error", ""))[:300] for r in items if isinstance(r.get("test_error"), int)}
    functions = {c["test"] for c in plan.job["calls"]}
    outcome: dict[int, tuple[bool, str]] = {}
    for i, check in enumerate(plan.checks):
        results = [judge(check, r) for r in reported.get(i, [])]
        failure = next((why for ok, why in results if not ok), None)
        if failure is None and not results and (check.required or check.test not in functions):
            failure = "no result"
        if failure is not None and check.test not in outcome:
            outcome[check.test] = (False, failure if check.test not in functions else f"{check.source}: {failure}")
    for t in range(n):
        if t in outcome:
            passed[t], messages[t] = False, outcome[t][1]
        elif t in functions:
            passed[t] = t in ended and t not in raised
            messages[t] = raised.get(t, "" if passed[t] else "no result")
        else:
            passed[t] = True
    return Verdict(passed, messages, setup, code, finished)
