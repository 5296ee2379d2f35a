"""A real server's administrative state: ready, drain or maint, from two sources merged here.

- maintenance files (`lvsha.checks.maintenance`): drain only. The watcher drives an
  `AdminBook` as it drove the pool (`Drainable`: `disable`, `enable`);
- API overrides (`lvsha drain`, `lvsha maint`; `lvsha.daemon.overrides`): drain or maint, the
  whole set at once (`set_overrides`), matched against the pool's real servers, and again
  after every reload (`resolve`), so a real server a reload adds enters as they say.

Merge: maint > drain > ready; where both sources drain, the API is the one reported. The pool
gets the merged state only when it changes (`AdminTarget.set_admin`), with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from lvsha.checks.state import CheckTransitionError
from lvsha.checks.verdict import RealServerId
from lvsha.daemon.overrides import Mode, Override, effective

log = logging.getLogger(__name__)

Source = Literal["api", "file"]

OVERRIDE_LIFTED = "no override selects it any more"


@dataclass(frozen=True, slots=True)
class AdminState:
    """A real server an operator drained or put in maintenance (ready has no state: None)."""

    mode: Mode
    source: Source
    reason: str
    """Why, as the status shows it: a maintenance file's description, or an override's
    reason and who asked."""


AdminChange = tuple[RealServerId, AdminState | None, str]
"""A real server, its new state (None: ready) and the reason its verdict gives."""


class AdminTarget(Protocol):
    """What the book needs of the check pool."""

    @property
    def real_servers(self) -> tuple[RealServerId, ...]: ...

    def is_configured(self, real_server: RealServerId) -> bool: ...

    def set_admins(self, changes: Sequence[AdminChange]) -> None: ...


def override_reason(override: Override) -> str:
    """An override's reason and who asked, as one line."""
    reason = override.reason or f"lvsha {override.mode.value}"
    return f"{reason} (by {override.by})" if override.by else reason


class AdminBook:
    """Both sources of every real server's admin state, merged; implements the maintenance
    watcher's `Drainable` for the file source."""

    def __init__(self, pool: AdminTarget) -> None:
        self._pool = pool
        self._files: dict[RealServerId, str] = {}
        """Real servers a maintenance file drains -> the file's description."""
        self._overrides: tuple[Override, ...] = ()
        self._api: dict[RealServerId, Override] = {}
        """The override in force for each configured real server it selects."""
        self._pushed: dict[RealServerId, AdminState] = {}
        """What the pool was last told, by real server (absent: ready)."""

    # Queries.

    @property
    def real_servers(self) -> tuple[RealServerId, ...]:
        return self._pool.real_servers

    @property
    def overrides(self) -> tuple[Override, ...]:
        return self._overrides

    def admin_of(self, real_server: RealServerId) -> AdminState | None:
        return self._pushed.get(real_server)

    # The file source (`Drainable`).

    def disable(self, real_server: RealServerId, reason: str) -> None:
        if not self._pool.is_configured(real_server):
            raise KeyError(f"no real server {real_server} in the check plan")
        if real_server in self._files:
            raise CheckTransitionError(f"{real_server} is already drained by a file")
        self._files[real_server] = reason
        self._push([real_server], reason)

    def enable(self, real_server: RealServerId, reason: str) -> None:
        if real_server not in self._files:
            if not self._pool.is_configured(real_server):
                raise KeyError(f"no real server {real_server} in the check plan")
            raise CheckTransitionError(f"{real_server} is not drained by a file")
        del self._files[real_server]
        self._push([real_server], reason)

    # The API source.

    def set_overrides(self, overrides: Iterable[Override]) -> list[RealServerId]:
        """Every override in force from now on; returns the real servers whose state changed."""
        self._overrides = tuple(overrides)
        return self.resolve()

    def resolve(self) -> list[RealServerId]:
        """Match the overrides against the pool's real servers again (after a reload changed
        them; inside the watcher's pause, before the new real servers reach IPVS). Returns the
        real servers whose state changed."""
        found = effective(self._overrides, self._pool.real_servers)
        touched = dict.fromkeys(self._api)
        touched.update(dict.fromkeys(found))
        touched.update((rs, None) for rs in self._pushed if not self._pool.is_configured(rs))
        self._api = found
        return self._push(touched, OVERRIDE_LIFTED)

    # The merge.

    def _merged(self, real_server: RealServerId) -> AdminState | None:
        if not self._pool.is_configured(real_server):
            return None  # a reload removed it: dormant, re-derived if one brings it back
        override = self._api.get(real_server)
        if override is not None:
            return AdminState(override.mode, "api", override_reason(override))
        described = self._files.get(real_server)
        if described is not None:
            return AdminState(Mode.DRAIN, "file", described)
        return None

    def _push(self, real_servers: Iterable[RealServerId], ready_reason: str) -> list[RealServerId]:
        changes: list[AdminChange] = []
        for real_server in real_servers:
            wanted = self._merged(real_server)
            if wanted == self._pushed.get(real_server):
                continue
            if wanted is None:
                del self._pushed[real_server]
                changes.append((real_server, None, ready_reason))
            else:
                self._pushed[real_server] = wanted
                changes.append((real_server, wanted, wanted.reason))
        if changes:
            self._pool.set_admins(changes)
        return [real_server for real_server, _, _ in changes]
