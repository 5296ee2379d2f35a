"""VrrpEngine.status: every instance as `lvsha status` shows it, in the API's schema."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import pytest

from lvsha.net.links import LinkChanged
from lvsha.vrrp.events import VrrpState
from lvsha.vrrp.wire import DropReason
from tests.tools import api_schema
from tests.unit.vrrp.engine_harness import OWN, PEER, Harness, config, instance, vip, wait_for

M, B = VrrpState.MASTER, VrrpState.BACKUP


def one(lab: Harness, name: str = "VI_1") -> dict[str, Any]:
    assert lab.engine is not None
    found = [i for i in lab.engine.status() if i["name"] == name]
    assert len(found) == 1
    api_schema.check_def("status", "vrrp_instance", found[0])
    json.dumps(found[0])  # what the VRRP process sends
    return found[0]


def test_the_validator_refuses_what_the_schema_refuses() -> None:
    with pytest.raises(jsonschema.ValidationError):
        api_schema.check_def("status", "vrrp_instance", {"name": "VI_1"})


async def test_a_master_shows_itself_as_master(lab: Harness) -> None:
    before = time.time()
    await lab.start(
        config(
            {
                "VI_1": instance(
                    1,
                    vip(10),
                    state="MASTER",
                    priority=120,
                    track_interfaces=[
                        {"interface": "eth1", "weight": -30},
                        {"interface": "eth0", "weight": 5},
                    ],
                )
            }
        )
    )
    await wait_for(lambda: lab.state("VI_1") is M)
    lab.socket("VI_1").drops.record(DropReason.VRID_MISMATCH)
    status = one(lab)
    assert status["state"] == "MASTER"
    assert before <= status["since"] <= time.time()
    assert status["reason"] == "master down timer expired"
    assert status["interface"] == "eth0"
    assert (status["vrid"], status["family"], status["version"]) == (1, "ipv4", 3)
    assert status["base_priority"] == 120
    assert status["effective_priority"] == 125
    assert status["trackers"] == [
        {"tracker": "interface eth1", "healthy": True, "weight": -30, "effect": 0},
        {"tracker": "interface eth0", "healthy": True, "weight": 5, "effect": 5},
    ]
    assert status["master"] == {
        "address": str(OWN),
        "priority": 125,
        "advert_interval": 0.1,
        "heard_at": None,
        "self": True,
    }
    assert status["vips"] == [vip(10)]
    assert status["advert_interval"] == 0.1
    assert status["adverts_sent"] == len(lab.socket("VI_1").sent) >= 1
    assert status["adverts_received"] == 0
    assert status["drops"] == {DropReason.VRID_MISMATCH.value: 1}
    assert status["fault_reasons"] == []
    assert status["handed_over"] is False


async def test_a_backup_shows_the_master_it_hears(lab: Harness) -> None:
    await lab.start(config({"VI_1": instance(1, vip(10))}))
    status = one(lab)
    assert status["state"] == "BACKUP" and status["master"] is None
    lab.socket("VI_1").hear(1, 200, [vip(10)])
    lab.socket("VI_1").hear(1, 200, [vip(10)])
    status = one(lab)
    heard_at = status["master"]["heard_at"]
    assert abs(heard_at - time.time()) < 1.0
    assert status["master"] == {
        "address": str(PEER),
        "priority": 200,
        "advert_interval": 0.1,
        "heard_at": heard_at,
        "self": False,
    }
    assert status["adverts_received"] == 2
    assert status["adverts_sent"] == 0


async def test_a_handed_over_backup_and_a_faulty_one(lab: Harness) -> None:
    lab.links["eth1"] = False
    await lab.start(
        config(
            {
                "VI_1": instance(1, vip(10)),
                "VI_2": instance(2, vip(20), track_interfaces=[{"interface": "eth1", "weight": 0}]),
            }
        ),
        handed_over=["VI_1"],
    )
    status = one(lab, "VI_1")
    assert status["handed_over"] is True
    assert status["reason"] == "startup: handed over"
    faulty = one(lab, "VI_2")
    assert faulty["state"] == "FAULT"
    assert faulty["fault_reasons"] == ["tracking failed"]
    assert faulty["trackers"] == [
        {"tracker": "interface eth1", "healthy": False, "weight": 0, "effect": 0}
    ]


async def test_changes_status_shows_are_reported(lab: Harness) -> None:
    calls: list[str] = []
    engine = await lab.start(
        config({"VI_1": instance(1, vip(10), state="MASTER")}),
        on_status_change=lambda: calls.append(lab.state("VI_1").name),
    )
    assert calls  # INITIALIZE -> BACKUP
    await wait_for(lambda: lab.state("VI_1") is M)
    assert calls[-1] == "MASTER"
    calls.clear()
    engine.set_handover(["VI_1"])
    assert calls and calls[-1] == "RELEASING"
    calls.clear()
    lab.socket("VI_1").hear(1, 90, [vip(10)])  # a new master: state and master heard
    assert calls and calls[-1] == "BACKUP"
    calls.clear()
    lab.socket("VI_1").hear(1, 90, [vip(10)])  # the same master again: nothing new
    assert calls == []
    lab.socket("VI_1").hear(1, 95, [vip(10)])  # its priority changed
    assert calls == ["BACKUP"]
    calls.clear()
    engine.link_changed(LinkChanged("eth0", False))  # a fault
    assert calls and calls[-1] == "FAULT"


async def test_a_priority_change_is_reported(lab: Harness) -> None:
    calls: list[int] = []
    engine = await lab.start(
        config(
            {"VI_1": instance(1, vip(10), track_interfaces=[{"interface": "eth1", "weight": 7}])}
        ),
        on_status_change=lambda: calls.append(0),
    )
    calls.clear()
    engine.link_changed(LinkChanged("eth1", False))
    assert calls
    assert one(lab)["effective_priority"] == 100
    assert one(lab)["trackers"][0]["effect"] == 0
