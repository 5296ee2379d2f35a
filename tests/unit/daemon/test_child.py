"""What every child does at start and stop: read the parent's sealed snapshot, and end itself
when a stop hangs with nobody left to kill it."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lvsha.config import load_text
from lvsha.daemon.child import config_snapshot, load_snapshot, read_snapshot, snapshot_fd

CONFIG = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    priority: 100
    virtual_ipaddresses: [192.0.2.100/24]
"""


def test_the_snapshot_cannot_be_changed() -> None:
    fd = snapshot_fd(b"validated", "/etc/lvsha/lvsha.yaml")
    try:
        assert read_snapshot(fd) == b"validated"
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"vrrp_instances: {}", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert read_snapshot(fd) == b"validated"  # pread: no offset moved for the next reader
    finally:
        os.close(fd)


def test_a_child_loads_the_model_the_parent_validated(caplog: pytest.LogCaptureFixture) -> None:
    validated = load_text(CONFIG, "x.yaml")
    config = load_snapshot(config_snapshot(validated, "x.yaml"), "x.yaml", logging.getLogger("t"))
    assert config == validated
    assert config is not None and list(config.vrrp_instances) == ["VI_1"]
    for damaged in (b"not a pickle", pickle.dumps({"vrrp_instances": {}})):
        assert (
            load_snapshot(snapshot_fd(damaged, "x.yaml"), "lvsha.yaml", logging.getLogger("t"))
            is None
        )
    assert "snapshot of lvsha.yaml does not unpickle" in caplog.text
    assert "snapshot of lvsha.yaml is a dict" in caplog.text


def test_a_child_started_from_a_snapshot_neither_parses_nor_validates() -> None:
    # YAML and the models' validators stay out of a child's start-up (issue 11).
    fd = config_snapshot(load_text(CONFIG, "x.yaml"), "x.yaml")
    code = (
        "import logging, sys\n"
        "from lvsha.daemon.child import load_snapshot\n"
        f"config = load_snapshot({fd}, 'x.yaml', logging.getLogger())\n"
        "assert config is not None and config.vrrp_instances['VI_1'].priority == 100\n"
        "print('yaml' in sys.modules, config.__pydantic_validator__.__class__.__name__)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], pass_fds=(fd,), capture_output=True, text=True, check=True
        )
    finally:
        os.close(fd)
    assert done.stdout.split() == ["False", "MockValSer"]


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
