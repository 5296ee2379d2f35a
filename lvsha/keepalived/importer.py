"""`lvsha import-keepalived`: a keepalived.conf read, mapped and written as lvsha YAML.

Exit status: 0 when everything was mapped, 1 when something had to be left out (the YAML is
still written, with the omissions as comments at its top) or the result does not pass
check-config, 2 when the file cannot be read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import yaml

from lvsha.config import ConfigError, load_text
from lvsha.keepalived.mapping import Imported, map_config
from lvsha.keepalived.syntax import KeepalivedSyntaxError, Parsed, parse_file

_HEADINGS = {
    "dropped": "Left out (not supported by lvsha, or not understood):",
    "changed": "Kept as keepalived behaves, where lvsha would differ:",
    "ignored": "Ignored, as keepalived ignores them or lvsha needs nothing:",
}


def render(imported: Imported, parsed: Parsed, source: str) -> str:
    lines = [
        f"# lvsha configuration imported from {source} by lvsha import-keepalived.",
        f"# Read: {', '.join(parsed.files)}.",
        "# Check it with: lvsha check-config FILE",
    ]
    for kind, heading in _HEADINGS.items():
        notes = [note for note in imported.notes if note.kind == kind]
        if notes:
            lines += ["#", f"# {heading}"]
            lines += [f"#   {note}" for note in notes]
    for warning in parsed.warnings:
        lines.append(f"# warning: {warning}")
    body = yaml.safe_dump(imported.document, sort_keys=False, default_flow_style=False, width=96)
    return "\n".join(lines) + "\n\n" + body


def import_keepalived(
    path: str, output: str | None, config_id: str | None, err: TextIO | None = None
) -> int:
    err = sys.stderr if err is None else err
    try:
        parsed = parse_file(path, config_id)
    except KeepalivedSyntaxError as exc:
        print(f"lvsha import-keepalived: {exc}", file=err)
        return 2
    imported = map_config(parsed)
    text = render(imported, parsed, path)
    for warning in parsed.warnings:
        print(f"{warning}", file=err)
    for note in imported.notes:
        print(f"{note}", file=err)
    name = output or "<stdout>"
    problems: list[str] = []
    try:
        load_text(text, name)
    except ConfigError as exc:
        problems = [str(problem) for problem in exc.problems]
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            Path(output).write_text(text)
        except OSError as exc:
            print(f"lvsha import-keepalived: cannot write {output}: {exc.strerror}", file=err)
            return 2
    for problem in problems:
        print(f"{problem}", file=err)
    dropped = sum(1 for note in imported.notes if note.kind == "dropped")
    summary = (
        f"{path}: {len(parsed.statements)} top-level blocks read from {len(parsed.files)} "
        f"file(s); {dropped} left out, "
        f"{sum(1 for n in imported.notes if n.kind == 'changed')} kept as keepalived behaves"
    )
    if problems:
        summary += f"; the result does not pass check-config ({len(problems)} problem(s) above)"
    print(summary, file=err)
    return 1 if dropped or problems else 0
