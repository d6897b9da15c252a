"""The one place tests reach Valkey behind the store's methods: to damage what it wrote (a trimmed terminal event,
a deleted record, a duration sample in an older format) or to look at its connection. Product code never does:
outside actors/store/, nothing builds a key or touches a Valkey client (docs/architecture.md)."""

from __future__ import annotations

from actors.store import Store


def raw(store: Store):
    """The store's own async client, for a test that must write what no method of the store writes."""
    return store.client
