"""The throughput benchmark's engine baseline matched to a wave of deliberations (benchmarks/matched.py) on
hand-made records with known answers, and on records of deliberations run on the fake generator (the baseline's
calls built from them, benchmarks/stack.py); council shapes (benchmarks/shapes.py) and the section headings of
docs/benchmarks.md that name them (benchmarks/report_doc.py). No engine, no Ray; no figure here is a time measured."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from actors.models.councils import default_council
from actors.models.records import DeliberationRecord
from actors.models.requests import DeliberationRequest
from actors.protocol import deliberate
from benchmarks.matched import matched
from benchmarks.report import saturation
from benchmarks.report_doc import NO_DELIBERATION, markdown
from benchmarks.shapes import NOT_RECORDED, council_shape, merged, shape_label
from benchmarks.stack import raw_calls
from tests.fakes import FakeGenerator, FakeVerifier, MemorySink
from tests.test_docs import _anchors

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def timing(stage: str, calls: int, batches: int, generation_s: float, prompt: int, completion: int) -> dict:
    return {"stage": stage, "seconds": generation_s + 0.5, "generation_s": generation_s, "verification_s": 0.5,
            "calls": calls, "batches": batches, "prompt_tokens": prompt, "completion_tokens": completion}


# Two deliberations of one wave, 10 s from the first request to the last answer.
# A: propose in 2 batches (3 drafts + the test writer, then 3 drafts), then critique, revise and rank at once.
# B: propose in one batch of 12 drafts, then the verifiers decided (the other stages skipped).
RECORDS = [
    {"id": "a", "timings": [timing("propose", 7, 2, 4.0, 700, 560), timing("critique-1", 3, 1, 2.0, 600, 90),
                            timing("revise-1", 3, 1, 3.0, 900, 240), timing("rank", 3, 1, 1.0, 1500, 60),
                            {"stage": "score", "seconds": 0.01}]},
    {"id": "b", "timings": [timing("propose", 12, 1, 6.0, 1200, 960), {"stage": "score", "seconds": 0.01}]},
]


def test_the_wave_s_calls_their_mean_in_flight_and_lengths_per_call():
    plan = matched(RECORDS, wall_s=10.0)
    assert plan.calls == 7 + 3 + 3 + 3 + 12
    # Calls in flight over time: calls x generation_s / batches, stage by stage.
    # A: 7 x 4.0 / 2 + 3 x 2.0 + 3 x 3.0 + 3 x 1.0 = 32 call-seconds; B: 12 x 6.0 = 72.
    assert plan.call_seconds == pytest.approx(104.0)
    assert plan.in_flight == pytest.approx(10.4) and plan.concurrency == 10
    assert list(plan.by_kind) == ["propose", "critique", "revise", "rank"]  # the order the stages ran in
    propose = plan.by_kind["propose"]
    assert (propose.calls, propose.prompt_per_call, propose.completion_per_call) == (19, 100.0, 80.0)
    assert (plan.by_kind["rank"].prompt_per_call, plan.by_kind["rank"].completion_per_call) == (500.0, 20.0)
    assert plan.total.prompt_per_call == pytest.approx((700 + 600 + 900 + 1500 + 1200) / 28)
    assert plan.total.completion_per_call == pytest.approx((560 + 90 + 240 + 60 + 960) / 28)
    as_dict = plan.as_dict()
    assert (as_dict["calls"], as_dict["in_flight"], as_dict["concurrency"]) == (28, 10.4, 10)
    assert as_dict["by_kind"]["critique"] == {"calls": 3, "prompt_tokens_per_call": 200.0,
                                              "completion_tokens_per_call": 30.0}


def test_every_round_counts_under_its_kind_and_the_baseline_keeps_at_least_one_call_in_flight():
    record = {"timings": [timing("critique-1", 2, 1, 1.0, 100, 10), timing("critique-2", 4, 1, 1.0, 300, 30)]}
    plan = matched([record], wall_s=60.0)
    assert list(plan.by_kind) == ["critique"] and plan.by_kind["critique"].calls == 6
    assert plan.in_flight == pytest.approx(0.1) and plan.concurrency == 1


def test_one_batch_for_the_whole_wave_is_that_many_calls_in_flight():
    plan = matched([{"timings": [timing("propose", 5, 1, 8.0, 50, 50)]}], wall_s=8.0)
    assert plan.in_flight == pytest.approx(5.0)


def test_records_that_do_not_count_their_batches_are_refused_not_guessed():
    old = {"id": "old", "timings": [{"stage": "propose", "calls": 12, "generation_s": 6.0, "prompt_tokens": 1,
                                     "completion_tokens": 1}]}
    with pytest.raises(ValueError, match="old.*propose.*batches"):
        matched([old], wall_s=10.0)
    with pytest.raises(ValueError, match="wall time"):
        matched(RECORDS, wall_s=0.0)


# ---------------------------------------------------------------- on records the protocol wrote


async def test_the_baseline_sends_the_calls_the_deliberations_made_of_each_kind():
    council = default_council("QA", "fake", n_agents=3, rounds=1, max_tokens=64, drafts=2)
    council.scoring.code_answers = False  # the drafts in one batch, no test writer
    gen = FakeGenerator()
    records = []
    for task in ("Review a retry policy.", "Review a timeout policy."):
        record = DeliberationRecord(request=DeliberationRequest(role="QA", task=task, rounds=1))
        await deliberate(record, council, gen, MemorySink(), FakeVerifier())
        records.append(json.loads(record.model_dump_json()))  # as the service answers it
    assert all(t["batches"] == (1 if t["calls"] else 0) for r in records for t in r["timings"])

    plan = matched(records, wall_s=1.0)
    assert plan.calls == len(gen.calls)
    calls = raw_calls(records, plan, {"QA": council})
    asked = Counter(_kind(c["messages"]) for c in gen.calls)
    assert Counter(_kind(c.messages) for c in calls) == asked == {k: v.calls for k, v in plan.by_kind.items()}
    assert asked["propose"] == 2 * 3 * 2  # two deliberations, three agents, two drafts each
    for call in calls:
        kind = _kind(call.messages)
        assert call.max_tokens == max(1, round(plan.by_kind[kind].completion_per_call))
        assert (call.json_schema is not None) == (kind == "rank")
        assert call.temperature in {a.temperature for a in council.agents}


def _kind(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    for kind, marker in (("rank", "Rank these proposals"), ("revise", "Rewrite the proposal"),
                         ("critique", "Critique this proposal"), ("propose", "Write your proposal")):
        if marker in user:
            return kind
    raise AssertionError(user[:200])


# ---------------------------------------------------------------- shapes and the page's headings


def test_a_council_shape_and_its_label():
    council = default_council("DEV", "fake", n_agents=3, rounds=1, max_tokens=96, drafts=4)
    shipped = council_shape(council, DeliberationRequest(role="DEV", task="t"))
    assert shipped == {"agents": 3, "drafts": 4, "rounds": 1, "max_tokens": 96}
    assert shape_label(shipped) == "3 agents, up to 4 drafts, 1 round, max_tokens 96"
    asked = council_shape(council, DeliberationRequest(role="DEV", task="t", rounds=0, num_agents=1, max_tokens=16))
    assert shape_label(asked) == "1 agent, up to 4 drafts, 0 rounds, max_tokens 16"
    fanout = merged([council_shape(default_council("DEV", "f", n_agents=n, rounds=0, max_tokens=t))
                     for n in (1, 3, 5) for t in (32, 128)])
    assert shape_label(fanout) == "1/3/5 agents, 1 draft, 0 rounds, max_tokens 32/128"
    assert shape_label(None) == shape_label({"agents": 3}) == NOT_RECORDED


def _matched_throughput() -> dict:
    waves = [{"wall_s": 10.0, "deliberations": 16, "matched": matched(RECORDS, 10.0).as_dict()}]
    engine = [{"wall_s": 5.0, "calls": 28, "concurrency": 10, "prompt_tokens_per_call": 180.0,
               "completion_tokens_per_call": 70.0, "tokens_per_s": 100.0}]
    by_c = {"16": {"deliberation_waves": waves, "engine_waves": engine, "engine_calls": 28,
                   "engine_concurrent_calls": 10, "deliberations_per_min": 96.0, "deliberations_per_hour": 5760.0,
                   "tokens_per_s": 90.0, "engine_tokens_per_s": 100.0, "ratio_to_engine": 0.9}}
    return {"by_concurrency": by_c, "shape": {"agents": 3, "drafts": 4, "rounds": 1, "max_tokens": 96},
            "matched": True, "saturation": saturation(by_c), "png": "throughput.png"}


def _headings(page: str) -> dict[str, str]:
    """'6' -> what section 6's heading says it ran."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^## (\d+)\. [^\n]*? — ([^\n]+)$", page, re.MULTILINE)}


def test_every_section_heading_names_what_it_ran(tmp_path):
    stored = json.loads((ROOT / "benchmarks" / "results" / "runs" / "stack.json").read_text())
    stack = {"machine": stored["machine"], "settings": stored["settings"], "idle_cpu": stored["idle_cpu"]}
    recovery = {"request": {"role": "DEV", "rounds": 0, "max_tokens": 16}, "run_on": stored["machine"],
                "faults": {"council": {"median_s": 8.0, "min_s": 7.0, "max_s": 9.0, "n": 3,
                                       "healthy_deliberation_s": 6.0}}}
    page = markdown({"throughput": _matched_throughput(), "recovery": recovery,
                     "quality_shape": {"agents": 3, "rounds": 1, "drafts": 4, "max_tokens": 96}}, None, stack, None)
    assert _headings(page) == {"4": NO_DELIBERATION, "6": "3 agents, up to 4 drafts, 1 round, max_tokens 96",
                               "7": "the council arm: 3 agents, up to 4 drafts, 1 round, max_tokens 96",
                               "8": NOT_RECORDED}
    assert "Deliberations per hour at saturation: 5760**, at 16 concurrent (the largest concurrency tried" in page
    assert "| 16 | 5760 | 90.0 | 100.0 | 28; 10.4 (10) | 175 / 68; 180 / 70 | 0.90 |" in page
    assert re.search(r"\| throughput: the service ≥ 0\.85 × the engine alone at matched concurrency, 16 "
                     r"concurrent deliberations \| 0\.90 × \| \*\*met\*\* \|", page)
    # Links into the page name the section, not what it ran: its anchor stays when the shape changes.
    (tmp_path / "benchmarks.md").write_text(page)
    assert {"4-idle-cpu", "6-throughput", "8-time-to-recover"} <= _anchors(tmp_path / "benchmarks.md")


def test_a_run_from_before_the_matched_baseline_says_so():
    stored = json.loads((ROOT / "benchmarks" / "results" / "runs" / "stack.json").read_text())
    t = stored["throughput"]
    old = {"by_concurrency": t["results"], "shape": t.get("shape"), "matched": t.get("baseline") == "matched",
           "saturation": saturation(t["results"]), "png": "throughput.png"}
    page = markdown({"throughput": old}, None, {"machine": stored["machine"], "settings": stored["settings"]}, None)
    assert _headings(page)["6"] == NOT_RECORDED
    assert "not at matched concurrency" in page and "3 per deliberation" not in page
    assert "| throughput:" not in page  # no target line on a baseline that was not matched


def test_the_default_deliberation_section_says_met_or_not_with_its_spread_and_stages(monkeypatch):
    """benchmarks/report.py's latency summary and its section: the median against the 25 s target (not met at 30 s),
    the spread, each stage's median and in how many repetitions it ran. Hand-made rows, no time measured here."""
    from benchmarks import report
    from benchmarks.report_doc import latency_markdown

    monkeypatch.setattr(report, "save", lambda name, payload: None)
    rows = [{"wall_s": w, "council_duration_s": w - 0.5, "decided_by": d, "stages_skipped": skipped,
             "completion_tokens": 100, "stages": stages}
            for w, d, skipped, stages in [
                (20.0, "generated_evidence", ["critique-1", "revise-1"], [["propose", 15.0, 12.0, 3.0, 13, 1]]),
                (30.0, "distinguishing_inputs", [], [["propose", 18.0, 14.0, 4.0, 13, 1], ["rank", 4.0, 4.0, 0, 3, 1]]),
                (40.0, "peer_rank", [], [["propose", 21.0, 16.0, 5.0, 13, 1], ["rank", 8.0, 8.0, 0, 3, 1]])]]
    run = {"task": "t", "role": "DEV", "target_s": 25.0, "rows": rows, "machine": {"date": "2026-12-08"},
           "shape": {"agents": 3, "drafts": 4, "rounds": 1, "max_tokens": 96}}
    lat = report.latency(run)
    assert (lat["median_s"], lat["min_s"], lat["max_s"], lat["met"]) == (30.0, 20.0, 40.0, False)
    assert lat["stages"] == {"propose": {"median_s": 18.0, "ran": 3}, "rank": {"median_s": 6.0, "ran": 2}}
    text = "\n".join(latency_markdown(lat))
    assert "**30.0 s** (20.0–40.0); target ≤ 25 s: **not met**" in text
    assert "rank 6.0 s (ran in 2)" in text and "critique-1 ×1" in text and "3 agents, up to 4 drafts" in text
    assert report.latency({**run, "rows": []}) is None


def test_every_runs_headline_figures_are_appended_never_rewritten(tmp_path, monkeypatch):
    """benchmarks/bench_history.py: a run's Targets rows are appended with its date and commit; a re-render with the
    same rows adds nothing; the page lists every entry."""
    from benchmarks import bench_history

    monkeypatch.setattr(bench_history, "HISTORY", tmp_path / "bench_history.json")
    monkeypatch.setattr(bench_history, "ROOT", tmp_path)
    page = ("# Benchmarks\n\n## Targets\n\n| target | measured | |\n|---|---|---|\n"
            "| idle stack ≤ 15 % of one core | 51.5 % | **not met** |\n| fan-out ≤ 1.5 × | 1.22 × | **met** |\n\n## 1. X\n")
    assert bench_history.target_rows(page) == [["idle stack ≤ 15 % of one core", "51.5 %", "not met"],
                                               ["fan-out ≤ 1.5 ×", "1.22 ×", "met"]]
    bench_history.append("2026-11-28", "abc1234", page, ["stack"])
    bench_history.append("2026-11-29", "abc1234", page, ["stack"])  # the same figures: a re-render, not a run
    later = page.replace("51.5 %", "14.0 %").replace("**not met**", "**met**")
    entries = bench_history.append("2026-12-08", "abc1234", later, ["stack", "ray_floor"])
    assert [(e["date"], e["rows"][0][1]) for e in entries] == [("2026-11-28", "51.5 %"), ("2026-12-08", "14.0 %")]
    text = "\n".join(bench_history.markdown(entries))
    assert "| 2026-11-28 | abc1234 | stack | idle stack ≤ 15 % of one core: 51.5 % (not met)" in text
    assert "| 2026-12-08 | abc1234 | stack, ray_floor |" in text
