"""The check pool against real servers in lab hosts: each real server goes Down and Up when it
should, with the reason the probe gave.

Every config goes the way lvsha takes it: YAML text -> `load_text` -> `check_plan` ->
`CheckPool`. The pool runs in the client host's namespace: the whole asyncio loop of a scenario
runs in a thread that joined it (`Host.call`), since probes open their sockets as they run.

Timing: warm-up 0 puts each first round at pool start; rounds then start `INTERVAL` apart. A
test changes a server midway between two rounds, so the round due next is the first to see the
change, and the verdict must come exactly `fall` (or `rise`) rounds later, plus the probe's own
duration, within `TOLERANCE`: a wrong count of rounds is a whole `INTERVAL` off.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from lvsha.checks.pool import CheckPool
from lvsha.checks.state import CheckState
from lvsha.checks.targets import check_plan
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict
from lvsha.config import load_text
from lvsha.drill.lab import Host, Lab, wait_until
from tests.netns import servers

pytestmark = pytest.mark.netns

CLIENT = "192.0.2.1"
SERVER = "192.0.2.21"
ABSENT = "192.0.2.99"
"""On the lab's subnet, but no host has it: echo requests go unanswered."""
UNROUTED = "198.51.100.7"
"""The client has no route there."""
VIP = "192.0.2.100"
INTERVAL = 0.4
TIMEOUT = 0.25
RISE = 2
FALL = 3
TOLERANCE = 0.1
"""Loop wake-ups, a probe's own round trip, a server reporting ready just after it bound."""
WAIT = 10.0
"""Longest wait for any verdict: far beyond every window, so a miss fails instead of hanging."""

TIMING = (
    f"{{interval: {INTERVAL}s, timeout: {TIMEOUT}s, retries: 0, rise: {RISE}, fall: {FALL},"
    " warmup: 0}"
)


def virtual_server(vip_port: int, real_server: str, port: int, check: str) -> str:
    return f"""
  - address: {VIP}
    port: {vip_port}
    protocol: TCP
    check_defaults: {TIMING}
    real_servers:
      - address: {real_server}
        port: {port}
        checks: [{check}]
"""


def config(*virtual_servers: str) -> str:
    return "virtual_servers:" + "".join(virtual_servers)


def lab_hosts(lab: Lab) -> tuple[Host, Host]:
    return lab.add_host("client", f"{CLIENT}/24"), lab.add_host("server", f"{SERVER}/24")


class VerdictLog:
    """Every verdict the pool publishes, and a way to wait for the next one of a real server."""

    def __init__(self, pool: CheckPool):
        self.seen: list[RealServerVerdict] = []
        self._arrived = asyncio.Event()
        pool.subscribe(self._record)

    def _record(self, verdict: RealServerVerdict) -> None:
        self.seen.append(verdict)
        self._arrived.set()

    def mark(self) -> int:
        return len(self.seen)

    async def next_of(self, real_server: RealServerId, since: int) -> RealServerVerdict:
        """The first verdict of `real_server` published after position `since`."""
        async with asyncio.timeout(WAIT):
            while True:
                for verdict in self.seen[since:]:
                    if verdict.real_server == real_server:
                        return verdict
                since = len(self.seen)
                self._arrived.clear()
                await self._arrived.wait()


def expected_at(
    first_due: float, changed_by: float, rounds: int, probe_time: float = 0.0
) -> list[float]:
    """When the verdict `rounds` rounds into a change may come. The round due at `first_due` is
    the first that can see it; if the change took until `changed_by` (a server starting), any
    later round up to the first one due after `changed_by` may be the first."""
    firsts = [first_due]
    while firsts[-1] < changed_by:
        firsts.append(firsts[-1] + INTERVAL)
    return [first + (rounds - 1) * INTERVAL + probe_time for first in firsts]


def assert_verdict(
    verdict: RealServerVerdict, health: Health, reason: str, expected: list[float]
) -> None:
    assert (verdict.health, verdict.reason) == (health, reason)
    assert any(abs(verdict.at - at) <= TOLERANCE for at in expected), (
        f"{verdict.real_server} {health.value} at {verdict.at:.3f}, want one of "
        f"{', '.join(f'{at:.3f}' for at in expected)} (+-{TOLERANCE})"
    )


def state_of(pool: CheckPool, description: str) -> CheckState:
    (state,) = [s for k, s in pool.check_states().items() if k.probe.describe() == description]
    return state


async def quiet_moment(state: CheckState) -> float:
    """Wait until `state`'s check is midway between rounds; the due time of its next round."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(WAIT):
        while not INTERVAL / 4 <= state.next_probe_at - loop.time() <= 3 * INTERVAL / 4:
            await asyncio.sleep(0.005)
    return state.next_probe_at


async def change_and_expect(
    verdicts: VerdictLog,
    state: CheckState,
    real_server: RealServerId,
    change: Callable[[], object],
    *,
    health: Health,
    reason: str,
    probe_time: float = 0.0,
) -> None:
    """Make `change` midway between rounds; `real_server` must then turn `health`, for `reason`,
    `rise` or `fall` rounds later."""
    loop = asyncio.get_running_loop()
    first_due = await quiet_moment(state)
    mark = verdicts.mark()
    await asyncio.to_thread(change)  # starting a server blocks: keep the loop running meanwhile
    changed_by = loop.time()
    verdict = await verdicts.next_of(real_server, mark)
    rounds = RISE if health is Health.HEALTHY else FALL
    assert_verdict(verdict, health, reason, expected_at(first_due, changed_by, rounds, probe_time))


def from_start(started_at: float, rounds: int, probe_time: float = 0.0) -> list[float]:
    """When a verdict `rounds` rounds after pool start comes: the first round starts with it."""
    return expected_at(started_at, started_at, rounds, probe_time)


def run_pool(
    host: Host,
    config_text: str,
    scenario: Callable[[CheckPool, VerdictLog, float], Awaitable[None]],
) -> None:
    """Build the pool from `config_text` and run `scenario(pool, verdicts, started_at)` with it,
    all inside `host`'s namespace."""
    plan = check_plan(load_text(config_text))

    async def main() -> None:
        pool = CheckPool(plan)
        verdicts = VerdictLog(pool)
        started_at = asyncio.get_running_loop().time()
        pool.start()
        try:
            await scenario(pool, verdicts, started_at)
        finally:
            await pool.close()

    host.call(lambda: asyncio.run(main()))


def rs(vip_port: int, address: str, port: int) -> RealServerId:
    """The real server `address`:`port` of the virtual server `virtual_server(vip_port, ...)`."""
    return RealServerId(f"{VIP}:{vip_port}/tcp", address, port)


def test_tcp_listener_stopped_and_restarted(lab: Lab) -> None:
    client, server = lab_hosts(lab)
    listener_args = ("--address", SERVER, "--port", "8080")
    listener = servers.start(server, "tcp", *listener_args)
    web = rs(80, SERVER, 8080)

    async def scenario(pool: CheckPool, verdicts: VerdictLog, started_at: float) -> None:
        assert verdicts.seen[0].health is Health.UNHEALTHY  # alpha: Down until proven
        up = await verdicts.next_of(web, 1)
        assert_verdict(up, Health.HEALTHY, "tcp connect ok", from_start(started_at, RISE))
        state = state_of(pool, f"tcp {SERVER}:8080")
        await change_and_expect(
            verdicts,
            state,
            web,
            lambda: servers.stop(listener),
            health=Health.UNHEALTHY,
            reason="tcp connect refused",
        )
        await change_and_expect(
            verdicts,
            state,
            web,
            lambda: servers.start(server, "tcp", *listener_args),
            health=Health.HEALTHY,
            reason="tcp connect ok",
        )

    text = config(virtual_server(80, SERVER, 8080, "{type: tcp, alpha: true}"))
    run_pool(client, text, scenario)


def test_http_status_body_digest_and_hang(lab: Lab, tmp_path: Path) -> None:
    client, server = lab_hosts(lab)
    mode_file = tmp_path / "mode"
    servers.set_mode(mode_file, "ok")
    servers.start(
        server, "http", "--address", SERVER, "--port", "80", "--mode-file", str(mode_file)
    )
    digest = hashlib.md5(servers.PAGE).hexdigest()
    web = rs(80, SERVER, 80)

    async def scenario(pool: CheckPool, verdicts: VerdictLog, started_at: float) -> None:
        up = await verdicts.next_of(web, 1)
        assert_verdict(up, Health.HEALTHY, "http body ok", from_start(started_at, RISE))
        state = state_of(pool, f"http {SERVER}:80/health")

        async def switch(mode: str, health: Health, reason: str, probe_time: float = 0) -> None:
            change = functools.partial(servers.set_mode, mode_file, mode)
            await change_and_expect(
                verdicts, state, web, change, health=health, reason=reason, probe_time=probe_time
            )

        await switch("503", Health.UNHEALTHY, "http status 503, want 200-299")
        await switch("ok", Health.HEALTHY, "http body ok")
        await switch("changed", Health.UNHEALTHY, "http body digest mismatch")
        await switch("ok", Health.HEALTHY, "http body ok")
        # A hung request fails when its timeout expires, after its round started.
        await switch("hang", Health.UNHEALTHY, f"timeout after {TIMEOUT} s", probe_time=TIMEOUT)
        await switch("ok", Health.HEALTHY, "http body ok")

    check = f"{{type: http, path: /health, digest: 'md5:{digest}', alpha: true}}"
    run_pool(client, config(virtual_server(80, SERVER, 80, check)), scenario)


def self_signed_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", f"/CN={address}",
            "-addext", f"subjectAltName=IP:{address}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a certificate")
def test_https_self_signed_certificate(lab: Lab, tmp_path: Path) -> None:
    client, server = lab_hosts(lab)
    cert, key = self_signed_certificate(tmp_path, SERVER)
    mode_file = tmp_path / "mode"
    servers.set_mode(mode_file, "ok")
    servers.start(
        server, "http", "--address", SERVER, "--port", "443", "--mode-file", str(mode_file),
        "--cert", str(cert), "--key", str(key),
    )  # fmt: skip
    # One real server in three virtual servers, so each check has a verdict of its own.
    unverified, verified, trusted = rs(443, SERVER, 443), rs(444, SERVER, 443), rs(445, SERVER, 443)
    trusting = f"{{type: https, tls_verify: true, ca_file: '{cert}', alpha: true}}"
    text = config(
        virtual_server(443, SERVER, 443, "{type: https, alpha: true}"),
        # Without alpha the first round decides: the refusal is a published Down.
        virtual_server(444, SERVER, 443, "{type: https, tls_verify: true}"),
        # Trusting the certificate makes the same server pass: the refusal was about trust.
        virtual_server(445, SERVER, 443, trusting),
    )

    async def scenario(pool: CheckPool, verdicts: VerdictLog, started_at: float) -> None:
        refused = await verdicts.next_of(verified, 3)  # 3: past the start-up verdicts
        assert (refused.health, refused.reason) == (
            Health.UNHEALTHY,
            "tls certificate verify failed: self-signed certificate",
        )
        # TLS rounds can be slow (the first loads the CA store; handshakes on a busy machine),
        # so only the round that decided is checked: the first, and the RISE-th.
        assert started_at <= refused.at < started_at + INTERVAL
        for real_server in (unverified, trusted):
            up = await verdicts.next_of(real_server, 3)
            assert (up.health, up.reason) == (Health.HEALTHY, "http status 200")
            assert started_at + (RISE - 1) * INTERVAL <= up.at < started_at + RISE * INTERVAL
        assert pool.verdicts()[verified].health is Health.UNHEALTHY

    run_pool(client, text, scenario)


def test_udp_echo_server_stopped_and_restarted(lab: Lab) -> None:
    client, server = lab_hosts(lab)
    echo_args = ("--address", SERVER, "--port", "7")
    echo = servers.start(server, "udp", *echo_args)
    service = rs(7, SERVER, 7)

    async def scenario(pool: CheckPool, verdicts: VerdictLog, started_at: float) -> None:
        up = await verdicts.next_of(service, 1)
        assert_verdict(up, Health.HEALTHY, "udp reply matched", from_start(started_at, RISE))
        state = state_of(pool, f"udp {SERVER}:7")
        await change_and_expect(
            verdicts,
            state,
            service,
            lambda: servers.stop(echo),
            health=Health.UNHEALTHY,
            reason="udp port unreachable",
        )
        await change_and_expect(
            verdicts,
            state,
            service,
            lambda: servers.start(server, "udp", *echo_args),
            health=Health.HEALTHY,
            reason="udp reply matched",
        )

    check = "{type: udp, payload: lvsha-ping, expect: lvsha-ping, alpha: true}"
    run_pool(client, config(virtual_server(7, SERVER, 7, check)), scenario)


def start_dnsmasq(host: Host) -> subprocess.Popen[bytes]:
    """Debian's dnsmasq answering for svc.lab.test only, in the foreground: its PID is ours."""
    return host.popen(
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
        "--conf-file=/dev/null", "--pid-file", f"--listen-address={SERVER}",
        "--bind-interfaces", "--port=53", f"--address=/svc.lab.test/{SERVER}",
        "--user=root", "--group=root",
    )  # fmt: skip


def dns_answers() -> bool:
    """Whether the lab's dnsmasq answers; call inside the client's namespace."""
    query = dns.message.make_query("svc.lab.test", "A")
    try:
        reply = dns.query.udp(query, SERVER, timeout=0.05)
    except (OSError, dns.exception.Timeout):
        return False
    return bool(reply.answer)


def until_dns_answers() -> None:
    """Wait for dnsmasq to answer; call inside the client's namespace."""
    wait_until(dns_answers, WAIT, what="dnsmasq answering")


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (dnsmasq-base)")
def test_dns_server_stopped_and_restarted(lab: Lab) -> None:
    client, server = lab_hosts(lab)
    dnsmasq = start_dnsmasq(server)
    client.call(until_dns_answers)
    resolver = rs(53, SERVER, 53)
    answer = "dns answer for svc.lab.test/A"

    def restart() -> None:
        start_dnsmasq(server)
        until_dns_answers()  # runs in a thread of the loop's, in the client's namespace

    async def scenario(pool: CheckPool, verdicts: VerdictLog, started_at: float) -> None:
        up = await verdicts.next_of(resolver, 1)
        assert_verdict(up, Health.HEALTHY, answer, from_start(started_at, RISE))
        state = state_of(pool, f"dns {SERVER}:53 svc.lab.test A")
        # The probe does not see the port-unreachable errors: it waits out its timeout.
        await change_and_expect(
            verdicts,
            state,
            resolver,
            lambda: servers.stop(dnsmasq),
            health=Health.UNHEALTHY,
            reason=f"timeout after {TIMEOUT} s",
            probe_time=TIMEOUT,
        )
        await change_and_expect(
            verdicts, state, resolver, restart, health=Health.HEALTHY, reason=answer
        )

    check = "{type: dns, name: svc.lab.test, query_type: A, alpha: true}"
    run_pool(client, config(virtual_server(53, SERVER, 53, check)), scenario)


def test_icmp_reachable_cut_off_absent_and_unrouted(lab: Lab) -> None:
    client, server = lab_hosts(lab)
    live, absent, unrouted = rs(80, SERVER, 80), rs(81, ABSENT, 80), rs(82, UNROUTED, 80)
    text = config(
        virtual_server(80, SERVER, 80, "{type: icmp, alpha: true}"),
        virtual_server(81, ABSENT, 80, "{type: icmp}"),
        virtual_server(82, UNROUTED, 80, "{type: icmp}"),
    )
    no_reply = f"icmp no reply after {TIMEOUT} s"

    async def scenario(pool: CheckPool, verdicts: VerdictLog, started_at: float) -> None:
        up = await verdicts.next_of(live, 3)
        assert_verdict(up, Health.HEALTHY, "icmp echo reply", from_start(started_at, RISE))
        silent = await verdicts.next_of(absent, 3)
        assert_verdict(silent, Health.UNHEALTHY, no_reply, from_start(started_at, 1, TIMEOUT))
        no_route = await verdicts.next_of(unrouted, 3)
        assert_verdict(
            no_route,
            Health.UNHEALTHY,
            "icmp send failed: Network is unreachable",
            from_start(started_at, 1),
        )
        state = state_of(pool, f"icmp {SERVER}")
        await change_and_expect(
            verdicts,
            state,
            live,
            lambda: server.link_up(False),
            health=Health.UNHEALTHY,
            reason=no_reply,
            probe_time=TIMEOUT,
        )
        await change_and_expect(
            verdicts,
            state,
            live,
            lambda: server.link_up(True),
            health=Health.HEALTHY,
            reason="icmp echo reply",
        )

    run_pool(client, text, scenario)
