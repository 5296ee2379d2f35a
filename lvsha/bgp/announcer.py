"""The parent's BGP announcer: keeps FRR announcing what this director can serve.

Inputs: the checker's quorum reports (`ServiceQuorum`; none while no checker runs: nothing is
served then), the drain (`lvsha handover`, a stop) and reloads. Each change wakes one loop
that reads FRR's running configuration, computes the commands (lvsha.bgp.frr) and runs them
through vtysh; a refusal is logged with FRR's words and retried every second while the wanted
state still differs. The sessions' state is read back every `poll_interval`.

What lvsha wrote is remembered in a ledger (RUN_DIR/bgp.json: the AS, the peers, the routes it
owns) before it is written, so a restarted lvsha withdraws a route a dead one left and removes
a peer a reload dropped, and never touches a statement an operator wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lvsha.alerts.events import FieldValue
from lvsha.bgp.frr import (
    GSHUT_MAP,
    PeerState,
    Phase,
    parse_running,
    peer_states,
    refusal,
    route_commands,
    session_commands,
    wanted_routes,
)
from lvsha.config.bgp import BgpSettings
from lvsha.scripts import output_within

log = logging.getLogger("lvsha.bgp")

RETRY = 1.0
"""Seconds between attempts while FRR refuses or cannot be reached."""
LEDGER = "bgp.json"


Runner = Callable[[Sequence[str], float], Awaitable[tuple[int, bytes, bytes]]]
"""Runs argv to its end within a timeout: (exit status, stdout, stderr); raises OSError or
TimeoutError. The parent's is the supervisor's (its orphan hunt must leave vtysh alone)."""


async def run_process(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
    """A `Runner` for a process that is no supervisor's."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return await output_within(process, timeout)


class FrrError(Exception):
    """vtysh failed, or FRR refused a command: the message says which and why."""


class Announcer:
    def __init__(
        self,
        settings: BgpSettings,
        routes: Mapping[str, tuple[str, ...]],
        run_dir: Path,
        *,
        drained: bool = False,
        publish: Callable[[str, dict[str, FieldValue]], None] | None = None,
        run: Runner | None = None,
    ) -> None:
        self.settings = settings
        self._run_process = run or run_process
        self.routes = dict(routes)
        self.ledger = run_dir / LEDGER
        self.phase = Phase.DRAINED if drained else Phase.SERVING
        self._held: frozenset[str] | None = None
        self._publish = publish
        """Where `bgp_route` and `bgp_peer` events go (lvsha.alerts.events)."""
        self.announced: dict[str, bool] = {}
        """The routes FRR announces for lvsha (route -> with GRACEFUL_SHUTDOWN), as of the last
        successful pass."""
        self._owned: set[str] = set()
        self._peers_written: set[str] = set()
        self._asn_written: int | None = None
        self._created = False
        """Whether lvsha made FRR's BGP instance (it may then remove it for another AS)."""
        self._session_due = True
        self.peers: list[PeerState] = []
        self.error: str | None = None
        """FRR's last refusal or vtysh's last failure, until a pass succeeds."""
        self.errors_total = 0
        self.passes_total = 0
        self._wake = asyncio.Event()
        self._requested = 0
        self._done = 0
        self._settled = asyncio.Condition()
        self._draining = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._load_ledger()

    # --- inputs ---

    def set_held(self, held: frozenset[str] | None) -> None:
        """The virtual servers whose quorum the checker reports held (None: no checker)."""
        if held != self._held:
            self._held = held
            self._request()

    def reconfigure(self, settings: BgpSettings, routes: Mapping[str, tuple[str, ...]]) -> None:
        if settings != self.settings:
            self._session_due = True
        self.settings, self.routes = settings, dict(routes)
        self._request()

    async def drain(self) -> None:
        """Announce with GRACEFUL_SHUTDOWN, wait bgp.graceful_shutdown, then withdraw; returns
        once FRR withdrew (or refused: the error says why). Without a wait, or without an
        established session to tell, the routes are withdrawn at once."""
        async with self._draining:
            wait = self.settings.graceful_shutdown
            heard = any(peer.state == "Established" for peer in self.peers)
            if self.phase is Phase.SERVING and wait > 0 and heard and self.announced:
                self.phase = Phase.DRAINING
                await self._settle()
                if self.phase is Phase.DRAINING and self.announced:
                    log.info(
                        "BGP: %s announced with GRACEFUL_SHUTDOWN for %gs before the withdrawal",
                        ", ".join(sorted(self.announced)),
                        wait,
                    )
                    await asyncio.sleep(wait)
                if self.phase is not Phase.DRAINING:
                    return  # undrained meanwhile
            self.phase = Phase.DRAINED
            await self._settle()

    def undrain(self) -> None:
        if self.phase is not Phase.SERVING:
            self.phase = Phase.SERVING
            self._request()

    # --- running ---

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="bgp"),
            asyncio.create_task(self._poll(), name="bgp-poll"),
        ]
        self._request()

    async def stop(self) -> None:
        """A stop is a planned drain: GRACEFUL_SHUTDOWN, then the withdrawal. The sessions
        stay configured in FRR (a restarted lvsha reuses them)."""
        try:
            async with asyncio.timeout(self.settings.graceful_shutdown + 3 * self.settings.timeout):
                await self.drain()
        except TimeoutError:
            log.error("BGP: the withdrawal did not complete while stopping: %s", self.error)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _request(self) -> None:
        self._requested += 1
        self._wake.set()

    async def _settle(self) -> None:
        """Wait for a pass that began after now to succeed (or to fail: a refusal does not
        make a drain wait for ever)."""
        self._request()
        wanted = self._requested
        async with self._settled:
            await self._settled.wait_for(lambda: self._done >= wanted or not self._tasks)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            seq = self._requested
            try:
                await self._pass()
            except FrrError as exc:
                self.errors_total += 1
                if str(exc) != self.error:
                    log.error("BGP: %s", exc)
                self.error = str(exc)
                await self._finish(seq)
                await asyncio.sleep(RETRY)
                self._wake.set()
                continue
            if self.error is not None:
                log.info("BGP: FRR follows again")
            self.error = None
            await self._finish(seq)

    async def _finish(self, seq: int) -> None:
        async with self._settled:
            self._done = max(self._done, seq)
            self._settled.notify_all()

    async def _pass(self) -> None:
        settings = self.settings
        if self._session_due:
            stale = self._peers_written - {str(p.address) for p in settings.peers}
            commands = session_commands(settings, stale)
            if self._asn_written is None:
                # The first time: whether lvsha makes FRR's BGP instance, or adds to one.
                self._created = (
                    parse_running(await self.vtysh("show running-config bgpd")).router is None
                )
            elif self._asn_written != settings.asn and self._created:
                # lvsha's own instance under another AS: FRR runs one default instance. One
                # lvsha did not make is the operator's: FRR refuses the new AS, and says so.
                commands = [f"no router bgp {self._asn_written}", *commands]
            self._peers_written |= {str(p.address) for p in settings.peers}
            self._asn_written = settings.asn
            self._save_ledger()
            await self.configure(commands)
            self._peers_written = {str(p.address) for p in settings.peers}
            self._save_ledger()
            self._session_due = False
        present = parse_running(await self.vtysh("show running-config bgpd"))
        if present.router is not None and present.router != settings.asn:
            raise FrrError(
                f"FRR runs BGP as AS {present.router}, bgp.asn is {settings.asn}: FRR has one "
                "default BGP instance; set bgp.asn to its AS or remove its `router bgp`"
            )
        announced = {route for route in present.routes if route in self._owned}
        wanted = wanted_routes(self.routes, self._held, self.phase, announced)
        commands = route_commands(settings.asn, present.routes, wanted, self._owned)
        if commands:
            self._owned |= set(wanted)
            self._save_ledger()
            await self.configure(commands)
            self._owned = set(wanted)
            self._save_ledger()
            self._log_changes({r: present.routes[r] == GSHUT_MAP for r in announced}, wanted)
        self.announced = wanted
        self.passes_total += 1

    def _log_changes(self, before: Mapping[str, bool], wanted: Mapping[str, bool]) -> None:
        for route in sorted(set(before) | set(wanted)):
            if route in wanted and (route not in before or before[route] != wanted[route]):
                how = " with GRACEFUL_SHUTDOWN" if wanted[route] else ""
                log.info("BGP: %s announced%s", route, how)
            elif route not in wanted:
                log.info("BGP: %s withdrawn (%s)", route, self.why_not(route))
            else:
                continue
            self._event(
                "bgp_route",
                route=route,
                virtual_servers=", ".join(self.routes.get(route, ())),
                announced=route in wanted,
                graceful_shutdown=wanted.get(route, False),
                reason="announced" if route in wanted else self.why_not(route),
            )

    def _event(self, event_type: str, **fields: FieldValue) -> None:
        if self._publish is not None:
            self._publish(event_type, fields)

    def why_not(self, route: str) -> str:
        """Why a route is not announced (or "announced")."""
        if self.phase is Phase.DRAINED:
            return "drained"
        if self._held is None:
            return "no checker reports quorum"
        missing = [n for n in self.routes.get(route, ()) if n not in self._held]
        if missing:
            return "no quorum: " + ", ".join(missing)
        if route not in self.routes:
            return "no longer configured"
        if route not in self.announced:
            return "FRR has not taken it" + (f": {self.error}" if self.error else " yet")
        return "announced"

    async def _poll(self) -> None:
        while True:
            try:
                summary = json.loads(await self.vtysh("show bgp summary json") or "null")
                bfd = json.loads(await self.vtysh("show bfd peers json") or "null")
            except (FrrError, ValueError) as exc:
                log.debug("BGP: sessions not read: %s", exc)
            else:
                states = peer_states(self.settings, summary, bfd)
                before = {p.address: p for p in self.peers}
                for peer in states:
                    was = before.get(peer.address)
                    if was is None or (was.state, was.bfd) != (peer.state, peer.bfd):
                        log.info(
                            "BGP: peer %s %s%s",
                            peer.address,
                            peer.state,
                            f", BFD {peer.bfd}" if peer.bfd is not None else "",
                        )
                        # An event when the session comes up or goes down, not at each
                        # step of BGP's state machine on the way.
                        if was is not None and was.up != peer.up:
                            self._event(
                                "bgp_peer", peer=peer.address, state=peer.state, bfd=peer.bfd
                            )
                self.peers = states
            await asyncio.sleep(self.settings.poll_interval)

    # --- FRR ---

    async def configure(self, commands: list[str]) -> str:
        return await self.vtysh("configure terminal", *commands)

    async def vtysh(self, *commands: str) -> str:
        """Run vtysh with these commands; raises FrrError naming what FRR refused."""
        argv = [*self.settings.vtysh, *(word for c in commands for word in ("-c", c))]
        try:
            code, out, err = await self._run_process(argv, self.settings.timeout)
        except OSError as exc:
            raise FrrError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        except TimeoutError:
            raise FrrError(f"{argv[0]} did not answer within {self.settings.timeout:g}s") from None
        text = out.decode(errors="replace")
        if code != 0:
            said = refusal(text + "\n" + err.decode(errors="replace"))
            what = commands[-1] if len(commands) == 1 else f"{len(commands) - 1} commands"
            raise FrrError(f"FRR refused {what}: {said}")
        return text

    # --- ledger ---

    def _load_ledger(self) -> None:
        try:
            value = json.loads(self.ledger.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("BGP: ledger %s unreadable (%s): starting without it", self.ledger, exc)
            return
        if not isinstance(value, dict):
            return
        asn, peers, routes = value.get("asn"), value.get("peers"), value.get("routes")
        if isinstance(asn, int):
            self._asn_written = asn
        self._created = value.get("created") is True
        if isinstance(peers, list):
            self._peers_written = {p for p in peers if isinstance(p, str)}
        if isinstance(routes, list):
            self._owned = {r for r in routes if isinstance(r, str)}
        if self._owned:
            log.info(
                "BGP: a previous lvsha announced %s: withdrawn unless served",
                ", ".join(sorted(self._owned)),
            )

    def _save_ledger(self) -> None:
        value = {
            "asn": self._asn_written,
            "created": self._created,
            "peers": sorted(self._peers_written),
            "routes": sorted(self._owned),
        }
        temporary = self.ledger.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(value) + "\n")
            os.replace(temporary, self.ledger)
        except OSError as exc:
            log.error("BGP: ledger %s not written: %s", self.ledger, exc)

    # --- status ---

    def status(self) -> dict[str, Any]:
        return {
            "asn": self.settings.asn,
            "phase": self.phase.value,
            "routes": [
                {
                    "route": route,
                    "virtual_servers": list(names),
                    "announced": route in self.announced,
                    "graceful_shutdown": self.announced.get(route, False),
                    "reason": self.why_not(route),
                }
                for route, names in sorted(self.routes.items())
            ],
            "peers": [peer.to_json() for peer in self.peers],
            "error": self.error,
        }

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        samples: list[tuple[str, dict[str, str], float]] = [
            ("lvsha_bgp_route_announced", {"route": route}, float(route in self.announced))
            for route in sorted(self.routes)
        ]
        for peer in self.peers:
            labels = {"peer": peer.address}
            samples.append(
                ("lvsha_bgp_peer_established", labels, float(peer.state == "Established"))
            )
            if peer.bfd is not None:
                samples.append(("lvsha_bfd_peer_up", labels, float(peer.bfd == "up")))
        samples.append(("lvsha_bgp_frr_errors_total", {}, float(self.errors_total)))
        return samples
