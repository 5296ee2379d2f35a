"""ipvsadm as the independent reader of the kernel's IPVS table (inside the test VM only)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from ipaddress import IPv4Network, ip_address

from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Family,
    Forwarding,
    FwmarkKey,
    IPAddress,
    IpvsTable,
    Persistence,
    Service,
    ServiceFlags,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
    TunnelFlags,
    TunnelType,
)


def ipvsadm(*args: str) -> str:
    return subprocess.run(
        ["ipvsadm", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def ipvsadm_rules() -> list[str]:
    """The table as ``ipvsadm -S -n`` rules, one per line."""
    return ipvsadm("-S", "-n").splitlines()


def ipvsadm_table() -> dict[ServiceKey, Service]:
    """The table as ipvsadm shows it, read back into the model.

    ``-S -n`` gives services and destinations, ``-L -n --thresholds`` the thresholds. What
    ipvsadm cannot show (see `as_ipvsadm_shows`) comes back as the model's defaults.
    """
    thresholds = _thresholds(ipvsadm("-L", "-n", "--thresholds").splitlines())
    options: dict[ServiceKey, ServiceOptions] = {}
    destinations: dict[ServiceKey, list[Destination]] = {}
    for line in ipvsadm_rules():
        try:
            words = line.split()
            command, key, rest = words[0], *_rule_service(words[1:])
            if command == "-A":
                options[key] = _rule_options(key, rest)
                destinations[key] = []
            elif command == "-a":
                destination = _rule_destination(rest)
                upper, lower = thresholds[key, destination.key]
                destinations[key].append(
                    replace(destination, upper_threshold=upper, lower_threshold=lower)
                )
            else:
                raise ValueError("neither -A nor -a")
        except (ValueError, KeyError, IndexError) as error:
            raise ValueError(f"cannot read ipvsadm -S line {line!r}: {error!r}") from error
    return {key: Service(key, options[key], tuple(destinations[key])) for key in options}


def as_ipvsadm_shows(table: IpvsTable) -> dict[ServiceKey, Service]:
    """`table` less what ``ipvsadm -S`` leaves out: the third scheduler flag of sh and mh
    services, tunnel settings of a destination that does not tunnel, the port of a tunnel
    other than GUE, and the checksum flags of an IPIP tunnel."""
    return {
        key: replace(
            service,
            options=_options_as_shown(service.options),
            destinations=tuple(map(_destination_as_shown, service.destinations)),
        )
        for key, service in table.items()
    }


def _options_as_shown(options: ServiceOptions) -> ServiceOptions:
    if options.scheduler in _NAMED_FLAG_SCHEDULERS:
        return replace(options, flags=options.flags & ~ServiceFlags.SCHED3)
    return options


def _destination_as_shown(destination: Destination) -> Destination:
    if destination.forwarding is not Forwarding.TUNNEL:
        return replace(
            destination, tunnel_type=TunnelType.IPIP, tunnel_port=0, tunnel_flags=TunnelFlags.NONE
        )
    if destination.tunnel_type is TunnelType.IPIP:
        return replace(destination, tunnel_port=0, tunnel_flags=TunnelFlags.NONE)
    if destination.tunnel_type is TunnelType.GRE:
        return replace(destination, tunnel_port=0)
    return destination


_PROTOCOLS = {"-t": TransportProtocol.TCP, "-u": TransportProtocol.UDP}
_PROTOCOLS["--sctp-service"] = TransportProtocol.SCTP
_LISTED_PROTOCOLS = {"TCP": TransportProtocol.TCP, "UDP": TransportProtocol.UDP}
_LISTED_PROTOCOLS["SCTP"] = TransportProtocol.SCTP
_FORWARDING = {"-m": Forwarding.MASQUERADE, "-g": Forwarding.DIRECT_ROUTE, "-i": Forwarding.TUNNEL}
_SCHEDULER_FLAGS = {
    "sh-fallback": ServiceFlags.SCHED1,
    "mh-fallback": ServiceFlags.SCHED1,
    "flag-1": ServiceFlags.SCHED1,
    "sh-port": ServiceFlags.SCHED2,
    "mh-port": ServiceFlags.SCHED2,
    "flag-2": ServiceFlags.SCHED2,
    "flag-3": ServiceFlags.SCHED3,
}
_NAMED_FLAG_SCHEDULERS = frozenset({"sh", "mh"})
_TUNNEL_FLAGS = {
    "--tun-nocsum": TunnelFlags.NONE,
    "--tun-csum": TunnelFlags.CSUM,
    "--tun-remcsum": TunnelFlags.REMCSUM,
}


def _fwmark(text: str) -> int:
    # ipvsadm prints the 32-bit mark as a signed integer.
    return int(text) & 0xFFFF_FFFF


def _address_port(text: str) -> tuple[IPAddress, int]:
    host, _, port = text.rpartition(":")
    return ip_address(host.strip("[]")), int(port)


def _rule_service(words: list[str]) -> tuple[ServiceKey, list[str]]:
    if words[0] == "-f":
        fwmark = _fwmark(words[1])
        if len(words) > 2 and words[2] == "-6":
            return FwmarkKey(fwmark, Family.INET6), words[3:]
        return FwmarkKey(fwmark, Family.INET), words[2:]
    address, port = _address_port(words[1])
    return AddressKey(_PROTOCOLS[words[0]], address, port), words[2:]


def _rule_options(key: ServiceKey, words: list[str]) -> ServiceOptions:
    scheduler = ""
    flags = ServiceFlags.NONE
    timeout: int | None = None
    prefix_length = 32 if key.family is Family.INET else 128
    engine = None
    words = list(words)
    while words:
        option = words.pop(0)
        if option == "-s":
            scheduler = words.pop(0)
        elif option == "-p":
            timeout = int(words.pop(0))
        elif option == "-M":
            mask = words.pop(0)
            prefix_length = IPv4Network(f"0.0.0.0/{mask}").prefixlen if "." in mask else int(mask)
        elif option == "-o":
            flags |= ServiceFlags.ONE_PACKET
        elif option == "-b":
            # sh and mh name only their two flags; with just the third set "-b" stands alone.
            if words and not words[0].startswith("-"):
                for name in words.pop(0).split(","):
                    flags |= _SCHEDULER_FLAGS[name]
        elif option == "--pe":
            engine = words.pop(0)
        else:
            raise ValueError(f"unexpected ipvsadm -S service option {option!r}")
    persistence = None if timeout is None else Persistence(timeout, prefix_length)
    return ServiceOptions(scheduler, flags, persistence, engine)


def _rule_destination(words: list[str]) -> Destination:
    if words[0] != "-r":
        raise ValueError(f"unexpected ipvsadm -S destination {words!r}")
    address, port = _address_port(words[1])
    destination = Destination(address, port)
    words = words[2:]
    while words:
        option = words.pop(0)
        if option in _FORWARDING:
            destination = replace(destination, forwarding=_FORWARDING[option])
        elif option == "-w":
            destination = replace(destination, weight=int(words.pop(0)))
        elif option == "--tun-type":
            destination = replace(destination, tunnel_type=TunnelType[words.pop(0).upper()])
        elif option == "--tun-port":
            destination = replace(destination, tunnel_port=int(words.pop(0)))
        elif option in _TUNNEL_FLAGS:
            destination = replace(destination, tunnel_flags=_TUNNEL_FLAGS[option])
        else:
            raise ValueError(f"unexpected ipvsadm -S destination option {option!r}")
    return destination


def _thresholds(lines: list[str]) -> dict[tuple[ServiceKey, DestinationKey], tuple[int, int]]:
    """(upper, lower) per destination from ``ipvsadm -L -n --thresholds``."""
    found = {}
    service: ServiceKey | None = None
    for line in lines[3:]:  # a version line and two column heading lines
        words = line.split()
        if words[0] == "->":
            assert service is not None, f"destination before any service: {line!r}"
            address, port = _address_port(words[1])
            found[service, DestinationKey(address, port)] = (int(words[2]), int(words[3]))
        elif words[0] == "FWM":
            family = Family.INET6 if words[2] == "IPv6" else Family.INET
            service = FwmarkKey(_fwmark(words[1]), family)
        else:
            address, port = _address_port(words[1])
            service = AddressKey(_LISTED_PROTOCOLS[words[0]], address, port)
    return found


def ipvsadm_order(*service: str) -> list[str]:
    """A service's destinations ("10.0.0.4:80") in the kernel's list order, head first, as
    ``ipvsadm -L -n --nosort`` shows them; `service` as ipvsadm names it ("-t",
    "192.0.2.10:80"). Plain ``-L`` sorts them by address, hiding the order."""
    lines = ipvsadm("-L", "-n", "--nosort", *service).splitlines()
    return [
        words[1]
        for words in map(str.split, lines)
        if len(words) > 1 and words[0] == "->" and words[1] != "RemoteAddress:Port"
    ]
