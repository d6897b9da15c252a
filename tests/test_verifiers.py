"""Each verifier on good and bad artifacts: the checks must run or validate the artifact, not its prose."""

from __future__ import annotations

import shutil

import pytest

from actors.models.councils import ScoringSpec
from actors.models.records import CheckResult
from actors.models.requests import Constraints
from actors.verifiers import (VERIFIER_NAMES, VerifierMissing, check_installed, defaults_for, run_verifiers,
                              validate_names)
from actors.verifiers.blocks import extract_code_blocks

pytestmark = pytest.mark.unit

TASK = "Write a Python function is_palindrome(s) that returns True when s reads the same backwards, ignoring case."
REQUIREMENTS = ["Ignore letter case", "Return a boolean"]
GOOD = '''Compare the lowered string with its reverse:

```python
def is_palindrome(s: str) -> bool:
    s = s.lower()
    return s == s[::-1]
```
'''
WRONG = '''```python
def is_palindrome(s):
    return s == s[::-1]  # forgets to ignore case
```'''
ASSERTS = 'assert is_palindrome("racecar")\nassert is_palindrome("Abba")\nassert is_palindrome("Noon")\n'
DOCTEST = '>>> is_palindrome("racecar")\nTrue\n>>> is_palindrome("Abba")\nTrue\n>>> is_palindrome("Noon")\nTrue\n'
FUNCTIONS = '''from solution import is_palindrome

def test_plain():
    assert is_palindrome("racecar")

def test_case():
    assert is_palindrome("Abba")

class TestMore:
    def test_noon(self):
        assert is_palindrome("Noon")
'''
LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
         "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.")


def run(content: str, names=("content", "python"), task: str = TASK, scoring: ScoringSpec | None = None,
        **constraints) -> dict[str, CheckResult]:
    constraints.setdefault("requirements", REQUIREMENTS)
    checks = run_verifiers(content, task, Constraints(**constraints), list(names), scoring or ScoringSpec())
    assert len({c.name for c in checks}) == len(checks)
    return {c.name: c for c in checks}


def score(checks: dict[str, CheckResult]) -> float:
    counted = [c for c in checks.values() if c.status != "skipped"]
    return sum(c.weight for c in counted if c.passed) / sum(c.weight for c in counted)


# --- content -----------------------------------------------------------------------------------------

def test_empty_and_blank_proposals_fail():
    for text in ("", "   \n\t"):
        checks = run(text)
        assert checks["content.non_empty"].failed
        assert checks["content.not_restated"].failed


def test_lorem_ipsum_is_off_topic_and_scores_below_a_correct_answer():
    lorem = run(LOREM, names=defaults_for("DEV"), tests=ASSERTS)
    good = run(GOOD, names=defaults_for("DEV"), tests=ASSERTS)
    assert lorem["content.on_topic"].failed
    assert lorem["python.tests"].failed and lorem["python.tests"].message == "no Python code block to test"
    assert score(good) == 1.0
    assert score(lorem) < 0.5
    # Even with nothing to run, lorem ipsum does not score like an answer.
    assert score(run(LOREM)) < score(run(GOOD))


def test_echo_of_the_requirements_fails():
    checks = run("- Ignore letter case\n- Return a boolean\n\nIgnore the letter case, return a boolean.")
    assert checks["content.not_restated"].failed
    assert "restates the task" in checks["content.not_restated"].message


def test_terse_code_is_on_topic():
    checks = run("```python\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n```",
                 task="Compute the nth Fibonacci number.", requirements=[])
    assert checks["content.on_topic"].passed


def test_length_limits():
    checks = run(GOOD, scoring=ScoringSpec(max_chars=50))
    assert checks["content.within_limits"].failed
    assert run("short", scoring=ScoringSpec(min_chars=20))["content.non_empty"].failed


def test_exact_answer_tasks_skip_the_topic_checks():
    checks = run("The answer is 42.", task="What is 6 times 7?", answer_format="integer",
                 scoring=ScoringSpec(min_chars=1))
    assert checks["content.not_restated"].status == "skipped"
    assert checks["content.on_topic"].status == "skipped"
    assert checks["content.answer"].passed and "'42'" in checks["content.answer"].message


def test_exact_answer_tasks_need_an_answer_not_length():
    bare = run("42", task="What is 6 times 7?", answer_format="integer")
    assert bare["content.non_empty"].passed and bare["content.answer"].passed
    prose = run("I am ready to help you with your math homework, step by step.", task="What is 6 times 7?",
                answer_format="integer")
    assert prose["content.answer"].failed and "no final answer" in prose["content.answer"].message


# --- python ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tests", [ASSERTS, DOCTEST, FUNCTIONS], ids=["asserts", "doctest", "test_functions"])
def test_correct_function_passes_its_tests(tests):
    checks = run(GOOD, tests=tests)
    t = checks["python.tests"]
    assert t.passed, t.message
    assert (t.tests_passed, t.tests_total) == (3, 3)
    assert t.weight == 5.0
    assert checks["python.parse"].passed and checks["python.lint"].passed


@pytest.mark.parametrize("tests", [ASSERTS, DOCTEST, FUNCTIONS], ids=["asserts", "doctest", "test_functions"])
def test_wrong_function_fails_with_the_first_failing_test(tests):
    t = run(WRONG, tests=tests)["python.tests"]
    assert t.failed
    assert (t.tests_passed, t.tests_total) == (1, 3)
    assert "1/3 tests passed" in t.message and "Abba" in t.message


def test_failed_comparison_shows_both_sides():
    t = run(WRONG, tests='assert is_palindrome("Abba") == True\n')["python.tests"]
    assert "left: False, right: True" in t.message


def test_unparseable_tests_are_skipped_with_a_message():
    t = run(GOOD, tests="assert is_palindrome(")["python.tests"]
    assert t.status == "skipped"
    assert t.message.startswith("constraints.tests do not parse:")


def test_tests_importing_a_missing_module_fail_clearly():
    t = run(GOOD, tests="import no_such_module_here\nassert is_palindrome('abba')\n")["python.tests"]
    assert t.failed
    assert "module 'no_such_module_here' is not available" in t.message


def test_no_tests_is_skipped():
    assert run(GOOD)["python.tests"].status == "skipped"


def test_empty_python_block_fails_parse():
    checks = run("Here it is:\n```python\n```\n", tests=ASSERTS)
    assert checks["python.parse"].failed and "empty" in checks["python.parse"].message
    assert checks["python.tests"].failed


def test_untagged_broken_block_fails_python_parse():
    checks = run("The fix:\n```\ndef is_palindrome(s)\n    return s == s[::-1]\n```\n")
    assert checks["python.parse"].failed
    assert "untagged block at line 2" in checks["python.parse"].message
    assert "tag a block" in checks["python.parse"].message


def test_lint_finds_undefined_names():
    checks = run("```python\ndef is_palindrome(s):\n    return s == reversed_string(s)\n```")
    assert checks["python.parse"].passed
    assert checks["python.lint"].failed and "F821" in checks["python.lint"].message


def test_later_blocks_override_earlier_definitions():
    content = WRONG + "\nFixed:\n```python\ndef is_palindrome(s):\n    return s.lower() == s.lower()[::-1]\n```"
    assert run(content, tests=ASSERTS)["python.tests"].passed


# --- shell -------------------------------------------------------------------------------------------

def test_shell_block_good_and_broken():
    good = run("Install:\n```bash\n#!/bin/bash\nset -eu\nfor f in *.txt; do echo \"$f\"; done\n```", names=["shell"])
    assert good["shell.parse"].passed and good["shell.shellcheck"].passed
    bad = run("Install:\n```bash\nif [ -f x ]; then\n  echo $((\n```", names=["shell"])
    assert bad["shell.parse"].failed and bad["shell.shellcheck"].failed
    assert "block at line 2" in bad["shell.parse"].message


def test_untagged_broken_block_is_checked_as_shell_when_python_is_not_enabled():
    checks = run("```\nif then fi (\n```", names=["content", "shell"])
    assert checks["shell.parse"].failed


# --- json / yaml / kubernetes ------------------------------------------------------------------------

SCHEMA = {"type": "object", "required": ["name", "port"],
          "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}


def test_json_parse_and_schema():
    good = run('```json\n{"name": "web", "port": 80}\n```', names=["json"], json_schema=SCHEMA)
    assert good["json.parse"].passed and good["json.schema"].passed
    wrong = run('```json\n{"name": "web", "port": "80"}\n```', names=["json"], json_schema=SCHEMA)
    assert wrong["json.schema"].failed and "port" in wrong["json.schema"].message
    broken = run('```json\n{"name": "web",}\n```', names=["json"], json_schema=SCHEMA)
    assert broken["json.parse"].failed and broken["json.schema"].failed


def test_schema_applies_to_yaml_and_bad_schemas_are_skipped():
    assert run("```yaml\nname: web\nport: 80\n```", names=["json", "yaml"], json_schema=SCHEMA)["json.schema"].passed
    bad = run('```json\n{"a": 1}\n```', names=["json"], json_schema={"type": 12})
    assert bad["json.schema"].status == "skipped" and "not a valid JSON Schema" in bad["json.schema"].message


def test_yaml_parse_and_alias_bomb():
    assert run("```yaml\na: [1, 2\n```", names=["yaml"])["yaml.parse"].failed
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    checks = run(f"```yaml\n{bomb}```", names=["yaml", "kubernetes"])
    assert checks["yaml.parse"].failed and "expand" in checks["yaml.parse"].message


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: %s
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
"""


def test_kubernetes_manifests():
    assert run(f"```yaml\n{DEPLOYMENT % 2}```", names=["kubernetes"])["kubernetes.schema"].passed
    wrong = run(f"```yaml\n{DEPLOYMENT % 'two'}```", names=["kubernetes"])["kubernetes.schema"]
    assert wrong.failed and "replicas" in wrong.message
    typo = run("```yaml\napiVersion: apps/v1\nkind: Deploymnt\nmetadata: {name: x}\n```", names=["kubernetes"])
    assert typo["kubernetes.schema"].failed
    crd = run("```yaml\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: c}\n```",
              names=["kubernetes"])
    assert crd["kubernetes.schema"].status == "skipped"


# --- dockerfile / sql --------------------------------------------------------------------------------

def test_dockerfile():
    good = run("```dockerfile\nFROM python:3.11-slim\nWORKDIR /app\nCOPY . .\nCMD [\"python\", \"app.py\"]\n```",
               names=["dockerfile"])
    assert good["dockerfile.parse"].passed and good["dockerfile.lint"].passed
    no_from = run("```dockerfile\nRUN echo hi\n```", names=["dockerfile"])
    assert no_from["dockerfile.parse"].failed
    unknown = run("```dockerfile\nFROM alpine:3\nRUNN echo hi\n```", names=["dockerfile"])
    assert "unknown instruction RUNN" in unknown["dockerfile.parse"].message
    assert unknown["dockerfile.lint"].failed


SQL_SCHEMA = "CREATE TABLE orders (customer TEXT, amount REAL); INSERT INTO orders VALUES ('a', 3), ('b', 5);"


def test_sql_parse_and_execute():
    good = run("```sql\nSELECT customer, SUM(amount) AS total FROM orders GROUP BY customer ORDER BY total DESC;\n```",
               names=["sql"], sql_schema=SQL_SCHEMA)
    assert good["sql.parse"].passed and good["sql.execute"].passed, good["sql.execute"].message
    wrong = run("```sql\nSELECT custmer FROM orders;\n```", names=["sql"], sql_schema=SQL_SCHEMA)
    assert wrong["sql.parse"].passed and wrong["sql.execute"].failed and "custmer" in wrong["sql.execute"].message
    assert run("```sql\nlorem ipsum dolor\n```", names=["sql"])["sql.parse"].failed
    postgres = run("```postgresql\nSELECT customer FROM orders WHERE customer ILIKE 'A%';\n```", names=["sql"],
                   sql_schema=SQL_SCHEMA)
    assert postgres["sql.execute"].passed


# --- API ---------------------------------------------------------------------------------------------

def test_names_and_defaults():
    assert set(VERIFIER_NAMES) == {"content", "python", "shell", "json", "yaml", "kubernetes", "dockerfile", "sql"}
    assert defaults_for("DEV") == ["content", "python", "shell"]
    assert defaults_for("SOMETHING_ELSE") == ["content", "python", "shell", "json", "yaml"]
    validate_names(list(VERIFIER_NAMES))
    with pytest.raises(ValueError, match="nope"):
        validate_names(["content", "nope"])
    with pytest.raises(ValueError):
        run_verifiers("x", "y", Constraints(), ["nope"], ScoringSpec())


def test_weights_come_from_the_council():
    checks = run(GOOD, tests=ASSERTS, scoring=ScoringSpec(weights={"python.tests": 9, "content.on_topic": 0.5}))
    assert checks["python.tests"].weight == 9 and checks["content.on_topic"].weight == 0.5
    assert checks["python.parse"].weight == 1.0


def test_check_installed_names_what_is_missing(monkeypatch):
    check_installed()
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "shellcheck" else which(name, *a, **k))
    with pytest.raises(VerifierMissing, match="shellcheck"):
        check_installed(["shell"])
    check_installed(["content", "json"])

    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sqlglot" else find_spec(name))
    with pytest.raises(VerifierMissing, match="sqlglot"):
        check_installed(["sql"])


def test_code_blocks_are_extracted_as_before():
    blocks = extract_code_blocks("a\n```Python {.x}\nprint(1)\n```\n~~~\nopen\n")
    assert [(b.lang, b.code, b.line, b.closed) for b in blocks] == [
        ("python", "print(1)", 2, True), ("", "open", 5, False)]


def test_run_verifiers_pickles_by_reference():
    import pickle

    assert pickle.loads(pickle.dumps(run_verifiers)) is run_verifiers
