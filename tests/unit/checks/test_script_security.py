"""Script security checks what actually runs: #! interpreters, env, and scripts given to shells.

Only the public entry points are used (locate_script, run_script, probe_script), so each test
that expects a refusal also fails against a version that checks argv[0] alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsha.checks.script import (
    SCRIPT_PATH,
    ScriptCommand,
    ScriptRefusedError,
    ScriptTarget,
    insecure_path_reason,
    locate_script,
    probe_script,
    run_script,
)

TARGET = ScriptTarget("192.0.2.10", 80, "198.51.100.1:80/tcp", "security")


@pytest.fixture
def lab_dir() -> Iterator[Path]:
    """A root-owned directory only root can write, so only what a test loosens is insecure."""
    if os.geteuid() != 0:
        pytest.skip("only root can make a root-owned script directory")
    path = Path(tempfile.mkdtemp(prefix="lvsha-test-security-", dir="/run"))
    try:
        path.chmod(0o755)
        if insecure_path_reason(str(path)) is not None:
            pytest.skip(f"/run is not secure here: {insecure_path_reason(str(path))}")
        yield path
    finally:
        shutil.rmtree(path)


def script(path: Path, body: str = "exit 0", mode: int = 0o755, shebang: str = "/bin/sh") -> Path:
    path.write_text(f"#!{shebang}\n{body}\n")
    path.chmod(mode)
    return path


def shell_binary(path: Path, mode: int) -> Path:
    """A copy of dash at `path`: a real interpreter whose mode the test controls."""
    shutil.copyfile(os.path.realpath("/bin/sh"), path)
    path.chmod(mode)
    return path


def refusal(*argv: str) -> str | None:
    try:
        locate_script(ScriptCommand(argv))
    except ScriptRefusedError as refused:
        return str(refused)
    return None


# A script given to a shell or interpreter.


async def test_world_writable_script_given_to_sh_is_refused_and_not_run(lab_dir: Path) -> None:
    ran = lab_dir / "ran"
    check = script(lab_dir / "check.sh", f"touch {ran}", mode=0o757)
    result = await probe_script(ScriptCommand(("/bin/sh", str(check))), TARGET, 5.0)
    assert (result.ok, result.refused) == (False, True)  # refused: the pool reports it
    assert result.reason == (
        f"script security: {check} (read by /bin/sh) is world-writable; fix: chmod go-w {check}"
    )
    assert not ran.exists()
    # Without script security it runs, as keepalived without enable_script_security.
    unchecked = ScriptCommand(("/bin/sh", str(check)), script_security=False)
    ran_result = await probe_script(unchecked, TARGET, 5.0)
    assert (ran_result.ok, ran_result.refused) == (True, False)
    assert ran.exists()


async def test_script_in_a_writable_directory_given_to_python_is_refused(lab_dir: Path) -> None:
    drop = lab_dir / "drop"
    drop.mkdir(mode=0o777)
    drop.chmod(0o777)
    check = drop / "check.py"
    check.write_text("raise SystemExit(0)\n")
    result = await probe_script(ScriptCommand(("python3", "-u", str(check))), TARGET, 5.0)
    assert result.reason == (
        f"script security: {drop} is world-writable, on the path of {check} "
        f"(read by /usr/bin/python3); fix: chmod go-w {drop}, "
        f"or move {check} to a directory only root can write"
    )


async def test_a_script_under_tmp_given_to_bash_says_to_move_it(tmp_path: Path) -> None:
    check = script(tmp_path / "check.sh")
    result = await probe_script(ScriptCommand(("bash", str(check))), TARGET, 5.0)
    # /tmp is shared (sticky): chmod is not the fix there.
    assert result.reason == (
        f"script security: /tmp is world-writable, on the path of {check} "
        f"(read by /usr/bin/bash); fix: move {check} to a directory only root can write"
    )


async def test_script_given_to_perl_owned_by_another_user_is_refused(lab_dir: Path) -> None:
    check = lab_dir / "check.pl"
    check.write_text("exit 0;\n")
    os.chown(check, 65534, 65534)
    assert refusal("perl", "-w", str(check)) == (
        f"script security: {check} (read by /usr/bin/perl) is owned by uid 65534, not root; "
        f"fix: chown root {check}"
    )


@pytest.fixture
def loose(lab_dir: Path) -> Path:
    """A world-writable script."""
    return script(lab_dir / "loose.sh", mode=0o757)


@pytest.fixture
def tight(lab_dir: Path) -> Path:
    """A secure script."""
    return script(lab_dir / "tight.sh")


@pytest.mark.parametrize(
    "argv",
    [
        ("sh", "LOOSE"),
        ("/bin/sh", "-e", "LOOSE"),
        ("sh", "--", "LOOSE"),
        ("bash", "-o", "pipefail", "LOOSE"),
        ("bash", "+o", "history", "-eu", "LOOSE"),
        ("bash", "--rcfile", "LOOSE", "-i", "TIGHT"),
        ("python3", "-W", "ignore", "-u", "LOOSE"),
        ("python3", "-Wignore", "-X", "dev", "LOOSE"),
        ("perl", "-w", "LOOSE"),
        ("perl", "-I", "LOOSEDIR", "TIGHT"),
        ("perl", "-ILOOSEDIR", "TIGHT"),
        ("awk", "-f", "LOOSE", "/etc/hostname"),
        ("env", "LOOSE"),
        ("env", "-i", "LC_ALL=C", "sh", "LOOSE"),
        ("/usr/bin/env", "PATH=/usr/bin", "--", "perl", "LOOSE"),
        ("env", "-S", "sh -e LOOSE"),
    ],
    ids=" ".join,
)
def test_a_loose_file_that_runs_as_code_is_refused(
    argv: tuple[str, ...], lab_dir: Path, loose: Path, tight: Path
) -> None:
    loose_dir = lab_dir / "lib"
    loose_dir.mkdir()
    loose_dir.chmod(0o777)
    names = {"LOOSE": str(loose), "TIGHT": str(tight), "LOOSEDIR": str(loose_dir)}
    resolved = [names.get(arg, arg) for arg in argv]
    resolved = [arg.replace("LOOSEDIR", str(loose_dir)) for arg in resolved]
    resolved = [arg.replace("LOOSE", str(loose)) for arg in resolved]
    reason = refusal(*resolved)
    assert reason is not None
    assert reason.startswith((f"script security: {loose} (", f"script security: {loose_dir} ("))
    assert "is world-writable; fix: chmod go-w" in reason


@pytest.mark.parametrize(
    "argv",
    [
        # Inline code is configuration, which only root writes; what follows it is arguments.
        ("sh", "-c", "exit 0", "LOOSE"),
        ("sh", "-ec", "exit 0", "sh", "LOOSE"),
        ("sh", "-s", "LOOSE"),  # the code comes from stdin (/dev/null), LOOSE is $1
        ("python3", "-c", "pass", "LOOSE"),
        ("python3", "-m", "json.tool", "LOOSE"),
        ("perl", "-e", "1", "LOOSE"),
        ("perl", "-ne", "print", "LOOSE"),
        ("awk", "{ print }", "LOOSE"),
        ("awk", "-f", "TIGHT", "LOOSE"),  # after -f, operands are data
        # A script's own arguments are its data.
        ("sh", "TIGHT", "LOOSE"),
        ("env", "sh", "TIGHT", "LOOSE"),
        ("TIGHT", "LOOSE"),
        ("sh", "TIGHT"),
    ],
    ids=" ".join,
)
def test_code_and_data_arguments_are_not_scripts(
    argv: tuple[str, ...], loose: Path, tight: Path
) -> None:
    names = {"LOOSE": str(loose), "TIGHT": str(tight)}
    assert refusal(*[names.get(arg, arg) for arg in argv]) is None


def test_a_missing_script_given_to_a_shell_is_refused(lab_dir: Path) -> None:
    missing = lab_dir / "missing.sh"
    assert refusal("sh", str(missing)) == (
        f"script security: {missing} (read by /usr/bin/sh) "
        "cannot be checked: No such file or directory"
    )


# The interpreter of a #! line.


@pytest.mark.parametrize(
    ("mode", "owner", "problem", "fix"),
    [
        (0o777, 0, "is world-writable", "chmod go-w"),
        (0o775, 0, "is group-writable", "chmod g-w"),
        (0o755, 65534, "is owned by uid 65534, not root", "chown root"),
    ],
)
async def test_an_unsafe_shebang_interpreter_is_refused(
    lab_dir: Path, mode: int, owner: int, problem: str, fix: str
) -> None:
    interpreter = shell_binary(lab_dir / "sh", mode)
    os.chown(interpreter, owner, 0)
    ran = lab_dir / "ran"
    check = script(lab_dir / "check.sh", f"touch {ran}", shebang=str(interpreter))
    result = await probe_script(ScriptCommand((str(check),)), TARGET, 5.0)
    assert result.reason == (
        f"script security: {interpreter} (the #! interpreter of {check}) {problem}; "
        f"fix: {fix} {interpreter}"
    )
    assert not ran.exists()


async def test_a_safe_shebang_interpreter_runs(lab_dir: Path) -> None:
    interpreter = shell_binary(lab_dir / "sh", 0o755)
    check = script(lab_dir / "check.sh", "exit 3", shebang=f"{interpreter} -e")
    result = await probe_script(ScriptCommand((str(check),), dynamic_weight=True), TARGET, 5.0)
    assert (result.ok, result.weight) == (True, 1)


def test_nested_shebang_interpreters_are_each_checked(lab_dir: Path) -> None:
    interpreter = shell_binary(lab_dir / "sh", 0o777)
    wrapper = script(lab_dir / "wrapper", 'exec /bin/sh "$@"', shebang=str(interpreter))
    check = script(lab_dir / "check.sh", shebang=str(wrapper))
    assert refusal(str(check)) == (
        f"script security: {interpreter} (the #! interpreter of {wrapper}, "
        f"the #! interpreter of {check}) is world-writable; fix: chmod go-w {interpreter}"
    )


@pytest.mark.parametrize("env_line", ["/usr/bin/env lvsha-sh", "/usr/bin/env -S lvsha-sh -e"])
async def test_env_in_a_shebang_resolves_the_interpreter_along_path(
    lab_dir: Path, env_line: str
) -> None:
    bin_dir = lab_dir / "bin"
    bin_dir.mkdir(mode=0o755)
    interpreter = shell_binary(bin_dir / "lvsha-sh", 0o777)
    check = script(lab_dir / "check.sh", "exit 0", shebang=env_line)
    environment = {"PATH": f"{bin_dir}:{SCRIPT_PATH}"}
    with pytest.raises(ScriptRefusedError) as refused:
        await run_script(ScriptCommand((str(check),)), environment, 5.0)
    assert str(refused.value) == (
        f"script security: {interpreter} (run by /usr/bin/env, the #! interpreter of {check}) "
        f"is world-writable; fix: chmod go-w {interpreter}"
    )
    interpreter.chmod(0o755)
    run = await run_script(ScriptCommand((str(check),)), environment, 5.0)
    assert run.returncode == 0, run.output


# How a refusal is reported, and that examining never hangs.


async def test_a_refusal_is_logged_once_until_it_changes(
    lab_dir: Path, loose: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lvsha.scripts")
    command = ScriptCommand(("/bin/sh", str(loose)))
    for _ in range(3):
        assert not (await probe_script(command, TARGET, 5.0)).ok
    assert [record.getMessage() for record in caplog.records] == [
        f"not running /bin/sh {loose}: script security: {loose} (read by /bin/sh) "
        f"is world-writable; fix: chmod go-w {loose}"
    ]
    loose.chmod(0o755)
    assert (await probe_script(command, TARGET, 5.0)).ok
    loose.chmod(0o757)
    assert not (await probe_script(command, TARGET, 5.0)).ok
    assert len(caplog.records) == 2


async def test_a_fifo_as_interpreter_or_script_does_not_hang(lab_dir: Path) -> None:
    fifo = lab_dir / "fifo"
    os.mkfifo(fifo, 0o644)
    check = script(lab_dir / "check.sh", shebang=str(fifo))
    started = time.monotonic()
    as_interpreter = await probe_script(ScriptCommand((str(check),)), TARGET, 1.0)
    as_script = await probe_script(ScriptCommand(("/bin/sh", str(fifo))), TARGET, 0.3)
    assert time.monotonic() - started < 3.0
    assert as_interpreter.reason == f"script cannot run {check}: Permission denied"
    assert as_script.reason == "script timeout after 0.3 s"  # sh waits for a writer, not lvsha
