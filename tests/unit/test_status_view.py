"""`lvsha status` as text: aligned like ipvsadm -Ln, colour only when asked."""

from __future__ import annotations

from typing import Any

from lvsha.status_view import render
from tests.tools import api_schema

NOW = 1_800_000_000.0


def status() -> dict[str, Any]:
    instance = {
        "name": "VI_1", "interface": "eth0", "vrid": 51, "family": "ipv4", "version": 3,
        "state": "BACKUP", "since": NOW - 75, "reason": "higher priority master 192.0.2.11",
        "base_priority": 100, "effective_priority": 90,
        "trackers": [{"tracker": "script chk_nginx", "healthy": False, "weight": -10,
                      "effect": -10}],
        "handed_over": True,
        "master": {"address": "192.0.2.11", "priority": 150, "advert_interval": 1.0,
                   "heard_at": NOW - 0.5, "self": False},
        "vips": ["192.0.2.100/24"], "advert_interval": 1.0, "adverts_sent": 3,
        "adverts_received": 75, "drops": {"bad_checksum": 2}, "fault_reasons": [],
    }  # fmt: skip

    def real_server(address: str, health: str, admin: str, kernel: int | None) -> Any:
        return {
            "address": address, "port": 80, "forwarding": "dr", "health": health,
            "reason": "tcp ok", "since": NOW - 10, "admin": admin,
            "admin_source": None if admin == "ready" else "api",
            "admin_reason": None if admin == "ready" else "disk swap",
            "configured_weight": 5, "kernel_weight": kernel,
            "active_connections": None if kernel is None else 12,
            "inactive_connections": None if kernel is None else 340,
            "checks": [{"check": f"tcp {address}:80", "status": "down" if health ==
                        "unhealthy" else "up", "ok": health != "unhealthy",
                        "reason": "connection refused", "latency": 0.0012, "at": NOW - 1}],
        }  # fmt: skip

    answer = {
        "ok": True, "generation": 3, "digest": "ab" * 32, "file": "/etc/lvsha/lvsha.yaml",
        "version": "0.1.0", "host": "lb-1", "now": NOW, "children": ["vrrp", "checker"],
        "vrrp": {"updated_at": NOW - 0.4, "instances": [instance]},
        "services": {"updated_at": NOW - 0.1, "error": None, "virtual_servers": [{
            "name": "web", "service": "192.0.2.100:80/tcp", "scheduler": "wlc",
            "quorum_up": True, "sorry_server_active": False, "in_kernel": True,
            "real_servers": [
                real_server("10.0.0.21", "healthy", "ready", 5),
                real_server("10.0.0.22", "disabled", "drain", 0),
                real_server("10.0.0.123", "unhealthy", "ready", None),
            ],
        }]},
        "overrides": [{"mode": "drain", "virtual_server": "web", "address": "10.0.0.22",
                       "port": 80, "reason": "disk swap", "by": "root (uid 0)", "at": NOW - 60}],
        "handover": {"VI_1": "root (uid 0) at 2027-01-15 08:00:00 UTC"},
        "bgp": None,
    }  # fmt: skip
    api_schema.check("status", answer)
    return answer


def test_a_pipe_gets_aligned_columns_and_no_colour() -> None:
    text = render(status())
    assert "\033[" not in text
    lines = text.splitlines()
    header = next(line for line in lines if "RemoteAddress:Port" in line)
    rows = [line for line in lines if line.startswith("  -> 10.0.0.")]
    assert len(rows) == 3
    for column in ("Weight", "ActiveConn", "Health", "Admin", "Last check"):
        starts = {row[header.index(column) - 1] for row in rows}
        assert starts == {" "}, column  # every row has a gap where each column starts
    assert "  -> 10.0.0.123:80" in text and "unhealthy" in text
    assert "BACKUP (handed over)" in text and "192.0.2.11 prio 150 every 1s" in text
    assert "script chk_nginx DOWN (-10)" in text and "bad_checksum 2" in text
    assert "drain web" not in text and "drain 10.0.0.22:80 in web, by root (uid 0)" in text
    assert "handover VI_1" in text


def test_a_terminal_gets_colour() -> None:
    text = render(status(), colour=True)
    assert "\033[32mhealthy\033[0m" in text and "\033[31munhealthy\033[0m" in text
    assert "\033[33mdrain (api)\033[0m" in text


def test_a_view_without_the_checker_says_why() -> None:
    answer = status()
    answer["services"] = {"updated_at": None, "error": "the checker is restarting",
                          "virtual_servers": []}  # fmt: skip
    answer["vrrp"] = {"updated_at": None, "instances": []}
    text = render(answer)
    assert "the checker is restarting" in text and "has not reported yet" in text


def test_a_tracked_file_shows_its_number_even_when_it_moves_nothing() -> None:
    answer = status()
    files = [
        {"tracker": "file prio", "healthy": True, "weight": -10, "effect": -30, "value": 3,
         "reverse": False},
        {"tracker": "file quiet", "healthy": True, "weight": 5, "effect": 0, "value": 0,
         "reverse": False},
        {"tracker": "file maint", "healthy": False, "weight": 0, "effect": 0, "value": 1,
         "reverse": False},
    ]  # fmt: skip
    answer["vrrp"]["instances"][0]["trackers"] += files
    api_schema.check("status", answer)
    text = render(answer)
    assert "file prio = 3 (-30)" in text
    assert "file quiet = 0 (+0)" in text
    assert "file maint = 1 FAULT" in text
