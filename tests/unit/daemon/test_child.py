"""What every child does at start and stop: read the parent's sealed snapshot, and end itself
when a stop hangs with nobody left to kill it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lvsha.daemon.child import load_snapshot, read_snapshot, snapshot_fd

CONFIG = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    priority: 100
    virtual_ipaddresses: [192.0.2.100/24]
"""


def test_the_snapshot_is_the_validated_text_and_cannot_be_changed() -> None:
    fd = snapshot_fd(CONFIG, "/etc/lvsha/lvsha.yaml")
    try:
        assert read_snapshot(fd) == CONFIG
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"vrrp_instances: {}", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert read_snapshot(fd) == CONFIG  # pread: no offset moved for the next reader
    finally:
        os.close(fd)


def test_a_child_loads_the_snapshot_under_the_files_name(caplog: pytest.LogCaptureFixture) -> None:
    config = load_snapshot(snapshot_fd(CONFIG, "x.yaml"), "x.yaml", logging.getLogger("t"))
    assert config is not None and list(config.vrrp_instances) == ["VI_1"]
    broken = snapshot_fd(CONFIG.replace("priority: 100", "priority: 500"), "x.yaml")
    assert load_snapshot(broken, "/etc/lvsha/lvsha.yaml", logging.getLogger("t")) is None
    assert "/etc/lvsha/lvsha.yaml:5:15: vrrp_instances.VI_1.priority" in caplog.text


def test_a_stop_that_hangs_ends_the_process(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    hang = (
        "import sys\n"
        "from lvsha.daemon.child import stop_within\n"
        "stop_within(1)\n"
        f"open({str(fifo)!r})  # blocks until a writer comes: none will\n"
    )
    done = subprocess.run([sys.executable, "-c", hang], timeout=30, check=False)
    assert done.returncode == -signal.SIGALRM
