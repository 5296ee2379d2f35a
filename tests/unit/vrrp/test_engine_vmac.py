"""The VRRP engine with use_vmac: the VMAC interface comes before the socket, the VIPs go on
it, adverts leave from it (or from the base with vmac_xmit_base), status names it, and it goes
when its instance stops or a reload takes it away, never while another instance uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from lvsha.config import LvshaConfig
from lvsha.net.addresses import MemoryInterface
from lvsha.net.vmac import MemoryVmacs, VmacSpec
from lvsha.vrrp.engine import StartupError, VrrpEngine
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.params import held_addresses, rebuild_reason
from tests.tools import api_schema
from tests.unit.vrrp.engine_harness import FakeSocket, Harness, config, instance, vip, wait_for

VMAC = "vrrp.1"


class LabVmacs(MemoryVmacs):
    """VMACs in memory that also appear as interfaces of the harness's memory addresses."""

    def __init__(self, lab: Harness) -> None:
        super().__init__()
        self.lab = lab
        self.refuse = False

    async def ensure(self, spec: VmacSpec) -> str:
        if self.refuse:
            raise PermissionError(1, "Operation not permitted")
        interfaces = self.lab.addresses.interfaces
        interfaces.setdefault(spec.name, MemoryInterface(100 + len(interfaces), spec.mac))
        return await super().ensure(spec)

    async def remove(self, name: str) -> bool:
        self.lab.addresses.interfaces.pop(name, None)
        return await super().remove(name)


@pytest.fixture
async def lab() -> AsyncIterator[tuple[Harness, LabVmacs]]:
    harness = Harness()
    yield harness, LabVmacs(harness)
    await harness.stop()


async def start(lab: Harness, vmacs: LabVmacs, cfg: LvshaConfig) -> VrrpEngine:
    lab.engine = VrrpEngine(
        cfg,
        addresses=lab.addresses,
        announcer=lab.announcer,
        notifier=lab.notifier,
        report=lab.reports.append,
        open_socket=lab._open,
        accept_local=lambda interface: None,
        vmacs=vmacs,
    )
    await lab.engine.start(lab.links)
    return lab.engine


def vmac_instance(**settings: Any) -> dict[str, Any]:
    return instance(1, vip(10), state="MASTER", use_vmac=True, **settings)


async def test_the_master_holds_its_vips_on_the_vmac_and_announces_from_it(
    lab: tuple[Harness, LabVmacs],
) -> None:
    harness, vmacs = lab
    engine = await start(harness, vmacs, config({"VI_1": vmac_instance()}))
    assert vmacs.links == {VMAC: VmacSpec(VMAC, "eth0", 1, "ipv4")}
    sock = harness.socket("VI_1")
    assert (sock.settings.interface, sock.settings.send_interface) == (VMAC, None)
    assert str(sock.settings.source) == "192.0.2.1"  # the base interface's address
    await wait_for(lambda: harness.state("VI_1") is VrrpState.MASTER)
    await wait_for(lambda: harness.addresses.on(VMAC) == {"192.0.2.10/24"})
    assert harness.addresses.on("eth0") == {"192.0.2.1/24"}
    await wait_for(lambda: harness.announcer.announcements)
    assert {n.interface for n in harness.announcer.announcements} == {VMAC}
    (status,) = engine.status()
    api_schema.check_def("status", "vrrp_instance", status)
    assert (status["interface"], status["vmac_interface"]) == ("eth0", VMAC)
    await harness.stop()
    assert vmacs.links == {}
    assert vmacs.calls[-1] == ("removed", VMAC)


async def test_xmit_base_sends_from_the_base_and_hears_on_the_vmac(
    lab: tuple[Harness, LabVmacs],
) -> None:
    harness, vmacs = lab
    await start(harness, vmacs, config({"VI_1": vmac_instance(vmac_xmit_base=True)}))
    sock = harness.socket("VI_1")
    assert (sock.settings.interface, sock.settings.send_interface) == (VMAC, "eth0")


async def test_without_vmac_nothing_is_created_and_status_says_none(
    lab: tuple[Harness, LabVmacs],
) -> None:
    harness, vmacs = lab
    engine = await start(harness, vmacs, config({"VI_1": instance(1, vip(10))}))
    assert engine.status()[0]["vmac_interface"] is None
    await harness.stop()
    assert vmacs.calls == []


async def test_a_vmac_that_cannot_be_made_stops_the_start_naming_it(
    lab: tuple[Harness, LabVmacs],
) -> None:
    harness, vmacs = lab
    vmacs.refuse = True
    with pytest.raises(StartupError, match=r"VI_1: cannot set up its VMAC interface vrrp\.1"):
        await start(harness, vmacs, config({"VI_1": vmac_instance()}))


async def test_a_rebuild_on_the_same_vmac_keeps_it_and_dropping_use_vmac_removes_it(
    lab: tuple[Harness, LabVmacs],
) -> None:
    harness, vmacs = lab
    engine = await start(harness, vmacs, config({"VI_1": vmac_instance()}))
    await wait_for(lambda: harness.addresses.on(VMAC) == {"192.0.2.10/24"})
    old = engine.instances["VI_1"]
    outcome = await engine.apply(config({"VI_1": vmac_instance(vmac_xmit_base=True)}))
    assert outcome.ok, outcome
    assert "restarted as VI_1 (vmac_xmit_base false -> true)" in outcome.summary
    await wait_for(lambda: old.closed)
    assert VMAC in vmacs.links, "the rebuilt instance still uses it"
    new = engine.instances["VI_1"].socket
    assert isinstance(new, FakeSocket) and new.settings.send_interface == "eth0"

    current = engine.instances["VI_1"]
    outcome = await engine.apply(config({"VI_1": instance(1, vip(10), state="MASTER")}))
    assert outcome.ok, outcome
    assert "restarted as VI_1 (VMAC interface vrrp.1 -> none)" in outcome.summary
    await wait_for(lambda: current.closed)
    assert VMAC not in vmacs.links
    await wait_for(lambda: harness.addresses.on("eth0") == {"192.0.2.1/24", "192.0.2.10/24"})


def test_held_addresses_and_rebuild_reasons() -> None:
    cfg = config(
        {
            "VI_1": vmac_instance(
                vmac_interface="vip1",
                virtual_ipaddresses_excluded=[{"address": "198.51.100.9/24", "device": "eth1"}],
            )
        }
    )
    inst = cfg.vrrp_instances["VI_1"]
    assert [(str(h.address), h.interface) for h in held_addresses(inst)] == [
        ("192.0.2.10/24", "vip1"),
        ("198.51.100.9/24", "eth1"),
    ]
    plain = config({"VI_1": instance(1, vip(10))}).vrrp_instances["VI_1"]
    assert rebuild_reason(plain, inst) == "VMAC interface none -> vip1"
    renamed = inst.model_copy(update={"vmac_interface": "vip2"})
    assert rebuild_reason(inst, renamed) == "VMAC interface vip1 -> vip2"
    assert rebuild_reason(inst, inst) is None
