"""keepalived's configuration for the drill, translated from lvsha's, and its logged state."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsha.config import load_file, load_text
from lvsha.drill.keepalived import (
    KEEPALIVED_COMMAND,
    KEEPALIVED_PID_FILES,
    KeepalivedInstance,
    UnsupportedConfigError,
    instance_from_config,
    last_state,
)
from lvsha.drill.main import DEFAULT_CONFIGS, adapt_config


def test_the_lab_config_translates_election_vips_and_announcements() -> None:
    instance = instance_from_config(load_file(DEFAULT_CONFIGS[0]))
    assert instance == KeepalivedInstance(
        vrid=42,
        priority=150,
        virtual_addresses=("192.0.2.100/24",),
        advert_interval=0.1,
        version=3,
        interface="eth0",
        state="BACKUP",
        name="VI_LAB",
        garp_master_repeat=3,
        garp_master_delay=1.0,
    )
    text = instance.config_text()
    assert "    advert_int 0.1\n    version 3\n" in text
    assert "    garp_master_repeat 3\n    garp_master_delay 1\n" in text
    # keepalived's own scheduling default: lvsha's realtime_priority is not carried over.
    assert "rt_priority" not in text and "vrrp_garp_interval" not in text


def test_twenty_vips_and_a_chosen_rt_priority(tmp_path: Path) -> None:
    adapted = tmp_path / "a.yaml"
    adapt_config(DEFAULT_CONFIGS[1], adapted, 1.0, 2, vips=20)
    instance = instance_from_config(load_file(adapted), rt_priority=50)
    assert instance.virtual_addresses[0] == "192.0.2.100/24"
    assert instance.virtual_addresses[-1] == "192.0.2.119/24"
    assert len(instance.virtual_addresses) == 20
    text = instance.config_text()
    assert "    vrrp_rt_priority 50\n" in text
    assert "    advert_int 1\n    version 2\n" in text
    assert text.count("        192.0.2.1") == 20


def test_garp_interval_and_nopreempt_are_carried_over() -> None:
    config = load_text(
        "vrrp_instances:\n"
        "  VI_1:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 7\n"
        "    preempt: false\n"
        "    garp: {interval: 0.001, delay: 0}\n"
        "    virtual_ipaddresses: [192.0.2.5/24]\n"
    )
    instance = instance_from_config(config)
    assert instance.nopreempt and instance.garp_interval == 0.001
    text = instance.config_text()
    assert "    vrrp_garp_interval 0.001\n" in text
    assert "    garp_master_delay 0\n" in text and "    nopreempt\n" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    unicast_peers: [192.0.2.9]\n", "unicast"),
        ("    track_interfaces: [eth1]\n", "tracking"),
        ("    garp: {refresh: 60}\n", "refresh"),
    ],
)
def test_what_is_not_translated_is_refused(extra: str, message: str) -> None:
    config = load_text(
        "vrrp_instances:\n"
        "  VI_1:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 7\n"
        "    virtual_ipaddresses: [192.0.2.5/24]\n" + extra
    )
    with pytest.raises(UnsupportedConfigError, match=message):
        instance_from_config(config)


def test_pid_files_live_in_the_run_directory() -> None:
    for name in KEEPALIVED_PID_FILES:
        assert f"{{run_dir}}/{name}" in KEEPALIVED_COMMAND
    assert "{config}" in KEEPALIVED_COMMAND


def test_the_last_state_keepalived_logged() -> None:
    log = (
        "Sat Dec  5 16:20:23 2026: (VI_LAB) Entering BACKUP STATE (init)\n"
        "Sat Dec  5 16:20:24 2026: (VI_LAB) Entering MASTER STATE\n"
        "Sat Dec  5 16:20:25 2026: (VI_LAB) Entering BACKUP STATE\n"
    )
    assert last_state(log) == "BACKUP"
    assert last_state("Starting Keepalived v2.2.7\n") is None
    # A line still being written is not read.
    assert last_state(log + "Sat Dec  5 16:20:26 2026: (VI_LAB) Entering MAS") == "BACKUP"
