"""The receive path of one instance: a raw read in, a machine event (or a counted drop) out."""

from __future__ import annotations

from lvsha.config.vrrp import VrrpInstance
from lvsha.vrrp.events import AdvertReceived
from lvsha.vrrp.wire import (
    AdvertDropError,
    AuthType,
    DropCounter,
    DropReason,
    ReceivedAdvert,
    ReceivingInstance,
    VrrpVersion,
    check_advert_for_instance,
)


def receiving_instance(inst: VrrpInstance) -> ReceivingInstance:
    """What received adverts are checked against: adverts carry only the non-excluded VIPs."""
    auth = inst.authentication
    return ReceivingInstance(
        vrid=inst.virtual_router_id,
        version=VrrpVersion(inst.version),
        advert_interval=(
            int(inst.advert_interval) if inst.version == 2 else round(inst.advert_interval * 100)
        ),
        virtual_addresses=frozenset(vip.address.ip for vip in inst.virtual_ipaddresses),
        address_owner=inst.priority == 255,
        auth_type=AuthType.SIMPLE_PASSWORD if auth is not None else AuthType.NONE,
        auth_password=auth.password.encode()[:8] if auth is not None else b"",
    )


def advert_event(
    received: ReceivedAdvert,
    instance: ReceivingInstance,
    own_addresses: frozenset[object],
    drops: DropCounter,
) -> AdvertReceived | None:
    """The machine event for a decoded advert, or None when it is not for us (counted).

    `own_addresses` are this router's source addresses: a multicast group loops our own
    adverts back on some setups, and they must not be taken for a peer's.
    """
    if received.source in own_addresses:
        drops.record(DropReason.OWN_ADVERT)
        return None
    try:
        check_advert_for_instance(received, instance)
    except AdvertDropError as drop:
        drops.record(drop.reason)
        return None
    if received.source.version != next(iter(instance.virtual_addresses)).version:
        drops.record(DropReason.FAMILY_MISMATCH)
        return None
    return AdvertReceived(
        source=received.source,
        priority=received.advert.priority,
        advert_interval=received.advert.advert_interval_seconds,
    )
