"""Checks on the text itself: there is an answer, it fits, it is about the task and it is not the task.

- content.non_empty: at least scoring.min_chars non-blank characters (and at least one);
- content.within_limits: at most scoring.max_chars characters;
- content.not_restated: fails when the text adds fewer than MIN_NEW_WORDS significant words beyond
  the task, rubric and requirements and holds no non-empty code block (an echo of the requirements);
- content.on_topic: fails when the text shares fewer than ON_TOPIC_WORDS significant words with the
  task and requirements, or none when it holds code (lorem ipsum, an answer to another question).
For exact-answer tasks (constraints.answer_format) the last two are skipped and a bare answer is long
enough; instead
- content.answer: the text holds a final answer in that format (actors/answers.py).
"""

from __future__ import annotations

import re

from ..answers import extract
from .base import Job
from .blocks import extract_code_blocks

MIN_NEW_WORDS = 5
ON_TOPIC_WORDS = 2

# Words too common to tell what a text is about.
STOPWORDS = frozenset(
    """
    a an the and or but if then else of to in on at by for with from into onto over under as is are was were be
    been being it its this that these those there their they them we our you your he she his her not no nor so
    too very can could should would will shall may might must do does did done have has had having also such
    than only each every all any both either neither some more most other same use used using make makes made
    which what when where while who whom whose why how about above after again against before below between
    during through until upon within without just like need needs please ensure sure provide provides
    """.split()
)
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str, min_len: int = 3) -> set[str]:
    """Significant words of a text: lowercased runs of letters and digits, no stopwords."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= min_len and w not in STOPWORDS}


def present(word: str, text_words: set[str]) -> bool:
    """A word is present when a word of the text shares its stem: all but its last three letters,
    at least four ("retries" ~ "retry", "validation" ~ "validate"). Short words must match exactly."""
    if word in text_words:
        return True
    if len(word) < 4:
        return False
    stem = word[: max(4, len(word) - 3)]
    return any(t.startswith(stem) for t in text_words)


def verify(job: Job) -> None:
    content, scoring = job.content, job.scoring
    chars = len("".join(content.split()))
    fmt = job.constraints.answer_format
    needed = 1 if fmt else max(1, scoring.min_chars)
    job.check("content.non_empty", "passed" if chars >= needed else "failed",
              f"{chars} non-blank characters" + ("" if chars >= needed else f", fewer than {needed}"))
    within = len(content) <= scoring.max_chars
    job.check("content.within_limits", "passed" if within else "failed",
              f"{len(content)} characters" + ("" if within else f", over the limit of {scoring.max_chars}"))
    if fmt:
        for name in ("content.not_restated", "content.on_topic"):
            job.check(name, "skipped", "exact-answer task: judged by its answer")
        answer = extract(content, fmt)
        job.check("content.answer", "passed" if answer is not None else "failed",
                  f"final answer {answer!r}" if answer is not None else f"no final answer in the format {fmt!r}")
        return
    _not_restated(job)
    _on_topic(job)


def _not_restated(job: Job) -> None:
    given = words(" ".join([job.task, job.constraints.rubric, *job.constraints.requirements]))
    new = sorted(w for w in words(job.content) if not present(w, given))
    code = [b for b in extract_code_blocks(job.content) if b.code.strip()]
    if len(new) >= MIN_NEW_WORDS or code:
        why = f"{len(code)} non-empty code block(s)" if code else f"{len(new)} words beyond the task"
        job.check("content.not_restated", "passed", f"adds {why}")
    else:
        job.check("content.not_restated", "failed",
                  f"restates the task: only {len(new)} significant word(s) beyond the task and requirements"
                  f"{' (' + ', '.join(new) + ')' if new else ''} and no code")


def _on_topic(job: Job) -> None:
    topic = words(" ".join([job.task, *job.constraints.requirements]), min_len=4)
    if not topic:
        job.check("content.on_topic", "skipped", "the task has no significant word to look for")
        return
    text = words(job.content)
    # Code names things tersely ("fib" for Fibonacci): a word of the text may abbreviate a task word.
    shared = [w for w in topic if present(w, text) or any(w.startswith(t) for t in text)]
    code = any(b.code.strip() for b in extract_code_blocks(job.content))
    needed = 1 if code else min(ON_TOPIC_WORDS, len(topic))
    if len(shared) >= needed:
        job.check("content.on_topic", "passed", f"mentions {len(shared)} of the task's {len(topic)} key words")
    else:
        job.check("content.on_topic", "failed",
                  f"off topic: mentions {len(shared)} of the task's {len(topic)} key words (needs {needed})")
