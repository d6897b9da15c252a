"""The councils_* metrics (actors/metrics.py), no Ray: a gauge is reported again until it changes, and
docs/operations.md names every metric with its tags."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from actors import metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def test_gauges_are_set_again_until_they_change(monkeypatch):
    """Ray's agent drops a gauge that is not reported again within two export intervals, so a gauge set once
    (an engine's restart count) must keep being set, with its latest value."""
    calls = []
    monkeypatch.setattr(metrics, "GAUGE_REFRESH_S", 0.05)
    monkeypatch.setattr(metrics, "_record", lambda name, method, value, tags: calls.append((name, method, value, tags)))
    monkeypatch.setattr(metrics, "_gauges", {})
    monkeypatch.setattr(metrics, "_refresher", None)
    metrics.set_inflight("DEV", 2)
    metrics.set_inflight("DEV", 1)
    time.sleep(0.3)
    again = [c for c in calls[2:] if c[0] == metrics.INFLIGHT]
    assert len(again) >= 2 and {c[2] for c in again} == {1} and all(c[1] == "set" for c in again)
    assert again[0][3] == {"role": "DEV"}


def test_operations_doc_names_every_metric_with_its_tags():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for name, (kind, _desc, tags, _buckets) in metrics.DEFINITIONS.items():
        assert name.startswith("councils_")
        exported = f"ray_{name}_total" if kind == "counter" else f"ray_{name}"
        row = next((line for line in doc.splitlines() if f"`{exported}" in line), None)
        assert row is not None, f"{exported} is not documented"
        for tag in tags:
            assert re.search(rf"\b{tag}\b", row), f"tag {tag} of {exported} is not documented"
