"""`lvsha status` as text: the answer of `GET /v1/status` (lvsha/api/schemas/status.json) laid
out as aligned tables, the IPVS part like `ipvsadm -Ln`. Standard library only: the CLI
imports it on every `lvsha status`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

_COLOURS = {
    "MASTER": "32",
    "BACKUP": "33",
    "FAULT": "31",
    "RELEASING": "35",
    "INITIALIZE": "2",
    "healthy": "32",
    "unhealthy": "31",
    "disabled": "33",
    "maintenance": "35",
    "drain": "33",
    "maint": "35",
    "down": "31",
}


class _Paint:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, text: str, key: str | None = None) -> str:
        code = _COLOURS.get(key if key is not None else text)
        if not self.colour or code is None:
            return text
        return f"\033[{code}m{text}\033[0m"


def _tracker(tracker: dict[str, Any]) -> str:
    """One tracker for the status line: a tracked file shows the number it holds."""
    if "value" in tracker:
        state = f"({tracker['effect']:+d})" if tracker["healthy"] else "FAULT"
        return f"{tracker['tracker']} = {tracker['value']} {state}"
    up = "up" if tracker["healthy"] else "DOWN"
    return f"{tracker['tracker']} {up} ({tracker['effect']:+d})"


def _table(rows: Sequence[Sequence[tuple[str, str]]], indent: str = "") -> list[str]:
    """Rows of (plain text, painted text) cells, aligned on the plain text's width."""
    if not rows:
        return []
    widths = [0] * max(len(row) for row in rows)
    for row in rows:
        for i, (plain, _) in enumerate(row):
            widths[i] = max(widths[i], len(plain))
    lines = []
    for row in rows:
        cells = []
        for i, (plain, painted) in enumerate(row):
            last = i == len(row) - 1
            cells.append(painted if last else painted + " " * (widths[i] - len(plain)))
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    seconds = max(0.0, now - at)
    if seconds < 60:
        span = f"{seconds:.0f}s"
    elif seconds < 3600:
        span = f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    elif seconds < 86400:
        span = f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    else:
        span = f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"
    return f"{time.strftime('%H:%M:%S', time.localtime(at))} ({span} ago)"


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def render(status: dict[str, Any], *, colour: bool = False) -> str:
    paint = _Paint(colour)
    now = float(status["now"])
    lines = [
        f"lvsha {status['version']} on {status['host']}: {status['file']}, configuration "
        f"generation {status['generation']} (sha256 {str(status['digest'])[:12]}); "
        f"processes: {', '.join(status['children']) or 'none'}"
    ]
    if status["vrrp"] is not None:
        lines += ["", *_vrrp(status["vrrp"], now, paint)]
    if status["services"] is not None:
        lines += ["", *_services(status["services"], now, paint)]
    if status.get("bgp") is not None:
        lines += ["", *_bgp(status["bgp"], paint)]
    overrides = status["overrides"]
    handover = status["handover"]
    if overrides or handover:
        lines += ["", "Overrides (lvsha ready / lvsha handover --cancel to end them)"]
        for item in overrides:
            where = item["virtual_server"] or "every virtual server"
            host = f"[{item['address']}]" if ":" in item["address"] else item["address"]
            what = host if item["port"] is None else f"{host}:{item['port']}"
            reason = f": {item['reason']}" if item["reason"] else ""
            lines.append(
                f"  {paint(item['mode'])} {what} in {where}, by {item['by']} "
                f"{_ago(item['at'], now)}{reason}"
            )
        for name, by in handover.items():
            lines.append(f"  handover {name}, by {by}")
    return "\n".join(lines)


def _bgp(bgp: dict[str, Any], paint: _Paint) -> list[str]:
    lines = [f"BGP (AS {bgp['asn']}, {bgp['phase']})"]
    if bgp["error"]:
        lines.append(f"  FRR: {bgp['error']}")
    for route in bgp["routes"]:
        what = "announced" if route["announced"] else "withdrawn"
        if route["graceful_shutdown"]:
            what += " with GRACEFUL_SHUTDOWN"
        why = "" if route["announced"] else f" ({route['reason']})"
        lines.append(
            f"  {route['route']} ({', '.join(route['virtual_servers'])}): {paint(what)}{why}"
        )
    for peer in bgp["peers"]:
        sent = "" if peer["prefixes_sent"] is None else f", {peer['prefixes_sent']} routes sent"
        bfd = "" if peer["bfd"] is None else f", BFD {peer['bfd']}"
        lines.append(f"  peer {peer['address']}: {peer['state']}{sent}{bfd}")
    return lines


def _vrrp(vrrp: dict[str, Any], now: float, paint: _Paint) -> list[str]:
    updated = vrrp["updated_at"]
    head = "VRRP" + ("" if updated is None else f" (reported {now - updated:.1f}s ago)")
    if updated is None:
        return [head, "  the VRRP process has not reported yet (starting?)"]
    rows: list[list[tuple[str, str]]] = [
        [
            (h, h)
            for h in (
                "Instance",
                "Interface",
                "VRID",
                "State",
                "Prio",
                "Base",
                "Master heard",
                "Since",
                "Reason",
            )
        ]
    ]
    details: dict[int, list[str]] = {}
    for index, inst in enumerate(vrrp["instances"]):
        state = inst["state"] + (" (handed over)" if inst["handed_over"] else "")
        master = inst["master"]
        if master is None:
            heard = "none"
        elif master["self"]:
            heard = "this director"
        else:
            heard = (
                f"{master['address']} prio {master['priority']} every "
                f"{master['advert_interval']:g}s"
            )
        rows.append(
            [
                (inst["name"], inst["name"]),
                (inst["interface"], inst["interface"]),
                (str(inst["vrid"]), str(inst["vrid"])),
                (state, paint(state, inst["state"])),
                (str(inst["effective_priority"]), str(inst["effective_priority"])),
                (str(inst["base_priority"]), str(inst["base_priority"])),
                (heard, heard),
                (_ago(inst["since"], now), _ago(inst["since"], now)),
                (inst["reason"], inst["reason"]),
            ]
        )
        drops = ", ".join(f"{k} {v}" for k, v in sorted(inst["drops"].items()) if v) or "none"
        vmac = inst.get("vmac_interface")
        extra = [
            f"VIPs {' '.join(inst['vips']) or 'none'}"
            + (f" on VMAC {vmac}" if vmac else "")
            + f"; adverts sent {inst['adverts_sent']}, "
            f"received {inst['adverts_received']}; dropped: {drops}"
        ]
        moving = [t for t in inst["trackers"] if t["effect"] or not t["healthy"] or "value" in t]
        if moving:
            extra.append("trackers: " + ", ".join(_tracker(t) for t in moving))
        if inst["fault_reasons"]:
            extra.append("fault: " + ", ".join(inst["fault_reasons"]))
        details[index] = extra
    table = _table(rows)
    lines = [head, table[0]]
    for index, line in enumerate(table[1:]):
        lines.append(line)
        lines.extend("    " + text for text in details[index])
    return lines


def _services(services: dict[str, Any], now: float, paint: _Paint) -> list[str]:
    updated = services["updated_at"]
    head = "IPVS" + ("" if updated is None else f" (read {now - updated:.1f}s ago)")
    lines = [head]
    if services["error"]:
        lines.append(f"  {services['error']}")
    if not services["virtual_servers"]:
        return lines
    rows: list[list[tuple[str, str]]] = [
        [(h, h) for h in ("Prot LocalAddress:Port", "Scheduler", "Quorum")],
        [
            (h, h)
            for h in (
                "  -> RemoteAddress:Port",
                "Forward",
                "Weight",
                "Kernel",
                "ActiveConn",
                "InActConn",
                "Health",
                "Admin",
                "Last check",
            )
        ],
    ]
    forwards = {"nat": "Masq", "dr": "Route", "tun": "Tunnel"}
    for vs in services["virtual_servers"]:
        service = vs["service"]
        address, _, protocol = service.rpartition("/")
        label = f"{protocol.upper()}  {address}" if not service.startswith("fwmark") else service
        if vs["name"]:
            label += f" ({vs['name']})"
        if vs.get("group") and vs["group"] != vs["name"]:
            label += f" [group {vs['group']}]"
        quorum = "up" if vs["quorum_up"] else "LOST"
        if vs["sorry_server_active"]:
            quorum += ", sorry server"
        if not vs["in_kernel"]:
            quorum += ", not in kernel"
        rows.append(
            [
                (label, label),
                (vs["scheduler"], vs["scheduler"]),
                (quorum, paint(quorum, "healthy" if vs["quorum_up"] else "unhealthy")),
            ]
        )
        for rs in vs["real_servers"]:
            checks = rs["checks"]
            last = max(checks, key=lambda c: c["at"] or 0.0) if checks else None
            if last is None:
                check = "no checks"
            else:
                verdict = "-" if last["ok"] is None else ("ok" if last["ok"] else "failed")
                check = f"{last['check']} {verdict} {_ms(last['latency'])}"
                if last["ok"] is False:
                    check += f": {last['reason']}"
            admin = rs["admin"]
            admin_cell = admin + (f" ({rs['admin_source']})" if rs["admin_source"] else "")

            def number(value: int | None) -> str:
                return "-" if value is None else str(value)

            rows.append(
                [
                    ("  -> " + _host_port(rs["address"], rs["port"]),) * 2,
                    (forwards.get(rs["forwarding"], rs["forwarding"]),) * 2,
                    (str(rs["configured_weight"]),) * 2,
                    (number(rs["kernel_weight"]),) * 2,
                    (number(rs["active_connections"]),) * 2,
                    (number(rs["inactive_connections"]),) * 2,
                    (rs["health"], paint(rs["health"])),
                    (admin_cell, paint(admin_cell, admin)),
                    (check, check),
                ]
            )
    return lines + _table(rows)
