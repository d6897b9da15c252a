"""The engine-alone baseline matched to one wave of deliberations, read from their records' stage timings
(actors/models/records.py StageTiming): how many generate calls the wave made, how many it kept in flight on
average, and how long their prompts and answers were, by kind of stage. Pure: records in (as the service returns
them, JSON), figures out; benchmarks/stack.py sends the baseline.

How many calls were in flight is an estimate, since no record holds when each call started and ended. What a stage
timing does hold: its `calls`, sent in `batches` (each sent at once and awaited whole before the next: the
propose stage's draft waves, one batch in every other stage), and `generation_s`, the time spent awaiting them. A
stage's calls in flight, integrated over time, is then taken as

    calls × generation_s / batches

which is exact when the stage's batches hold as many calls each and last as long each (b batches of calls/b
calls, generation_s/b seconds each), and counts every call of a batch as in flight until the batch's slowest call
returns: an upper bound, since a batch ends with its slowest call. The mean over the wave is the sum of that over
every stage of every record, over the wave's wall time (first request sent to last answer). generation_s is timed
in the council actor around the calls, so it includes each call's way to the engine and back and its wait in the
engine's queue, as the baseline's concurrency limit does (a call holds its slot from sending to its answer).

Records written before stage timings counted their batches (`batches` 0 with calls made) do not hold the figure:
`matched` refuses them (ValueError) rather than guess one batch per stage, which would count the propose stage's
draft waves as all in flight at once (up to drafts_per_agent times too many).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.models.records import StageTiming, stage_kind


@dataclass(frozen=True)
class Calls:
    """Generate calls of one kind of stage (propose, critique, revise, rank) over a wave: count and token sums."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Calls) -> Calls:
        return Calls(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)

    @property
    def prompt_per_call(self) -> float:
        return self.prompt_tokens / self.calls if self.calls else 0.0

    @property
    def completion_per_call(self) -> float:
        return self.completion_tokens / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Matched:
    """What a wave of deliberations asked of the engine, for a baseline to ask the same."""

    wall_s: float
    call_seconds: float  # calls in flight, integrated over the wave (the module's estimate)
    by_kind: dict[str, Calls] = field(default_factory=dict)  # in the order the stages first ran

    @property
    def total(self) -> Calls:
        return sum(self.by_kind.values(), Calls())

    @property
    def calls(self) -> int:
        return self.total.calls

    @property
    def in_flight(self) -> float:
        """The mean number of calls the wave kept in flight."""
        return self.call_seconds / self.wall_s

    @property
    def concurrency(self) -> int:
        """The baseline's limit on calls in flight: the mean, rounded, at least 1."""
        return max(1, round(self.in_flight))

    def as_dict(self) -> dict:
        total = self.total
        return {"calls": total.calls, "in_flight": round(self.in_flight, 3), "concurrency": self.concurrency,
                "wall_s": round(self.wall_s, 3), "call_seconds": round(self.call_seconds, 3),
                "prompt_tokens_per_call": round(total.prompt_per_call, 1),
                "completion_tokens_per_call": round(total.completion_per_call, 1),
                "by_kind": {k: {"calls": c.calls, "prompt_tokens_per_call": round(c.prompt_per_call, 1),
                                "completion_tokens_per_call": round(c.completion_per_call, 1)}
                            for k, c in self.by_kind.items()}}


def matched(records: list[dict], wall_s: float) -> Matched:
    """The generate calls of a wave of deliberations (finished records, as JSON) that took `wall_s` in all: their
    number and token lengths by kind of stage, and the calls in flight integrated over the wave (see the module's
    docstring for the estimate and its assumption). ValueError for a record whose timings do not count batches."""
    if wall_s <= 0:
        raise ValueError(f"a wave's wall time must be positive, not {wall_s}")
    by_kind: dict[str, Calls] = {}
    call_seconds = 0.0
    for record in records:
        for raw in record.get("timings") or []:
            t = StageTiming.model_validate(raw)
            if not t.calls:
                continue
            if not t.batches:
                raise ValueError(
                    f"record {record.get('id', '?')}, stage {t.stage}: {t.calls} calls but no `batches` in its "
                    "timing (written before stage timings counted them): its calls in flight cannot be told")
            kind = stage_kind(t.stage)
            by_kind[kind] = by_kind.get(kind, Calls()) + Calls(t.calls, t.prompt_tokens, t.completion_tokens)
            call_seconds += t.calls * t.generation_s / t.batches
    return Matched(wall_s=wall_s, call_seconds=call_seconds, by_kind=by_kind)
