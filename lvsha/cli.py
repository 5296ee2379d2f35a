"""The `lvsha` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lvsha import __version__
from lvsha.config import ConfigError, LvshaConfig, load_file


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(config: LvshaConfig) -> str:
    instances = ", ".join(
        f"{name} on {inst.interface} vrid {inst.virtual_router_id}"
        for name, inst in config.vrrp_instances.items()
    )
    real_servers = [rs for vs in config.virtual_servers for rs in vs.real_servers]
    checks = sum(len(rs.checks) for rs in real_servers)
    parts = [
        _plural(len(config.vrrp_instances), "VRRP instance")
        + (f" ({instances})" if instances else ""),
        _plural(len(config.virtual_servers), "virtual server"),
        _plural(len(real_servers), "real server"),
        _plural(checks, "check"),
    ]
    return ", ".join(parts)


def _check_config(args: argparse.Namespace) -> int:
    failed = False
    documents = []
    for path in args.files:
        try:
            config = load_file(path)
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            count = len(exc.problems)
            print(f"{path}: {_plural(count, 'error')}", file=sys.stderr)
            continue
        if args.json:
            documents.append(config.model_dump(mode="json", by_alias=True))
        else:
            print(f"{path}: OK: {summary(config)}")
    if args.json and documents:
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvsha",
        description="High-availability supervisor for Linux Virtual Server directors: VRRP "
        "failover of virtual IPs, health checks of real servers, and the kernel IPVS table "
        "kept in step with them.",
        epilog="Run 'lvsha COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"lvsha {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True
    )

    check = commands.add_parser(
        "check-config",
        help="validate configuration files",
        description="Validate one or more lvsha configuration files. Prints a one-line "
        "summary per valid file and exits 0; otherwise prints every problem found, as "
        "FILE:LINE:COL: key.path: what is wrong, and exits 1.",
        epilog="Example: lvsha check-config /etc/lvsha/lvsha.yaml",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="YAML configuration file")
    check.add_argument(
        "--json",
        action="store_true",
        help="print the normalized configuration as JSON, every default filled in, so you "
        "can see what each omitted key means",
    )
    check.set_defaults(handler=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
