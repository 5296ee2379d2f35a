"""The IPVS table model: value checks, canonical destination order, key ordering."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from lvsha.ipvs.model import (
    AddressKey,
    Destination,
    Family,
    FwmarkKey,
    Persistence,
    Service,
    ServiceFlags,
    ServiceKey,
    ServiceOptions,
    TransportProtocol,
    service_sort_key,
    table_of,
)

WEB = AddressKey(TransportProtocol.TCP, ip_address("192.0.2.10"), 80)
WEB6 = AddressKey(TransportProtocol.TCP, ip_address("2001:db8::10"), 80)


def test_services_with_the_same_destinations_in_another_order_are_equal() -> None:
    v4 = Destination(ip_address("10.0.0.2"), 80)
    v4_low = Destination(ip_address("10.0.0.1"), 81)
    v6 = Destination(ip_address("2001:db8::1"), 80)

    one = Service(WEB, ServiceOptions(), (v6, v4, v4_low))
    other = Service(WEB, ServiceOptions(), (v4_low, v6, v4))

    assert one == other
    assert one.destinations == (v4_low, v4, v6)
    assert hash(one) == hash(other)


def test_a_destination_listed_twice_is_refused() -> None:
    twice = (Destination(ip_address("10.0.0.1"), 80), Destination(ip_address("10.0.0.1"), 80, 5))

    with pytest.raises(ValueError, match=r"10\.0\.0\.1:80 listed twice"):
        Service(WEB, ServiceOptions(), twice)


def test_a_table_refuses_two_services_with_one_key() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        table_of([Service(WEB), Service(WEB, ServiceOptions(scheduler="rr"))])


def test_service_keys_of_every_kind_sort_together() -> None:
    keys: list[ServiceKey] = [
        FwmarkKey(2, Family.INET6),
        WEB6,
        FwmarkKey(1, Family.INET),
        AddressKey(TransportProtocol.UDP, ip_address("192.0.2.10"), 53),
        WEB,
    ]

    assert sorted(keys, key=service_sort_key) == [
        WEB,
        AddressKey(TransportProtocol.UDP, ip_address("192.0.2.10"), 53),
        WEB6,
        FwmarkKey(1, Family.INET),
        FwmarkKey(2, Family.INET6),
    ]


def test_persistence_prefix_must_fit_the_service_family() -> None:
    Service(WEB6, ServiceOptions(persistence=Persistence(300, 64)))
    with pytest.raises(ValueError, match="longer than 32"):
        Service(WEB, ServiceOptions(persistence=Persistence(300, 64)))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AddressKey(TransportProtocol.TCP, ip_address("192.0.2.1"), 65536), "port"),
        (lambda: FwmarkKey(0, Family.INET), "firewall mark"),
        (lambda: Destination(ip_address("10.0.0.1"), 80, weight=-1), "weight"),
        (lambda: Destination(ip_address("10.0.0.1"), 80, weight=2**31), "weight"),
        (lambda: Destination(ip_address("10.0.0.1"), 80, upper_threshold=2**32), "upper"),
        (lambda: Persistence(0, 32), "timeout"),
        (lambda: ServiceOptions(scheduler=""), "scheduler"),
        (lambda: ServiceOptions(flags=ServiceFlags(0x0001)), "not user-settable"),
    ],
    ids=["port", "fwmark 0", "negative weight", "weight", "threshold", "timeout", "sched", "flag"],
)
def test_values_that_cannot_be_represented_are_refused(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(ValueError, match=message):
        build()


def test_keys_print_as_an_operator_reads_them() -> None:
    assert str(WEB) == "TCP 192.0.2.10:80"
    assert str(WEB6) == "TCP [2001:db8::10]:80"
    assert str(FwmarkKey(7, Family.INET6)) == "FWM 7 INET6"
    assert str(Destination(ip_address("2001:db8::1"), 80).key) == "[2001:db8::1]:80"
