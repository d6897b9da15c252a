"""What every model shares: the strict base class and the name patterns.

Role names end up in actor names and Valkey keys, engine names in actor names: the patterns are checked
before a name reaches either.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict

ROLE_PATTERN = r"^[A-Z][A-Z0-9_]{0,31}$"
ENGINE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DEFAULT_ROLES = ("DEV", "QA", "ARCHITECT", "DEVOPS", "DATA")


def now() -> float:
    return time.time()


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a config or a request must not pass silently."""

    model_config = ConfigDict(extra="forbid")
