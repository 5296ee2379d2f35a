"""Script security: refuse a command when anyone but root could change the code it runs.

The rule is keepalived's enable_script_security rule: a file, and every directory from "/" down
to it (as written and after resolving symlinks), must be owned by root and writable by no group
and no other user. keepalived applies it to argv[0] only; lvsha applies it to everything the
command will run as code:

- the program itself;
- the interpreter of a `#!` line, as the kernel builds its argv (the interpreter can itself be a
  `#!` script), and for `/usr/bin/env NAME` the program env finds along PATH;
- `env [OPTIONS] [NAME=VALUE]... PROGRAM ARGS` given directly: PROGRAM, along env's PATH;
- for a shell or interpreter (sh, bash, dash, python*, perl, ...), the script file it will read:
  its first operand, and the values of options that name code files (`awk -f`, `perl -I`, ...).
  Arguments after that operand are the script's own and are not looked at.

Inline code (`sh -c CODE`, `python -c`, `perl -e`, awk's program text) is not a path: it comes
from the configuration, which only root can write, like the body of a script file. What that
code reads at run time is the operator's to secure, as it is for a script file; so is a module
found on an interpreter's search path (`python -m`), and shared libraries of ELF programs.

Everything here only stats files and reads at most the first 256 bytes of a regular file opened
non-blocking, so it cannot hang on a FIFO or device.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from dataclasses import dataclass

SHEBANG_LIMIT = 256
"""Bytes of a `#!` line the kernel reads (BINPRM_BUF_SIZE)."""

EXECVP_DEFAULT_PATH = "/bin:/usr/bin"
"""glibc's search path for execvp when PATH is unset (confstr _CS_PATH), e.g. after `env -i`."""

_MAX_DEPTH = 8
"""Nested `#!` interpreters and env wrappers followed; the kernel stops at 5 `#!` levels."""


@dataclass(frozen=True, slots=True)
class _Unsafe:
    path: str
    """The file or directory at fault."""
    problem: str
    fix: str | None
    """The command that makes `path` safe, if changing it is how to fix it."""
    shared: bool = False
    """A sticky directory such as /tmp: the fix is to move the file, not to change it."""


def _root_down_to(path: str) -> list[str]:
    paths = [path]
    while (parent := os.path.dirname(path)) != path:
        paths.append(parent)
        path = parent
    return paths[::-1]


def _unsafe_on_path(file: str) -> _Unsafe | None:
    """What makes `file` replaceable by someone other than root, or None."""
    real = os.path.realpath(file)
    for path in dict.fromkeys([*_root_down_to(file), *_root_down_to(real)]):
        try:
            status = os.stat(path)
        except OSError as error:
            return _Unsafe(path, f"cannot be checked: {error.strerror or error}", None)
        quoted = shlex.quote(path)
        if status.st_uid != 0:
            owner = f"is owned by uid {status.st_uid}, not root"
            return _Unsafe(path, owner, f"chown root {quoted}")
        if status.st_mode & stat.S_IWOTH:
            shared = bool(status.st_mode & stat.S_ISVTX)
            return _Unsafe(path, "is world-writable", f"chmod go-w {quoted}", shared)
        if status.st_mode & stat.S_IWGRP:
            shared = bool(status.st_mode & stat.S_ISVTX)
            return _Unsafe(path, "is group-writable", f"chmod g-w {quoted}", shared)
    return None


def _refusal(unsafe: _Unsafe, file: str, role: str) -> str:
    subject = f"{file} ({role})" if role else file
    if unsafe.path == file:
        reason = f"script security: {subject} {unsafe.problem}"
        fix = unsafe.fix
    else:
        reason = f"script security: {unsafe.path} {unsafe.problem}, on the path of {subject}"
        move = f"move {shlex.quote(file)} to a directory only root can write"
        fix = move if unsafe.shared or unsafe.fix is None else f"{unsafe.fix}, or {move}"
    return f"{reason}; fix: {fix}" if fix else reason


def insecure_path_reason(path: str) -> str | None:
    """Why `path` could be replaced by someone other than root, or None when it cannot."""
    unsafe = _unsafe_on_path(path)
    return None if unsafe is None else _refusal(unsafe, path, "")


class _UnreadableError(Exception):
    pass


def read_shebang(path: str) -> tuple[str, str | None] | None:
    """(interpreter, optional argument) of a `#!` line as Linux parses it, or None.

    The kernel reads SHEBANG_LIMIT bytes, strips blanks around the rest of the line, ends the
    interpreter at the first blank and passes what follows as one argument.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise _UnreadableError(error.strerror or str(error)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, SHEBANG_LIMIT)
    except OSError as error:
        raise _UnreadableError(error.strerror or str(error)) from None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    interpreter = re.split(rb"[ \t]", line, maxsplit=1)[0]
    if not interpreter:
        return None  # the exec fails with ENOEXEC: nothing runs
    argument = line[len(interpreter) :].strip(b" \t")
    return os.fsdecode(interpreter), os.fsdecode(argument) if argument else None


def find_executable(name: str, search_path: str, cwd: str = "/") -> str | None:
    """What execvp would run for `name`: a name with "/" as is (from `cwd`), else along PATH."""
    if "/" in name:
        path = os.path.join(cwd, name)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    for directory in search_path.split(":"):
        path = os.path.join(cwd, directory, name)  # an empty entry is the current directory
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


# env(1) options, coreutils 9: the ones that take a value, attached or as the next argument.
_ENV_VALUED = {"-u", "--unset", "-C", "--chdir", "-S", "--split-string", "-a", "--argv0"}


def _env_program(args: list[str], search_path: str) -> tuple[list[str], str, str]:
    """(PROGRAM ARGS..., search path, cwd) of an env(1) command line; PROGRAM may be missing."""
    cwd = "/"
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            break
        if arg in ("-", "-i", "--ignore-environment"):
            search_path = EXECVP_DEFAULT_PATH
            continue
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            if name in _ENV_VALUED and not has_value:
                value = args[index] if index < len(args) else ""
                index += 1
        elif arg.startswith("-") and len(arg) > 1:
            letter, value = "", ""
            for position, character in enumerate(arg[1:], 1):
                if character == "i":
                    search_path = EXECVP_DEFAULT_PATH
                if f"-{character}" in _ENV_VALUED:
                    letter, value = character, arg[position + 1 :]
                    if not value:
                        value = args[index] if index < len(args) else ""
                        index += 1
                    break
            name = f"-{letter}"
        elif "=" in arg:
            variable, _, value = arg.partition("=")
            if variable == "PATH":
                search_path = value
            continue
        else:
            index -= 1
            break
        if name in ("-S", "--split-string"):
            # A `#!/usr/bin/env -S python3 -u` line: the string is split into arguments.
            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            args = [*args[:index], *words, *args[index:]]
        elif name in ("-u", "--unset") and value == "PATH":
            search_path = EXECVP_DEFAULT_PATH
        elif name in ("-C", "--chdir"):
            cwd = os.path.join(cwd, value)
    return args[index:], search_path, cwd


@dataclass(frozen=True, slots=True)
class _Interpreter:
    """How an interpreter's command line names the code it reads."""

    code: frozenset[str] = frozenset()
    """Options whose value (or the first operand) is code, not a file: no script file."""
    stdin: frozenset[str] = frozenset()
    """Options that make it read code from stdin (/dev/null here)."""
    valued: frozenset[str] = frozenset()
    """Options that take a value, attached or the next argument."""
    attached: frozenset[str] = frozenset()
    """Short options whose value can only be attached (perl -0777, -Mmodule)."""
    files: frozenset[str] = frozenset()
    """Options whose value names code the interpreter reads: a file, or a directory of modules."""
    plus_options: bool = False
    """Shells also take options with "+" (+o name)."""
    operand_is_script: bool = True
    """False for awk: its first operand is the program text, or data after -f."""
    searches_path: bool = False
    """bash looks a script name up along PATH when it is not in the current directory."""


_SHELL = _Interpreter(
    code=frozenset("c"),
    stdin=frozenset("s"),
    valued=frozenset({"o", "O"}),
    files=frozenset({"--rcfile", "--init-file"}),
    plus_options=True,
    searches_path=True,
)
_INTERPRETERS: dict[str, _Interpreter] = {
    **dict.fromkeys(("sh", "bash", "rbash", "dash", "ash", "ksh", "mksh", "zsh", "yash"), _SHELL),
    **dict.fromkeys(
        ("python", "pypy"),
        _Interpreter(
            code=frozenset({"c", "m"}), valued=frozenset({"W", "X", "--check-hash-based-pycs"})
        ),
    ),
    "perl": _Interpreter(
        code=frozenset("eE"), files=frozenset("I"), attached=frozenset("0CdDilmMxV")
    ),
    "ruby": _Interpreter(
        code=frozenset("e"),
        files=frozenset("I"),
        valued=frozenset({"r", "C", "E", "--encoding"}),
        attached=frozenset("0xWTKF"),
    ),
    "php": _Interpreter(code=frozenset("rBRE"), files=frozenset("fczF"), valued=frozenset("d")),
    **dict.fromkeys(
        ("node", "nodejs"),
        _Interpreter(
            code=frozenset({"e", "p", "--eval", "--print"}),
            valued=frozenset({"r", "--require", "--import", "--loader", "--input-type"}),
        ),
    ),
    **dict.fromkeys(("lua", "luajit"), _Interpreter(code=frozenset("e"), valued=frozenset("l"))),
    **dict.fromkeys(
        ("awk", "gawk", "mawk", "nawk", "original-awk"),
        _Interpreter(
            files=frozenset({"f", "i", "--file", "--include"}),
            # gawk -e is program text too, but -f files may follow it: only skip its value.
            valued=frozenset({"v", "F", "e", "--assign", "--field-separator", "--source"}),
            operand_is_script=False,
        ),
    ),
}
_ENV = "env"


def _family(program: str) -> str | None:
    """The interpreter table entry for a program, by name with version dropped (python3.11)."""
    for path in (program, os.path.realpath(program)):
        match = re.fullmatch(r"(.*?)[\d.]*", os.path.basename(path))
        name = match.group(1) if match else ""
        if name == _ENV or name in _INTERPRETERS:
            return name
    return None


def _code_files(interpreter: _Interpreter, args: list[str]) -> tuple[list[str], str | None]:
    """(values of code-file options, the script operand or None) of an interpreter's arguments."""
    files: list[str] = []
    index = 0

    def next_value() -> str:
        nonlocal index
        index += 1
        return args[index - 1] if index <= len(args) else ""

    while index < len(args):
        arg = next_value()
        if arg == "--":
            break
        if arg == "-":
            return files, None  # the code comes from stdin
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            if name in interpreter.code:
                return files, None
            if name in interpreter.valued or name in interpreter.files:
                value = value if has_value else next_value()
                if name in interpreter.files:
                    files.append(value)
            continue
        if (arg.startswith("-") or (interpreter.plus_options and arg.startswith("+"))) and len(
            arg
        ) > 1:
            for position, letter in enumerate(arg[1:], 1):
                if letter in interpreter.code or letter in interpreter.stdin:
                    return files, None
                if letter in interpreter.attached:
                    break
                if letter in interpreter.valued or letter in interpreter.files:
                    value = arg[position + 1 :] or next_value()
                    if letter in interpreter.files:
                        files.append(value)
                    break
            continue
        index -= 1
        break
    if index >= len(args) or not interpreter.operand_is_script:
        return files, None
    return files, args[index]


def _operand_path(operand: str, search_path: str | None) -> str | None:
    """The file an interpreter opens for `operand` (its cwd is "/"), or None for no file."""
    if not operand:
        return None
    path = os.path.join("/", operand)
    if os.path.lexists(path) or "/" in operand:
        # A path that does not exist is still checked: it is refused as missing.
        return path
    if search_path is not None:
        for directory in search_path.split(":"):
            candidate = os.path.join("/", directory, operand)
            if os.path.isfile(candidate):
                return candidate
    return None  # the interpreter fails to find it: nothing runs


def _chain(own: str, role: str) -> str:
    """How a file comes to run: its own role, then that of the file that runs it."""
    return f"{own}, {role}" if role else own


def security_refusal(argv: list[str], search_path: str) -> str | None:
    """Why the command `argv` (argv[0] an absolute executable) must not run, or None.

    `search_path` is the PATH the command will see.
    """
    return _examine(argv, search_path, "", 0, set())


def _examine(
    argv: list[str], search_path: str, role: str, depth: int, seen: set[str]
) -> str | None:
    program = argv[0]
    if depth > _MAX_DEPTH:
        return f"script security: {program} ({role}): too many nested #! interpreters or env"
    if program not in seen:
        seen.add(program)
        unsafe = _unsafe_on_path(program)
        if unsafe is not None:
            return _refusal(unsafe, program, role)
    try:
        shebang = read_shebang(program)
    except _UnreadableError as error:
        subject = f"{program} ({role})" if role else program
        return f"script security: {subject} cannot be read to find its #! line: {error}"
    if shebang is not None:
        interpreter, argument = shebang
        # The kernel runs: interpreter [argument] program args...; a relative interpreter is
        # opened from the cwd, which is "/".
        kernel_argv = [os.path.join("/", interpreter), *([argument] if argument else [])]
        kernel_argv += [program, *argv[1:]]
        own = f"the #! interpreter of {program}"
        return _examine(kernel_argv, search_path, _chain(own, role), depth + 1, seen)
    family = _family(program)
    if family == _ENV:
        wrapped, env_path, cwd = _env_program(argv[1:], search_path)
        if not wrapped:
            return None
        executable = find_executable(wrapped[0], env_path, cwd)
        if executable is None:
            return None  # env fails to find it: nothing runs
        own = f"run by {program}"
        return _examine([executable, *wrapped[1:]], env_path, _chain(own, role), depth + 1, seen)
    if family is None:
        return None
    reader = _INTERPRETERS[family]
    files, operand = _code_files(reader, argv[1:])
    lookup = search_path if reader.searches_path else None
    paths = [_operand_path(file, None) for file in files]
    if operand is not None:
        paths.append(_operand_path(operand, lookup))
    for path in paths:
        if path is None or path in seen:
            continue
        seen.add(path)
        unsafe = _unsafe_on_path(path)
        if unsafe is not None:
            return _refusal(unsafe, path, _chain(f"read by {program}", role))
    return None
