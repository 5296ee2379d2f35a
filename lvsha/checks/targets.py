"""From the normalized configuration to the checks to run: what to probe, how, and for whom.

Each (virtual server, real server, check) of the configuration becomes one `CheckTarget`. Its
`key` holds everything that decides what the probe does and when (type, target address and port,
every probe parameter, timing and warm-up), so identical checks of a real server that several
virtual servers share have one key, and the pool runs them once. A script check also tells the
program which virtual service, real server and check it runs for (LVSHA_VS, LVSHA_CHECK), so
script checks are never shared.

Nothing here depends on where a virtual server stands in the file (only `origin`, which is for
messages): a reload that inserts a virtual server before others changes no key and no
`RealServerId`.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Protocol

from lvsha.checks.dns import DnsParams, probe_dns
from lvsha.checks.http import (
    BodyDigest,
    BodyRegex,
    HttpClient,
    HttpParams,
    StatusRange,
    TlsOptions,
    probe_http,
)
from lvsha.checks.icmp import IcmpParams, IcmpPingers, probe_icmp
from lvsha.checks.result import ProbeResult
from lvsha.checks.script import ScriptCommand, ScriptTarget, probe_script
from lvsha.checks.smtp import SmtpParams, probe_smtp
from lvsha.checks.state import CheckParams
from lvsha.checks.tcp import probe_tcp
from lvsha.checks.tcp_fast import ProbeCallback, TcpAttempt, TcpConnector, TcpEndpoint
from lvsha.checks.udp import ReplyMatch, UdpParams, probe_udp
from lvsha.checks.verdict import RealServerId, host_port
from lvsha.config.checks import (
    SMTP_DEFAULT_HELO,
    Check,
    CheckTiming,
    DnsCheck,
    HttpCheck,
    HttpsCheck,
    IcmpCheck,
    ScriptCheck,
    SmtpCheck,
    TcpCheck,
    UdpCheck,
)
from lvsha.config.lvs import RealServer, VirtualServer
from lvsha.config.model import LvshaConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeTools:
    """The shared resources some probes need; the pool owns them and closes them."""

    http: HttpClient = field(default_factory=HttpClient)
    icmp: IcmpPingers = field(default_factory=IcmpPingers)

    async def close(self) -> None:
        self.icmp.close()
        await self.http.close()


class Probe(Protocol):
    """One way of probing, with every parameter in its value; hashable, as it is part of a key."""

    def describe(self) -> str: ...

    async def run(self, tools: ProbeTools) -> ProbeResult: ...


@dataclass(frozen=True, slots=True)
class TcpProbe:
    address: str
    port: int
    timeout: float
    source: str | None = None
    endpoint: TcpEndpoint = field(init=False, repr=False, compare=False, hash=False)
    """Parsed once: the pool's connector takes it as is on every probe."""

    def __post_init__(self) -> None:
        endpoint = TcpEndpoint.parse(self.address, self.port, self.timeout, self.source)
        object.__setattr__(self, "endpoint", endpoint)

    def describe(self) -> str:
        return f"tcp {host_port(self.address, self.port)}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        return await probe_tcp(self.address, self.port, self.timeout, self.source)

    def start(self, connector: TcpConnector, on_done: ProbeCallback) -> TcpAttempt:
        """The same probe as `run`, without a task: the result goes to `on_done`."""
        return connector.connect(self.endpoint, on_done)


@dataclass(frozen=True, slots=True)
class HttpProbe:
    params: HttpParams

    def describe(self) -> str:
        scheme = "https" if self.params.tls is not None else "http"
        return f"{scheme} {host_port(self.params.address, self.params.port)}{self.params.path}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        return await probe_http(self.params, tools.http)


@dataclass(frozen=True, slots=True)
class UdpProbe:
    params: UdpParams

    def describe(self) -> str:
        return f"udp {host_port(self.params.address, self.params.port)}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        return await probe_udp(self.params)


@dataclass(frozen=True, slots=True)
class DnsProbe:
    params: DnsParams

    def describe(self) -> str:
        where = host_port(self.params.address, self.params.port)
        return f"dns {where} {self.params.name} {self.params.record_type}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        return await probe_dns(self.params)


@dataclass(frozen=True, slots=True)
class SmtpProbe:
    params: SmtpParams

    def describe(self) -> str:
        return f"smtp {host_port(self.params.address, self.params.port)}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        return await probe_smtp(self.params)


@dataclass(frozen=True, slots=True)
class IcmpProbe:
    params: IcmpParams

    def describe(self) -> str:
        return f"icmp {self.params.address}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        return await probe_icmp(self.params, tools.icmp)


@dataclass(frozen=True, slots=True)
class ScriptProbe:
    command: ScriptCommand
    target: ScriptTarget
    timeout: float

    def describe(self) -> str:
        return f"script {self.command.argv[0]}"

    async def run(self, tools: ProbeTools) -> ProbeResult:
        return await probe_script(self.command, self.target, self.timeout)


@dataclass(frozen=True, slots=True)
class CheckKey:
    """What makes two checks the same check: the probe with its parameters, and its timing."""

    probe: Probe
    params: CheckParams
    warmup: float
    _hash: int = field(init=False, repr=False, compare=False)
    """Hashed once: a reload of 10,000 checks looks each key up several times."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.probe, self.params, self.warmup)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[CheckKey], tuple[Probe, CheckParams, float]]:
        # String hashes differ between processes: never carry the cached one across.
        return (CheckKey, (self.probe, self.params, self.warmup))


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """One check of one real server, as configured."""

    real_server: RealServerId
    probe: Probe
    params: CheckParams
    warmup: float
    """The first round starts after a random delay of at most this many seconds."""
    origin: str
    """Where it is configured, e.g. "virtual_servers[0].real_servers[1].checks[0]"."""
    key: CheckKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", CheckKey(self.probe, self.params, self.warmup))


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """Every check to run, and every real server (with or without checks) they decide about."""

    targets: tuple[CheckTarget, ...]
    real_servers: tuple[RealServerId, ...]


def check_plan(config: LvshaConfig) -> CheckPlan:
    """The checks of a configuration as `lvsha.config.load_file` returns it (normalized)."""
    targets: list[CheckTarget] = []
    real_servers: list[RealServerId] = []
    for vs_index, vs in enumerate(config.virtual_servers):
        vs_targets, vs_real_servers = virtual_server_checks(config, vs_index, vs)
        targets += vs_targets
        real_servers += vs_real_servers
    return CheckPlan(tuple(targets), tuple(real_servers))


def virtual_server_checks(
    config: LvshaConfig, vs_index: int, vs: VirtualServer
) -> tuple[list[CheckTarget], list[RealServerId]]:
    """`check_plan`'s part for one virtual server (`vs_index` only names where it is), so a
    caller can build a large plan a piece at a time."""
    targets: list[CheckTarget] = []
    real_servers: list[RealServerId] = []
    service = virtual_service_id(vs)
    for rs_index, rs in enumerate(vs.real_servers):
        real_server = real_server_id(vs, rs, service)
        real_servers.append(real_server)
        for check_index, check in enumerate(rs.checks):
            origin = f"virtual_servers[{vs_index}].real_servers[{rs_index}].checks[{check_index}]"
            targets.append(
                CheckTarget(
                    real_server=real_server,
                    probe=_probe(config, vs, real_server, check, origin, check_index=check_index),
                    params=check_params(check),
                    warmup=_warmup(check),
                    origin=origin,
                )
            )
    return targets, real_servers


def real_server_id(vs: VirtualServer, rs: RealServer, service: str | None = None) -> RealServerId:
    """`rs`'s identity: its virtual service (`service`, when the caller has it already) and
    its address and port, whatever the virtual server's place in the file or its name."""
    port = rs.port if rs.port is not None else (vs.port or 0)
    if service is None:
        service = virtual_service_id(vs)
    return RealServerId(service, str(rs.address), port, vs.name or vs.group)


def check_params(check: CheckTiming) -> CheckParams:
    return CheckParams(
        interval=check.interval,
        timeout=check.timeout,
        retries=check.retries,
        delay_before_retry=check.delay_before_retry,
        rise=check.rise,
        fall=check.fall,
        alpha=check.alpha,
    )


def _warmup(check: CheckTiming) -> float:
    # normalize() fills warmup; a model built by hand may not have.
    return check.warmup if check.warmup is not None else check.interval


GROUP_PREFIX = "group "


def group_service_id(group: str) -> str:
    """The identity of the real servers of the virtual server serving `group`: each is checked
    once and its verdict applies to every member service (lvsha.ipvs.specs expands them)."""
    return f"{GROUP_PREFIX}{group}"


def virtual_service_label(vs: VirtualServer) -> str:
    """The virtual service as an operator writes it: "192.0.2.10:80/tcp", "fwmark 7", or
    "group web" for the services of a virtual server group."""
    if vs.group is not None:
        return group_service_id(vs.group)
    if vs.fwmark is not None:
        return f"fwmark {vs.fwmark}"
    address = str(vs.address)
    protocol = (vs.protocol or "tcp").lower()
    return f"{host_port(address, vs.port or 0)}/{protocol}"


def virtual_service_id(vs: VirtualServer) -> str:
    """The virtual service's identity, as `RealServerId` carries it: what the kernel keys the
    service by (protocol, address and port; or firewall mark and family), written as
    `virtual_service_label` writes it, the family added to a firewall mark. The real servers
    of a group's virtual server are one set, whatever its members: "group web"."""
    if vs.group is not None:
        return group_service_id(vs.group)
    if vs.fwmark is not None:
        return f"fwmark {vs.fwmark}/{vs.family}"
    return virtual_service_label(vs)


def _probe(
    config: LvshaConfig,
    vs: VirtualServer,
    real_server: RealServerId,
    check: Check,
    origin: str,
    *,
    check_index: int,
) -> Probe:
    if isinstance(check, ScriptCheck):
        return _script_probe(config, vs, real_server, check, check_index)
    address = str(check.address) if check.address is not None else real_server.address
    if check.bind_address is not None and not isinstance(check, TcpCheck | SmtpCheck):
        log.warning(
            "%s: bind_address is not supported by %s checks yet; probing from the default source",
            origin,
            check.type,
        )
    if isinstance(check, IcmpCheck):
        return IcmpProbe(IcmpParams(address, check.timeout))
    port = check.port if check.port is not None else real_server.port
    if isinstance(check, TcpCheck):
        source = str(check.bind_address) if check.bind_address is not None else None
        return TcpProbe(address, port, check.timeout, source)
    if isinstance(check, HttpCheck):
        return HttpProbe(_http_params(check, address, port))
    if isinstance(check, UdpCheck):
        return UdpProbe(_udp_params(check, address, port))
    if isinstance(check, DnsCheck):
        return DnsProbe(DnsParams(address, port, check.timeout, check.name, check.query_type))
    if isinstance(check, SmtpCheck):
        source = str(check.bind_address) if check.bind_address is not None else None
        helo_name = check.helo_name if check.helo_name is not None else SMTP_DEFAULT_HELO
        return SmtpProbe(SmtpParams(address, port, check.timeout, helo_name, source))
    raise AssertionError(f"unhandled check type {type(check).__name__}")


def _http_params(check: HttpCheck, address: str, port: int) -> HttpParams:
    digest = None
    if check.digest is not None:
        algorithm, _, hexdigest = check.digest.partition(":")
        assert algorithm in ("md5", "sha256"), check.digest
        digest = BodyDigest("md5" if algorithm == "md5" else "sha256", hexdigest)
    regex = BodyRegex(check.regex, check.regex_negate) if check.regex is not None else None
    tls = None
    if isinstance(check, HttpsCheck):
        tls = TlsOptions(
            verify=check.tls_verify,
            server_name=check.sni,
            ca_file=check.ca_file,
            client_cert_file=check.client_cert,
            client_key_file=check.client_key,
        )
    return HttpParams(
        address=address,
        port=port,
        timeout=check.timeout,
        path=check.path,
        method=check.method,
        virtualhost=check.virtualhost,
        status=tuple(StatusRange(low, high) for low, high in check.status),
        digest=digest,
        regex=regex,
        tls=tls,
    )


def _udp_params(check: UdpCheck, address: str, port: int) -> UdpParams:
    payload = b""
    if check.payload is not None:
        payload = check.payload.encode()
    elif check.payload_hex is not None:
        payload = bytes.fromhex(check.payload_hex)
    reply = None
    if check.require_reply:
        exact = None
        if check.expect is not None:
            exact = check.expect.encode()
        elif check.expect_hex is not None:
            exact = bytes.fromhex(check.expect_hex)
        reply = ReplyMatch(exact=exact, regex=check.expect_regex)
    return UdpParams(address, port, check.timeout, payload, reply)


def _script_probe(
    config: LvshaConfig,
    vs: VirtualServer,
    real_server: RealServerId,
    check: ScriptCheck,
    check_index: int,
) -> ScriptProbe:
    command = ScriptCommand(
        argv=check.command,
        user=check.user if check.user is not None else config.global_.script_user,
        dynamic_weight=check.dynamic_weight,
        script_security=config.global_.enable_script_security,
    )
    target = ScriptTarget(
        real_server_address=real_server.address,
        real_server_port=real_server.port,
        virtual_service=virtual_service_label(vs),
        # By identity, not by place in the file (the origin): the check's key includes it.
        check_name=f"{real_server.virtual_service} "
        f"{host_port(real_server.address, real_server.port)} checks[{check_index}]",
    )
    return ScriptProbe(command, target, check.timeout)


def canonical_address(text: str) -> str:
    """An address in the form RealServerId uses; raises ValueError if `text` is not one."""
    return str(ipaddress.ip_address(text))
