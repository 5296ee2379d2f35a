"""A virtual server group in the checker the daemon runs (in-memory IPVS table): a reload that
adds a member, an operator's maint by the group's name, and how status, metrics and events name
the group and its members."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsha.daemon.checker_process import Checker
from lvsha.daemon.operations import _active_connections
from lvsha.daemon.overrides import Mode, Override, Selector
from lvsha.ipvs.metrics import virtual_server_samples
from lvsha.messages import ChildEvent, ConfigApplied, Message, StatusRequest
from tests.tools import api_schema
from tests.unit.daemon.test_checker_reload import Parts, message
from tests.unit.ipvs.test_vsgroup import key

CONFIG = """
virtual_server_groups:
  web:
    members: [192.0.2.10:80, 192.0.2.20-21:80]
virtual_servers:
  - group: web
    protocol: TCP
    quorum: 2
    sorry_server: {address: 10.0.9.9, port: 80}
    real_servers:
      - {address: 10.0.0.1, port: 80}
      - {address: 10.0.0.2, port: 80}
"""
MEMBERS = [key("192.0.2.10"), key("192.0.2.20"), key("192.0.2.21")]
BOTH = {"10.0.0.1": 1, "10.0.0.2": 1}


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    yield Parts(tmp_path)


@pytest.fixture
async def sent() -> list[Message]:
    return []


@pytest.fixture
async def checker(parts: Parts, sent: list[Message]) -> AsyncIterator[Checker]:
    checker = Checker(
        message(1, CONFIG).config(), parts.table, parts.daemons, parts.maintenance, send=sent.append
    )
    await checker.start()
    parts.table.log.clear()
    yield checker
    await checker.stop()


async def test_a_reload_adds_a_member_with_the_groups_real_servers(
    parts: Parts, checker: Checker
) -> None:
    for member in MEMBERS:
        assert parts.table.weights(member) == BOTH
    text = CONFIG.replace("192.0.2.20-21:80]", "192.0.2.20-21:80, 192.0.2.30:80]")
    assert await checker.on_message(message(2, text)) == ConfigApplied(2, True)
    new = key("192.0.2.30")
    touched = {getattr(op, "service", getattr(op, "key", None)) for op in parts.table.log}
    assert touched == {new}
    assert parts.table.weights(new) == BOTH


async def test_maint_by_the_groups_name_takes_the_server_out_of_every_member(
    parts: Parts, checker: Checker, sent: list[Message]
) -> None:
    checker.admin.set_overrides([Override(Mode.MAINT, Selector("10.0.0.2", None, "web"))])
    await checker.syncer.sync_now()
    # Healthy weight 1 is below quorum 2: the sorry server serves every member.
    for member in MEMBERS:
        assert parts.table.weights(member) == {"10.0.9.9": 1}
    events = [(m.type, json.loads(m.fields)) for m in sent if isinstance(m, ChildEvent)]
    health = [fields for kind, fields in events if kind == "real_server"]
    assert [(f["virtual_server"], f["service"], f["real_server"], f["new"]) for f in health] == [
        ("web", "group web", "10.0.0.2:80", "maintenance")
    ]
    quorum = [fields for kind, fields in events if kind == "quorum"]
    assert [(f["virtual_server"], f["service"], f["held"], f["sorry_server"]) for f in quorum] == [
        ("web", "group web", False, "10.0.9.9:80")
    ]


async def test_status_and_metrics_name_each_member_by_the_group(checker: Checker) -> None:
    answer = await checker.status(StatusRequest(7))
    body = json.loads(answer.body)
    for item in body["virtual_servers"]:
        api_schema.check_def("status", "virtual_server", item)
    assert [(vs["name"], vs["service"], vs["group"]) for vs in body["virtual_servers"]] == [
        ("web", "192.0.2.10:80/tcp", "web"),
        ("web", "192.0.2.20:80/tcp", "web"),
        ("web", "192.0.2.21:80/tcp", "web"),
    ]
    # What `lvsha drain --wait` counts: a selector naming the group finds its real server in
    # every member.
    for rs in body["virtual_servers"][1]["real_servers"]:
        rs["active_connections"] = 2
    selector = Selector("10.0.0.1", None, "group web")
    assert _active_connections(body["virtual_servers"], selector) == 2
    labels = checker.labels.labels()
    assert [labels[member] for member in MEMBERS] == [
        "web (TCP 192.0.2.10:80)",
        "web (TCP 192.0.2.20:80)",
        "web (TCP 192.0.2.21:80)",
    ]
    quorum = [
        (names["virtual_server"], value)
        for name, names, value in virtual_server_samples(checker.syncer, labels)
        if name == "lvsha_virtual_server_quorum"
    ]
    assert quorum == [(labels[member], 1.0) for member in MEMBERS]
