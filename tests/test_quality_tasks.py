"""The shipped quality-benchmark task set, both splits (dev: the original tasks; heldout: written for issue 22
and never tuned on): its tests are right (references pass, trivial answers and
plausible near misses fail), the held-out split does not overlap the dev split, and the graders behave (code
extraction, last-number answers, subprocess grading)."""

from __future__ import annotations

import ast
import operator
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.quality_tasks import (
    SPLITS, extract_code, grade_exact, grade_python, load_exact_tasks, load_python_tasks, load_split,
    parse_last_number, run_tests)

pytestmark = pytest.mark.unit

PY = load_python_tasks()  # the dev split, the default
EX = load_exact_tasks()
SPLIT_PY = {split: load_python_tasks(split) for split in SPLITS}
SPLIT_EX = {split: load_exact_tasks(split) for split in SPLITS}
HPY, HEX = SPLIT_PY["heldout"], SPLIT_EX["heldout"]
_POOL = 4


def _parallel(fn, items):
    with ThreadPoolExecutor(_POOL) as pool:
        return list(pool.map(fn, items))


def _asserts(tests: str) -> list[str]:
    return [line for line in tests.splitlines() if line.lstrip().startswith("assert")]


# --- the task files -------------------------------------------------------------------------------

def test_counts_and_unique_ids():
    assert len(PY) >= 40
    assert len(EX) >= 8
    assert len(PY) + len(EX) >= 48
    ids = [t["id"] for t in PY + EX]
    assert len(ids) == len(set(ids))
    assert len({t["entry_point"] for t in PY}) == len(PY)


def test_heldout_counts_and_ids_unique_across_splits():
    assert len(HPY) >= 60
    assert len(HEX) >= 20
    every = [t for split in SPLITS for t in SPLIT_PY[split] + SPLIT_EX[split]]
    ids = [t["id"] for t in every]
    assert len(ids) == len(set(ids))
    entry_points = [t["entry_point"] for split in SPLITS for t in SPLIT_PY[split]]
    assert len(entry_points) == len(set(entry_points))


def test_splits_load_by_name():
    assert SPLITS == ("dev", "heldout")
    assert load_python_tasks() == load_python_tasks("dev") == PY
    assert load_exact_tasks() == load_exact_tasks("dev") == EX
    assert load_split("heldout") == {"python": HPY, "exact": HEX}
    assert load_split("dev") == {"python": PY, "exact": EX}
    load_python_tasks("heldout")[0]["task"] = "mutated"  # fresh dicts: a caller's change does not stick
    assert load_python_tasks("heldout")[0]["task"] != "mutated"
    for bad in ("test", "", None, "HELDOUT"):
        with pytest.raises(ValueError, match="unknown task split"):
            load_split(bad)  # type: ignore[arg-type]


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"`[^`]*`", "", text).lower().split())


def test_heldout_does_not_overlap_dev():
    dev_names = {t["entry_point"] for t in SPLIT_PY["dev"]}
    held_names = {t["entry_point"] for t in HPY}
    assert not dev_names & held_names
    # No prompt (with or without its signature) repeats a dev prompt, and no held-out prompt or test calls a
    # dev function, nor the other way round.
    assert not {_normalized(t["task"]) for t in PY} & {_normalized(t["task"]) for t in HPY}
    for t in HPY:
        text = t["task"] + t["tests"] + t["hidden_tests"]
        assert not [n for n in dev_names if re.search(rf"\b{n}\(", text)], t["id"]
    for t in PY:
        text = t["task"] + t["tests"] + t["hidden_tests"]
        assert not [n for n in held_names if re.search(rf"\b{n}\(", text)], t["id"]
    # Exact answers: no repeated question, no repeated computation.
    assert not {_normalized(t["task"]) for t in EX} & {_normalized(t["task"]) for t in HEX}
    assert not {t["expression"].replace(" ", "") for t in EX} & {t["expression"].replace(" ", "") for t in HEX}


class _Timeout(Exception):
    pass


def _passes_in_process(solver: dict, task: dict) -> bool:
    """True when the reference of `solver` (a task), called under `task`'s function name, passes `task`'s
    visible and hidden tests. Runs in this process: trusted code only (the shipped references), with a
    0.2 s alarm so a slow reference on a foreign input cannot hang the test."""
    namespace: dict = {}
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        exec(solver["reference"], namespace)  # noqa: S102 - a shipped reference
        namespace[task["entry_point"]] = namespace[solver["entry_point"]]
        exec(task["tests"] + "\n" + task["hidden_tests"], namespace)  # noqa: S102 - shipped asserts
        return True
    except Exception:  # AssertionError, TypeError, _Timeout...: it does not pass
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_no_dev_solution_solves_a_heldout_task_or_back():
    """Behaviour, not only names: no dev reference passes a held-out task's tests, and no held-out reference
    passes a dev task's (the held-out split is not the dev tasks renamed)."""
    def alarm(*_):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        solved = [(d["id"], h["id"]) for d in PY for h in HPY
                  if _passes_in_process(d, h) or _passes_in_process(h, d)]
        # The check itself sees a pass: every task's own reference passes its tests in process.
        own = [t["id"] for t in PY + HPY if not _passes_in_process(t, t)]
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not solved, solved
    assert not own, own


@pytest.mark.parametrize("split", SPLITS)
def test_python_task_shape(split):
    for t in SPLIT_PY[split]:
        assert set(t) >= {"id", "task", "entry_point", "tests", "hidden_tests", "reference"}, t["id"]
        assert t["id"].startswith("py-")
        assert f"`{t['entry_point']}(" in t["task"], t["id"]
        assert t["task"].rstrip().endswith("Answer with one ```python code block."), t["id"]
        assert len(t["task"]) < 400, t["id"]
        visible, hidden = _asserts(t["tests"]), _asserts(t["hidden_tests"])
        assert 2 <= len(visible) <= 3, t["id"]
        assert 4 <= len(hidden) <= 8, t["id"]
        # Every visible line is an assert, and the hidden tests are not a copy of the visible ones.
        assert len(visible) == len(t["tests"].splitlines()), t["id"]
        assert not set(visible) & set(hidden), t["id"]
        for src in (t["tests"], t["hidden_tests"], t["reference"]):
            ast.parse(src)
        for line in visible + hidden:
            assert t["entry_point"] in line or line.startswith("assert d1"), (t["id"], line)


@pytest.mark.parametrize("split", SPLITS)
def test_exact_task_shape(split):
    for t in SPLIT_EX[split]:
        assert set(t) >= {"id", "task", "answer_format", "answer"}, t["id"]
        assert t["answer_format"] == "integer"
        assert re.fullmatch(r"-?\d+", t["answer"]), t["id"]
        assert t["task"].rstrip().endswith("Give the final answer as a single integer on the last line."), t["id"]


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def _arith(node: ast.AST) -> int:
    """Integer arithmetic only (+ - * //, unary minus): a checker that cannot run anything else."""
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_arith(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.FloorDiv):
            assert left % right == 0, "an exact task's division must be exact"
        return _OPS[type(node.op)](left, right)
    raise AssertionError(f"not integer arithmetic: {ast.dump(node)}")


# The answers are the ones a person computes, written down here by hand.
_HAND_ANSWERS = {
    "dev": {"ex-add": "42", "ex-apples": "10", "ex-negative": "-25", "ex-large-product": "10000"},
    "heldout": {"ex-subtract-pair": "36", "ex-negative-product": "-13", "ex-train": "46", "ex-temperature": "-7",
                "ex-think-number": "12", "ex-father-age": "24", "ex-coins": "70", "ex-four-digit-sum": "5555"},
}


@pytest.mark.parametrize("split", SPLITS)
def test_exact_answers_are_consistent(split):
    for t in SPLIT_EX[split]:
        assert "expression" in t, t["id"]
        assert str(_arith(ast.parse(t["expression"], mode="eval"))) == t["answer"], t["id"]
        # A pure arithmetic question "What is <expr>?" states the expression it is checked against.
        m = re.match(r"What is (.+?)\?", t["task"])
        if m and re.fullmatch(r"[\d\s+\-*]+", m.group(1)):
            assert str(_arith(ast.parse(m.group(1), mode="eval"))) == t["answer"], t["id"]
    by_id = {t["id"]: t["answer"] for t in SPLIT_EX[split]}
    for task_id, answer in _HAND_ANSWERS[split].items():
        assert by_id[task_id] == answer, task_id


# --- references pass, trivial answers fail --------------------------------------------------------

def _reference_results(t: dict) -> tuple[str, bool, bool]:
    return t["id"], run_tests(t["reference"], t["tests"]), grade_python(t["reference"], t)


@pytest.mark.parametrize("split", SPLITS)
def test_every_reference_passes_visible_and_hidden_tests(split):
    results = _parallel(_reference_results, SPLIT_PY[split])
    failed = [(i, vis, hid) for i, vis, hid in results if not (vis and hid)]
    assert not failed, failed


def _wrong_answers(t: dict) -> list[str]:
    name = t["entry_point"]
    return [
        f"def {name}(*a, **k):\n    return None\n",
        # The identity: returns its first argument unchanged.
        f"def {name}(*a, **k):\n    return a[0] if a else None\n",
    ]


def _wrong_results(t: dict) -> tuple[str, list[bool]]:
    return t["id"], [grade_python(code, t) for code in _wrong_answers(t)]


@pytest.mark.parametrize("split", SPLITS)
def test_trivially_wrong_answers_fail_every_task(split):
    results = _parallel(_wrong_results, SPLIT_PY[split])
    passed = [(i, r) for i, r in results if any(r)]
    assert not passed, passed


# --- extract_code ---------------------------------------------------------------------------------

def test_extract_code_fenced_blocks():
    text = "Here you go:\n```python\ndef f(x):\n    return x + 1\n```\nAnd a test:\n```py\nassert f(1) == 2\n```\n"
    code = extract_code(text)
    assert "def f(x):" in code and "assert f(1) == 2" in code
    assert "Here you go" not in code
    # Untagged fences count; other languages do not.
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```bash\npip install x\n```") == ""
    assert extract_code("```Python\ny = 2\n```\n```json\n{\"a\": 1}\n```") == "y = 2\n"
    # A fence cut off by max_tokens runs to the end of the text.
    assert extract_code("```python\ndef g():\n    return 3") == "def g():\n    return 3\n"


def test_extract_code_unfenced_and_prose():
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1\n"
    assert extract_code("The function returns the reversed string.") == ""
    assert extract_code("Hello") == ""  # parses as a name, but is not code
    assert extract_code("") == ""
    assert extract_code("Sure! def f(): return 1") == ""


# --- grade_exact ----------------------------------------------------------------------------------

def test_grade_exact():
    task = {"answer": "42"}
    assert grade_exact("17 + 25 = 42\n42", task)
    assert grade_exact("The answer is 42.", task)
    assert grade_exact("First 40, then 41, finally: **42**", task)
    assert grade_exact("42.0", task)
    assert not grade_exact("42 is wrong, it is 43", task)
    assert not grade_exact("no number here", task)
    assert not grade_exact("", task)
    assert not grade_exact("41.5", task)
    assert grade_exact("15 - 40 = -25\nAnswer: -25", {"answer": "-25"})
    assert grade_exact("250 * 40 = 10,000", {"answer": "10000"})
    assert grade_exact("It costs $1,234,567 in total", {"answer": "1234567"})
    assert not grade_exact("x-25", {"answer": "-25"})  # a hyphen glued to a word is not a sign
    assert parse_last_number("10-2=8") == 8
    assert parse_last_number("1,2,3") == 3
    assert parse_last_number("nothing") is None
    for t in EX + HEX:
        assert grade_exact(f"Let me think.\n{t['answer']}", t)


# --- grade_python robustness ----------------------------------------------------------------------

def test_grade_python_never_raises_and_isolates(monkeypatch):
    monkeypatch.setenv("QUALITY_SECRET_PROBE", "secret")
    task = next(t for t in PY if t["entry_point"] == "is_even")
    good = extract_code(f"```python\n{task['reference']}```")
    cases = [
        ("", False),
        ("def is_even(n:\n", False),                                     # syntax error
        ("import sys\nsys.exit(0)\n", False),                            # exiting early is not passing
        ("while True:\n    pass\n", False),                              # timeout
        ("while True:\n    print('spam' * 1000)\n", False),              # unbounded output, timeout
        ("raise KeyboardInterrupt\n", False),
        (good + "\nif __name__ == '__main__':\n    raise SystemExit(1)\n", True),   # demo block not run
        (good + "\nprint(is_even(2))\n", True),
        ("import os\nassert 'QUALITY_SECRET_PROBE' not in os.environ\n" + good, True),          # minimal env
    ]

    def one(case):
        code, _ = case
        return grade_python(code, task, timeout_s=2.0)

    got = _parallel(one, cases)
    assert got == [want for _, want in cases]
    assert not grade_python(None, task)  # type: ignore[arg-type]
    assert not grade_python(good, {})


@pytest.mark.parametrize("answer", ["```python\n{ref}```", "Sure:\n\n```py\n{ref}```\nDone.", "{ref}"])
def test_reference_in_an_answer_grades(answer):
    t = PY[0]
    assert grade_python(extract_code(answer.format(ref=t["reference"])), t)


# The hidden tests catch what the visible ones do not reveal: these near misses pass the visible tests
# and fail the hidden ones (the edge case each task states in its text).
_NEAR_MISSES = {
    "is_prime": "def is_prime(n):\n    return all(n % i for i in range(2, n))\n",            # 0 and 1
    "average": "def average(nums):\n    return sum(nums) / len(nums)\n",                      # empty list
    "fibonacci": "def fibonacci(n):\n    a, b = 1, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n    return a\n",
    "last_element": "def last_element(items):\n    return items[-1]\n",                       # empty list
    "is_leap_year": "def is_leap_year(y):\n    return y % 4 == 0\n",                          # centuries
    "second_largest": "def second_largest(nums):\n    return sorted(nums)[-2]\n",             # repeats
}


# The same for held-out tasks: the plausible wrong solution a small model writes.
_HELDOUT_NEAR_MISSES = {
    "first_word": "def first_word(s):\n    return s.split(' ')[0]\n",                              # leading blanks
    "run_length_encode": ("from collections import Counter\n\ndef run_length_encode(s):\n"
                          "    return ''.join(f'{c}{n}' for c, n in Counter(s).items())\n"),    # runs, not counts
    "rotate_left": "def rotate_left(items, k):\n    return items[k:] + items[:k]\n",           # k beyond the length
    "last_n": "def last_n(items, n):\n    return items[-n:]\n",                                 # n == 0
    "first_repeated_char": ("def first_repeated_char(s):\n    for c in s:\n        if s.count(c) > 1:\n"
                            "            return c\n    return None\n"),                       # not the first repeat
    "ordinal": ("def ordinal(n):\n    return str(n) + {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')\n"),  # 11th to 13th
    "is_rotation": "def is_rotation(a, b):\n    return b in a + a\n",                        # lengths differ
    "sort_by_length": "def sort_by_length(words):\n    return sorted(words, key=lambda w: (len(w), w))\n",  # order
    "common_items": "def common_items(a, b):\n    return [x for x in a if x in b]\n",         # repeats
    "most_frequent": "def most_frequent(items):\n    return max(set(items), key=items.count)\n",  # ties
    "is_perfect_square": "def is_perfect_square(n):\n    return int(n ** 0.5) ** 2 == n\n",   # negative n
    "missing_number": "def missing_number(nums):\n    return sum(range(max(nums) + 1)) - sum(nums)\n",  # n missing
    "letter_grade": ("def letter_grade(score):\n    if score > 90:\n        return 'A'\n    if score > 80:\n"
                     "        return 'B'\n    if score > 70:\n        return 'C'\n    if score > 60:\n"
                     "        return 'D'\n    return 'F'\n"),                                  # boundaries
    "is_valid_time": ("def is_valid_time(s):\n    try:\n        h, m = s.split(':')\n"
                      "        return 0 <= int(h) <= 23 and 0 <= int(m) <= 59\n    except ValueError:\n"
                      "        return False\n"),                                              # '9:30'
    "truncate": "def truncate(s, n):\n    return s if len(s) < n else s[:n] + '...'\n",       # exactly n long
    "is_power_of_two": "def is_power_of_two(n):\n    return n & (n - 1) == 0\n",               # 0
}


@pytest.mark.parametrize("split, near_misses", [("dev", _NEAR_MISSES), ("heldout", _HELDOUT_NEAR_MISSES)])
def test_near_misses_pass_visible_and_fail_hidden(split, near_misses):
    tasks = {t["entry_point"]: t for t in SPLIT_PY[split]}

    def one(item):
        name, code = item
        return name, run_tests(code, tasks[name]["tests"]), grade_python(code, tasks[name])

    got = _parallel(one, list(near_misses.items()))
    assert got == [(name, True, False) for name in near_misses]
