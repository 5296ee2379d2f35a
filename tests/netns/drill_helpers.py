"""Running the drill against the stand-in director, for the drill's namespace tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

STANDIN = Path(__file__).with_name("standin_director.py")
STANDIN_COMMAND = (sys.executable, str(STANDIN), "{config}", "--run-dir", "{run_dir}")


def namespaces_with(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(f"{prefix}-")]


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (the drill's per-run work directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command_line = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command_line:
            found.append(int(entry))
    return found
