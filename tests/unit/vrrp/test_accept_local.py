"""accept_local for a backup (issue 9, finding 8): set when 0, said once, never raised."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lvsha.net.sysctl import ensure_accept_local


def conf_with(tmp_path: Path, value: str) -> Path:
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "accept_local").write_text(value)
    return tmp_path


def test_sets_it_when_it_is_0_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = conf_with(tmp_path, "0\n")
    caplog.set_level(logging.INFO, "lvsha.net")
    assert ensure_accept_local("eth0", conf=conf) is True
    assert (conf / "eth0" / "accept_local").read_text() == "1\n"
    assert ensure_accept_local("eth0", conf=conf) is False  # already 1: nothing to do
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "set net.ipv4.conf.eth0.accept_local=1 (was 0)"
    ]


def test_a_missing_interface_or_read_only_proc_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lvsha.net")
    assert ensure_accept_local("eth9", conf=tmp_path) is False
    assert ensure_accept_local("eth9", conf=tmp_path) is False
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    assert "net.ipv4.conf.eth9.accept_local=1" in warning.getMessage()


def test_refuses_a_name_that_is_a_path() -> None:
    with pytest.raises(ValueError, match="not an interface name"):
        ensure_accept_local("../all")
