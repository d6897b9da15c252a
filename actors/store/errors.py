"""What the store raises: a refused write of a record (StaleWriter), the caps (CouncilBusy, ServiceBusy,
RegistryFull), and what the client raises once Valkey stays away (UNREACHABLE)."""

from __future__ import annotations

from valkey.exceptions import ConnectionError, TimeoutError

# What the client raises once its retries are spent and Valkey is still away (a restart, a network cut).
UNREACHABLE = (ConnectionError, TimeoutError)


class StaleWriter(Exception):
    """A write of a deliberation record by a runner that no longer owns it: a newer runner took it over,
    or it is finished (immutable) or gone. The runner must stop; the record is someone else's now."""

    def __init__(self, delib_id: str, epoch: int | None, owner: int, reason: str):
        super().__init__(f"deliberation {delib_id}: write as owner {epoch} refused: {reason} (owner is {owner})")
        self.delib_id, self.epoch, self.owner, self.reason = delib_id, epoch, owner, reason


# Why a fenced write was refused, by the scripts' negative codes.
REFUSED = {-1: "a newer runner owns it", -2: "the record is gone", -3: "the record is finished"}


class CouncilBusy(Exception):
    """The council has its maximum of unfinished (pending or running) deliberations."""

    def __init__(self, role: str, active: int):
        super().__init__(f"council {role} has {active} deliberations pending or running")
        self.role, self.active = role, active


class ServiceBusy(Exception):
    """All councils together have the global maximum of unfinished deliberations (limits.max_active_total)."""

    def __init__(self, active: int):
        super().__init__(f"{active} deliberations pending or running in all councils")
        self.active = active


class RegistryFull(Exception):
    """A council write would exceed max_councils or max_agents_total (nothing was written)."""

    def __init__(self, limit: str, value: int, cap: int):
        super().__init__(f"limits.{limit}: {value} would exceed {cap}")
        self.limit, self.value, self.cap = limit, value, cap
