"""Scripts refused in the VRRP process, told to the parent as `script_refused` events.

A track script or a notify hook that script security (or a missing file, an unknown user...)
refuses is logged by `lvsha.scripts`; operators also hear of it through the alert sinks, as a
`ChildEvent("script_refused", {"process": "vrrp", "script": ..., "reason": ...})` (fields:
lvsha.alerts.events). Once per refusal episode: a track script refused each time it is due
is told of when it starts being refused, and again only after it ran (whatever its exit
status) or a reload changed the VRRP configuration (a reload that changes nothing of it, one of
the virtual servers only, say, starts no new episode). A notify hook is named by its command line as
configured, a track script by its name.

Sending is `channel.send`: a write into the channel's buffer, so the VRRP loop never waits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from lvsha.messages import ChildEvent, Message
from lvsha.vrrp.notify import HookRun

log = logging.getLogger("lvsha.vrrp")

EVENT_TYPE = "script_refused"


class ScriptRefusals:
    """Turns the outcome of each script run into at most one event per refusal episode.

    `track_script` fits `TrackScriptRunner`'s `on_run`, `notify_hook` `Notifier`'s; `reset`
    is for a changed configuration in force (VrrpEngine calls it)."""

    def __init__(self, send: Callable[[Message], None], process: str = "vrrp") -> None:
        self._send = send
        self._process = process
        self._refused: dict[tuple[str, str], str] = {}
        """(kind, script) -> the reason told, for each script in a refusal episode."""
        self.sent = 0

    def track_script(self, name: str, refusal: str | None) -> None:
        self._outcome(("vrrp_script", name), name, refusal)

    def notify_hook(self, run: HookRun, refusal: str | None) -> None:
        script = run.script
        self._outcome(("notify", script), script, refusal)

    def reset(self) -> None:
        """A changed configuration is in force: a script still refused is told of once more."""
        self._refused.clear()

    @property
    def refused(self) -> frozenset[str]:
        """The scripts in a refusal episode now."""
        return frozenset(script for _, script in self._refused)

    def _outcome(self, key: tuple[str, str], script: str, refusal: str | None) -> None:
        if refusal is None:
            self._refused.pop(key, None)
            return
        if key in self._refused:
            return
        self._refused[key] = refusal
        fields = {"process": self._process, "script": script, "reason": refusal}
        try:
            self._send(ChildEvent(EVENT_TYPE, json.dumps(fields, separators=(",", ":"))))
        except Exception:  # never into the script runner's loop: the log has the refusal
            log.exception("cannot tell the parent that %s was refused", script)
            return
        self.sent += 1
