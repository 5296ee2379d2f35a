"""The `lvsha` command line."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from lvsha import __version__
from lvsha.config import ConfigError, LvshaConfig, load_file
from lvsha.config.files import DEFAULT_MAX_SIZE, describe_size
from lvsha.daemon import run as daemon_run
from lvsha.daemon.rundir import run_dir_problem
from lvsha.drill import main as drill_main


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


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def byte_count(text: str) -> int:
    """A size in bytes: 33554432, or with a binary unit: 32M, 32MiB, 1G."""
    match = re.fullmatch(r"\s*([0-9]{1,15})\s*(?:([KMG])(?:i?B)?)?\s*", text, re.IGNORECASE)
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a size: write bytes (33554432) or with a unit (32M, 1G)"
        )
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]


def _add_max_config_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-config-size",
        type=byte_count,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help="refuse configuration files larger than this, unread (default: "
        f"{describe_size(DEFAULT_MAX_SIZE)}); a unit may follow: 32M, 1G",
    )


def _check_config(args: argparse.Namespace) -> int:
    failed = False
    documents = []
    for path in args.files:
        try:
            config = load_file(path, max_size=args.max_config_size)
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{path}: {_plural(exc.total, 'error')}", file=sys.stderr)
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
    _add_max_config_size(check)
    check.set_defaults(handler=_check_config)

    run = commands.add_parser(
        "run",
        help="run the director daemon",
        description="Run lvsha in the foreground: VRRP in a child process of its own, health "
        "checks and the IPVS table in another, both supervised by this one. SIGTERM stops "
        "gracefully (a master sends priority 0 and keeps its VIPs until a new master is "
        "heard); SIGHUP re-validates the file. Logs go to stderr; under systemd "
        "(Type=notify) READY is reported once every child is up.",
    )
    run.add_argument("config", metavar="FILE", help="YAML configuration file")
    run.add_argument(
        "--run-dir",
        default="/run/lvsha",
        help="directory for events.sock, the metrics-*.prom files and the maintenance/ "
        "flags (default: %(default)s)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="keep the IPVS table and the connection sync daemon in memory instead of the "
        "kernel's (VRRP still runs for real)",
    )
    _add_max_config_size(run)
    run.set_defaults(handler=_run)

    drill = commands.add_parser(
        "drill",
        help="rehearse failovers in network namespaces",
        description="Build a lab in network namespaces (a client and two directors on one "
        "bridge, from conf/lab), run two real lvsha daemons, probe the VIP from the client "
        "every 10 ms and run failover scenarios; print time to new master, time to first "
        "GARP, probe outage and lost probes. Everything built is removed at the end, also "
        "on Ctrl-C. Needs root.",
    )
    drill_main.add_arguments(drill)
    drill.set_defaults(handler=_drill)
    return parser


def _run(args: argparse.Namespace) -> int:
    problem = run_dir_problem(args.run_dir)
    if problem is not None:
        print(f"lvsha run: {problem}", file=sys.stderr)
        return 2
    return daemon_run.run(
        args.config, args.run_dir, args.dry_run, max_config_size=args.max_config_size
    )


def _drill(args: argparse.Namespace) -> int:
    return drill_main.run_drill(drill_main.options_from_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
