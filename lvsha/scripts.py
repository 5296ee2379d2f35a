"""Running an operator's program safely.

`run_script` is shared by the script probe (lvsha.checks.script), VRRP track scripts and notify
hooks, so it sits below both: the VRRP process imports no health-check module (issue 11).

The program runs in its own session and process group, with stdin on /dev/null, the environment
it is given, cwd "/", optionally as an unprivileged user. When it exits, or when the timeout
expires, the whole group gets SIGKILL, so a script leaves no process behind (a descendant that
starts its own session escapes this). The program also gets SIGKILL when the process that
started it dies (PR_SET_PDEATHSIG), so a crashed lvsha child leaves no script running. Output
(stdout and stderr together) is read to the end but only the last `output_limit` bytes are
kept, for the failure reason.

Script security (keepalived's enable_script_security, but stricter) checks everything that will
run as code, not only argv[0]: see `security_refusal` in lvsha.script_security.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lvsha.script_security import (
    EXECVP_DEFAULT_PATH,
    insecure_path_reason,
    security_refusal,
)

__all__ = [
    "SCRIPT_PATH",
    "ScriptCommand",
    "ScriptRefusedError",
    "ScriptRun",
    "insecure_path_reason",
    "judge_exit",
    "judge_run",
    "locate_script",
    "resolve_program",
    "run_script",
]

log = logging.getLogger(__name__)

SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH given to scripts, and searched for a bare command name."""

_REAP_GRACE = 5.0
"""Seconds to wait for a SIGKILLed script to be reaped (longer only in uninterruptible sleep)."""
_OUTPUT_GRACE = 1.0
"""Seconds to wait for the output pipe to close once the group is dead."""
_REASON_OUTPUT_CHARS = 200


@dataclass(frozen=True, slots=True)
class ScriptCommand:
    argv: tuple[str, ...]
    """Program and arguments; a program without "/" is looked up in SCRIPT_PATH."""
    user: str | None = None
    """Run as this user, with its primary group and supplementary groups; None keeps ours."""
    group: str | None = None
    """Run with this primary group instead of the user's."""
    dynamic_weight: bool = False
    """keepalived's misc_dynamic: exit 2-255 is healthy with weight = status - 2."""
    script_security: bool = True
    """keepalived's enable_script_security: refuse a command when anyone but root could replace
    the program, its #! interpreter or the script an interpreter reads (see script_security)."""
    output_limit: int = 4096

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise ValueError("script argv must name a program")
        if self.group is not None and self.user is None:
            raise ValueError("script group needs a user")
        if self.output_limit < 1:
            raise ValueError(f"output_limit must be >= 1, got {self.output_limit}")


def resolve_program(program: str) -> str | None:
    """The absolute path that would run for `program`, or None if there is none."""
    if "/" not in program:
        return shutil.which(program, path=SCRIPT_PATH)
    if os.path.isabs(program) and os.path.isfile(program) and os.access(program, os.X_OK):
        return program
    return None


class _UnknownIdentityError(Exception):
    pass


def _identity(command: ScriptCommand) -> dict[str, Any]:
    """Popen arguments that switch to the configured user in the child, before exec.

    Popen does this in C between fork and exec, without preexec_fn (unsafe with threads).
    extra_groups is always given, else the child would keep our supplementary groups.
    """
    if command.user is None:
        return {}
    try:
        account = pwd.getpwnam(command.user)
    except KeyError:
        raise _UnknownIdentityError(f"script user {command.user!r} does not exist") from None
    gid = account.pw_gid
    if command.group is not None:
        try:
            gid = grp.getgrnam(command.group).gr_gid
        except KeyError:
            raise _UnknownIdentityError(f"script group {command.group!r} does not exist") from None
    return {
        "user": account.pw_uid,
        "group": gid,
        "extra_groups": os.getgrouplist(account.pw_name, gid),
    }


class _ScriptProtocol(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, output_limit: int):
        self.output = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()
        self._output_limit = output_limit

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.output += data
        if len(self.output) > self._output_limit:
            del self.output[: -self._output_limit]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.output_closed.done():
            self.output_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _kill_group(pgid: int) -> None:
    # The leader's pid stays reserved while any member of its group lives, so even after the
    # leader is reaped this reaches only the script's own descendants.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _last_line(output: bytes) -> str:
    lines = output.decode("utf-8", errors="replace").strip().splitlines()
    if not lines:
        return ""
    line = lines[-1].strip()
    if len(line) > _REASON_OUTPUT_CHARS:
        line = line[:_REASON_OUTPUT_CHARS] + "..."
    return line


async def output_within(
    process: asyncio.subprocess.Process, timeout: float
) -> tuple[int, bytes, bytes]:
    """Wait for a process started with pipes to end: (exit status, stdout, stderr). When it
    outlives `timeout` it is killed and reaped, and TimeoutError raised."""
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    return process.returncode if process.returncode is not None else -1, out, err


def judge_exit(returncode: int, dynamic_weight: bool) -> tuple[bool, str, int | None]:
    """(ok, reason, weight) for a script's wait status as asyncio reports it."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return False, f"script killed by {name}", None
    if returncode == 0:
        return True, "script exit status 0", None
    if returncode >= 2 and dynamic_weight:
        weight = returncode - 2
        return True, f"script exit status {returncode}, weight {weight}", weight
    return False, f"script exit status {returncode}", None


class ScriptRefusedError(Exception):
    """The script was not started: not found, insecure, unknown user or group, or exec failed.

    str() is the reason, worded for logs and events.
    """


@dataclass(frozen=True, slots=True)
class ScriptRun:
    """How one run of a script ended."""

    returncode: int | None
    """Wait status as asyncio reports it (negative: killed by that signal); None on timeout."""
    output: bytes
    """The last `output_limit` bytes of stdout and stderr together."""
    timeout: float
    duration: float
    """Seconds from the call of run_script to the end of the run."""

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def locate_script(command: ScriptCommand, search_path: str = SCRIPT_PATH) -> str:
    """The executable `command` would run, after script security; raises ScriptRefusedError.

    `search_path` is the PATH the command will see, for what it looks up itself (env, bash).
    """
    program = command.argv[0]
    executable = resolve_program(program)
    if executable is None:
        if "/" not in program:
            raise ScriptRefusedError(f"script not found in {SCRIPT_PATH}: {program}")
        if not os.path.isabs(program):
            raise ScriptRefusedError(f"script path is not absolute: {program}")
        raise ScriptRefusedError(f"script is not an executable file: {program}")
    if command.script_security:
        refusal = security_refusal([executable, *command.argv[1:]], search_path)
        _log_refusal(command.argv, refusal)
        if refusal is not None:
            raise ScriptRefusedError(refusal)
    return executable


_REFUSALS_REMEMBERED = 1024
_logged_refusals: dict[tuple[str, ...], str] = {}
"""The refusal last logged for each command, so a track script refused every second logs once."""


def _log_refusal(argv: tuple[str, ...], refusal: str | None) -> None:
    if refusal is None:
        _logged_refusals.pop(argv, None)
        return
    if _logged_refusals.get(argv) == refusal:
        return
    if len(_logged_refusals) >= _REFUSALS_REMEMBERED:
        _logged_refusals.pop(next(iter(_logged_refusals)))
    _logged_refusals[argv] = refusal
    log.warning("not running %s: %s", " ".join(map(shlex.quote, argv)), refusal)


_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[[int, int, int, int, int], int]:
    import ctypes  # noqa: PLC0415 - only processes that run scripts pay for ctypes

    function = ctypes.CDLL(None, use_errno=True).prctl
    function.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    function.restype = ctypes.c_int
    return function


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn that makes the script get SIGKILL when the thread starting it dies.

    That thread is the event loop's (asyncio runs Popen there). Popen calls this after
    setgroups/setregid/setreuid, which clear the parent-death signal, so it stays armed through
    exec. It costs fork instead of vfork for scripts run as root (about 2 ms instead of 0.7 per
    spawn here). A `setpriv --pdeathsig KILL` wrapper would cost less, but it cannot tell that the
    parent died before its prctl, and it turns exec errors into an exit status of its own.
    """
    prctl = _prctl()
    parent = os.getpid()

    def in_child() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError("prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            # The parent died between fork and prctl: its death signal was never armed.
            os.kill(os.getpid(), signal.SIGKILL)

    return in_child


async def run_script(
    command: ScriptCommand, environment: Mapping[str, str], timeout: float
) -> ScriptRun:
    """Run `command` to its end or its timeout; nothing of it outlives the call, even cancelled.

    Raises ScriptRefusedError when it cannot start (see locate_script, plus user and exec errors).
    """
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    executable = locate_script(command, environment.get("PATH", EXECVP_DEFAULT_PATH))
    try:
        identity = _identity(command)
    except _UnknownIdentityError as error:
        raise ScriptRefusedError(str(error)) from None

    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ScriptProtocol(loop, command.output_limit),
            executable,
            *command.argv[1:],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(environment),
            cwd="/",
            start_new_session=True,
            preexec_fn=_die_with_parent(),
            **identity,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        # ValueError: a NUL byte in an argument or the environment, which exec cannot carry.
        detail = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ScriptRefusedError(f"script cannot run {executable}: {detail}") from None

    group_killed = False
    try:
        process_group = transport.get_pid()
        remaining = started_at + timeout - loop.time()
        done, _ = await asyncio.wait([protocol.exited], timeout=max(remaining, 0.0))
        timed_out = not done
        _kill_group(process_group)
        group_killed = True
        if timed_out:
            await asyncio.wait([protocol.exited], timeout=_REAP_GRACE)
        await asyncio.wait([protocol.output_closed], timeout=_OUTPUT_GRACE)
        returncode = None if timed_out else transport.get_returncode()
        assert timed_out or returncode is not None
        return ScriptRun(returncode, bytes(protocol.output), timeout, loop.time() - started_at)
    finally:
        if not group_killed:
            # Cancelled while waiting: nothing of the script may outlive the run.
            _kill_group(transport.get_pid())
        transport.close()


def judge_run(run: ScriptRun, dynamic_weight: bool = False) -> tuple[bool, str, int | None]:
    """(ok, reason, weight) of a finished run; a failure's reason ends with its last output line."""
    if run.returncode is None:  # timed out
        return False, f"script timeout after {float(run.timeout)} s", None
    ok, reason, weight = judge_exit(run.returncode, dynamic_weight)
    if not ok and (output := _last_line(run.output)):
        reason = f"{reason}: {output}"
    return ok, reason, weight


async def run_hook(
    command: ScriptCommand,
    environment: Mapping[str, str],
    timeout: float,
    *,
    what: str,
    logger: logging.Logger,
    tell: Callable[[str | None], None] | None = None,
) -> None:
    """Run a hook (a notify or quorum script), log how it went as `what`, and `tell` its
    refusal by script security, or None once it ran; `tell` failing is logged, never raised."""

    def told(refusal: str | None) -> None:
        if tell is None:
            return
        try:
            tell(refusal)
        except Exception:
            logger.exception("%s: on_run callback failed", what)

    try:
        outcome = await run_script(command, dict(environment), timeout)
    except ScriptRefusedError as refusal:
        logger.error("%s not run: %s", what, refusal)
        told(str(refusal))
        return
    told(None)
    ok, reason, _ = judge_run(outcome)
    logger.log(
        logging.INFO if ok else logging.WARNING,
        "%s: %s after %.3f s",
        what,
        reason,
        outcome.duration,
    )
