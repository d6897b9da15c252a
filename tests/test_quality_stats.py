"""The quality benchmark's statistics (benchmarks/quality_stats.py), self-consistency's picks (quality_arms.py), the
append-only history, README's claim, and the whole pipeline (benchmarks/quality.py) on the deterministic fake
generator with two tiny tasks per family: page, history and README line produced. No engine, no Ray."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from fractions import Fraction
from pathlib import Path

import pytest

from actors.models.records import CheckResult, Version
from benchmarks.quality_stats import mcnemar_exact, random_pick_expectation, samples_within, wilson

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- pure statistics


def test_wilson_interval():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(17, 80)
    assert (lo, hi) == (0.137, 0.314)  # 17 of 80, worked by hand: 0.1371, 0.3142
    assert wilson(0, 24) == (0.0, 0.138)
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] == pytest.approx(0.722, abs=1e-3)
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and lo == pytest.approx(1 - hi, abs=1e-3)  # symmetric at one half


def test_mcnemar_exact_two_sided_binomial():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(8, 7) == 1.0  # the dev run the issue quotes: 8 vs 7 discordant, p = 1
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(5, 0) == mcnemar_exact(0, 5)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(4, 18) == pytest.approx(0.004344, rel=1e-3)
    assert mcnemar_exact(3, 3) == 1.0  # capped at 1
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_random_pick_expectation_is_exact():
    assert random_pick_expectation([]) == 0
    assert random_pick_expectation([(1, 3), (0, 4), (2, 2)]) == Fraction(4, 3)
    assert random_pick_expectation([(0, 0), (1, 1)]) == 1  # an empty pool contributes nothing
    with pytest.raises(ValueError):
        random_pick_expectation([(3, 2)])


def test_equal_token_budget():
    assert samples_within(4298, 304) == 14  # the floor: 14 samples fit, 15 do not
    assert samples_within(303, 304) == 1  # the baseline always answers
    assert samples_within(10_000, 100, cap=64) == 64
    assert samples_within(10_000, 0) == 1
    assert samples_within(912, 304) == 3


# ---------------------------------------------------------------- self-consistency's picks


def _v(*checks, answer=None) -> Version:
    return Version(written_by="a", content="x", checks=list(checks), answer=answer)


def _tests(passed: int, total: int) -> CheckResult:
    return CheckResult(name="python.tests", status="passed" if passed == total else "failed", message="",
                       tests_passed=passed, tests_total=total)


def _group(digest: str) -> CheckResult:
    return CheckResult(name="generated.behaviour_agreement", status="passed", message="behaviour", group=digest)


def test_picks():
    from benchmarks.quality_arms import behaviour_majority_pick, first_passing, majority_answer_pick

    assert first_passing([_v(_tests(1, 2)), _v(_tests(2, 2)), _v(_tests(2, 2))]) == 1
    assert first_passing([_v(_tests(0, 2)), _v(_tests(1, 2)), _v(_tests(1, 2))]) == 1
    assert first_passing([_v(), _v()]) == 0
    assert behaviour_majority_pick([_v(_group("a")), _v(_group("b")), _v(), _v(_group("b"))]) == 1
    assert behaviour_majority_pick([_v(), _v()]) == 0
    assert majority_answer_pick([_v(answer="41"), _v(answer=None), _v(answer="42"), _v(answer="42")]) == 2
    assert majority_answer_pick([_v(answer="7"), _v(answer="8")]) == 0
    assert majority_answer_pick([_v(), _v()]) == 0


def test_shipped_shape_is_read_from_the_config():
    import yaml

    from benchmarks.quality_arms import council_for, shipped_shape

    d = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())["applications"][0]["args"]["default_councils"]
    shape = shipped_shape()
    assert (shape.agents, shape.rounds, shape.drafts, shape.max_tokens) == (
        d["agents_per_council"], d["rounds"], d["drafts_per_agent"], d["max_tokens"])
    council = council_for("council", "python_notests", shape, rep=1)
    assert council.role == "DEV" and len(council.agents) == shape.agents and council.drafts_per_agent == shape.drafts
    assert {a.max_tokens for a in council.agents} == {shape.max_tokens}
    assert council_for("council", "exact", shape, rep=0).role == "DATA"
    sc = council_for("self_consistency", "python_tests", shape, rep=0, n_samples=5)
    assert len(sc.agents) == 5 and sc.rounds == 0 and sc.scoring.peer_rank == "never"
    assert council_for("single", "exact", shape, rep=0).agents[0].seed != council_for("single", "exact", shape,
                                                                                      rep=1).agents[0].seed


# ---------------------------------------------------------------- history and README


def test_history_is_append_only(tmp_path):
    from benchmarks.quality_figures import append_history

    path = tmp_path / "h.json"
    append_history(path, {"date": "d1", "commit": "c1"})
    first = path.read_text()
    append_history(path, {"date": "d2", "commit": "c2"})
    entries = json.loads(path.read_text())
    assert [e["commit"] for e in entries] == ["c1", "c2"]
    assert json.loads(first)[0] == entries[0]


def test_committed_history_keeps_the_earlier_runs():
    entries = json.loads((ROOT / "benchmarks" / "results" / "quality_history.json").read_text())
    commits = [e["commit"] for e in entries]
    for c in ("8811e9e", "8b0a91c", "fb1a792"):  # docs/quality.md's runs before issue 22
        assert c in commits
    fb = entries[commits.index("fb1a792")]["families"]["python_tests"]
    assert fb["arms"]["council"]["correct"] == 17 and fb["arms"]["self_consistency"]["correct"] == 16
    assert fb["mcnemar_vs_council"]["self_consistency"]["p"] == 1.0


def test_readme_claim_matches_the_page():
    from benchmarks.quality_page import README_MARK, readme_claim

    results = ROOT / "benchmarks" / "results" / "quality_heldout.json"
    heldout = json.loads(results.read_text()) if results.exists() else None
    lines = (ROOT / "README.md").read_text().splitlines()
    assert README_MARK in lines
    assert lines[lines.index(README_MARK) + 1] == readme_claim(heldout)
    page = (ROOT / "docs" / "quality.md").read_text()
    if heldout is None:
        assert "**Not yet measured.**" in page and "not yet measured" in readme_claim(None)
    assert "No protocol or prompt change was tuned on the held-out split" in page


# ---------------------------------------------------------------- the whole pipeline on the fake generator

TINY = {
    "python": [
        {"id": "tiny-double", "entry_point": "double_it",
         "task": "Write a Python function `double_it(x: int) -> int` that returns two times x. Answer with one "
                 "```python code block.",
         "tests": "assert double_it(2) == 4", "hidden_tests": "assert double_it(0) == 0\nassert double_it(-3) == -6"},
        {"id": "tiny-shout", "entry_point": "shout",
         "task": "Write a Python function `shout(s: str) -> str` that returns s in upper case. Answer with one "
                 "```python code block.",
         "tests": "assert shout('a') == 'A'", "hidden_tests": "assert shout('') == ''\nassert shout('Hi') == 'HI'"},
    ],
    "exact": [
        {"id": "tiny-add", "task": "What is 2 + 3? Give the final answer as a single integer on the last line.",
         "answer_format": "integer", "answer": "5"},
        {"id": "tiny-mul", "task": "What is 7 * 6? Give the final answer as a single integer on the last line.",
         "answer_format": "integer", "answer": "42"},
    ],
}
CODE = {"double_it": ("def double_it(x: int) -> int:\n    return 2 * x", "def double_it(x: int) -> int:\n    return x + 2"),
        "shout": ("def shout(s: str) -> str:\n    return s.upper()", "def shout(s: str) -> str:\n    return s.title()")}
ANSWERS = {"2 + 3": 5, "7 * 6": 42}


def _responder(messages, seed, json_schema=None):
    from tests.fakes import default_response

    if json_schema is not None:
        return default_response(messages, seed, json_schema)
    text = "\n".join(m["content"] for m in messages)
    right = "meticulous" not in messages[-1]["content"] and (seed or 0) % 3 != 1
    for name, (good, bad) in CODE.items():
        if f"`{name}(" in text:
            return f"```python\n{good if right else bad}\n```\n"
    for expr, value in ANSWERS.items():
        if f"What is {expr}?" in text:
            return f"The result is computed step by step.\n{value if right else value + 1}"
    return "I do not know."


class CachingVerifier:
    """The real in-process verifier, run once per distinct text and request (the fake answers repeat)."""

    def __init__(self):
        from actors.verification import LocalVerifier

        self.inner, self.cache = LocalVerifier(), {}

    async def verify(self, texts, request, names, scoring, examples=None):
        key = lambda t: (t, request.task, request.constraints.tests, tuple(names), tuple(examples or ()))
        todo = list(dict.fromkeys(t for t in texts if key(t) not in self.cache))
        for t, checks in zip(todo, await self.inner.verify(todo, request, names, scoring, examples)):
            self.cache[key(t)] = checks
        return [copy.deepcopy(self.cache[key(t)]) for t in texts]


def test_the_pipeline_writes_page_history_and_readme_line(tmp_path):
    from benchmarks import quality
    from benchmarks.quality_arms import FAMILIES, Shape
    from benchmarks.quality_page import README_MARK
    from tests.fakes import FakeGenerator

    tasks = {"python_tests": TINY["python"], "python_notests": TINY["python"], "exact": TINY["exact"]}
    shape = Shape(agents=3, rounds=1, drafts=2, max_tokens=32, engine="smollm2", source="test")
    run = asyncio.run(quality.measure(FakeGenerator(_responder), split="heldout", tasks=tasks, shape=shape, reps=2,
                                      concurrency=6, sample_cap=4, verifier=CachingVerifier()))
    run["wall_s"] = 1.0
    assert len(run["rows"]) == 2 * 3 * 6  # reps x arms x (2 tasks x 3 families)
    assert all(1 <= n <= 4 for ns in run["self_consistency_samples"].values() for n in ns)
    assert run["task_inputs"] == 2  # both tiny tasks name their signature

    history = tmp_path / "history.json"
    earlier = [{"date": "2026-11-27", "commit": "fb1a792", "split": "dev", "design": "an earlier design",
                "families": {}, "median_wall_s": {}, "targets": None}]
    history.write_text(json.dumps(earlier))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_MARK}\nold claim\n\nmore\n")
    page = tmp_path / "quality.md"
    quality.write_outputs(run, results=tmp_path, history=history, page=page, readme=readme)

    entries = json.loads(history.read_text())
    assert entries[0] == earlier[0] and len(entries) == 2
    new = entries[1]
    assert new["split"] == "heldout" and set(new["families"]) == set(FAMILIES)
    for fam in new["families"].values():
        assert set(fam["arms"]) == {"single", "self_consistency", "council"}
        assert set(fam["mcnemar_vs_council"]) == {"single", "self_consistency"}
    assert len(new["targets"]) == 6
    assert (tmp_path / "quality_heldout.json").exists()

    text = page.read_text()
    assert "## Held-out split (the headline)" in text and "Not yet measured" not in text.split("## Dev split")[0]
    assert "No protocol or prompt change was tuned on the held-out split" in text
    assert text.count("| Python, no visible tests |") == 3  # one row per arm, with the random pick beside it
    assert re.search(r"\| (\*\*met\*\*|\*\*not met\*\*|not measured[^|]*) \|", text)
    assert "fb1a792" in text and "an earlier design" in text
    claim = readme.read_text().splitlines()[3]
    assert claim.startswith("**Quality** (held-out split") and "targets met" in claim

    # A second run appends; the first entries stay as they were.
    quality.write_outputs(run, results=tmp_path, history=history, page=page, readme=readme)
    again = json.loads(history.read_text())
    assert again[:2] == entries and len(again) == 3


def test_a_failed_deliberation_is_a_failed_attempt_on_the_page(tmp_path):
    from benchmarks import quality
    from benchmarks.quality_arms import Shape
    from benchmarks.quality_page import markdown
    from tests.fakes import FakeGenerator

    tasks = {"python_tests": TINY["python"][:1], "python_notests": [], "exact": TINY["exact"][:1]}
    shape = Shape(agents=3, rounds=0, drafts=1, max_tokens=32, engine="smollm2", source="test")
    run = asyncio.run(quality.measure(FakeGenerator(_responder, fail_on=1), split="heldout", tasks=tasks, shape=shape,
                                      reps=1, concurrency=1, sample_cap=2, verifier=CachingVerifier()))
    failed = [r for r in run["rows"] if r.get("error")]
    assert len(failed) == 1 and not failed[0]["correct"] and "fake engine failure" in failed[0]["error"]
    assert len(run["rows"]) == 3 * 2
    assert "**1 attempt(s) failed**" in markdown({"heldout": {**run, "wall_s": 1.0}, "dev": None}, [])
