"""vrrp/params is the one owner of the values derived from an instance's configuration."""

from __future__ import annotations

import json
from ipaddress import IPv4Interface
from typing import Any

import pytest

from lvsha.config import LvshaConfig, load_text
from lvsha.drill.scenarios import Election
from lvsha.vrrp.machine import InstanceParams, VrrpMachine
from lvsha.vrrp.params import (
    advert_for,
    advert_interval_units,
    instance_params,
    is_address_owner,
    receiving_instance,
)
from lvsha.vrrp.wire import AuthType, VrrpVersion


def config(**instance: Any) -> LvshaConfig:
    body = {
        "interface": "eth0",
        "virtual_router_id": 42,
        "virtual_ipaddresses": ["192.0.2.10/24"],
        **instance,
    }
    return load_text(json.dumps({"vrrp_instances": {"VI": body}}))


@pytest.mark.parametrize(
    ("version", "seconds", "units"),
    [(2, 1.0, 1), (2, 255.0, 255), (3, 0.01, 1), (3, 1.0, 100), (3, 0.1, 10), (3, 40.95, 4095)],
)
def test_advert_interval_units_are_whole_seconds_in_v2_and_centiseconds_in_v3(
    version: int, seconds: float, units: int
) -> None:
    assert advert_interval_units(version, seconds) == units  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "seconds"), [(2, 0.5), (2, 256.0), (3, 0.005), (3, 41.0)])
def test_advert_interval_units_refuse_what_the_version_cannot_carry(
    version: int, seconds: float
) -> None:
    with pytest.raises(ValueError, match="advert interval"):
        advert_interval_units(version, seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "seconds"), [(2, 3.0), (3, 0.25)])
def test_advert_receive_checks_and_machine_agree_on_the_interval(
    version: int, seconds: float
) -> None:
    cfg = config(version=version, advert_interval=seconds)
    inst = cfg.vrrp_instances["VI"]
    sent = advert_for(inst)
    assert sent.advert_interval_seconds == pytest.approx(seconds)
    assert receiving_instance(inst).advert_interval == sent.advert_interval
    params = instance_params(cfg, "VI", IPv4Interface("192.0.2.1/24").ip)
    assert params.advert_interval == seconds


def test_v2_password_is_in_the_advert_and_the_receive_checks() -> None:
    inst = config(authentication={"type": "PASS", "password": "secret"}).vrrp_instances["VI"]
    assert advert_for(inst).auth_type is AuthType.SIMPLE_PASSWORD
    assert advert_for(inst).auth_data == b"secret"
    assert receiving_instance(inst).auth_password == b"secret"
    assert advert_for(inst).version is VrrpVersion.V2


def test_the_owner_is_priority_255() -> None:
    owner = config(priority=255, mcast_src_ip="192.0.2.10").vrrp_instances["VI"]
    assert is_address_owner(owner)
    assert receiving_instance(owner).address_owner
    assert not is_address_owner(config().vrrp_instances["VI"])


@pytest.mark.parametrize("version", [2, 3])
def test_the_drill_derives_master_down_interval_as_the_machine_does(version: int) -> None:
    # v2 Skew_Time is (256 - priority) / 256 whatever the interval; v3 scales it by the
    # interval (RFC 3768 / RFC 5798 section 6.1). The drill used the v3 rule for both.
    interval = 2.0
    election = Election(42, IPv4Interface("192.0.2.10/24"), "eth0", interval, version=version)  # type: ignore[arg-type]
    machine = VrrpMachine(
        InstanceParams(
            name="VI",
            vrid=42,
            version=version,  # type: ignore[arg-type]
            priority=100,
            advert_interval=interval,
            primary_address=IPv4Interface("192.0.2.1/24").ip,
            vips=(IPv4Interface("192.0.2.10/24"),),
        )
    )
    assert election.master_down_interval(100) == pytest.approx(machine.master_down_interval())
    skew = 156 / 256 if version == 2 else 156 * interval / 256
    assert election.master_down_interval(100) == pytest.approx(3 * interval + skew)
