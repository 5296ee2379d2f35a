"""The `lvsha` command line.

Each command imports what it uses when it runs, not before: `lvsha --version` loads no model,
`check-config` no daemon, and only `run` the daemon (aiohttp, the probes). Start-up time is paid
by every CLI call and every restart (bench/startup.py measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lvsha import __version__
from lvsha.config.limits import DEFAULT_MAX_SIZE, describe_size

if TYPE_CHECKING:
    from lvsha.config import LvshaConfig


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
    if config.bgp is not None:
        announced = _plural(len(config.bgp.announce), "virtual server")
        parts.append(
            f"BGP AS {config.bgp.asn} announcing {announced} to "
            + _plural(len(config.bgp.peers), "peer")
        )
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
    from lvsha.config import ConfigError, load_file  # noqa: PLC0415 - see the module's doc

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
        if config.bgp is not None:
            from lvsha.config.bgp import advice  # noqa: PLC0415 - see the module's doc

            for key, warning in advice(config.bgp, config.virtual_servers):
                print(f"{path}: warning: {key}: {warning}", file=sys.stderr)
    if args.json and documents:
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    return 1 if failed else 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `command` given ("" for none), only that one's
    options need be complete (the drill's come from lvsha.drill, imported only for it)."""
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

    imports = commands.add_parser(
        "import-keepalived",
        help="write a keepalived.conf as an lvsha configuration",
        description="Read a keepalived.conf (with its includes, @conditional lines and "
        "$definitions) and write the lvsha YAML it means. Every keyword is mapped, or "
        "reported as FILE:LINE: keyword: why, and what to do. Exit 0: all mapped; 1: "
        "something left out (listed, and written as comments), or the result does not pass "
        "check-config; 2: the file cannot be read.",
        epilog="Example: lvsha import-keepalived /etc/keepalived/keepalived.conf -o lvsha.yaml",
    )
    imports.add_argument("file", metavar="FILE", help="keepalived.conf")
    imports.add_argument("-o", "--output", metavar="OUT", help="write here (default: stdout)")
    imports.add_argument(
        "-i",
        "--config-id",
        metavar="ID",
        help="keepalived's -i: which @ID lines count (default: the host name up to its first dot)",
    )
    imports.set_defaults(handler=_import_keepalived)

    run = commands.add_parser(
        "run",
        help="run the director daemon",
        description="Run lvsha in the foreground: VRRP in a child process of its own, health "
        "checks and the IPVS table in another, both supervised by this one. SIGTERM stops "
        "gracefully (a master sends priority 0 and keeps its VIPs until a new master is "
        "heard); SIGHUP applies the changed file, as lvsha reload does. Logs go to stderr; "
        "under systemd (Type=notify) READY is reported once every child is up.",
    )
    run.add_argument("config", metavar="FILE", help="YAML configuration file")
    run.add_argument(
        "--run-dir",
        default="/run/lvsha",
        help="directory for events.sock, control.sock, the metrics-*.prom files and the "
        "maintenance/ flags (default: %(default)s)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="keep the IPVS table and the connection sync daemon in memory instead of the "
        "kernel's (VRRP still runs for real)",
    )
    run.add_argument(
        "--state-dir",
        default="/var/lib/lvsha",
        help="directory of the state file, overrides.json: the drains, maintenance and "
        "handovers operators set, kept across restarts (default: %(default)s)",
    )
    _add_max_config_size(run)
    run.set_defaults(handler=_run)
    _add_operator_commands(commands)

    reload = commands.add_parser(
        "reload",
        help="apply the changed configuration file to the running daemon",
        description="Ask the running lvsha to validate its configuration file again and "
        "apply what changed, moving nothing that did not: unchanged VRRP instances keep "
        "their state, unchanged checks their results, unchanged IPVS entries their "
        "connections. Prints the plan (each change with what it costs: hitless, election, "
        "VIP move, drain, connection reset) and the new configuration generation. With "
        "--plan, only prints what would change. Exit status: 0 applied (or planned); 1 the "
        "file has errors, printed as check-config prints them, and nothing changed; 2 the "
        "reload was refused or a process could not apply it (what was applied is rolled "
        "back; anything left is named); 3 the daemon cannot be reached.",
        epilog="Example: lvsha reload --plan; lvsha reload",
    )
    reload.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="with --plan: the file to compare with the running configuration (default: "
        "the daemon's own file, which is the only one a reload applies)",
    )
    reload.add_argument("--plan", action="store_true", help="print the plan, change nothing")
    reload.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    reload.add_argument(
        "--run-dir", default="/run/lvsha", help="the daemon's run directory (default: %(default)s)"
    )
    reload.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up waiting for the answer after this long (default: %(default)g)",
    )
    reload.set_defaults(handler=_reload)

    drill = commands.add_parser(
        "drill",
        help="rehearse failovers in network namespaces",
        description="Build a lab in network namespaces (a client and two directors on one "
        "bridge, from conf/lab), run two real lvsha daemons, probe the VIP from the client "
        "every 10 ms and run failover scenarios; print time to new master, time to first "
        "GARP, probe outage and lost probes. With --topology ecmp: a router doing ECMP "
        "(FRR), three directors announcing a VIP over BGP and four DR real servers; a client "
        "keeps hundreds of connections while directors are drained, killed and return and a "
        "real server fails; print how many broke. Everything built is removed at the end, "
        "also on Ctrl-C. Needs root.",
    )
    if command in (None, "drill"):
        from lvsha.drill import main as drill_main  # noqa: PLC0415

        drill_main.add_arguments(drill)
    drill.set_defaults(handler=_drill)
    return parser


def _run(args: argparse.Namespace) -> int:
    from lvsha.daemon.rundir import run_dir_problem  # noqa: PLC0415

    problem = run_dir_problem(args.run_dir)
    if problem is not None:
        print(f"lvsha run: {problem}", file=sys.stderr)
        return 2
    from lvsha.daemon import run as daemon_run  # noqa: PLC0415

    return daemon_run.run(
        args.config,
        args.run_dir,
        args.dry_run,
        max_config_size=args.max_config_size,
        state_dir=args.state_dir,
    )


def _reload(args: argparse.Namespace) -> int:
    from lvsha import client  # noqa: PLC0415

    body = {"plan": args.plan, "file": None if args.file is None else os.path.abspath(args.file)}
    socket_path = os.path.join(args.run_dir, "control.sock")
    try:
        status, answer = client.request(socket_path, "POST", "/v1/reload", body, args.timeout)
    except client.ControlError as exc:
        print(f"lvsha reload: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(answer, indent=2))
    if "outcome" not in answer:
        print(f"lvsha reload: HTTP {status}: {answer.get('error', answer)}", file=sys.stderr)
        return 3
    return _report_reload(answer, quiet=args.json)


def _report_reload(answer: dict[str, Any], *, quiet: bool) -> int:
    outcome = answer["outcome"]
    running = f"generation {answer['generation']} (sha256 {str(answer['digest'])[:12]})"
    if not quiet:
        if answer.get("plan_text"):
            print(answer["plan_text"])
        if outcome == "plan":
            print(f"plan for {answer['file']} against the running {running}; nothing changed")
        elif outcome == "applied":
            print(f"reload applied: {answer['file']} runs as {running}")
        overrides = answer.get("overrides") or []
        if overrides:
            print("overrides in force (lvsha status; lvsha ready or handover --cancel ends them):")
            for line in overrides:
                print(f"  {line}")
        for line in answer.get("errors", []):
            print(line, file=sys.stderr)
        for line in answer.get("left", []):
            print(f"left: {line}", file=sys.stderr)
        if outcome not in ("plan", "applied"):
            print(f"reload {outcome}: still running {running}", file=sys.stderr)
    return {"applied": 0, "plan": 0, "invalid": 1}.get(outcome, 2)


def _add_common(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    parser.add_argument(
        "--run-dir", default="/run/lvsha", help="the daemon's run directory (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=timeout,
        metavar="SECONDS",
        help="give up waiting for the daemon after this long (default: %(default)g)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds from 0 to 86400")
    return value


def _add_operator_commands(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="show VRRP instances, virtual servers and real servers",
        description="Show what the running lvsha does: each VRRP instance's state, priority "
        "(and the trackers that move it), the master it hears, its last transition and "
        "advert counters; each virtual server's real servers with their health, last "
        "check, weights (configured and in the kernel), admin state and connections; the "
        "overrides in force. A terminal gets colour; a pipe the same table without. Exit "
        "status: 0 shown, 3 the daemon cannot be reached.",
    )
    _add_common(status, 10.0)
    status.set_defaults(handler=_status)

    for verb, text in (
        (
            "drain",
            "Set real servers to weight 0: no new connections, established ones go on, "
            "checks keep running. With --wait, return when the kernel reports no active "
            "connection to them, or at --timeout saying how many are left (exit 1).",
        ),
        (
            "maint",
            "Take real servers out of the IPVS table and pause their checks, until lvsha ready.",
        ),
        (
            "ready",
            "End lvsha drain and lvsha maint of real servers: back to what their checks "
            "decide. A maintenance file still drains what it names.",
        ),
    ):
        parser = commands.add_parser(
            verb,
            usage=f"lvsha {verb} [options] [VS] RS",
            help={
                "drain": "set real servers to weight 0, checks running",
                "maint": "take real servers out of the IPVS table, checks paused",
                "ready": "end the drain or maint of real servers",
            }[verb],
            description=text + " Kept across restarts and reloads. Changing nothing (asking "
            "for what already holds) is not an error. Exit status: 0 done, 1 --wait timed "
            "out, 2 refused (no such real server, not allowed), 3 the daemon cannot be "
            "reached.",
            epilog=f"Examples: lvsha {verb} web 10.0.0.21:80; lvsha {verb} 10.0.0.21 "
            "(that address in every virtual server)",
        )
        parser.add_argument(
            "targets",
            nargs="+",
            metavar="[VS] RS",
            help="the virtual server (its name, or its service as lvsha status writes it: "
            "192.0.2.10:80/tcp) and the real server (ADDRESS or ADDRESS:PORT); the real "
            "server alone means it in every virtual server",
        )
        if verb != "ready":
            parser.add_argument("--reason", default="", help="why, shown in lvsha status")
        if verb == "drain":
            parser.add_argument(
                "--wait",
                action="store_true",
                help="wait until no active connection is left (or --timeout passes)",
            )
        _add_common(parser, 300.0 if verb == "drain" else 30.0)
        parser.set_defaults(handler=_admin, verb=verb)

    handover = commands.add_parser(
        "handover",
        help="hand the VIPs to the peer and stay backup",
        description="A planned switchover, before maintenance of this director: a master "
        "sends priority 0 and keeps its VIPs until the peer is heard as the new master "
        "(make-before-break), then stays backup, never taking over (also if the peer "
        "goes), until lvsha handover --cancel; kept across restarts. Instances of a sync "
        "group move together. Exit status: 0 handed over (or cancelled), 1 an instance "
        "stayed master (no peer took over), 2 refused, 3 the daemon cannot be reached.",
    )
    handover.add_argument("instance", nargs="?", help="one instance (default: every one)")
    handover.add_argument("--cancel", action="store_true", help="end the handover")
    _add_common(handover, 60.0)
    handover.set_defaults(handler=_handover)

    events = commands.add_parser(
        "events",
        help="show the event stream",
        description="Print the last 100 events (VRRP transitions, real servers up and down, "
        "reloads, ...); with --follow, then every new one until interrupted.",
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    _add_common(events, 10.0)
    events.set_defaults(handler=_events)


def _call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None
) -> tuple[int, dict[str, Any]] | int:
    """(HTTP status, answer), or the exit status after saying why there is none."""
    from lvsha import client  # noqa: PLC0415

    socket_path = os.path.join(args.run_dir, "control.sock")
    try:
        return client.request(socket_path, method, path, body, args.timeout)
    except client.ControlError as exc:
        print(f"lvsha {args.command}: {exc}", file=sys.stderr)
        return 3


def _ask(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None
) -> dict[str, Any] | int:
    """The daemon's answer, or the exit status after saying why there is none: 2 refused
    (4xx), 3 unreachable or failing (5xx)."""
    result = _call(args, method, path, body)
    if isinstance(result, int):
        return result
    status, answer = result
    if answer.get("ok") is True:
        return answer
    if args.json:
        print(json.dumps(answer, indent=2))
    print(f"lvsha {args.command}: {answer.get('error', answer)}", file=sys.stderr)
    return 2 if status < 500 else 3


def _status(args: argparse.Namespace) -> int:
    answer = _ask(args, "GET", "/v1/status", None)
    if isinstance(answer, int):
        return answer
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    from lvsha.status_view import render  # noqa: PLC0415

    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(render(answer, colour=colour))
    return 0


def _admin(args: argparse.Namespace) -> int:
    targets = args.targets
    if len(targets) > 2:
        print(f"lvsha {args.verb}: give [VS] RS, not {len(targets)} words", file=sys.stderr)
        return 2
    vs, rs = (None, targets[0]) if len(targets) == 1 else targets
    body: dict[str, Any] = {"virtual_server": vs, "real_server": rs}
    if args.verb != "ready":
        body["reason"] = args.reason
    if getattr(args, "wait", False):
        body["wait"] = max(0.0, args.timeout - 1.0)
    answer = _ask(args, "POST", f"/v1/{args.verb}", body)
    if isinstance(answer, int):
        return answer
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        done = {"drain": "drained", "maint": "in maintenance", "ready": "ready"}[args.verb]
        if not answer["changed"]:
            done = f"already {done}"
        for name in answer["selected"]:
            print(f"{name}: {done}")
        for note in answer.get("notes", []):
            print(f"note: {note}")
    waited = answer.get("waited")
    if waited is not None:
        left = waited["left"]
        if not args.json:
            if waited["done"]:
                print(f"no active connection left after {waited['seconds']:g} s")
            else:
                plural = "connection is" if left == 1 else "connections are"
                print(f"{left} active {plural} left after {waited['seconds']:g} s")
        return 0 if waited["done"] else 1
    return 0


def _handover(args: argparse.Namespace) -> int:
    body = {"instance": args.instance, "cancel": args.cancel}
    answer = _ask(args, "POST", "/v1/handover", body)
    if isinstance(answer, int):
        return answer
    if args.json:
        print(json.dumps(answer, indent=2))
    stayed = []
    for inst in answer.get("instances", []):
        if not args.cancel and not inst["handed_over"]:
            stayed.append(inst["name"])
        if not args.json:
            if args.cancel:
                print(
                    f"{inst['name']}: {inst['state']}, no longer handed over: it takes part in "
                    "elections again"
                )
            else:
                flag = " (handed over)" if inst["handed_over"] else ""
                print(f"{inst['name']}: {inst['state']}{flag}: {inst['reason']}")
    if stayed:
        print(
            f"lvsha handover: {', '.join(stayed)} stayed master: no peer took over",
            file=sys.stderr,
        )
        return 1
    return 0


def _events(args: argparse.Namespace) -> int:
    from lvsha import client  # noqa: PLC0415

    socket_path = os.path.join(args.run_dir, "control.sock")
    path = "/v1/events?follow=1" if args.follow else "/v1/events"
    try:
        for event in client.stream_events(socket_path, path, args.timeout):
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                print(_event_line(event), flush=True)
    except client.ControlError as exc:
        print(f"lvsha events: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0
    return 0


def _event_line(event: dict[str, Any]) -> str:
    fields = " ".join(
        f"{key}={value}" for key, value in event.items() if key not in ("seq", "time", "type")
    )
    return f"{event.get('time', '?')} {event.get('type', '?')} {fields}".rstrip()


def _import_keepalived(args: argparse.Namespace) -> int:
    from lvsha.keepalived.importer import import_keepalived  # noqa: PLC0415

    return import_keepalived(args.file, args.output, args.config_id)


def _drill(args: argparse.Namespace) -> int:
    from lvsha.drill import main as drill_main  # noqa: PLC0415

    return drill_main.run_from_args(args)


def _command(argv: Sequence[str]) -> str:
    """The command `argv` names, or "": its first word that is no option (the top level takes
    no option with a value)."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(words)).parse_args(words)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
