"""The real server and virtual server metrics, from a syncer running on the in-memory table,
rendered with the checker's families and read back as Prometheus reads them."""

from __future__ import annotations

from lvsha.checks.metrics import FAMILIES
from lvsha.checks.verdict import Health, RealServerId, RealServerVerdict
from lvsha.config import load_text
from lvsha.daemon.metrics import render
from lvsha.ipvs.metrics import real_server_samples, virtual_server_samples
from lvsha.ipvs.model import DestinationKey
from lvsha.ipvs.specs import configured_services, virtual_server_labels
from lvsha.ipvs.syncer import IpvsSyncer
from tests.tools.exposition import parsed, promtool_accepts, values
from tests.unit.ipvs.test_syncer import (
    ALL_IDS,
    DNS,
    DNS_A,
    MAIL,
    MAIL_A,
    MAIL_B,
    MAIL_C,
    WEB,
    WEB_B,
    RecordingPort,
    dest,
    eventually,
    port,
    start,
    syncers,
    verdict,
)

__all__ = ["port", "syncers"]  # fixtures, imported for pytest


def verdicts_of(*changed: RealServerVerdict) -> dict[RealServerId, RealServerVerdict]:
    verdicts = {i: verdict(i, Health.HEALTHY) for i in ALL_IDS}
    verdicts.update({v.real_server: v for v in changed})
    return verdicts


async def exposition(
    syncer: IpvsSyncer, verdicts: dict[RealServerId, RealServerVerdict], *, counted: bool = True
) -> str:
    labels = virtual_server_labels(syncer.services)
    counters = syncer.counters if counted else None
    samples = [
        *virtual_server_samples(syncer, labels),
        *real_server_samples(verdicts, syncer, labels, counters),
    ]
    return render(samples, FAMILIES)


def key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


async def test_each_real_server_is_up_with_its_weight_in_the_kernel_and_connections(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    port.by_hand().set_connections(WEB, DestinationKey(dest("10.0.0.1", 80, 1).address, 80), 7, 30)
    # Drained: in the table at weight 0. Down, without inhibit: out of the table.
    drained = verdict(WEB_B, Health.DISABLED, probed=False)
    down = verdict(MAIL_A, Health.UNHEALTHY)
    for changed in (drained, down):
        syncer.on_verdict(changed)
    await eventually(lambda: "10.0.0.21" not in port.weights(MAIL), "mail's first one out")
    await eventually(lambda: port.weights(WEB).get("10.0.0.2") == 0, "web's second drained")
    await syncer.read_table()  # the counters of a re-read
    families = parsed(await exposition(syncer, verdicts_of(drained, down)))

    up = values(families["lvsha_real_server_up"])
    assert len(up) == len(ALL_IDS)  # every configured real server, in the table or not
    assert up[key({"virtual_server": "web", "real_server": "10.0.0.1:80"})] == 1.0
    assert up[key({"virtual_server": "web", "real_server": "10.0.0.2:80"})] == 0.0
    assert up[key({"virtual_server": "mail", "real_server": "10.0.0.21:25"})] == 0.0

    weight = values(families["lvsha_real_server_weight"])
    assert weight[key({"virtual_server": "web", "real_server": "10.0.0.1:80"})] == 2.0
    assert weight[key({"virtual_server": "web", "real_server": "10.0.0.2:80"})] == 0.0
    # Out of the table: no weight at all (not 0, which says drained).
    assert key({"virtual_server": "mail", "real_server": "10.0.0.21:25"}) not in weight

    connections = values(families["lvsha_real_server_connections"])
    web_a = {"virtual_server": "web", "real_server": "10.0.0.1:80"}
    assert connections[key({**web_a, "state": "active"})] == 7.0
    assert connections[key({**web_a, "state": "inactive"})] == 30.0
    mail_a = {"virtual_server": "mail", "real_server": "10.0.0.21:25"}
    assert key({**mail_a, "state": "active"}) not in connections


async def test_connections_are_left_out_until_counters_were_read(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    families = parsed(await exposition(syncer, verdicts_of(), counted=False))
    assert "lvsha_real_server_connections" not in families
    assert len(values(families["lvsha_real_server_weight"])) == len(ALL_IDS)


async def test_quorum_live_weight_and_sorry_server_per_virtual_server(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    down = [verdict(real_server, Health.UNHEALTHY) for real_server in (MAIL_A, MAIL_B, MAIL_C)]
    for changed in down:
        syncer.on_verdict(changed)
    await eventually(lambda: MAIL in syncer.sorry_active, "the sorry server in")
    families = parsed(await exposition(syncer, verdicts_of(*down)))
    quorum = values(families["lvsha_virtual_server_quorum"])
    assert quorum == {
        key({"virtual_server": "web"}): 1.0,
        key({"virtual_server": "dns"}): 1.0,
        key({"virtual_server": "mail"}): 0.0,
    }
    live = values(families["lvsha_virtual_server_live_weight"])
    assert live[key({"virtual_server": "web"})] == 3.0
    assert live[key({"virtual_server": "mail"})] == 0.0
    # Only mail has a sorry server.
    sorry = values(families["lvsha_virtual_server_sorry_server_active"])
    assert sorry == {key({"virtual_server": "mail"}): 1.0}


async def test_the_exposition_passes_promtool(
    port: RecordingPort, syncers: list[IpvsSyncer]
) -> None:
    syncer = await start(port, syncers)
    syncer.on_verdict(verdict(DNS_A, Health.UNHEALTHY))
    await eventually(lambda: port.weights(DNS).get("10.0.0.11") == 0, "inhibited")
    await syncer.read_table()
    promtool_accepts(await exposition(syncer, verdicts_of(verdict(DNS_A, Health.UNHEALTHY))))


def test_an_unnamed_virtual_server_is_its_service_and_a_shared_name_gets_it_added() -> None:
    config = load_text(
        "virtual_servers:\n"
        "  - {address: 192.0.2.1, port: 80, protocol: TCP, real_servers: [{address: 10.0.0.1}]}\n"
        "  - {name: api, address: 192.0.2.1, port: 443, protocol: TCP,\n"
        "     real_servers: [{address: 10.0.0.1}]}\n"
        "  - {name: api, address: 192.0.2.2, port: 443, protocol: TCP,\n"
        "     real_servers: [{address: 10.0.0.1}]}\n"
        "  - {name: web, fwmark: 7, family: ipv4, real_servers: [{address: 10.0.0.1, port: 80}]}\n"
    )
    labels = virtual_server_labels(configured_services(config))
    assert sorted(labels.values()) == [
        "TCP 192.0.2.1:80",
        "api (TCP 192.0.2.1:443)",
        "api (TCP 192.0.2.2:443)",
        "web",
    ]
