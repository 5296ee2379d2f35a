"""The ECMP drill's pure part: what the directors' IPVS tables say, what the client's report
means for one scenario, and the table printed with the targets beside the figures.

Nothing here opens a socket or reads the clock: lvsha.drill.ecmp gathers the inputs.
"""

from __future__ import annotations

import enum
import socket
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lvsha.drill.ecmp_traffic import LONG_WAIT


class EcmpScenario(enum.Enum):
    DRAIN = "drain"
    """`lvsha handover` on a director: GRACEFUL_SHUTDOWN, then the withdrawal."""
    KILL = "kill"
    """A director's link cut, its FRR and lvsha killed: only BFD tells the router."""
    RETURN = "return"
    """The killed director started again."""
    REAL_SERVER = "real-server"
    """A real server's service killed: the checks take it out of every director's table."""


CONSISTENT = frozenset({"mh", "sh"})
"""Schedulers whose targets are those of consistent hashing (the others are for contrast)."""


# -- the directors' IPVS tables ----------------------------------------------------------------


def hex_address(address: str) -> str:
    """An IPv4 address as /proc/net/ip_vs* print it: "C0000215"."""
    return f"{struct.unpack('!I', socket.inet_aton(address))[0]:08X}"


def _address(text: str) -> str:
    return socket.inet_ntoa(struct.pack("!I", int(text, 16)))


@dataclass(frozen=True, slots=True)
class ConnEntry:
    """One line of /proc/net/ip_vs_conn: a flow of the client as one director knows it."""

    client_port: int
    real_server: str
    state: str
    expires: int


def parse_ip_vs_conn(text: str, client: str, vip: str, port: int) -> list[ConnEntry]:
    """The entries of `client`'s flows to `vip`:`port` in a /proc/net/ip_vs_conn text."""
    wanted = (hex_address(client), hex_address(vip), f"{port:04X}")
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 9 or fields[0] != "TCP":
            continue
        if (fields[1], fields[3], fields[4]) != wanted:
            continue
        found.append(ConnEntry(int(fields[2], 16), _address(fields[5]), fields[7], int(fields[8])))
    return found


def flow_directors(tables: Mapping[str, Sequence[ConnEntry]]) -> dict[int, str]:
    """Client port -> the director that forwards that flow now, from each director's entries.

    A flow the routers moved is known to its old director too, until that entry expires; the
    director whose entry was refreshed last (the most time left, ESTABLISHED first) is the
    one its packets reach now. A flow two directors rank equal (its entries refreshed in the
    same second: a flow that moved and then stopped, reset) is left out: unknown."""
    best: dict[int, tuple[tuple[bool, int], str | None]] = {}
    for director, entries in tables.items():
        for entry in entries:
            rank = (entry.state == "ESTABLISHED", entry.expires)
            known = best.get(entry.client_port)
            if known is None or rank > known[0]:
                best[entry.client_port] = (rank, director)
            elif rank == known[0] and known[1] != director:
                best[entry.client_port] = (rank, None)
    return {port: director for port, (_, director) in best.items() if director is not None}


@dataclass(frozen=True, slots=True)
class Service:
    scheduler: str
    weights: dict[str, int]
    """Real server address -> weight, in the kernel's order."""


def parse_ip_vs(text: str, vip: str, port: int) -> Service | None:
    """The virtual service `vip`:`port` in a /proc/net/ip_vs text, None when absent."""
    wanted = f"{hex_address(vip)}:{port:04X}"
    service: Service | None = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] in ("TCP", "UDP", "SCTP", "FWM"):
            if service is not None:
                break
            if fields[0] == "TCP" and len(fields) >= 3 and fields[1] == wanted:
                service = Service(fields[2], {})
        elif fields[0] == "->" and service is not None and len(fields) >= 4:
            address = _address(fields[1].partition(":")[0])
            service.weights[address] = int(fields[3])
    return service


# -- one scenario's figures ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """What the client reported of one long-lived connection."""

    port: int
    server: str | None
    ended_at: float | None
    why: str | None
    last_echo: float
    exchanges: int
    waits: tuple[tuple[float, float], ...]
    """(sent at, waited s) of each echo that took long (the last may still be awaited)."""

    @classmethod
    def from_report(cls, row: Sequence[Any]) -> FlowRecord:
        port, server, ended_at, why, last_echo, exchanges, waits = row
        return cls(
            int(port),
            server,
            ended_at,
            why,
            float(last_echo),
            int(exchanges),
            tuple((float(at), float(waited)) for at, waited in waits),
        )

    def stalled(self, after: float, stall: float) -> bool:
        """An echo waited over `stall` s, the wait reaching past `after`."""
        return any(waited > stall and at + waited > after for at, waited in self.waits)


@dataclass(frozen=True, slots=True)
class ShortRecord:
    began: float
    took: float
    failure: str | None
    server: str | None


@dataclass(frozen=True, slots=True)
class Figures:
    """One scenario under one scheduler, as measured."""

    scheduler: str
    scenario: EcmpScenario
    subject: str
    """The director or real server the fault hit."""
    change: float | None
    """Seconds from the fault to the router's kernel ECMP set changing (for a real server: to
    it leaving every director's IPVS table); None when it did not within the wait."""
    route_changes: int
    """Changes of the router's ECMP set between the fault and the report (1 expected)."""
    connections: int
    """Long-lived connections alive at the fault."""
    reset: int
    """Of those, ended by a reset or a close during the window."""
    stalled: int
    """Of those, not ended but an echo waited over the stall limit during the window."""
    affected: int
    """Connections through the director the fault hit before it (for a returning director:
    those it forwards after; for a real server: those it served)."""
    affected_continued: int
    """Of `affected`, those still exchanging at the end."""
    moved: int
    """Connections whose director changed (known before and after)."""
    moved_broken: int
    others_broken: int
    """Broken connections outside `affected`."""
    longest_wait: float
    """The longest echo wait (s) in the window among connections that continued; 0 when
    none took over LONG_WAIT (the client reports only those)."""
    new_tried: int
    new_failed: int
    new_failures: dict[str, int] = field(default_factory=dict)
    before_fault_broken: int = 0
    """Connections that broke between their opening and the fault: load, not the fault."""
    unmapped: int = 0
    """Connections no director's table showed before the fault."""
    error: str | None = None

    @property
    def broken(self) -> int:
        return self.reset + self.stalled

    @property
    def continued_share(self) -> float | None:
        return None if not self.affected else self.affected_continued / self.affected

    @property
    def moved_broken_share(self) -> float | None:
        return None if not self.moved else self.moved_broken / self.moved


def figures(
    *,
    scheduler: str,
    scenario: EcmpScenario,
    subject: str,
    fault_at: float,
    change_at: float | None,
    route_changes: int,
    report_at: float,
    flows: Sequence[FlowRecord],
    shorts: Sequence[ShortRecord],
    before: Mapping[int, str],
    after: Mapping[int, str],
    stall: float,
) -> Figures:
    """The figures of one scenario from the client's report (`flows`, `shorts` begun from the
    fault on) and the flow -> director maps read before the fault and at the end."""
    alive = [flow for flow in flows if flow.ended_at is None or flow.ended_at >= fault_at]
    early = len(flows) - len(alive)
    early += sum(
        1 for flow in alive if flow.stalled(0.0, stall) and not flow.stalled(fault_at, stall)
    )
    reset = {flow.port for flow in alive if flow.ended_at is not None}
    stalled = {
        flow.port for flow in alive if flow.port not in reset and flow.stalled(fault_at, stall)
    }
    broken = reset | stalled
    if scenario is EcmpScenario.REAL_SERVER:
        affected = {flow.port for flow in alive if flow.server == subject}
    elif scenario is EcmpScenario.RETURN:
        affected = {flow.port for flow in alive if after.get(flow.port) == subject}
    else:
        affected = {flow.port for flow in alive if before.get(flow.port) == subject}
    continued = {
        flow.port for flow in alive if flow.ended_at is None and flow.last_echo >= report_at - stall
    }
    moved = {
        flow.port
        for flow in alive
        if flow.port in before and flow.port in after and before[flow.port] != after[flow.port]
    }
    waits = [
        waited
        for flow in alive
        if flow.port in continued
        for at, waited in flow.waits
        if at + waited > fault_at
    ]
    failures = Counter(short.failure for short in shorts if short.failure is not None)
    return Figures(
        scheduler=scheduler,
        scenario=scenario,
        subject=subject,
        change=None if change_at is None else change_at - fault_at,
        route_changes=route_changes,
        connections=len(alive),
        reset=len(reset),
        stalled=len(stalled),
        affected=len(affected),
        affected_continued=len(affected & continued),
        moved=len(moved),
        moved_broken=len(moved & broken),
        others_broken=len(broken - affected),
        longest_wait=max(waits, default=0.0),
        new_tried=len(shorts),
        new_failed=sum(failures.values()),
        new_failures=dict(failures),
        before_fault_broken=early,
        unmapped=sum(1 for flow in alive if flow.port not in before),
    )


# -- targets and the table -------------------------------------------------------------------

TARGETS = {
    EcmpScenario.DRAIN: "0 established broken",
    EcmpScenario.KILL: ">=99% of its connections continue",
    EcmpScenario.RETURN: "0 established broken",
    EcmpScenario.REAL_SERVER: "only its own connections break",
}
CONTRAST = "most moved connections break"


def target(result: Figures) -> str:
    return TARGETS[result.scenario] if result.scheduler in CONSISTENT else CONTRAST


def met(result: Figures) -> bool | None:
    """Whether the figures meet the scenario's target (None: a contrast row, no target)."""
    if result.error is not None:
        return False
    if result.scheduler not in CONSISTENT:
        return None
    if result.change is None:
        return False
    if result.scenario in (EcmpScenario.DRAIN, EcmpScenario.RETURN):
        return result.broken == 0
    if result.scenario is EcmpScenario.KILL:
        share = result.continued_share
        return share is not None and share >= 0.99
    return result.others_broken == 0


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole}" + (f" ({100 * part / whole:.0f}%)" if whole else "")


def _verdict(result: Figures) -> str:
    verdict = met(result)
    if verdict is None:
        if not result.affected:
            return "contrast"
        broke = result.affected - result.affected_continued
        return f"contrast: {100 * broke / result.affected:.0f}% of the affected broke"
    return "met" if verdict else "MISSED"


def _subject(result: Figures) -> str:
    return f"{result.scenario.value} {result.subject}"


def format_table(results: Sequence[Figures], title: str) -> str:
    headings = (
        "scheduler",
        "scenario",
        "ECMP change",
        "broken (reset+stalled)",
        "affected continued",
        "moved: broken",
        "others broken",
        "longest wait",
        "new failed",
        "target",
        "verdict",
    )
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for result in results:
        if result.error is not None:
            rows.append(
                (result.scheduler, _subject(result), "FAILED", *[""] * 6, target(result), "MISSED")
            )
            notes.append(f"{result.scheduler} {_subject(result)}: {result.error}")
            continue
        change = "none" if result.change is None else f"{result.change * 1000:.0f} ms"
        if result.scenario is EcmpScenario.REAL_SERVER and result.change is not None:
            change += " (out of IPVS)"
        rows.append(
            (
                result.scheduler,
                _subject(result),
                change,
                f"{result.broken} ({result.reset}+{result.stalled}) of {result.connections}",
                _share(result.affected_continued, result.affected),
                _share(result.moved_broken, result.moved),
                str(result.others_broken),
                f"{result.longest_wait * 1000:.0f} ms"
                if result.longest_wait
                else f"< {LONG_WAIT * 1000:.0f} ms",
                f"{result.new_failed}/{result.new_tried}",
                target(result),
                _verdict(result),
            )
        )
        extra = []
        if result.route_changes != (0 if result.scenario is EcmpScenario.REAL_SERVER else 1):
            extra.append(f"the router's ECMP set changed {result.route_changes} times")
        if result.before_fault_broken:
            extra.append(f"{result.before_fault_broken} broke before the fault (load)")
        if result.unmapped:
            extra.append(f"{result.unmapped} connections were in no director's table")
        if result.new_failures:
            extra.append(
                "new connections: "
                + ", ".join(f"{count} {why}" for why, count in sorted(result.new_failures.items()))
            )
        if extra:
            notes.append(f"{result.scheduler} {_subject(result)}: " + "; ".join(extra))
    widths = [max(len(row[i]) for row in (headings, *rows)) for i in range(len(headings))]
    lines = [title, ""]
    for row in (headings, *rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if notes:
        lines.append("")
        lines += notes
    return "\n".join(lines)


def report_json(results: Sequence[Figures], settings: Mapping[str, Any]) -> dict[str, Any]:
    rows = []
    for result in results:
        row = asdict(result)
        row["scenario"] = result.scenario.value
        row["broken"] = result.broken
        row["target"] = target(result)
        row["met"] = met(result)
        rows.append(row)
    return {"settings": dict(settings), "results": rows}
