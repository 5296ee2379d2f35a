"""From the normalized configuration to the virtual service specs the IPVS side works from.

Each configured virtual server becomes a `ConfiguredService`: its `VirtualServiceSpec` (what
`lvsha.ipvs.desired` turns into a kernel service given verdicts) and, for each real server, the
`RealServerId` the check pool publishes verdicts under, so verdicts find their destination.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from lvsha.checks.targets import real_server_id, virtual_service_id
from lvsha.checks.verdict import RealServerId, host_port
from lvsha.config.lvs import RealServer, SorryServer, VirtualServer
from lvsha.config.model import LvshaConfig
from lvsha.config.vsgroup import VirtualServerGroup
from lvsha.ipvs.desired import RealServerSpec, SorryServerSpec, VirtualServiceSpec
from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    DestinationKey,
    Family,
    Forwarding,
    FwmarkKey,
    Persistence,
    ServiceFlags,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
)

_FORWARDING = {
    "NAT": Forwarding.MASQUERADE,
    "DR": Forwarding.DIRECT_ROUTE,
    "TUN": Forwarding.TUNNEL,
}
# include/uapi/linux/ip_vs.h: IP_VS_SVC_F_SCHED_{SH,MH}_{FALLBACK,PORT} share SCHED1 and SCHED2.
_SCHEDULER_FLAGS = {
    "sh-fallback": ServiceFlags.SCHED1,
    "mh-fallback": ServiceFlags.SCHED1,
    "sh-port": ServiceFlags.SCHED2,
    "mh-port": ServiceFlags.SCHED2,
}
_FAMILIES = {"ipv4": Family.INET, "ipv6": Family.INET6}


@dataclass(frozen=True, slots=True)
class ConfiguredRealServer:
    id: RealServerId
    """The identity the check pool publishes this real server's verdicts under."""
    destination: DestinationKey
    settle_time: float
    """Seconds after the checks start within which a healthy server is proven healthy: until
    then a destination already in the kernel is left alone (see `lvsha.ipvs.syncer`)."""


@dataclass(frozen=True, slots=True)
class ConfiguredService:
    spec: VirtualServiceSpec
    real_servers: tuple[ConfiguredRealServer, ...]
    name: str | None = None
    group: str | None = None
    """The virtual server group this service is a member of: its siblings have the same real
    servers under the same ids, and the syncer decides their pool and quorum once for all."""

    @property
    def key(self) -> ServiceKey:
        return self.spec.key

    def __str__(self) -> str:
        if self.group is not None:
            return f"{self.name} (group {self.group})"
        return f"{self.name} ({self.key})" if self.name else str(self.key)


def virtual_server_labels(services: Iterable[ConfiguredService]) -> dict[ServiceKey, str]:
    """How metrics and events name each service's virtual server: its name, or the service
    ("TCP 192.0.2.10:80") when it has none. Names need not be unique: a name several
    services share gets the service added ("web (TCP 192.0.2.10:80)"), so no two services
    share a label."""
    services = tuple(services)
    uses = Counter(service.name for service in services if service.name)
    return {
        service.key: (
            str(service.key)
            if not service.name
            else service.name
            if uses[service.name] == 1
            else f"{service.name} ({service.key})"
        )
        for service in services
    }


def service_id(key: ServiceKey) -> str:
    """A service key written as `lvsha.checks.targets.virtual_service_id` writes the virtual
    server it comes from: "192.0.2.10:80/tcp", "[2001:db8::1]:443/tcp", "fwmark 7/ipv4"."""
    if isinstance(key, FwmarkKey):
        family = "ipv4" if key.family is Family.INET else "ipv6"
        return f"fwmark {key.fwmark}/{family}"
    return f"{host_port(str(key.address), key.port)}/{key.protocol.name.lower()}"


def configured_services(config: LvshaConfig) -> tuple[ConfiguredService, ...]:
    """Every virtual server of a configuration as `lvsha.config.load_file` returns it
    (normalized: real server ports, forwarding and inhibit_on_failure already inherited), a
    group's virtual server as one service per member."""
    groups = config.virtual_server_groups
    return tuple(
        service for vs in config.virtual_servers for service in configured_services_of(vs, groups)
    )


def configured_services_of(
    vs: VirtualServer, groups: Mapping[str, VirtualServerGroup]
) -> tuple[ConfiguredService, ...]:
    """The services of one virtual server: itself, or each member of its group."""
    if vs.group is None:
        return (configured_service(vs),)
    one = configured_service(vs, group_service_keys(vs, groups[vs.group])[0])
    return tuple(
        ConfiguredService(replace(one.spec, key=key), one.real_servers, one.name, vs.group)
        for key in group_service_keys(vs, groups[vs.group])
    )


def group_service_keys(vs: VirtualServer, group: VirtualServerGroup) -> tuple[ServiceKey, ...]:
    """The kernel keys of a group's members, ranges expanded, in the group's order: an address
    member with the virtual server's protocol, a fwmark member in its family (default: the
    virtual server's)."""
    keys: list[ServiceKey] = []
    for member in group.members:
        if member.fwmark is not None:
            keys.append(FwmarkKey(member.fwmark, _FAMILIES[member.family or vs.family]))
            continue
        if vs.protocol is None:
            # The loader refuses such a virtual server; this is a model built around it.
            raise ValueError(f"group {vs.group}: address members need the protocol")
        protocol = TransportProtocol[vs.protocol]
        port = member.port or 0
        keys.extend(AddressKey(protocol, address, port) for address in member.addresses())
    return tuple(keys)


def configured_service(vs: VirtualServer, key: ServiceKey | None = None) -> ConfiguredService:
    """`vs` as one service (`key`: its own, unless given)."""
    key = service_key(vs) if key is None else key
    real_servers = tuple(_real_server_spec(vs, rs) for rs in vs.real_servers)
    spec = VirtualServiceSpec(
        key=key,
        options=service_options(vs),
        real_servers=real_servers,
        quorum=vs.quorum,
        hysteresis=vs.hysteresis,
        sorry_server=None if vs.sorry_server is None else _sorry_server_spec(vs, vs.sorry_server),
        inhibit_on_failure=vs.inhibit_on_failure,
    )
    service = virtual_service_id(vs)
    configured = tuple(
        ConfiguredRealServer(real_server_id(vs, rs, service), real_server.key, settle_time(rs))
        for rs, real_server in zip(vs.real_servers, real_servers, strict=True)
    )
    return ConfiguredService(spec, configured, vs.name or vs.group, vs.group)


def service_key(vs: VirtualServer) -> ServiceKey:
    if vs.fwmark is not None:
        return FwmarkKey(vs.fwmark, _FAMILIES[vs.family])
    if vs.address is None or vs.protocol is None or vs.port is None:
        # The loader refuses such a virtual server; this is a model built around it.
        raise ValueError("a virtual server needs fwmark, or address, protocol and port")
    return AddressKey(TransportProtocol[vs.protocol], vs.address, vs.port)


def service_options(vs: VirtualServer) -> ServiceOptions:
    flags = ServiceFlags.NONE
    for name in vs.scheduler_flags:
        flags |= _SCHEDULER_FLAGS[name]
    if vs.ops:
        flags |= ServiceFlags.ONE_PACKET
    persistence = None
    if vs.persistence_timeout:
        longest = 128 if vs.family == "ipv6" else 32
        granularity = vs.persistence_granularity
        persistence = Persistence(
            vs.persistence_timeout, longest if granularity is None else granularity
        )
    return ServiceOptions(scheduler=vs.scheduler, flags=flags, persistence=persistence)


def settle_time(rs: RealServer) -> float:
    """An upper bound on how long a healthy real server's checks take to call it Up.

    A check starts within its warm-up and needs `rise` passing rounds, `interval` apart, each
    within `timeout`; one more interval absorbs a single unlucky round. Without checks a real
    server is Up at once.
    """
    bounds = [
        (check.warmup if check.warmup is not None else check.interval)
        + check.rise * check.interval
        + check.timeout
        for check in rs.checks
    ]
    return max(bounds, default=0.0)


def _real_server_spec(vs: VirtualServer, rs: RealServer) -> RealServerSpec:
    destination = Destination(
        address=rs.address,
        port=_port(rs.port, vs),
        weight=rs.weight,
        forwarding=_FORWARDING[rs.forwarding or vs.forwarding],
        upper_threshold=rs.upper_threshold,
        lower_threshold=rs.lower_threshold,
    )
    return RealServerSpec(destination, rs.inhibit_on_failure)


def _sorry_server_spec(vs: VirtualServer, sorry: SorryServer) -> SorryServerSpec:
    destination = Destination(
        address=sorry.address,
        port=_port(sorry.port, vs),
        weight=sorry.weight,
        forwarding=_FORWARDING[sorry.forwarding or vs.forwarding],
    )
    return SorryServerSpec(destination)


def _port(port: int | None, vs: VirtualServer) -> int:
    # As RealServerId has it: the server's own port, else the virtual server's, else 0.
    return port if port is not None else (vs.port or 0)
