"""strict, skip_check_adv_addr, the multicast groups, dont_track_primary and accept: false in
the receive checks, the socket settings and the engine."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest

from lvsha.config import LvshaConfig, load_text
from lvsha.net.links import LinkChanged
from lvsha.net.nft import MISSING_NFT, Address, FirewallError, MemoryNoAccept
from lvsha.vrrp.engine import StartupError
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.params import multicast_group, no_accept_addresses, receiving_instance
from lvsha.vrrp.receive import advert_event
from lvsha.vrrp.socket import VrrpSocketSettings
from lvsha.vrrp.wire import (
    VRRP_MULTICAST_IPV4,
    Advert,
    AdvertDropError,
    DropCounter,
    DropReason,
    ReceivedAdvert,
    VrrpVersion,
    check_advert_for_instance,
)
from tests.unit.vrrp.engine_harness import INTERVAL, PEER, Harness, instance, vip, wait_for

M, B, F = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT


def config(instances: dict[str, dict[str, Any]], **vrrp: Any) -> LvshaConfig:
    return load_text(json.dumps({"global": {"vrrp": vrrp}, "vrrp_instances": instances}))


OURS = IPv4Address("192.0.2.10")
THEIRS = IPv4Address("192.0.2.99")


def received(*addresses: IPv4Address, priority: int = 200) -> ReceivedAdvert:
    advert = Advert(VrrpVersion.V3, 1, priority, 10, addresses)
    return ReceivedAdvert(PEER, VRRP_MULTICAST_IPV4, advert, 0)


# --- receive checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strict", "skip", "refused"),
    [(False, False, False), (False, True, False), (True, False, True), (True, True, False)],
)
def test_a_different_address_list_is_refused_only_strict_without_skip(
    strict: bool, skip: bool, refused: bool
) -> None:
    cfg = config({"VI": instance(1, vip(10), skip_check_adv_addr=skip)}, strict=strict)
    checks = receiving_instance(cfg.vrrp_instances["VI"], strict)
    assert checks.refuse_address_mismatch is refused
    drops = DropCounter()
    event = advert_event(received(THEIRS), checks, frozenset(), drops, state=B)
    if refused:
        assert event is None
        assert drops[DropReason.ADDRESS_LIST_REFUSED] == 1
        assert drops[DropReason.ADDRESS_LIST_MISMATCH] == 0
    else:
        assert event is not None and event.priority == 200
        assert drops[DropReason.ADDRESS_LIST_MISMATCH] == 1  # taken, and counted
        assert drops[DropReason.ADDRESS_LIST_REFUSED] == 0
    # the same list is taken in every mode, and counts nothing
    drops = DropCounter()
    assert advert_event(received(OURS), checks, frozenset(), drops, state=B) is not None
    assert drops.total == 0


def test_the_refusal_names_both_lists_and_the_way_out() -> None:
    cfg = config({"VI": instance(1, vip(10))}, strict=True)
    checks = receiving_instance(cfg.vrrp_instances["VI"], True)
    with pytest.raises(AdvertDropError) as caught:
        check_advert_for_instance(received(THEIRS), checks)
    assert caught.value.reason is DropReason.ADDRESS_LIST_REFUSED
    assert caught.value.detail == (
        "virtual addresses differ: only theirs 192.0.2.99, only ours 192.0.2.10 "
        "(strict mode: RFC 3768 7.1; skip_check_adv_addr takes them)"
    )


def test_the_address_owner_is_never_refused_for_its_list() -> None:
    cfg = config({"VI": instance(1, vip(10))}, strict=True)
    checks = receiving_instance(cfg.vrrp_instances["VI"], True)
    check_advert_for_instance(received(THEIRS, priority=255), checks)  # does not raise


# --- params ---------------------------------------------------------------------------------


def test_the_multicast_group_comes_from_global_by_family_and_not_for_unicast() -> None:
    cfg = config(
        {
            "V4": instance(1, vip(10)),
            "V6": {**instance(1, "2001:db8::10/64"), "version": 3},
            "UNI": instance(2, vip(11), unicast_peers=["192.0.2.2"]),
        },
        mcast_group4="224.0.0.100",
        mcast_group6="ff02::1:12",
    )
    inst = cfg.vrrp_instances
    assert multicast_group(cfg, inst["V4"]) == IPv4Address("224.0.0.100")
    assert multicast_group(cfg, inst["V6"]) == IPv6Address("ff02::1:12")
    assert multicast_group(cfg, inst["UNI"]) is None
    default = config({"V4": instance(1, vip(10))})
    assert multicast_group(default, default.vrrp_instances["V4"]) == VRRP_MULTICAST_IPV4


def test_no_accept_addresses_are_every_vip_of_non_owners_with_accept_off() -> None:
    cfg = config(
        {
            "OFF": instance(
                1, vip(10), accept=False, virtual_ipaddresses_excluded=["198.51.100.7/24"]
            ),
            "ON": instance(2, vip(20)),
            "OWNER": instance(3, vip(30), accept=False, priority=255, mcast_src_ip="192.0.2.30"),
        }
    )
    assert no_accept_addresses(cfg) == {ip_address("192.0.2.10"), ip_address("198.51.100.7")}


# --- socket settings ------------------------------------------------------------------------


def test_the_socket_sends_to_and_joins_the_configured_group() -> None:
    own = IPv4Address("192.0.2.1")
    assert VrrpSocketSettings("eth0", own).group == VRRP_MULTICAST_IPV4
    group = IPv4Address("224.0.0.100")
    settings = VrrpSocketSettings("eth0", own, (), group)
    assert settings.group == group
    assert settings.destinations == (group,)
    peers = VrrpSocketSettings("eth0", own, (IPv4Address("192.0.2.2"),), None)
    assert peers.destinations == (IPv4Address("192.0.2.2"),)
    for bad in (IPv4Address("192.0.2.5"), IPv6Address("ff02::12")):
        with pytest.raises(ValueError, match="is not an IPv4 multicast address"):
            VrrpSocketSettings("eth0", own, (), bad)


# --- the engine -----------------------------------------------------------------------------


async def test_link_down_puts_the_instance_in_fault_without_dont_track_primary(
    lab: Harness,
) -> None:
    engine = await lab.start(config({"VI": instance(1, vip(10), priority=150)}))
    await wait_for(lambda: lab.state("VI") is M)
    engine.link_changed(LinkChanged("eth0", False))
    assert lab.state("VI") is F
    await wait_for(lambda: "192.0.2.10/24" not in lab.addresses.on("eth0"))


async def test_dont_track_primary_stays_master_when_its_link_goes_down(lab: Harness) -> None:
    engine = await lab.start(
        config({"VI": instance(1, vip(10), priority=150, dont_track_primary=True)})
    )
    await wait_for(lambda: lab.state("VI") is M)
    engine.link_changed(LinkChanged("eth0", False))
    sent = len(lab.socket("VI").sent)
    await wait_for(lambda: len(lab.socket("VI").sent) >= sent + 3)  # still advertising
    assert lab.state("VI") is M
    assert "192.0.2.10/24" in lab.addresses.on("eth0")
    assert engine.instances["VI"].runner.machine.fault_reasons == frozenset()


async def test_dont_track_primary_starts_out_of_fault_with_the_link_down(lab: Harness) -> None:
    lab.links["eth0"] = False
    await lab.start(config({"VI": instance(1, vip(10), dont_track_primary=True)}))
    await wait_for(lambda: lab.state("VI") is M)


async def test_a_reload_of_dont_track_primary_follows_the_link_at_once(lab: Harness) -> None:
    tracked = config({"VI": instance(1, vip(10), priority=150, dont_track_primary=True)})
    engine = await lab.start(tracked)
    await wait_for(lambda: lab.state("VI") is M)
    engine.link_changed(LinkChanged("eth0", False))
    outcome = await engine.apply(config({"VI": instance(1, vip(10), priority=150)}))
    assert outcome.ok, outcome
    assert "dont_track_primary" in outcome.summary
    assert lab.state("VI") is F
    outcome = await engine.apply(tracked)
    assert outcome.ok, outcome
    await wait_for(lambda: lab.state("VI") is M)


async def test_the_socket_of_an_instance_uses_the_configured_group(lab: Harness) -> None:
    await lab.start(config({"VI": instance(1, vip(10))}, mcast_group4="224.0.0.100"))
    assert lab.socket("VI").settings.group == IPv4Address("224.0.0.100")


async def test_a_new_group_restarts_the_instance_on_it(lab: Harness) -> None:
    engine = await lab.start(config({"VI": instance(1, vip(10))}, mcast_group4="224.0.0.100"))
    old = lab.socket("VI")
    outcome = await engine.apply(config({"VI": instance(1, vip(10))}, mcast_group4="224.0.0.101"))
    assert outcome.ok, outcome
    assert "VI: restarted as VI (multicast group 224.0.0.100 -> 224.0.0.101)" in outcome.summary
    assert lab.socket("VI") is not old
    assert lab.socket("VI").settings.group == IPv4Address("224.0.0.101")
    await wait_for(lambda: old.closed)


async def hear_for(lab: Harness, name: str, seconds: float, *addresses: str) -> None:
    """A peer at priority 200 advertising `addresses` every half interval for `seconds`."""
    sock = lab.socket(name)
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        sock.hear(1, 200, addresses)
        await asyncio.sleep(INTERVAL / 2)  # the peer's pace, not a wait for something


@pytest.mark.parametrize("skip", [False, True])
async def test_strict_backup_refuses_a_master_with_another_list_unless_skipping(
    lab: Harness, skip: bool
) -> None:
    engine = await lab.start(
        config({"VI": instance(1, vip(10), skip_check_adv_addr=skip)}, strict=True)
    )
    await hear_for(lab, "VI", 1.0, vip(99))
    drops = lab.socket("VI").drops
    if skip:
        assert lab.state("VI") is B
        assert drops[DropReason.ADDRESS_LIST_MISMATCH] >= 10
        assert engine.instances["VI"].adverts_received >= 10
    else:
        assert lab.state("VI") is M  # heard nobody it accepts: took over
        assert drops[DropReason.ADDRESS_LIST_REFUSED] >= 10
        assert engine.instances["VI"].adverts_received == 0
        status = engine.status()[0]
        assert status["drops"]["address_list_refused"] >= 10


async def test_turning_strict_on_by_reload_refuses_the_other_list_from_then_on(
    lab: Harness,
) -> None:
    engine = await lab.start(config({"VI": instance(1, vip(10))}))
    await hear_for(lab, "VI", 0.5, vip(99))
    assert lab.state("VI") is B
    outcome = await engine.apply(config({"VI": instance(1, vip(10))}, strict=True))
    assert outcome.ok, outcome
    assert "VI: strict" in outcome.summary
    await hear_for(lab, "VI", 1.0, vip(99))
    assert lab.state("VI") is M


class JournalFilter(MemoryNoAccept):
    """Writes each change to the addresses' journal, to order it against the VIP changes."""

    def __init__(self, lab: Harness) -> None:
        super().__init__()
        self._journal = lab.addresses.journal

    async def set_addresses(self, addresses: frozenset[Address]) -> None:
        await super().set_addresses(addresses)
        self._journal.append(("filter", "", ",".join(sorted(map(str, addresses)))))

    async def remove(self) -> None:
        await super().remove()
        self._journal.append(("filter", "", "removed"))


async def test_accept_false_drops_from_start_follows_reloads_and_is_removed_at_stop(
    lab: Harness,
) -> None:
    no_accept = JournalFilter(lab)
    both = {"VI": instance(1, vip(10), state="MASTER", accept=False)}
    engine = await lab.start(config(both), no_accept=no_accept)
    assert lab.addresses.journal[0] == ("filter", "", "192.0.2.10")  # before any VIP
    await wait_for(lambda: lab.state("VI") is M and "192.0.2.10/24" in lab.addresses.on("eth0"))
    # a new no-accept VIP is dropped before the master adds it
    grown = {"VI": instance(1, vip(10), vip(11), state="MASTER", accept=False)}
    outcome = await engine.apply(config(grown))
    assert outcome.ok, outcome
    journal = lab.addresses.journal
    assert journal.index(("filter", "", "192.0.2.10,192.0.2.11")) < journal.index(
        ("add", "eth0", "192.0.2.11/24")
    )
    # accept back on: dropped until the commit, then not at all
    outcome = await engine.apply(config({"VI": instance(1, vip(10), state="MASTER")}))
    assert outcome.ok, outcome
    assert journal[-1] == ("filter", "", "")
    assert no_accept.addresses == frozenset()
    await engine.stop()
    assert no_accept.history[-1] is None
    lab.engine = None


async def test_a_vip_leaving_accept_false_stays_dropped_until_it_is_off(lab: Harness) -> None:
    no_accept = JournalFilter(lab)
    two = {"VI": instance(1, vip(10), vip(11), state="MASTER", accept=False)}
    engine = await lab.start(config(two), no_accept=no_accept)
    await wait_for(lambda: "192.0.2.11/24" in lab.addresses.on("eth0"))
    outcome = await engine.apply(config({"VI": instance(1, vip(10), state="MASTER", accept=False)}))
    assert outcome.ok, outcome
    journal = lab.addresses.journal
    assert journal.index(("remove", "eth0", "192.0.2.11/24")) < journal.index(
        ("filter", "", "192.0.2.10")
    )


async def test_accept_false_without_a_filter_refuses_to_start(lab: Harness) -> None:
    with pytest.raises(StartupError, match="accept: false is configured"):
        await lab.start(config({"VI": instance(1, vip(10), accept=False)}))


async def test_a_filter_that_fails_stops_the_start_and_the_reload(lab: Harness) -> None:
    failing = MemoryNoAccept()
    failing.fail_with = FirewallError("nft refused the rules of table inet lvsha_vrrp: boom")
    with pytest.raises(StartupError, match=r"start: accept: false: nft refused .*: boom"):
        await lab.start(config({"VI": instance(1, vip(10), accept=False)}), no_accept=failing)
    lab.engine = None
    working = MemoryNoAccept()
    engine = await lab.start(config({"VI": instance(1, vip(10))}), no_accept=working)
    working.fail_with = FirewallError("nft refused the rules of table inet lvsha_vrrp: boom")
    outcome = await engine.apply(config({"VI": instance(1, vip(10), accept=False)}))
    assert not outcome.ok
    assert outcome.errors == (
        "reload: accept: false: nft refused the rules of table inet lvsha_vrrp: boom",
    )
    assert engine.instances["VI"].config.accept is True  # the running one is unchanged


class NoNft(MemoryNoAccept):
    """What NftNoAccept does on a host without nft."""

    async def set_addresses(self, addresses: frozenset[Address]) -> None:
        if addresses:
            raise FirewallError(MISSING_NFT)
        await super().set_addresses(addresses)


async def test_a_reload_to_accept_false_without_nft_says_so_once(lab: Harness) -> None:
    engine = await lab.start(config({"VI": instance(1, vip(10))}), no_accept=NoNft())
    outcome = await engine.apply(config({"VI": instance(1, vip(10), accept=False)}))
    assert outcome.errors == (f"reload: {MISSING_NFT}",)
    assert engine.instances["VI"].config.accept is True


# --- strict: a master discards lower-priority adverts ----------------------------------------


def test_a_strict_master_discards_a_lower_priority_advert_instead_of_reasserting() -> None:
    from tests.unit.vrrp.test_machine import HIGHER_V4, advert, as_master  # noqa: PLC0415

    strict = as_master(20.0, priority=150, reassert=False)
    assert strict.handle(advert(HIGHER_V4, 100), 20.5) == []  # RFC 5798 6.4.3
    assert strict.state is M
    assert strict.next_deadline() == pytest.approx(21.0)  # its own schedule goes on
    assert as_master(20.0, priority=150).handle(advert(HIGHER_V4, 100), 20.5) != []


def test_strict_mode_sets_the_machine_to_discard() -> None:
    from lvsha.vrrp.params import instance_params  # noqa: PLC0415

    for strict in (False, True):
        cfg = config({"VI": instance(1, vip(10))}, strict=strict)
        assert instance_params(cfg, "VI", IPv4Address("192.0.2.1")).reassert is not strict
