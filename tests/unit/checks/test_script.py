from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvsha.checks.result import ProbeResult
from lvsha.checks.script import (
    ScriptCommand,
    ScriptTarget,
    insecure_path_reason,
    probe_script,
)
from tests.unit.checks.orphans import script_outlives_its_starter

TARGET = ScriptTarget(
    real_server_address="192.0.2.10",
    real_server_port=8080,
    virtual_service="198.51.100.1:80/tcp",
    check_name="web-script",
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def shell(script: str, *args: str, **options: object) -> ScriptCommand:
    return ScriptCommand(("sh", "-c", script, "sh", *args), **options)  # type: ignore[arg-type]


async def run(command: ScriptCommand, timeout: float = 5.0) -> ProbeResult:
    return await probe_script(command, TARGET, timeout)


def live_members(process_group: int) -> list[int]:
    """Pids in the process group that are still running (zombies count as gone)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == process_group and state != "Z":
            members.append(int(entry))
    return members


def our_zombies() -> list[int]:
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state == "Z":
            zombies.append(int(entry))
    return zombies


async def wait_until(condition: Callable[[], bool], deadline: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline
    while not condition():
        if loop.time() > give_up_at:
            return False
        await asyncio.sleep(0.01)
    return True


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("status", "dynamic", "ok", "weight", "reason"),
    [
        (0, False, True, None, "script exit status 0"),
        (1, False, False, None, "script exit status 1"),
        (7, False, False, None, "script exit status 7"),
        (0, True, True, None, "script exit status 0"),
        (1, True, False, None, "script exit status 1"),
        (2, True, True, 0, "script exit status 2, weight 0"),
        (7, True, True, 5, "script exit status 7, weight 5"),
        (255, True, True, 253, "script exit status 255, weight 253"),
    ],
)
async def test_exit_status(
    status: int, dynamic: bool, ok: bool, weight: int | None, reason: str
) -> None:
    result = await run(shell(f"exit {status}", dynamic_weight=dynamic))
    assert (result.ok, result.weight, result.reason) == (ok, weight, reason)
    assert result.latency >= 0.0


async def test_killed_by_a_signal_is_a_failure_naming_the_signal() -> None:
    result = await run(shell("kill -SEGV $$", dynamic_weight=True))
    assert not result.ok
    assert result.reason == "script killed by SIGSEGV"


async def test_failure_reason_carries_the_last_output_line() -> None:
    result = await run(shell("echo starting; echo 'backend says 503' >&2; exit 1"))
    assert result.reason == "script exit status 1: backend says 503"
    assert not result.refused  # it ran, and failed


async def test_output_kept_is_bounded() -> None:
    result = await run(shell("echo 0123456789; exit 1", output_limit=4))
    assert result.reason == "script exit status 1: 789"
    long_line = await run(shell("printf '%0500d\\n' 0; exit 1"))
    assert long_line.reason == "script exit status 1: " + "0" * 200 + "..."


async def test_a_chatty_script_is_drained_and_finishes() -> None:
    chatty = "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo final words; exit 1"
    result = await run(shell(chatty))
    assert result.reason == "script exit status 1: final words"


async def test_environment_describes_the_real_server_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LVSHA_LEAK_CANARY", "leaked")
    report = (
        'echo "$LVSHA_RS_ADDRESS|$LVSHA_RS_PORT|$LVSHA_VS|$LVSHA_CHECK|$LVSHA_TIMEOUT'
        '|${LVSHA_LEAK_CANARY-absent}|$PWD"; exit 1'
    )
    result = await run(shell(report), timeout=2.5)
    assert result.reason == (
        "script exit status 1: 192.0.2.10|8080|198.51.100.1:80/tcp|web-script|2.5|absent|/"
    )


async def test_stdin_is_empty() -> None:
    result = await run(shell('read line; echo "read status $?"; exit 1'))
    assert result.reason == "script exit status 1: read status 1"


async def test_timeout() -> None:
    result = await run(ScriptCommand(("sleep", "30")), timeout=0.05)
    assert not result.ok
    assert result.reason == "script timeout after 0.05 s"
    assert result.latency < 2.0


STUBBORN_FAMILY = """
trap '' TERM
echo $$ > "$1"
sleep 30 &
(trap '' TERM; sleep 30; sleep 30) &
sh -c 'trap "" TERM; sleep 30 & wait' &
echo ready >> "$1"
wait
"""


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    record = tmp_path / "group"
    result = await run(shell(STUBBORN_FAMILY, str(record)), timeout=1.0)
    assert result.reason == "script timeout after 1.0 s"
    leader, ready = record.read_text().split()
    assert ready == "ready", "the script did not get to fork its children within the timeout"
    assert await wait_until(lambda: not live_members(int(leader))), live_members(int(leader))


async def test_children_left_behind_by_a_finished_script_are_killed(tmp_path: Path) -> None:
    record = tmp_path / "group"
    # The background sleep holds the output pipe: without the group kill this would time out.
    result = await run(shell('echo $$ > "$1"; sleep 30 & exit 0', str(record)), timeout=5.0)
    assert result.ok
    assert result.latency < 2.0
    leader = int(record.read_text())
    assert await wait_until(lambda: not live_members(leader)), live_members(leader)


async def test_cancelled_probe_kills_the_script(tmp_path: Path) -> None:
    record = tmp_path / "group"
    probe = asyncio.create_task(run(shell(STUBBORN_FAMILY, str(record)), timeout=30.0))
    assert await wait_until(lambda: record.exists() and "ready" in record.read_text())
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    leader = int(record.read_text().split()[0])
    assert await wait_until(lambda: not live_members(leader)), live_members(leader)
    assert await wait_until(lambda: not our_zombies()), our_zombies()


async def test_a_thousand_runs_leave_no_zombie_and_no_fd(tmp_path: Path) -> None:
    hanging = shell("trap '' TERM; sleep 30 & sleep 30 & wait")
    healthy, failing = shell("exit 0"), shell("echo no; exit 1")
    await run(healthy)
    await run(hanging, timeout=0.05)
    fds_before = open_fds()
    outcomes = {"ok": 0, "failed": 0, "timeout": 0}
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    for index in range(1000):
        if index % 10 == 0:
            result = await run(hanging, timeout=0.05)
            outcomes["timeout"] += result.reason == "script timeout after 0.05 s"
        elif index % 2:
            outcomes["ok"] += (await run(healthy)).ok
        else:
            outcomes["failed"] += (await run(failing)).reason == "script exit status 1: no"
    assert outcomes == {"ok": 500, "failed": 400, "timeout": 100}
    assert loop.time() - started_at < 60.0
    assert await wait_until(lambda: not our_zombies()), our_zombies()
    assert open_fds() == fds_before


async def test_bare_command_resolves_through_path() -> None:
    assert (await run(ScriptCommand(("true",)))).ok
    missing = await run(ScriptCommand(("lvsha-no-such-command",)))
    assert not missing.ok
    assert missing.reason.startswith("script not found in /usr/local/sbin:")
    assert missing.reason.endswith(": lvsha-no-such-command")


async def test_relative_or_missing_program_paths_are_refused() -> None:
    relative = await run(ScriptCommand(("bin/check",)))
    assert relative.reason == "script path is not absolute: bin/check"
    missing = await run(ScriptCommand(("/nonexistent/check",)))
    assert missing.reason == "script is not an executable file: /nonexistent/check"


async def test_an_argument_exec_cannot_carry_is_a_refusal_not_a_crash() -> None:
    result = await run(ScriptCommand(("/bin/sh", "-c", "exit 0", "a\0b")))
    assert result.reason == "script cannot run /bin/sh: embedded null byte"


def test_command_validation() -> None:
    with pytest.raises(ValueError):
        ScriptCommand(())
    with pytest.raises(ValueError):
        ScriptCommand(("true",), group="nogroup")


# Script security.


@pytest.fixture
def secure_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("only root can make a root-owned script directory")
    path = Path(tempfile.mkdtemp(prefix="lvsha-test-script-", dir="/run"))
    try:
        path.chmod(0o755)
        if insecure_path_reason(str(path)) is not None:
            pytest.skip(f"/run is not secure here: {insecure_path_reason(str(path))}")
        yield path
    finally:
        shutil.rmtree(path)


def write_script(directory: Path, body: str) -> Path:
    script = directory / "check.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


async def test_secure_script_runs(secure_dir: Path) -> None:
    script = write_script(secure_dir, "exit 3")
    result = await run(ScriptCommand((str(script),), dynamic_weight=True))
    assert (result.ok, result.weight) == (True, 1)


@pytest.mark.parametrize(
    ("mode", "problem", "fix"),
    [(0o777, "world-writable", "chmod go-w"), (0o775, "group-writable", "chmod g-w")],
)
async def test_writable_directory_is_refused(
    secure_dir: Path, mode: int, problem: str, fix: str
) -> None:
    script = write_script(secure_dir, "exit 0")
    secure_dir.chmod(mode)
    result = await run(ScriptCommand((str(script),)))
    assert not result.ok
    assert result.reason == (
        f"script security: {secure_dir} is {problem}, on the path of {script}; "
        f"fix: {fix} {secure_dir}, or move {script} to a directory only root can write"
    )
    # The operator can opt out, as with keepalived without enable_script_security.
    assert (await run(ScriptCommand((str(script),), script_security=False))).ok


async def test_writable_script_file_is_refused(secure_dir: Path) -> None:
    script = write_script(secure_dir, "exit 0")
    script.chmod(0o757)
    result = await run(ScriptCommand((str(script),)))
    assert result.reason == (
        f"script security: {script} is world-writable; fix: chmod go-w {script}"
    )


async def test_script_owned_by_another_user_is_refused(secure_dir: Path) -> None:
    script = write_script(secure_dir, "exit 0")
    nobody = pwd.getpwnam("nobody")
    os.chown(script, nobody.pw_uid, nobody.pw_gid)
    result = await run(ScriptCommand((str(script),)))
    assert result.reason == (
        f"script security: {script} is owned by uid {nobody.pw_uid}, not root; "
        f"fix: chown root {script}"
    )


async def test_symlink_into_a_writable_directory_is_refused(secure_dir: Path) -> None:
    writable = secure_dir / "drop"
    writable.mkdir()
    target = write_script(writable, "exit 0")
    writable.chmod(0o777)
    link = secure_dir / "check"
    link.symlink_to(target)
    result = await run(ScriptCommand((str(link),)))
    assert result.reason == (
        f"script security: {writable} is world-writable, on the path of {link}; "
        f"fix: chmod go-w {writable}, or move {link} to a directory only root can write"
    )


async def test_script_under_tmp_is_refused(tmp_path: Path) -> None:
    script = write_script(tmp_path, "exit 0")
    result = await run(ScriptCommand((str(script),)))
    assert result.reason == (
        f"script security: /tmp is world-writable, on the path of {script}; "
        f"fix: move {script} to a directory only root can write"
    )


# Running as an unprivileged user.


@needs_root
async def test_runs_as_nobody_with_only_its_own_groups() -> None:
    nobody = pwd.getpwnam("nobody")
    groups = " ".join(str(gid) for gid in os.getgrouplist("nobody", nobody.pw_gid))
    check = f'test "$(id -u) $(id -g) $(id -G)" = "{nobody.pw_uid} {nobody.pw_gid} {groups}"'
    result = await run(shell(f"{check} || {{ id; exit 1; }}", user="nobody"))
    assert result.ok, result.reason


@needs_root
async def test_group_overrides_the_users_primary_group() -> None:
    daemon_gid = grp.getgrnam("daemon").gr_gid
    result = await run(
        shell(f'test "$(id -g)" = {daemon_gid} || {{ id; exit 1; }}', user="nobody", group="daemon")
    )
    assert result.ok, result.reason


async def test_unknown_user_or_group_fails_with_reason() -> None:
    unknown_user = await run(ScriptCommand(("true",), user="lvsha-no-such-user"))
    assert unknown_user.reason == "script user 'lvsha-no-such-user' does not exist"
    unknown_group = await run(ScriptCommand(("true",), user="nobody", group="lvsha-no-such-group"))
    assert unknown_group.reason == "script group 'lvsha-no-such-group' does not exist"


@needs_root
async def test_nobody_cannot_run_a_script_it_cannot_read(secure_dir: Path) -> None:
    script = write_script(secure_dir, "exit 0")
    script.chmod(0o700)
    result = await run(ScriptCommand((str(script),), user="nobody"))
    assert not result.ok
    assert result.reason == f"script cannot run {script}: Permission denied"


# Nothing outlives the process that started it.


@pytest.mark.parametrize(
    "user", [None, pytest.param("nobody", marks=needs_root)], ids=["as-us", "as-nobody"]
)
def test_a_script_dies_when_the_process_that_started_it_is_killed(user: str | None) -> None:
    # As nobody the parent-death signal must be armed after the uid switch, which clears it.
    assert script_outlives_its_starter("run_script", user) == []
